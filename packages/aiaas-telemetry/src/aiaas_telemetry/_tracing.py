"""OpenTelemetry tracing that cannot take the service down.

- Spans go through :class:`CountingBatchSpanProcessor`, the SDK's ``BatchSpanProcessor`` with a
  bounded queue (``max_queue_size``, 2048 by default); when the queue is full the SDK drops the
  oldest span and we count it (``aiaas_telemetry_spans_dropped_total{reason="queue_full"}``).
- Spans leave in small, frequent batches (:class:`SpanBatchSettings`: at most 128 spans, every
  200 ms by default, where the SDK says 512 every 5 s). Encoding a batch holds the GIL; a small
  batch holds it for a few milliseconds, so requests served meanwhile wait little, where one
  large batch a second stalls every request that arrives during its encoding. The standard
  ``OTEL_BSP_*`` variables set them (:meth:`SpanBatchSettings.from_environment`).
- The default exporter is the SDK's OTLP/HTTP exporter with a lean encoder
  (:class:`aiaas_telemetry.LeanOTLPSpanExporter`): the request body is written as protobuf bytes
  directly, with the resource, the scope and repeating attributes encoded once, a fraction of the
  SDK's per-span object graph (and of the time the exporter thread holds the GIL).
- The exporter is wrapped to count spans exported, failed batches
  (``aiaas_telemetry_span_export_failures_total``) and the spans lost with them
  (``reason="export_failed"``). One export, retries included, is bounded by the profile's
  ``otel_exporter.timeout_ms`` (2 s by default; at most 5 s).
- :func:`shutdown_tracing` runs the provider's shutdown (a last flush) in a thread and waits at
  most ``timeout_s``; when the flush is still stuck with a little time left, the exporter is shut
  down to abort its retries, and whatever never left the queue is counted as
  ``reason="shutdown"``. The caller gets control back in time whatever the collector does.
- Sampling is parent-based with the profile's root sampler; propagation is W3C trace context and
  baggage by default (``b3``/``jaeger`` when their propagator packages are installed).
- Trace and span ids come from a generator of our own (:class:`_OwnRandomIdGenerator`), reseeded
  in forked children, where the SDK's default draws from the process's global ``random``: a
  service's seeded ``random`` (a simulation, a Hypothesis run) is never moved by its spans.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import attrs
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as _SdkSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import (
    INVALID_SPAN_ID,
    INVALID_TRACE_ID,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    get_current_span,
)
from opentelemetry.util.types import AnyValue, Attributes

from aiaas_core import ConfigError, ConfigProblem
from aiaas_telemetry._metrics import TelemetryMetrics
from aiaas_telemetry._profile import ConfigOverride, TelemetryProfile

__all__ = ["BSP_ENVIRONMENT_VARIABLES", "CountingBatchSpanProcessor", "SpanBatchSettings"]

_log = logging.getLogger("aiaas.telemetry")

#: What :func:`package_version` answers when the package runs from a source tree it was never
#: installed from.
UNKNOWN_VERSION: Final = "0+unknown"


@cache
def package_version() -> str:
    """The installed ``aiaas-telemetry`` distribution's version, looked up once: the tracer's
    instrumentation scope version and ``aiaas_service_info``'s. (The package's ``__version__``
    lives in its ``__init__``, which a private module must not import; the strings are the same,
    as ``tests/test_public_api.py`` checks.)"""
    try:
        return version("aiaas-telemetry")
    except PackageNotFoundError:
        return UNKNOWN_VERSION


DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 128
DEFAULT_SCHEDULE_DELAY_MS: Final = 200

#: The standard batch span processor variables :meth:`SpanBatchSettings.from_environment` reads,
#: and the setting each one sets (all in milliseconds or spans).
BSP_ENVIRONMENT_VARIABLES: Final[Mapping[str, str]] = {
    "OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_ms",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
    "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
    "OTEL_BSP_EXPORT_TIMEOUT": "export_timeout_ms",
}
# setting -> (lowest, highest, what it is); every value is a whole number.
_BATCH_LIMITS: Final[Mapping[str, tuple[int, int, str]]] = {
    "schedule_delay_ms": (1, 60_000, "milliseconds"),
    "max_export_batch_size": (1, 1_048_576, "spans"),
    "max_queue_size": (1, 1_048_576, "spans"),
    "export_timeout_ms": (1, 600_000, "milliseconds"),
}


class _OwnRandomIdGenerator(IdGenerator):
    """Random 128-bit trace ids and 64-bit span ids, as the SDK's ``RandomIdGenerator`` makes them,
    from a ``random.Random`` of our own (seeded from ``os.urandom``; reseeded in forked children
    so no two processes share a sequence) instead of the process's global ``random``.
    """

    __slots__ = ("_bits", "_rng")

    def __init__(self) -> None:
        self._rng = random.Random()  # noqa: S311 -- ids must be unique, not secret (as the SDK's)
        self._bits = self._rng.getrandbits

    def reseed(self) -> None:
        self._rng.seed()

    def generate_span_id(self) -> int:
        span_id = self._bits(64)
        while span_id == INVALID_SPAN_ID:  # pragma: no cover -- one chance in 2**64
            span_id = self._bits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._bits(128)
        while trace_id == INVALID_TRACE_ID:  # pragma: no cover -- one chance in 2**128
            trace_id = self._bits(128)
        return trace_id


_ID_GENERATOR: Final = _OwnRandomIdGenerator()
os.register_at_fork(after_in_child=_ID_GENERATOR.reseed)


def _batch_problem(name: str, value: object) -> str | None:
    low, high, unit = _BATCH_LIMITS[name]
    if value is None and name == "export_timeout_ms":
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value != int(value)
        or not low <= value <= high
    ):
        return f"a whole number of {unit} between {low:,} and {high:,}"
    return None


def _check_batch(inst: SpanBatchSettings, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _batch_problem(attribute.name, value)
    if problem is not None:
        raise ValueError(f"{attribute.name} must be {problem}, got {value!r}")


@attrs.frozen
class SpanBatchSettings:
    """How spans are batched for export (the SDK's batch span processor settings).

    - ``schedule_delay_ms``: the longest a span waits before its batch leaves (200);
    - ``max_export_batch_size``: spans per export at most (128); a full batch leaves at once;
      a value above ``max_queue_size`` is lowered to it;
    - ``max_queue_size``: spans waiting at most (2048); beyond, the oldest is dropped and counted;
    - ``export_timeout_ms``: when set, caps the time one export may take below the profile's
      ``otel_exporter.timeout_ms`` (the built OTLP exporter gets the smaller of the two).

    Small batches sent often keep the exporter thread's hold on the GIL short (see the module
    documentation). :meth:`from_environment` reads the standard ``OTEL_BSP_*`` variables.
    """

    schedule_delay_ms: float = attrs.field(
        default=DEFAULT_SCHEDULE_DELAY_MS, validator=_check_batch
    )
    max_export_batch_size: int = attrs.field(
        default=DEFAULT_MAX_EXPORT_BATCH_SIZE, validator=_check_batch
    )
    max_queue_size: int = attrs.field(default=DEFAULT_MAX_QUEUE_SIZE, validator=_check_batch)
    export_timeout_ms: float | None = attrs.field(default=None, validator=_check_batch)
    #: The values the environment set (not part of equality).
    overrides: tuple[ConfigOverride, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def batch_size(self) -> int:
        """The batch size used: ``max_export_batch_size``, at most ``max_queue_size``."""
        return min(self.max_export_batch_size, self.max_queue_size)

    def summary(self) -> dict[str, str]:
        """A flat summary for the start-up log line."""
        timeout = self.export_timeout_ms
        return {
            "span_batch_schedule_delay_ms": f"{self.schedule_delay_ms:g}",
            "span_batch_max_export_batch_size": str(self.batch_size),
            "span_batch_max_queue_size": str(self.max_queue_size),
            "span_batch_export_timeout_ms": "-" if timeout is None else f"{timeout:g}",
        }

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: float | None
    ) -> SpanBatchSettings:
        """Defaults < ``OTEL_BSP_*`` variables of ``environ`` (``os.environ``) < ``overrides``.

        ``overrides`` are keyword settings (``schedule_delay_ms=50``); ``None`` leaves a setting
        to the layers below. Each value taken from the environment is recorded in
        ``overrides`` of the result (so :func:`aiaas_telemetry.setup` audits it). Every problem is
        reported at once in one :class:`aiaas_core.ConfigError`; a batch size above the queue size
        is a problem when both were given, and is lowered to the queue size otherwise.
        """
        env = os.environ if environ is None else environ
        unknown = sorted(set(overrides) - set(_BATCH_LIMITS))
        if unknown:
            raise TypeError(f"unknown span batch setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        recorded: list[ConfigOverride] = []
        problems: list[ConfigProblem] = []
        for variable, name in BSP_ENVIRONMENT_VARIABLES.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            source = f"env {variable}"
            try:
                number: float = float(raw)
            except ValueError:
                number = math.nan
            problem = _batch_problem(name, number)
            if problem is not None:
                problems.append(
                    ConfigProblem(
                        f"span_batch.{name}", source, raw, problem, f"fix or unset {variable}"
                    )
                )
                continue
            values[name] = int(number)
            sources[name] = source
            recorded.append(ConfigOverride(f"span_batch.{name}", source, str(int(number))))
        for name, value in overrides.items():
            if value is None:
                continue
            problem = _batch_problem(name, value)
            if problem is not None:
                problems.append(
                    ConfigProblem(
                        f"span_batch.{name}",
                        "override",
                        value,
                        problem,
                        f"pass a valid {name}",
                    )
                )
                continue
            values[name] = value
            sources[name] = "override"
        batch, queue = values.get("max_export_batch_size"), values.get("max_queue_size")
        if batch is not None and queue is not None and batch > queue:
            source = sources["max_export_batch_size"]
            problems.append(
                ConfigProblem(
                    "span_batch.max_export_batch_size",
                    source,
                    batch,
                    f"at most max_queue_size ({queue}, from {sources['max_queue_size']})",
                    "lower the batch size or raise the queue size",
                )
            )
        if problems:
            raise ConfigError(problems=problems)
        return cls(**values, overrides=tuple(recorded))


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
            # The middleware's light server spans become the SDK's ReadableSpan here.
            queued: Sequence[Any] = spans
            spans = [s.readable() if type(s) is ServerSpan else s for s in queued]
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
        self.enqueue(span)

    def enqueue(self, span: ReadableSpan | ServerSpan) -> None:
        """Queue an ended span for export: the SDK's ``ReadableSpan`` (what :meth:`on_end`
        receives) or a :class:`ServerSpan` (made readable in the export thread)."""
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
        super().on_end(span)  # type: ignore[arg-type]  # a ServerSpan, see _CountingExporter

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


# ---------------------------------------------------------------------------- light server spans

_sdk_log = logging.getLogger("opentelemetry.sdk.trace")  # where the SDK's span warnings go
_UNSET: Final = Status(StatusCode.UNSET)
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_PLAIN_VALUE_TYPES: Final = frozenset({str, int, float, bool})


class ServerSpan(Span):
    """The middleware's server span, recorded light: ids, times, name, attributes, status,
    events and links in a slotted object, queued as it is and made into the SDK's
    ``ReadableSpan`` only in the export thread (:meth:`readable`), where the SDK's attribute
    and event limits are applied exactly as its ``Span`` applies them.

    It is a full ``opentelemetry.trace.Span``: the application finds it with
    ``trace.get_current_span()`` and may set attributes and the status, add events and links
    and record exceptions, with the SDK span's rules (a value that is not a plain scalar is
    checked and copied when set; a key set again moves to the end; calls after :meth:`end`
    are ignored with the SDK's warning). Only :class:`ServerSpans` makes one, and only when the
    tracer provider's one span processor is ours (see there).
    """

    __slots__ = (
        "_attributes",
        "_end_time",
        "_events",
        "_factory",
        "_links",
        "_name",
        "_parent",
        "_record_end",
        "_span_context",
        "_start_time",
        "_status",
    )

    def __init__(
        self,
        factory: ServerSpans,
        name: str,
        span_context: SpanContext,
        *,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        record_end: Callable[[], None],
    ) -> None:
        self._factory = factory
        self._name = name
        self._span_context = span_context
        self._parent = parent
        # A plain dict while nothing can be dropped (fewer than the limit, plain values, string
        # keys): made the SDK's BoundedAttributes in the export thread. Otherwise, from then on,
        # the SDK's BoundedAttributes itself, which drops and counts as it does in the SDK span.
        limit = factory.limits.max_span_attributes
        self._attributes: dict[str, Any] | BoundedAttributes = (
            attributes if limit is None or len(attributes) <= limit else self._bounded(attributes)
        )
        self._record_end = record_end
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[Link] | None = None
        self._status = _UNSET
        self._end_time: int | None = None
        self._start_time = time.time_ns()

    # -- what the batch span processor reads of a span
    @property
    def context(self) -> SpanContext:
        return self._span_context

    @property
    def name(self) -> str:
        return self._name

    def get_span_context(self) -> SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        _sdk_log.warning("Tried calling %s on an ended span.", what)
        return True

    def set_attribute(self, key: str, value: AnyValue) -> None:
        if self._end_time is not None:
            _sdk_log.warning("Setting attribute on ended span.")
            return
        self._set(key, value)

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        if self._end_time is not None:
            _sdk_log.warning("Setting attribute on ended span.")
            return
        if type(self._attributes) is dict and all(
            self._plain(key, value) for key, value in attributes.items()
        ):
            for key, value in attributes.items():
                self._set(key, value)
            return
        bounded = self._bounded(self._attributes)
        set_items = getattr(bounded, "_set_items", None)  # the SDK span's set_attributes
        if set_items is None:  # pragma: no cover -- an SDK without it
            bounded.update(attributes)
        else:
            set_items(attributes)

    def _plain(self, key: object, value: object) -> bool:
        """Whether ``key = value`` can go into the plain dict (nothing checked, copied or
        dropped by the SDK for it)."""
        attributes = self._attributes
        limit = self._factory.limits.max_span_attributes
        return (
            type(value) in _PLAIN_VALUE_TYPES
            and type(key) is str
            and bool(key)
            and (limit is None or key in attributes or len(attributes) < limit)
        )

    def _set(self, key: str, value: AnyValue) -> None:
        attributes = self._attributes
        if type(attributes) is dict and self._plain(key, value):
            attributes.pop(key, None)  # a key set again moves to the end, as in the SDK
            attributes[key] = value
        else:
            self._bounded(attributes)[key] = value

    def _bounded(self, attributes: Mapping[str, Any]) -> BoundedAttributes:
        """The SDK's attributes, from now on (made from the plain dict the first time)."""
        if isinstance(attributes, BoundedAttributes):
            return attributes
        limits = self._factory.limits
        bounded = self._attributes = BoundedAttributes(
            limits.max_span_attributes,
            attributes,
            immutable=False,
            max_value_len=limits.max_span_attribute_length,
        )
        return bounded

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._ended("_add_event"):
            return
        limits = self._factory.limits
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        self._events.append(
            Event(
                name=name,
                attributes=BoundedAttributes(
                    limits.max_event_attributes,
                    attributes,
                    max_value_len=limits.max_attribute_length,
                    immutable=True,
                ),
                timestamp=timestamp,
            )
        )

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not (context.is_valid or attributes or context.trace_state):
            return  # as the SDK span: a link to nothing is not kept
        if self._ended("_add_link"):
            return
        limits = self._factory.limits
        if self._links is None:
            self._links = BoundedList(limits.max_links)
        self._links.append(
            Link(
                context=context,
                attributes=BoundedAttributes(
                    limits.max_link_attributes,
                    attributes,
                    max_value_len=limits.max_attribute_length,
                    immutable=True,
                ),
            )
        )

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("set_status"):
            return
        if self._status.status_code is StatusCode.OK:
            return  # the SDK keeps an OK status
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                _sdk_log.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The SDK span's own method: it builds the event's attributes and calls add_event.
        _SdkSpan.record_exception(self, exception, attributes, timestamp, escaped)  # type: ignore[arg-type]

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            _sdk_log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        self._record_end()
        self._factory.processor.enqueue(self)

    def readable(self) -> ReadableSpan:
        """The SDK's ``ReadableSpan`` for this ended span, as the SDK's ``Span.end`` makes it."""
        factory = self._factory
        limits = factory.limits
        attributes = self._attributes
        if type(attributes) is dict:
            attributes = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            )
        return ReadableSpan(
            name=self._name,
            context=self._span_context,
            parent=self._parent,
            resource=factory.resource,
            attributes=attributes,
            events=self._events if self._events is not None else BoundedList(limits.max_events),
            links=self._links if self._links is not None else BoundedList(limits.max_links),
            kind=SpanKind.SERVER,
            status=self._status,
            start_time=self._start_time,
            end_time=self._end_time,
            instrumentation_info=factory.instrumentation_info,
            instrumentation_scope=factory.instrumentation_scope,
        )


class ServerSpans:
    """Starts the middleware's ``SERVER`` spans: a :class:`ServerSpan` when our counting batch
    processor is the tracer provider's only span processor, the SDK's span otherwise.

    The decision is taken per span: a processor added later with
    ``tracer_provider.add_span_processor`` (which expects the SDK's ``Span`` in its ``on_start``)
    makes every later server span the SDK's again. Sampling, ids, trace flags, trace state and the
    SDK's own span metrics are those ``Tracer.start_span`` gives.
    """

    __slots__ = (
        "_active",
        "_ids",
        "_light",
        "_metrics",
        "_only_ours",
        "_sampler",
        "_tracer",
        "instrumentation_info",
        "instrumentation_scope",
        "limits",
        "processor",
        "resource",
    )

    def __init__(
        self, provider: TracerProvider, tracer: Tracer, processor: CountingBatchSpanProcessor
    ) -> None:
        self._tracer = tracer
        self.processor = processor
        self.resource = provider.resource
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        # The SDK tracer's settings; without any of them (another SDK) every span is the SDK's.
        limits = getattr(tracer, "_span_limits", None)
        self.limits = limits if isinstance(limits, SpanLimits) else SpanLimits()
        self.instrumentation_scope = getattr(tracer, "_instrumentation_scope", None)
        self.instrumentation_info = getattr(tracer, "instrumentation_info", None)
        self._metrics = getattr(tracer, "_tracer_metrics", None)
        self._active = getattr(provider, "_active_span_processor", None)
        self._only_ours = (processor,)
        self._light = (
            isinstance(tracer, SdkTracer)
            and isinstance(limits, SpanLimits)
            and self.instrumentation_scope is not None
            and self._metrics is not None
            and callable(getattr(tracer, "_is_enabled", None))
            and self._active is not None
            # random-trace-id flags (opentelemetry 1.42): older SDKs get their own span
            and callable(getattr(self._ids, "is_trace_id_random", None))
            and hasattr(TraceFlags, "RANDOM_TRACE_ID")
        )

    def start(self, name: str, context: Context | None, attributes: dict[str, Any]) -> Span:
        """A started ``SERVER`` span named ``name``, child of the span in ``context`` (the
        current context when ``None``), with ``attributes`` (which it may keep: pass a new dict).
        """
        tracer = self._tracer
        if not (
            self._light
            and getattr(self._active, "_span_processors", None) == self._only_ours
            and tracer._is_enabled()  # type: ignore[attr-defined]
        ):
            return tracer.start_span(
                name, context=context, kind=SpanKind.SERVER, attributes=attributes
            )
        parent: SpanContext | None = get_current_span(context).get_span_context()
        ids = self._ids
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random_trace_id = ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        sampled = self._sampler.should_sample(
            context, trace_id, name, SpanKind.SERVER, attributes, ()
        )
        decision = sampled.decision
        flags = _SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=sampled.trace_state,
        )
        record_end = self._metrics.start_span(parent, decision)  # type: ignore[union-attr]
        if decision is Decision.DROP:
            return NonRecordingSpan(span_context)
        return ServerSpan(
            self,
            name,
            span_context,
            parent=parent,
            attributes=dict(sampled.attributes or {}),
            record_end=record_end,
        )


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


def build_exporter(profile: TelemetryProfile, *, timeout_ms: float | None = None) -> SpanExporter:
    """The OTLP span exporter the profile describes, with its bounded timeout.

    ``timeout_ms`` replaces the profile's ``otel_exporter.timeout_ms`` when given.
    """
    exp = profile.otel_exporter
    timeout_s = exp.timeout_s if timeout_ms is None else timeout_ms / 1000.0
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
            endpoint=exp.endpoint, headers=exp.revealed_headers(), timeout=timeout_s
        )
        return exporter
    # The SDK's OTLP/HTTP exporter with the lean encoder (aiaas_telemetry._otlp): same requests,
    # a fraction of the encoding time the exporter thread spends holding the GIL.
    from aiaas_telemetry._otlp import LeanOTLPSpanExporter  # noqa: PLC0415

    return LeanOTLPSpanExporter(
        endpoint=exp.traces_url, headers=exp.revealed_headers(), timeout=timeout_s
    )


class _Resource(Resource):
    """A :class:`Resource` that hashes once.

    The OTLP encoder groups each batch's spans by resource, hashing the resource once per span;
    the SDK's hash serialises every attribute to JSON each time (about a fifth of the encoding
    time). A resource is immutable, so its hash is computed once.
    """

    _hash: int | None = None

    def __hash__(self) -> int:
        cached = self._hash
        if cached is None:
            cached = self._hash = super().__hash__()
        return cached

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


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
    batch: SpanBatchSettings | None = None,
) -> Tracing:
    batch = batch if batch is not None else SpanBatchSettings()
    attributes: dict[str, Any] = dict(profile.metrics.resource_attributes)
    attributes["service.name"] = profile.service_name
    if service_version:
        attributes["service.version"] = service_version
    provider = TracerProvider(
        sampler=_sampler(profile),
        resource=_cached_hash(Resource.create(attributes)),
        id_generator=_ID_GENERATOR,
        shutdown_on_exit=False,  # our shutdown is bounded; the SDK's atexit hook is not
    )
    timeout_ms: float = profile.otel_exporter.timeout_ms
    if batch.export_timeout_ms is not None:
        timeout_ms = min(timeout_ms, batch.export_timeout_ms)
    processor = CountingBatchSpanProcessor(
        exporter if exporter is not None else build_exporter(profile, timeout_ms=timeout_ms),
        metrics,
        max_queue_size=batch.max_queue_size,
        max_export_batch_size=batch.batch_size,
        schedule_delay_millis=batch.schedule_delay_ms,
        export_timeout_millis=timeout_ms,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("aiaas_telemetry", package_version())
    return Tracing(provider=provider, tracer=tracer, processor=processor)


def _cached_hash(resource: Resource) -> Resource:
    return _Resource(resource.attributes, resource.schema_url)


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
    # Leave time to count, log and release the rest (Telemetry.shutdown goes on after this)
    # even on a loaded machine, so the whole shutdown stays inside ``timeout_s``.
    done.wait(max(0.0, deadline - time.monotonic() - min(0.2, timeout_s / 10)))
    left = tracing.processor.abandon()
    _log.warning(
        "telemetry shutdown: span export did not finish within %.1fs;"
        " export aborted, %d queued span(s) dropped",
        timeout_s,
        left,
    )
    return False
