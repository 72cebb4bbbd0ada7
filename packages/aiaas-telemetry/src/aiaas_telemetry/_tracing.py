"""OpenTelemetry tracing that cannot take the service down.

- Spans go through :class:`CountingBatchSpanProcessor`, the SDK's ``BatchSpanProcessor`` with a
  bounded queue (``max_queue_size``, 2048 by default); when the queue is full the SDK drops the
  oldest span and we count it (``aiaas_telemetry_spans_dropped_total{reason="queue_full"}``).
- The exporter (OTLP/HTTP by default) is wrapped to count spans exported, failed batches
  (``aiaas_telemetry_span_export_failures_total``) and the spans lost with them
  (``reason="export_failed"``). One export, retries included, is bounded by the profile's
  ``otel_exporter.timeout_ms`` (2 s by default; at most 5 s).
- :func:`shutdown_tracing` runs the provider's shutdown (a last flush) in a thread and waits at
  most ``timeout_s``; when the flush is still stuck with a little time left, the exporter is shut
  down to abort its retries, and whatever never left the queue is counted as
  ``reason="shutdown"``. The caller gets control back in time whatever the collector does.
- Sampling is parent-based with the profile's root sampler; propagation is W3C trace context and
  baggage by default (``b3``/``jaeger`` when their propagator packages are installed).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Tracer

from aiaas_core import ConfigError, ConfigProblem
from aiaas_telemetry import __version__
from aiaas_telemetry._metrics import TelemetryMetrics
from aiaas_telemetry._profile import TelemetryProfile

__all__ = ["CountingBatchSpanProcessor"]

_log = logging.getLogger("aiaas.telemetry")

DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512
DEFAULT_SCHEDULE_DELAY_MS: Final = 1000


class _CountingExporter(SpanExporter):
    """Wraps an exporter: reports what it takes and how it went, never raises, shuts down once."""

    def __init__(self, inner: SpanExporter, ledger: CountingBatchSpanProcessor) -> None:
        self.inner = inner
        self._ledger = ledger
        self._shutdown_lock = threading.Lock()
        self._is_shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        self._ledger._taken(count)
        try:
            result = SpanExportResult.FAILURE if self._is_shutdown else self.inner.export(spans)
        except Exception:  # noqa: BLE001 -- an exporter bug must not kill the worker thread
            _log.warning("span exporter raised; %d span(s) dropped", count, exc_info=True)
            result = SpanExportResult.FAILURE
        self._ledger._finished(count, ok=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        with self._shutdown_lock:
            if self._is_shutdown:
                return
            self._is_shutdown = True
        try:
            self.inner.shutdown()
        except Exception:  # noqa: BLE001 -- shutdown goes on whatever the exporter does
            _log.warning("span exporter shutdown raised", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's ``BatchSpanProcessor``, with every span that never reaches the collector counted.

    The SDK drops the oldest queued span when its bounded queue is full and says so only in a
    rate-limited log line. This subclass keeps a ledger, without touching SDK internals: spans
    *queued* (added in :meth:`on_end`, taken out when the exporter receives their batch, which is
    when the SDK takes them off its queue) and spans *in flight* (being exported). Each sampled
    span is counted exactly once in ``aiaas_telemetry_spans_exported_total`` or in
    ``aiaas_telemetry_spans_dropped_total`` with a reason:

    - ``queue_full``: the queue was full when a span ended (the SDK dropped the oldest);
    - ``export_failed``: its batch failed (collector unreachable, slow, refusing; exporter error);
    - ``shutdown``: it ended after shutdown, or was still queued or in flight when a bounded
      shutdown gave up (:meth:`abandon`).
    """

    def __init__(
        self,
        exporter: SpanExporter,
        metrics: TelemetryMetrics,
        *,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
        schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MS,
        export_timeout_millis: float = 2000,
    ) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._queued = 0
        self._in_flight = 0
        self._closed = False
        self._abandoned = False
        self._max_queue_size = max_queue_size
        self.counting_exporter = _CountingExporter(exporter, self)
        super().__init__(
            self.counting_exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
            export_timeout_millis=export_timeout_millis,
        )
        metrics.span_queue_size.set_function(lambda: float(self._queued))

    @property
    def queued(self) -> int:
        """Spans ended and waiting in the queue."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Spans handed to the exporter whose export has not finished."""
        return self._in_flight

    def _taken(self, count: int) -> None:
        with self._lock:
            self._queued = max(0, self._queued - count)
            if not self._abandoned:
                self._in_flight += count

    def _finished(self, count: int, *, ok: bool) -> None:
        with self._lock:
            if self._abandoned:
                return  # already counted as dropped at shutdown
            self._in_flight = max(0, self._in_flight - count)
        if ok:
            self._metrics.spans_exported.inc(count)
        else:
            self._metrics.span_export_failures.inc()
            self._metrics.spans_dropped.labels("export_failed").inc(count)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        with self._lock:
            closed = self._closed
            full = not closed and self._queued >= self._max_queue_size
            if not closed and not full:
                self._queued += 1
        if closed:
            self._metrics.spans_dropped.labels("shutdown").inc()
            return
        if full:  # the SDK drops the oldest queued span to make room for this one
            self._metrics.spans_dropped.labels("queue_full").inc()
        super().on_end(span)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        super().shutdown()  # type: ignore[no-untyped-call]

    def abandon(self) -> int:
        """Count every span still queued or in flight as dropped (``reason="shutdown"``).

        Returns how many. Exports that finish later are not counted again.
        """
        with self._lock:
            left = self._queued + self._in_flight
            self._queued = self._in_flight = 0
            self._closed = self._abandoned = True
        if left:
            self._metrics.spans_dropped.labels("shutdown").inc(left)
        return left


def _sampler(profile: TelemetryProfile) -> Sampler:
    tracing = profile.tracing
    if tracing.sampler == "always_on":
        root: Sampler = ALWAYS_ON
    elif tracing.sampler == "always_off":
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(tracing.sampler_arg)
    return ParentBased(root=root)


def build_propagator(names: Sequence[str]) -> TextMapPropagator:
    """A composite propagator for ``names`` (``tracecontext``, ``baggage``, ``b3``, ``jaeger``)."""
    propagators: list[TextMapPropagator] = []
    for name in names:
        if name == "tracecontext":
            from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
                TraceContextTextMapPropagator,
            )

            propagators.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            from opentelemetry.baggage.propagation import W3CBaggagePropagator  # noqa: PLC0415

            propagators.append(W3CBaggagePropagator())
        else:
            module, cls, dist = {
                "b3": (
                    "opentelemetry.propagators.b3",
                    "B3MultiFormat",
                    "opentelemetry-propagator-b3",
                ),
                "jaeger": (
                    "opentelemetry.propagators.jaeger",
                    "JaegerPropagator",
                    "opentelemetry-propagator-jaeger",
                ),
            }[name]
            try:
                propagators.append(getattr(importlib.import_module(module), cls)())
            except ImportError:
                raise ConfigError(
                    problems=[
                        ConfigProblem(
                            "tracing.propagators",
                            "profile",
                            name,
                            "an installed propagator",
                            f"pip install {dist}, or remove {name!r} from the list",
                        )
                    ]
                ) from None
    return CompositePropagator(propagators)


def build_exporter(profile: TelemetryProfile) -> SpanExporter:
    """The OTLP span exporter the profile describes, with its bounded timeout."""
    exp = profile.otel_exporter
    if exp.protocol == "grpc":
        try:
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            raise ConfigError(
                problems=[
                    ConfigProblem(
                        "otel_exporter.protocol",
                        "profile",
                        "grpc",
                        "an installed exporter for the protocol",
                        "pip install opentelemetry-exporter-otlp-proto-grpc,"
                        " or use 'http/protobuf'",
                    )
                ]
            ) from None
        exporter: SpanExporter = grpc.OTLPSpanExporter(
            endpoint=exp.endpoint, headers=exp.revealed_headers(), timeout=exp.timeout_s
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(
        endpoint=exp.traces_url, headers=exp.revealed_headers(), timeout=exp.timeout_s
    )


@attrs.define
class Tracing:
    """The tracing handles :func:`aiaas_telemetry.setup` builds."""

    provider: TracerProvider
    tracer: Tracer
    processor: CountingBatchSpanProcessor


def build_tracing(
    profile: TelemetryProfile,
    metrics: TelemetryMetrics,
    *,
    exporter: SpanExporter | None = None,
    service_version: str | None = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
    schedule_delay_millis: float = DEFAULT_SCHEDULE_DELAY_MS,
) -> Tracing:
    attributes: dict[str, Any] = dict(profile.metrics.resource_attributes)
    attributes["service.name"] = profile.service_name
    if service_version:
        attributes["service.version"] = service_version
    provider = TracerProvider(
        sampler=_sampler(profile),
        resource=Resource.create(attributes),
        shutdown_on_exit=False,  # our shutdown is bounded; the SDK's atexit hook is not
    )
    processor = CountingBatchSpanProcessor(
        exporter if exporter is not None else build_exporter(profile),
        metrics,
        max_queue_size=max_queue_size,
        max_export_batch_size=min(max_export_batch_size, max_queue_size),
        schedule_delay_millis=schedule_delay_millis,
        export_timeout_millis=profile.otel_exporter.timeout_ms,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("aiaas_telemetry", __version__)
    return Tracing(provider=provider, tracer=tracer, processor=processor)


def shutdown_tracing(tracing: Tracing, timeout_s: float) -> bool:
    """Flush and shut down within ``timeout_s``; ``True`` when everything finished in time."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    done = threading.Event()

    def run() -> None:
        try:
            tracing.provider.shutdown()
        except Exception:  # noqa: BLE001 -- shutdown goes on whatever a processor does
            _log.warning("tracer provider shutdown raised", exc_info=True)
        finally:
            done.set()

    worker = threading.Thread(target=run, name="aiaas-telemetry-shutdown", daemon=True)
    worker.start()
    # Let the last flush use most of the budget; keep a margin to abort a stuck export.
    margin = min(0.5, timeout_s / 4)
    if done.wait(max(0.0, deadline - time.monotonic() - margin)):
        return True
    tracing.processor.counting_exporter.shutdown()  # aborts retry back-off, closes the transport
    done.wait(max(0.0, deadline - time.monotonic() - 0.02))  # leave time to count and log
    left = tracing.processor.abandon()
    _log.warning(
        "telemetry shutdown: span export did not finish within %.1fs;"
        " export aborted, %d queued span(s) dropped",
        timeout_s,
        left,
    )
    return False
