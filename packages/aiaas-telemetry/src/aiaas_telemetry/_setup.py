"""``setup(profile)``: one call that wires logs, traces, metrics and audit for a service."""

from __future__ import annotations

import atexit
import logging
import math
import sys
from collections.abc import Collection, Mapping, MutableMapping
from typing import IO, TYPE_CHECKING, Any, Final

from opentelemetry.propagators.textmap import TextMapPropagator
from prometheus_client import CollectorRegistry, Histogram

from aiaas_core import ASGIApp, ErrorRenderer, ErrorRenderers
from aiaas_telemetry._audit import Auditor, AuditSink, LoggingAuditSink
from aiaas_telemetry._logging import configure_logging, remove_logging
from aiaas_telemetry._metrics import TelemetryMetrics
from aiaas_telemetry._middleware import DEFAULT_MAX_BODY_BYTES, TelemetryMiddleware
from aiaas_telemetry._profile import TelemetryProfile
from aiaas_telemetry._tracing import (
    CountingBatchSpanProcessor,
    SpanBatchSettings,
    Tracing,
    build_propagator,
    build_tracing,
    package_version,
    shutdown_tracing,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = ["DEFAULT_SHUTDOWN_TIMEOUT_S", "Telemetry", "setup"]

#: How long :meth:`Telemetry.shutdown` may take at most, by default (seconds).
DEFAULT_SHUTDOWN_TIMEOUT_S: Final = 3.0

_log = logging.getLogger("aiaas.telemetry")


class Telemetry:
    """A service's telemetry handles, as :func:`setup` made them.

    ``logger`` is the service's own logger (named after the service); ``tracer_provider`` and
    ``tracer`` are ``None`` when tracing is off; ``registry`` is the service's Prometheus
    registry and ``metrics`` its metric objects; ``audit`` takes audit events; ``propagator``
    reads and writes trace context headers; ``span_batch`` holds the span batch settings
    (``None`` when tracing is off). :meth:`middleware` wraps an ASGI app,
    :meth:`metrics_app` serves ``/metrics``, :meth:`shutdown` flushes and stops within a bound.
    Also a context manager: leaving the block shuts down.
    """

    def __init__(
        self,
        *,
        profile: TelemetryProfile,
        metrics: TelemetryMetrics,
        propagator: TextMapPropagator,
        audit: Auditor,
        tracing: Tracing | None,
        log_handler: logging.Handler | None,
        shutdown_timeout_s: float,
        span_batch: SpanBatchSettings | None = None,
        previous_switch_interval: float | None = None,
    ) -> None:
        self.profile = profile
        self.metrics = metrics
        self.registry: CollectorRegistry = metrics.registry
        self.propagator = propagator
        self.audit = audit
        self.logger = logging.getLogger(profile.service_name)
        self._tracing = tracing
        self._log_handler = log_handler
        self._shutdown_timeout_s = shutdown_timeout_s
        self._previous_switch_interval = previous_switch_interval
        self.span_batch = span_batch
        self._closed = False

    @property
    def tracer_provider(self) -> TracerProvider | None:
        return self._tracing.provider if self._tracing is not None else None

    @property
    def tracer(self) -> Tracer | None:
        return self._tracing.tracer if self._tracing is not None else None

    @property
    def span_processor(self) -> CountingBatchSpanProcessor | None:
        """The bounded, counting batch span processor (``None`` when tracing is off)."""
        return self._tracing.processor if self._tracing is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def log_handler(self) -> logging.Handler | None:
        """The JSON log handler :func:`setup` installed (``None`` when it installed none)."""
        return self._log_handler

    def middleware(
        self,
        app: ASGIApp,
        *,
        routes: Any = None,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        exclude_paths: Collection[str] = (),
        metrics_path: str | None = None,
        access_log: bool = True,
        problem_details: bool = False,
        error_renderers: Mapping[str, ErrorRenderer] | ErrorRenderers | None = None,
    ) -> TelemetryMiddleware:
        """Wrap ``app`` in a :class:`aiaas_telemetry.TelemetryMiddleware` bound to these handles."""
        return TelemetryMiddleware(
            app,
            self,
            routes=routes,
            max_body_bytes=max_body_bytes,
            exclude_paths=exclude_paths,
            metrics_path=metrics_path,
            access_log=access_log,
            problem_details=problem_details,
            error_renderers=error_renderers,
        )

    def metrics_app(self) -> ASGIApp:
        """An ASGI app serving this service's registry (mount it at ``/metrics``)."""
        return self.metrics.app()

    def histogram(
        self, name: str, documentation: str, labelnames: Collection[str] = ()
    ) -> Histogram:
        """A histogram on the service's registry with the profile's buckets for ``name``."""
        return self.metrics.histogram(name, documentation, labelnames)

    def inject(self, carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
        """Write the current trace context into ``carrier`` (outgoing request headers)."""
        self.propagator.inject(carrier)
        return carrier

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush spans and release everything, returning within ``timeout_s`` (default 3 s).

        Returns ``True`` when the last flush finished in time; ``False`` when it was cut short
        to keep the bound (the spans left are counted as dropped, ``reason="shutdown"``).
        Spans whose export failed are counted either way (``reason="export_failed"``).
        Idempotent. A GIL switch interval :func:`setup` set is put back. The JSON log handler is
        removed last, so the shutdown's own log lines are still JSON.
        """
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit)
        timeout = self._shutdown_timeout_s if timeout_s is None else timeout_s
        complete = True
        if self._tracing is not None:
            complete = shutdown_tracing(self._tracing, timeout)
        if self._previous_switch_interval is not None:
            sys.setswitchinterval(self._previous_switch_interval)
        if self._log_handler is not None:
            remove_logging(self._log_handler)
        return complete

    def _atexit(self) -> None:
        self.shutdown()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        tracing = "on" if self._tracing is not None else "off"
        return f"<Telemetry {self.profile.service_name!r} tracing={tracing} {state}>"


def setup(
    profile: TelemetryProfile,
    *,
    registry: CollectorRegistry | None = None,
    audit_sink: AuditSink | None = None,
    tracing: bool = True,
    span_exporter: SpanExporter | None = None,
    service_version: str | None = None,
    configure_logs: bool = True,
    log_stream: IO[str] | None = None,
    static_log_fields: Mapping[str, Any] | None = None,
    config_summary: Mapping[str, object] | None = None,
    process_metrics: bool = True,
    max_queue_size: int | None = None,
    schedule_delay_ms: float | None = None,
    max_export_batch_size: int | None = None,
    export_timeout_ms: float | None = None,
    environ: Mapping[str, str] | None = None,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    install_global: bool = False,
    gil_switch_interval_s: float | None = None,
) -> Telemetry:
    """Configure a service's telemetry from its profile and return the handles.

    - ``registry``: the service's Prometheus registry (a fresh one when ``None``; never the
      global ``prometheus_client.REGISTRY``). HTTP, telemetry-health and (``process_metrics``)
      process/platform/GC metrics are registered on it, with an ``aiaas_service_info`` metric
      holding the profile summary, ``service_version`` and ``config_summary`` (for example
      ``aiaas_core.settings_summary(settings)``; secrets there are already redacted).
    - Logs: with ``configure_logs`` the root logger writes JSON lines (:class:`JsonFormatter`) to
      ``log_stream`` (``sys.stderr``) at the profile's level; ``static_log_fields`` are added to
      every line.
    - Traces: with ``tracing``, an SDK tracer provider with the profile's parent-based sampler,
      the OTLP exporter (or ``span_exporter``) behind a bounded, counting batch processor
      (:class:`SpanBatchSettings`: batches of at most ``max_export_batch_size`` spans (128),
      exported every ``schedule_delay_ms`` (200), at most ``max_queue_size`` spans waiting (2048),
      ``export_timeout_ms`` capping one export below the profile's exporter timeout). Defaults <
      the ``OTEL_BSP_*`` variables of ``environ`` (``os.environ``) < these keyword arguments.
    - Audit: events go to ``audit_sink`` (default :class:`LoggingAuditSink`, logger
      ``aiaas.audit``); one ``config.override`` event is emitted per override in
      ``profile.overrides``.
    - ``install_global`` also makes the tracer provider and propagator OpenTelemetry's global
      ones (for other instrumentation libraries); off by default so that setup has no
      process-wide side effects beyond logging.
    - ``gil_switch_interval_s`` (opt-in, ``None`` leaves it alone): set the interpreter's GIL
      switch interval (:func:`sys.setswitchinterval`, 5 ms by default) for the process, put back
      by :meth:`Telemetry.shutdown`. A shorter one (``0.001``) bounds how long the event loop waits
      for the GIL while the span exporter thread encodes a batch; a process-wide setting, so it is
      the service's choice, never a library default.

    :meth:`Telemetry.shutdown` (also run at interpreter exit) is bounded by
    ``shutdown_timeout_s``. Raises :class:`aiaas_core.ConfigError` when the profile asks for
    something not installed (the gRPC exporter, the b3 or jaeger propagators).
    """
    if not isinstance(profile, TelemetryProfile):
        raise TypeError(
            f"setup() needs a TelemetryProfile (see load_profile()), got {type(profile).__name__}"
        )
    if shutdown_timeout_s <= 0:
        raise ValueError(f"shutdown_timeout_s must be > 0, got {shutdown_timeout_s!r}")
    switch: object = gil_switch_interval_s
    if switch is not None and (
        isinstance(switch, bool)
        or not isinstance(switch, int | float)
        or not math.isfinite(switch)
        or not 0 < switch <= 1
    ):
        raise ValueError(
            "gil_switch_interval_s must be a number of seconds above 0 and at most 1"
            f" (0.001 for 1 ms), got {switch!r}"
        )
    span_batch = (
        SpanBatchSettings.from_environment(
            environ,
            max_queue_size=max_queue_size,
            schedule_delay_ms=schedule_delay_ms,
            max_export_batch_size=max_export_batch_size,
            export_timeout_ms=export_timeout_ms,
        )
        if tracing
        else None
    )
    propagator = build_propagator(profile.tracing.propagators)
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    info: dict[str, str] = {"aiaas_telemetry_version": package_version()}
    if service_version:
        info["service_version"] = service_version
    for key, value in (config_summary or {}).items():
        info[f"config_{key}"] = "" if value is None else str(value)
    metrics = TelemetryMetrics(profile, registry, process_metrics=process_metrics, info=info)
    handler = (
        configure_logging(
            profile.service_name,
            level=profile.log.python_level,
            required_fields=profile.log.required_fields,
            static_fields=static_log_fields,
            stream=log_stream,
        )
        if configure_logs
        else None
    )
    traces = (
        build_tracing(
            profile,
            metrics,
            exporter=span_exporter,
            service_version=service_version,
            batch=span_batch,
        )
        if span_batch is not None
        else None
    )
    auditor = Auditor(
        audit_sink if audit_sink is not None else LoggingAuditSink(),
        failures=metrics.audit_failures,
    )
    telemetry = Telemetry(
        profile=profile,
        metrics=metrics,
        propagator=propagator,
        audit=auditor,
        tracing=traces,
        log_handler=handler,
        shutdown_timeout_s=shutdown_timeout_s,
        span_batch=span_batch,
        previous_switch_interval=(
            sys.getswitchinterval() if gil_switch_interval_s is not None else None
        ),
    )
    if gil_switch_interval_s is not None:
        sys.setswitchinterval(gil_switch_interval_s)
    if install_global and traces is not None:
        from opentelemetry import propagate, trace  # noqa: PLC0415 -- only when asked

        trace.set_tracer_provider(traces.provider)
        propagate.set_global_textmap(propagator)
    atexit.register(telemetry._atexit)
    for override in (*profile.overrides, *(span_batch.overrides if span_batch else ())):
        auditor.config_override(
            setting=override.setting,
            source=override.source,
            value=override.value,
            secret=override.secret,
        )
    config = {**profile.summary(), **info}
    if span_batch is not None:
        config.update(span_batch.summary())
    if gil_switch_interval_s is not None:
        config["gil_switch_interval_s"] = f"{gil_switch_interval_s:g}"
    _log.info(
        "telemetry configured for %s (tracing %s)",
        profile.service_name,
        "on" if traces is not None else "off",
        extra={"config": config},
    )
    return telemetry
