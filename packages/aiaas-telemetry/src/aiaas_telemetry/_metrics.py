"""Prometheus metrics on a registry the service owns, and the ``/metrics`` ASGI app.

Metric names (stable: dashboards and alert rules in ``assets/`` use them):

==============================================  ==========  ====================================
name                                            type        labels
==============================================  ==========  ====================================
``http_server_request_duration_seconds``        histogram   method, route, status_class
``http_server_active_requests``                 gauge       method, route
``http_server_errors_total``                    counter     method, route, code
``aiaas_telemetry_spans_dropped_total``         counter     reason (queue_full, export_failed,
                                                            shutdown)
``aiaas_telemetry_span_export_failures_total``  counter     --
``aiaas_telemetry_spans_exported_total``        counter     --
``aiaas_telemetry_span_queue_size``             gauge       --
``aiaas_telemetry_audit_failures_total``        counter     --
``aiaas_service_info``                          info        the configuration summary
``process_*``, ``python_*``                     (collectors on the same registry)
==============================================  ==========  ====================================

``method`` is the request method, or ``_OTHER`` for a non-standard one; ``route`` is the route
template (``/v1/items/{id}``, never the raw path) or ``<unmatched>``; ``status_class`` is
``1xx`` ... ``5xx``. All label values come from small fixed sets, so a client cannot grow the
number of series.

The registry is always the service's own (:class:`prometheus_client.CollectorRegistry`), never
``prometheus_client.REGISTRY``: two services (or two tests) in one process never collide.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from aiaas_core import (
    ASGIApp,
    MethodNotAllowedError,
    Receive,
    Scope,
    Send,
    error_response,
    run_lifespan,
)
from aiaas_telemetry._profile import HTTP_DURATION_HISTOGRAM, TelemetryProfile

__all__ = ["TelemetryMetrics", "metrics_app"]

#: Names of the HTTP metrics the middleware records.
HTTP_ACTIVE_REQUESTS: Final = "http_server_active_requests"
HTTP_ERRORS: Final = "http_server_errors"
SPANS_DROPPED: Final = "aiaas_telemetry_spans_dropped"
SPAN_EXPORT_FAILURES: Final = "aiaas_telemetry_span_export_failures"
SPANS_EXPORTED: Final = "aiaas_telemetry_spans_exported"
SPAN_QUEUE_SIZE: Final = "aiaas_telemetry_span_queue_size"
AUDIT_FAILURES: Final = "aiaas_telemetry_audit_failures"
SERVICE_INFO: Final = "aiaas_service"
DROP_REASONS: Final = ("queue_full", "export_failed", "shutdown")

_LABEL_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")


def _label_name(key: str) -> str:
    name = _LABEL_CHARS.sub("_", key)
    if not name or name[0].isdigit():
        name = f"_{name}"
    return name.lstrip("_") if name.startswith("__") else name  # "__" is reserved


class TelemetryMetrics:
    """The service's metrics: HTTP histograms and gauges, telemetry health, process metrics."""

    def __init__(
        self,
        profile: TelemetryProfile,
        registry: CollectorRegistry,
        *,
        process_metrics: bool = True,
        info: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self._profile = profile
        buckets = profile.metrics.buckets_for(HTTP_DURATION_HISTOGRAM)
        kwargs: dict[str, Any] = {"buckets": buckets} if buckets else {}
        self.request_duration = Histogram(
            HTTP_DURATION_HISTOGRAM,
            "Duration of HTTP server requests, by route template and status class.",
            ("method", "route", "status_class"),
            registry=registry,
            **kwargs,
        )
        self.active_requests = Gauge(
            HTTP_ACTIVE_REQUESTS,
            "HTTP server requests being served now.",
            ("method", "route"),
            registry=registry,
        )
        self.errors = Counter(
            HTTP_ERRORS,
            "HTTP requests that ended in an error body (malformed request or unhandled error).",
            ("method", "route", "code"),
            registry=registry,
        )
        self.spans_dropped = Counter(
            SPANS_DROPPED,
            "Finished spans that never reached the collector, by reason.",
            ("reason",),
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.spans_dropped.labels(reason)  # present at 0, so rate() and alerts work
        self.span_export_failures = Counter(
            SPAN_EXPORT_FAILURES,
            "Span export batches that failed (collector unreachable, slow or refusing).",
            registry=registry,
        )
        self.spans_exported = Counter(
            SPANS_EXPORTED, "Spans accepted by the collector.", registry=registry
        )
        self.span_queue_size = Gauge(
            SPAN_QUEUE_SIZE, "Finished spans waiting for export.", registry=registry
        )
        self.audit_failures = Counter(
            AUDIT_FAILURES,
            "Audit events the audit sink failed to record.",
            registry=registry,
        )
        self.info = Info(
            SERVICE_INFO, "Service identity and configuration summary.", registry=registry
        )
        summary = dict(profile.summary())
        summary.update(info or {})
        self.info.info({_label_name(k): str(v) for k, v in summary.items()})
        if process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def histogram(self, name: str, documentation: str, labelnames: Iterable[str] = ()) -> Histogram:
        """A new histogram on the service's registry, with the profile's buckets for ``name``.

        Names not in the profile get prometheus-client's default buckets.
        """
        buckets = self._profile.metrics.buckets_for(name)
        kwargs: dict[str, Any] = {"buckets": buckets} if buckets else {}
        return Histogram(name, documentation, tuple(labelnames), registry=self.registry, **kwargs)

    def app(self) -> ASGIApp:
        """The ``/metrics`` ASGI app for this registry."""
        return metrics_app(self.registry)


def _header(scope: Scope, name: bytes) -> str:
    return ",".join(v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name)


def metrics_app(registry: CollectorRegistry) -> ASGIApp:
    """An ASGI app that serves ``registry`` in the Prometheus text (or OpenMetrics) format.

    It negotiates the format from ``Accept`` and gzip from ``Accept-Encoding``, honours
    ``?name[]=metric`` filters, answers ``HEAD`` without a body, and any other method but ``GET``
    with ``405`` and the shared error body. It also answers the ASGI lifespan protocol, so it can
    be served on its own (for example on a separate port).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            status, headers, body = error_response(
                MethodNotAllowedError(
                    "Method not allowed: /metrics answers GET and HEAD", allow=("GET", "HEAD")
                )
            )
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        encoder, content_type = choose_encoder(_header(scope, b"accept"))
        target: Any = registry
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            names = parse_qs(query).get("name[]")
            if names:
                target = registry.restricted_registry(names)
        output: bytes = encoder(target)
        headers = [(b"content-type", content_type.encode("latin-1"))]
        encodings = _header(scope, b"accept-encoding")
        if any(e.split(";")[0].strip().lower() == "gzip" for e in encodings.split(",")):
            output = gzip.compress(output)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(output)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else output})

    return app
