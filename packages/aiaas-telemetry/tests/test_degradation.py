"""Telemetry never takes the service down: no collector, a hung collector, a full queue."""

from __future__ import annotations

import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aiaas_telemetry import load_profile


def dropped(tel: Any, reason: str) -> float:
    return tel.registry.get_sample_value("aiaas_telemetry_spans_dropped_total", {"reason": reason})


def failures(tel: Any) -> float:
    return tel.registry.get_sample_value("aiaas_telemetry_span_export_failures_total") or 0.0


def profile_for(port: int, timeout_ms: int) -> Any:
    return load_profile(
        {
            "service_name": "degraded",
            "otel_exporter": {"endpoint": f"http://127.0.0.1:{port}", "timeout_ms": timeout_ms},
        },
        environ={},
    )


def test_no_collector_at_all(
    make_telemetry: Any, closed_port: int, server: Any, demo: Any, log_stream: Any
) -> None:
    tel = make_telemetry(profile_for(closed_port, 300), schedule_delay_ms=50)
    app = tel.middleware(demo, routes=["/v1/items/{id}"], metrics_path="/metrics")
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(20):
            res = client.get(f"/v1/items/{i}")
            assert res.status_code == 200
            assert res.json()["id"] == str(i)
        deadline = time.monotonic() + 10
        while failures(tel) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = client.get("/metrics").text
    assert failures(tel) >= 1
    assert dropped(tel, "export_failed") >= 1
    exposed = {
        (s.name, s.labels.get("reason")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert exposed[("aiaas_telemetry_span_export_failures_total", None)] >= 1
    assert exposed[("aiaas_telemetry_spans_dropped_total", "export_failed")] >= 1
    started = time.monotonic()
    tel.shutdown()
    assert time.monotonic() - started < 3.0
    total = sum(dropped(tel, r) for r in ("queue_full", "export_failed", "shutdown"))
    assert total == 20  # every span is accounted for: none exported, each counted once
    assert tel.registry.get_sample_value("aiaas_telemetry_spans_exported_total") == 0
    # the service's own request lines are all there
    assert len(log_stream.by_logger("aiaas.access")) == 20


def test_hung_collector_keeps_buffers_bounded_and_shutdown_bounded(
    make_telemetry: Any, silent_listener: int, server: Any, demo: Any
) -> None:
    tel = make_telemetry(
        profile_for(silent_listener, 5000),  # each export would wait 5 s for an answer
        max_queue_size=16,
        schedule_delay_ms=20,
    )
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    with server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(80):
            assert client.get(f"/v1/items/{i}").status_code == 200
            assert tel.registry.get_sample_value("aiaas_telemetry_span_queue_size") <= 16
    assert dropped(tel, "queue_full") > 0
    started = time.monotonic()
    complete = tel.shutdown()  # default bound: 3 s
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert complete is False
    assert tel.registry.get_sample_value("aiaas_telemetry_span_queue_size") == 0
    total = sum(dropped(tel, r) for r in ("queue_full", "export_failed", "shutdown"))
    assert total == 80  # nothing reached the collector, and every span is counted once
    assert tel.shutdown() is True  # idempotent


def test_spans_ended_after_shutdown_are_counted(make_telemetry: Any, memory_exporter: Any) -> None:
    tel = make_telemetry(span_exporter=memory_exporter)
    tracer = tel.tracer
    assert tel.shutdown(timeout_s=1) is True
    tracer.start_span("late").end()
    assert dropped(tel, "shutdown") == 1
    assert memory_exporter.get_finished_spans() == ()


def test_exporter_that_raises_is_counted(make_telemetry: Any) -> None:
    from opentelemetry.sdk.trace.export import SpanExporter

    class Broken(SpanExporter):
        def export(self, spans: Any) -> Any:
            raise RuntimeError("exporter bug")

        def shutdown(self) -> None:
            raise RuntimeError("shutdown bug")

    tel = make_telemetry(span_exporter=Broken(), schedule_delay_ms=10)
    for _ in range(3):
        tel.tracer.start_span("s").end()
    assert tel.shutdown(timeout_s=2) is True
    assert failures(tel) >= 1
    assert dropped(tel, "export_failed") == 3


def test_unsampled_spans_are_not_queued(make_telemetry: Any, memory_exporter: Any) -> None:
    profile = load_profile(
        {"service_name": "quiet", "tracing": {"sampler": "always_off"}}, environ={}
    )
    tel = make_telemetry(profile, span_exporter=memory_exporter)
    tel.tracer.start_span("unsampled").end()
    assert tel.metrics.registry.get_sample_value("aiaas_telemetry_span_queue_size") == 0
    assert tel.shutdown(timeout_s=1) is True
    assert memory_exporter.get_finished_spans() == ()


def test_every_span_is_counted_exactly_once(make_telemetry: Any) -> None:
    """A stuck export: queue drops, then a bounded shutdown abandons queue and in-flight spans."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    entered = threading.Event()
    release = threading.Event()

    class Stuck(SpanExporter):
        def export(self, spans: Any) -> Any:
            entered.set()
            release.wait(10)
            return SpanExportResult.SUCCESS

    tel = make_telemetry(span_exporter=Stuck(), max_queue_size=4, schedule_delay_ms=10)
    processor = tel.span_processor
    for i in range(4):
        tel.tracer.start_span(f"first-{i}").end()
    assert entered.wait(5)
    assert (processor.queued, processor.in_flight) == (0, 4)
    for i in range(6):
        tel.tracer.start_span(f"second-{i}").end()
    assert processor.queued == 4
    assert dropped(tel, "queue_full") == 2
    try:
        assert tel.shutdown(timeout_s=0.5) is False
    finally:
        release.set()
    assert dropped(tel, "shutdown") == 8  # 4 queued + 4 in flight
    assert tel.registry.get_sample_value("aiaas_telemetry_spans_exported_total") == 0
    assert failures(tel) == 0
    assert processor.queued == processor.in_flight == 0


def test_successful_exports_are_counted(make_telemetry: Any, memory_exporter: Any) -> None:
    tel = make_telemetry(span_exporter=memory_exporter, schedule_delay_ms=10)
    for i in range(7):
        tel.tracer.start_span(f"s{i}").end()
    assert tel.shutdown(timeout_s=2) is True
    assert tel.registry.get_sample_value("aiaas_telemetry_spans_exported_total") == 7
    assert len(memory_exporter.get_finished_spans()) == 7
    assert sum(dropped(tel, r) for r in ("queue_full", "export_failed", "shutdown")) == 0
