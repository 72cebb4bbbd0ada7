"""Serving metrics through a small pluggable protocol.

The runtime reports through :class:`ServingMetrics` (three methods: ``inc``, ``observe``,
``set``). :class:`InMemoryMetrics` is the default and keeps bounded aggregates (histograms are
fixed buckets plus count, sum, min and max; never a list of samples). :class:`PrometheusMetrics`
creates ``prometheus_client`` objects on a registry the caller injects. Every metric the runtime
emits is declared in :data:`METRICS` with its kind, help text, labels and histogram buckets.

Throughput is ``rate(aiaas_serving_requests_total{outcome="ok"})`` (and ``tokens_total`` for
tokens per second); padding efficiency is real tokens over padded tokens per batch.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "METRICS",
    "HistogramSnapshot",
    "InMemoryMetrics",
    "MetricSpec",
    "PrometheusMetrics",
    "ServingMetrics",
]

MetricKind = Literal["counter", "gauge", "histogram"]

_SECONDS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SIZES: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS: Final = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


@attrs.frozen
class MetricSpec:
    """One metric the runtime emits."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


METRICS: Final[Mapping[str, MetricSpec]] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "aiaas_serving_queue_depth",
            "gauge",
            "Requests waiting in the model's queue.",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_effective_max_batch_size",
            "gauge",
            "Batch size limit in force (lowered after CUDA out-of-memory errors).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_requests_total",
            "counter",
            "Accepted requests by outcome (ok, model_error, deadline_exceeded, cancelled, "
            "shutting_down).",
            ("model", "outcome"),
        ),
        MetricSpec(
            "aiaas_serving_rejections_total",
            "counter",
            "Requests refused at admission, by reason (overloaded, deadline_unreachable, "
            "input_too_large, invalid_input, deadline_exceeded, shutting_down).",
            ("model", "reason"),
        ),
        MetricSpec("aiaas_serving_batches_total", "counter", "Batches run.", ("model",)),
        MetricSpec(
            "aiaas_serving_tokens_total",
            "counter",
            "Real (unpadded) tokens of requests that ran.",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_batch_splits_total",
            "counter",
            "Batches split to isolate a failure, by reason (error, oom).",
            ("model", "reason"),
        ),
        MetricSpec(
            "aiaas_serving_batch_size",
            "histogram",
            "Requests per batch.",
            ("model",),
            _SIZES,
        ),
        MetricSpec(
            "aiaas_serving_batch_padded_tokens",
            "histogram",
            "Padded tokens per batch (padded length times batch size).",
            ("model",),
            _TOKENS,
        ),
        MetricSpec(
            "aiaas_serving_padding_efficiency",
            "histogram",
            "Real tokens over padded tokens, per batch.",
            ("model",),
            _RATIO,
        ),
        MetricSpec(
            "aiaas_serving_queue_wait_seconds",
            "histogram",
            "Time from admission to the start of the request's batch.",
            ("model",),
            _SECONDS,
        ),
        MetricSpec(
            "aiaas_serving_compute_seconds",
            "histogram",
            "Wall time of one batch on its device (collate, copy, forward, split).",
            ("model",),
            _SECONDS,
        ),
        # --- the generation engine (aiaas_serving.generation) ---
        MetricSpec(
            "aiaas_serving_generation_time_to_first_token_seconds",
            "histogram",
            "Time from a generation request's admission to its first token.",
            ("model",),
            _SECONDS,
        ),
        MetricSpec(
            "aiaas_serving_generation_inter_token_seconds",
            "histogram",
            "Time between two consecutive tokens of one generation request.",
            ("model",),
            _SECONDS,
        ),
        MetricSpec(
            "aiaas_serving_generation_tokens_total",
            "counter",
            "Generated (completion) tokens.",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_prompt_tokens_total",
            "counter",
            "Prompt tokens computed (prefix-cache hits excluded, recomputation included).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_running_sequences",
            "gauge",
            "Sequences running (decoding or prefilling).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_waiting_sequences",
            "gauge",
            "Sequences waiting for admission (new or preempted).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_kv_blocks_used",
            "gauge",
            "KV cache blocks held by sequences.",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_kv_blocks_free",
            "gauge",
            "KV cache blocks free (cached unreferenced prefix blocks included).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_preemptions_total",
            "counter",
            "Sequences preempted (blocks freed, recomputed later) when the KV cache ran out.",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_prefix_cache_hits_total",
            "counter",
            "Prompt tokens found in the prefix cache (first admission of each request).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache (first admission of each request).",
            ("model",),
        ),
        MetricSpec(
            "aiaas_serving_generation_step_seconds",
            "histogram",
            "Wall time of one engine step in its worker thread (batch build, forward, sampling).",
            ("model",),
            _SECONDS,
        ),
        MetricSpec(
            "aiaas_serving_generation_step_tokens",
            "histogram",
            "Tokens computed in one engine step (decodes plus prefill chunks).",
            ("model",),
            _SIZES,
        ),
    )
}


@runtime_checkable
class ServingMetrics(Protocol):
    """Where the runtime reports. Implementations must be cheap and never raise.

    Calls come from the event loop's thread (and, for ``observe``, possibly a device thread).
    """

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None: ...


@attrs.frozen
class HistogramSnapshot:
    """Aggregates of one histogram series: cumulative-free bucket counts and summaries."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bound, plus one final +Inf slot
    count: int
    sum: float
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "max", "min", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        self.min = min(value, self.min)
        self.max = max(value, self.max)

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            self.bounds, tuple(self.counts), self.count, self.sum, self.min, self.max
        )


_Key = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: Mapping[str, str]) -> _Key:
    items = tuple(labels.items())
    return name, items if len(items) < 2 else tuple(sorted(items))


class InMemoryMetrics:
    """Thread-safe in-process aggregates, readable with :meth:`counter`, :meth:`gauge` and
    :meth:`histogram`. Memory is bounded by the number of label combinations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[_Key, float] = {}
        self._gauges: dict[_Key, float] = {}
        self._histograms: dict[_Key, _Histogram] = {}

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        key = _key(name, labels)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        key = _key(name, labels)
        with self._lock:
            hist = self._histograms.get(key)
            if hist is None:
                spec = METRICS.get(name)
                hist = _Histogram(spec.buckets if spec is not None and spec.buckets else _SECONDS)
                self._histograms[key] = hist
            hist.observe(value)

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        key = _key(name, labels)
        with self._lock:
            self._gauges[key] = value

    def counter(self, name: str, **labels: str) -> float:
        """The counter's value for exactly these labels (0 when never incremented)."""
        with self._lock:
            return self._counters.get(_key(name, labels), 0.0)

    def counter_total(self, name: str, **labels: str) -> float:
        """Sum of the counter over every series whose labels include these."""
        wanted = set(labels.items())
        with self._lock:
            return sum(
                value
                for (metric, pairs), value in self._counters.items()
                if metric == name and wanted <= set(pairs)
            )

    def gauge(self, name: str, **labels: str) -> float | None:
        with self._lock:
            return self._gauges.get(_key(name, labels))

    def histogram(self, name: str, **labels: str) -> HistogramSnapshot | None:
        with self._lock:
            hist = self._histograms.get(_key(name, labels))
            return hist.snapshot() if hist is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Every series, as plain data (for logs, tests and debugging endpoints)."""

        def label_text(pairs: tuple[tuple[str, str], ...]) -> str:
            return ",".join(f"{k}={v}" for k, v in pairs)

        with self._lock:
            return {
                "counters": {f"{n}{{{label_text(p)}}}": v for (n, p), v in self._counters.items()},
                "gauges": {f"{n}{{{label_text(p)}}}": v for (n, p), v in self._gauges.items()},
                "histograms": {
                    f"{n}{{{label_text(p)}}}": attrs.asdict(h.snapshot())
                    for (n, p), h in self._histograms.items()
                },
            }


class PrometheusMetrics:
    """Serving metrics as ``prometheus_client`` objects registered on ``registry``.

    Needs the ``prometheus`` extra (``pip install 'aiaas-serving[prometheus]'``). Pass the
    registry your ``/metrics`` endpoint exposes; one instance per registry (the metric names are
    registered once).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import (  # noqa: PLC0415 -- optional extra
            Counter,
            Gauge,
            Histogram,
        )

        self._objects: dict[str, Any] = {}
        for spec in METRICS.values():
            if spec.kind == "counter":
                base = spec.name.removesuffix("_total")
                self._objects[spec.name] = Counter(base, spec.help, spec.labels, registry=registry)
            elif spec.kind == "gauge":
                self._objects[spec.name] = Gauge(
                    spec.name, spec.help, spec.labels, registry=registry
                )
            else:
                self._objects[spec.name] = Histogram(
                    spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry
                )

    def _series(self, name: str, labels: Mapping[str, str]) -> Any:
        metric = self._objects.get(name)
        if metric is None:
            return None
        return metric.labels(**labels)

    def inc(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        series = self._series(name, labels)
        if series is not None:
            series.inc(value)

    def observe(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        series = self._series(name, labels)
        if series is not None:
            series.observe(value)

    def set(self, name: str, value: float, labels: Mapping[str, str]) -> None:
        series = self._series(name, labels)
        if series is not None:
            series.set(value)
