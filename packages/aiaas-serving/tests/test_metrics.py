"""Metrics: the in-memory default, the Prometheus adapter, and what the runtime reports."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading

from prometheus_client import CollectorRegistry, generate_latest
from toy import ToyAdapter, wait_started

from aiaas_serving import (
    BatchPolicy,
    InMemoryMetrics,
    Overloaded,
    PrometheusMetrics,
    Runtime,
    ServingMetrics,
)
from aiaas_serving._metrics import METRICS


def test_in_memory_metrics_aggregate_without_keeping_samples() -> None:
    metrics = InMemoryMetrics()
    assert isinstance(metrics, ServingMetrics)
    metrics.inc("c", 1, {"model": "a", "outcome": "ok"})
    metrics.inc("c", 2, {"outcome": "ok", "model": "a"})
    metrics.inc("c", 5, {"model": "b", "outcome": "ok"})
    assert metrics.counter("c", model="a", outcome="ok") == 3
    assert metrics.counter_total("c", outcome="ok") == 8
    assert metrics.counter("c", model="z") == 0
    metrics.set("g", 4, {"model": "a"})
    metrics.set("g", 2, {"model": "a"})
    assert metrics.gauge("g", model="a") == 2
    assert metrics.gauge("g", model="b") is None
    for value in (1, 3, 3, 40):
        metrics.observe("aiaas_serving_batch_size", value, {"model": "a"})
    hist = metrics.histogram("aiaas_serving_batch_size", model="a")
    assert hist is not None
    assert (hist.count, hist.sum, hist.min, hist.max, hist.mean) == (4, 47, 1, 40, 47 / 4)
    assert len(hist.counts) == len(hist.bounds) + 1
    assert sum(hist.counts) == 4
    assert hist.counts[0] == 1  # 1 <= 1
    assert metrics.histogram("aiaas_serving_batch_size", model="b") is None
    metrics.observe("custom_seconds", 0.2, {})
    custom = metrics.histogram("custom_seconds")
    assert custom is not None
    assert custom.count == 1
    snapshot = metrics.snapshot()
    assert snapshot["counters"]["c{model=a,outcome=ok}"] == 3
    assert snapshot["gauges"]["g{model=a}"] == 2
    assert snapshot["histograms"]["aiaas_serving_batch_size{model=a}"]["count"] == 4


def test_an_empty_histogram_has_no_mean() -> None:
    from aiaas_serving import HistogramSnapshot

    assert math.isnan(HistogramSnapshot((1.0,), (0, 0), 0, 0.0, math.inf, -math.inf).mean)


def test_prometheus_metrics_register_every_metric_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    assert isinstance(metrics, ServingMetrics)
    metrics.inc("aiaas_serving_requests_total", 2, {"model": "m", "outcome": "ok"})
    metrics.set("aiaas_serving_queue_depth", 7, {"model": "m"})
    metrics.observe("aiaas_serving_batch_size", 3, {"model": "m"})
    metrics.inc("not_a_metric", 1, {})  # ignored, never raises
    metrics.observe("not_a_metric", 1, {})
    metrics.set("not_a_metric", 1, {})
    text = generate_latest(registry).decode()
    assert 'aiaas_serving_requests_total{model="m",outcome="ok"} 2.0' in text
    assert 'aiaas_serving_queue_depth{model="m"} 7.0' in text
    assert 'aiaas_serving_batch_size_bucket{le="4.0",model="m"} 1.0' in text
    for name, spec in METRICS.items():
        assert f"# HELP {name.removesuffix('_total')}" in text or spec.kind != "counter"


async def test_the_runtime_reports_batches_waits_padding_and_rejections() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model(
            "toy", adapter, policy=BatchPolicy(max_queue=3, buckets=(64,))
        )
        first = model.enqueue([1])
        await wait_started(adapter)
        queued = [model.enqueue([2] * n) for n in (2, 4, 6)]
        with contextlib.suppress(Overloaded):
            model.enqueue([1])
        gate.set()
        await first
        for handle in queued:
            await handle
    m = runtime.metrics
    assert m.counter("aiaas_serving_requests_total", model="toy", outcome="ok") == 4
    assert m.counter("aiaas_serving_batches_total", model="toy") == 2
    assert m.counter("aiaas_serving_tokens_total", model="toy") == 13
    assert m.counter("aiaas_serving_rejections_total", model="toy", reason="overloaded") == 1
    sizes = m.histogram("aiaas_serving_batch_size", model="toy")
    assert (sizes.count, sizes.sum) == (2, 4)
    padded = m.histogram("aiaas_serving_batch_padded_tokens", model="toy")
    assert padded.sum == 1 + 3 * 6
    efficiency = m.histogram("aiaas_serving_padding_efficiency", model="toy")
    assert efficiency.min == 12 / 18
    assert efficiency.max == 1.0
    assert m.histogram("aiaas_serving_queue_wait_seconds", model="toy").count == 4
    assert m.histogram("aiaas_serving_compute_seconds", model="toy").count == 2
    assert m.gauge("aiaas_serving_queue_depth", model="toy") == 0
    assert m.gauge("aiaas_serving_effective_max_batch_size", model="toy") == 32


async def test_the_runtime_accepts_any_metrics_sink() -> None:
    seen: list[tuple[str, str]] = []

    class Recorder:
        def inc(self, name, value, labels):
            seen.append(("inc", name))

        def observe(self, name, value, labels):
            seen.append(("observe", name))

        def set(self, name, value, labels):
            seen.append(("set", name))

    recorder = Recorder()
    async with Runtime(device="cpu", metrics=recorder) as runtime:
        assert runtime.metrics is recorder
        model = await runtime.add_model("toy", ToyAdapter())
        await asyncio.gather(model.submit([1]), model.submit([2]))
    assert ("observe", "aiaas_serving_batch_size") in seen
    assert ("inc", "aiaas_serving_requests_total") in seen
