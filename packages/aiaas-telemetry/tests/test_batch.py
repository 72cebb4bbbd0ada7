"""Span batching: SpanBatchSettings, the OTEL_BSP_* variables, and what setup() does with them."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from aiaas_core import ConfigError
from aiaas_telemetry import AuditEvent, SpanBatchSettings, load_profile
from aiaas_telemetry._tracing import BSP_ENVIRONMENT_VARIABLES


class BatchRecorder(SpanExporter):
    """Records the size of every batch it is given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.sizes.append(len(spans))
        return SpanExportResult.SUCCESS

    def total(self) -> int:
        with self.lock:
            return sum(self.sizes)


class Sink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def test_defaults_are_small_frequent_batches() -> None:
    batch = SpanBatchSettings()
    assert batch.schedule_delay_ms == 200
    assert batch.max_export_batch_size == 128
    assert batch.max_queue_size == 2048
    assert batch.export_timeout_ms is None
    assert batch.batch_size == 128
    assert batch.overrides == ()
    assert SpanBatchSettings.from_environment({}) == batch
    assert batch.summary() == {
        "span_batch_schedule_delay_ms": "200",
        "span_batch_max_export_batch_size": "128",
        "span_batch_max_queue_size": "2048",
        "span_batch_export_timeout_ms": "-",
    }


def test_environment_sets_every_setting_and_is_recorded() -> None:
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": " 150 ",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
        "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
        "OTEL_BSP_EXPORT_TIMEOUT": "30000",
        "OTEL_BSP_UNRELATED": "x",
    }
    batch = SpanBatchSettings.from_environment(env)
    assert (batch.schedule_delay_ms, batch.max_export_batch_size) == (150, 64)
    assert (batch.max_queue_size, batch.export_timeout_ms) == (4096, 30000)
    assert {(o.setting, o.source, o.value) for o in batch.overrides} == {
        ("span_batch.schedule_delay_ms", "env OTEL_BSP_SCHEDULE_DELAY", "150"),
        ("span_batch.max_export_batch_size", "env OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
        ("span_batch.max_queue_size", "env OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
        ("span_batch.export_timeout_ms", "env OTEL_BSP_EXPORT_TIMEOUT", "30000"),
    }
    assert set(BSP_ENVIRONMENT_VARIABLES) == {
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_EXPORT_TIMEOUT",
    }


def test_explicit_settings_win_over_the_environment() -> None:
    env = {"OTEL_BSP_SCHEDULE_DELAY": "150", "OTEL_BSP_MAX_QUEUE_SIZE": "100"}
    batch = SpanBatchSettings.from_environment(
        env, schedule_delay_ms=20, max_queue_size=None, max_export_batch_size=None
    )
    assert batch.schedule_delay_ms == 20
    assert batch.max_queue_size == 100  # None leaves it to the environment
    assert batch.batch_size == 100  # the default 128 is lowered to the queue size
    assert batch.max_export_batch_size == 128
    assert SpanBatchSettings.from_environment({}, max_queue_size=16).batch_size == 16


def test_every_bad_variable_is_reported_at_once() -> None:
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "soon",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1.5",
        "OTEL_BSP_MAX_QUEUE_SIZE": "0",
        "OTEL_BSP_EXPORT_TIMEOUT": "inf",
    }
    with pytest.raises(ConfigError) as exc:
        SpanBatchSettings.from_environment(env)
    problems = {p.source: p for p in exc.value.problems}
    assert set(problems) == {f"env {name}" for name in env}
    delay = problems["env OTEL_BSP_SCHEDULE_DELAY"]
    assert delay.path == "span_batch.schedule_delay_ms"
    assert delay.value == "soon"
    assert "whole number of milliseconds" in delay.expected
    assert delay.hint == "fix or unset OTEL_BSP_SCHEDULE_DELAY"
    assert "spans" in problems["env OTEL_BSP_MAX_QUEUE_SIZE"].expected
    assert "OTEL_BSP_EXPORT_TIMEOUT" in str(exc.value)


@pytest.mark.parametrize("raw", ["-5", "0", "60001", "nan", "1e9", "12ms"])
def test_schedule_delay_out_of_range(raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        SpanBatchSettings.from_environment({"OTEL_BSP_SCHEDULE_DELAY": raw})
    (problem,) = exc.value.problems
    assert problem.value == raw


def test_batch_larger_than_the_queue_is_a_problem_when_both_are_given() -> None:
    env = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512", "OTEL_BSP_MAX_QUEUE_SIZE": "256"}
    with pytest.raises(ConfigError) as exc:
        SpanBatchSettings.from_environment(env)
    (problem,) = exc.value.problems
    assert problem.path == "span_batch.max_export_batch_size"
    assert problem.source == "env OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
    assert "256" in problem.expected
    assert "env OTEL_BSP_MAX_QUEUE_SIZE" in problem.expected
    with pytest.raises(ConfigError) as exc:
        SpanBatchSettings.from_environment(env, max_queue_size=128)
    assert exc.value.problems[0].expected.endswith("from override)")


def test_bad_explicit_values_and_unknown_names() -> None:
    with pytest.raises(ConfigError) as exc:
        SpanBatchSettings.from_environment({}, schedule_delay_ms=0, max_queue_size=True)
    assert {(p.path, p.source) for p in exc.value.problems} == {
        ("span_batch.schedule_delay_ms", "override"),
        ("span_batch.max_queue_size", "override"),
    }
    with pytest.raises(TypeError, match="max_batch"):
        SpanBatchSettings.from_environment({}, max_batch=3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule_delay_ms": 0},
        {"schedule_delay_ms": math.inf},
        {"max_export_batch_size": 2.5},
        {"max_queue_size": False},
        {"export_timeout_ms": -1},
        {"max_queue_size": "16"},
    ],
)
def test_value_object_validates(kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        SpanBatchSettings(**kwargs)


@given(
    delay=st.integers(1, 60_000),
    batch=st.integers(1, 4096),
    queue=st.integers(1, 4096),
    timeout=st.none() | st.integers(1, 600_000),
)
def test_any_valid_environment_loads(
    delay: int, batch: int, queue: int, timeout: int | None
) -> None:
    env = {
        "OTEL_BSP_SCHEDULE_DELAY": str(delay),
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(batch),
        "OTEL_BSP_MAX_QUEUE_SIZE": str(queue),
    }
    if timeout is not None:
        env["OTEL_BSP_EXPORT_TIMEOUT"] = str(timeout)
    if batch > queue:
        with pytest.raises(ConfigError):
            SpanBatchSettings.from_environment(env)
        return
    loaded = SpanBatchSettings.from_environment(env)
    assert loaded == SpanBatchSettings(delay, batch, queue, timeout)
    assert loaded.batch_size == batch


# --------------------------------------------------------------------------- setup()


def test_setup_batches_as_the_environment_says(make_telemetry: Any, log_stream: Any) -> None:
    exporter = BatchRecorder()
    sink = Sink()
    env = {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    tel = make_telemetry(span_exporter=exporter, audit_sink=sink, environ=env)
    assert tel.span_batch == SpanBatchSettings(60_000, 4, 2048, None)
    for i in range(10):
        tel.tracer.start_span(f"s{i}").end()
    # A full batch leaves at once, long before the schedule delay.
    wait_for(lambda: exporter.total() >= 8)
    assert tel.span_processor.queued == 2
    tel.tracer_provider.force_flush()
    assert exporter.total() == 10
    assert max(exporter.sizes) <= 4
    assert sample(tel, "aiaas_telemetry_spans_exported_total") == 10
    overrides = {
        e.attributes["setting"]: e.attributes["source"]
        for e in sink.events
        if e.type == "config.override"
    }
    assert overrides == {
        "span_batch.max_export_batch_size": "env OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "span_batch.schedule_delay_ms": "env OTEL_BSP_SCHEDULE_DELAY",
    }
    (line,) = [r for r in log_stream.by_logger("aiaas.telemetry") if "configured" in r["message"]]
    assert line["config"]["span_batch_max_export_batch_size"] == "4"
    assert line["config"]["span_batch_schedule_delay_ms"] == "60000"


def sample(tel: Any, name: str, **labels: str) -> float:
    return tel.registry.get_sample_value(name, labels) or 0.0


def test_setup_keywords_win_and_bad_variables_fail_setup(make_telemetry: Any) -> None:
    env = {"OTEL_BSP_SCHEDULE_DELAY": "5000", "OTEL_BSP_MAX_QUEUE_SIZE": "64"}
    tel = make_telemetry(span_exporter=BatchRecorder(), environ=env, schedule_delay_ms=10)
    assert tel.span_batch.schedule_delay_ms == 10
    assert tel.span_batch.max_queue_size == 64
    assert make_telemetry(tracing=False, environ=env).span_batch is None
    with pytest.raises(ConfigError) as exc:
        make_telemetry(environ={"OTEL_BSP_MAX_QUEUE_SIZE": "lots"})
    assert exc.value.problems[0].source == "env OTEL_BSP_MAX_QUEUE_SIZE"


def test_export_timeout_caps_the_exporter_timeout(
    make_telemetry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiaas_telemetry import _otlp

    timeouts: list[float | None] = []

    class Recording(_otlp.LeanOTLPSpanExporter):
        def __init__(self, **kwargs: Any) -> None:
            timeouts.append(kwargs.get("timeout"))
            super().__init__(**kwargs)

    monkeypatch.setattr(_otlp, "LeanOTLPSpanExporter", Recording)
    profile = load_profile(
        {"service_name": "timeouts", "otel_exporter": {"timeout_ms": 3000}}, environ={}
    )
    capped = make_telemetry(profile, environ={"OTEL_BSP_EXPORT_TIMEOUT": "250"})
    assert capped.span_batch.export_timeout_ms == 250
    # A longer one (the specification's default is 30 s) leaves the profile's bound in place.
    make_telemetry(profile, export_timeout_ms=30_000)
    make_telemetry(profile)
    assert timeouts == [pytest.approx(0.25), pytest.approx(3.0), pytest.approx(3.0)]


# --------------------------------------------------------------------------- GIL switch interval


def test_gil_switch_interval_is_opt_in_and_put_back(make_telemetry: Any, log_stream: Any) -> None:
    before = sys.getswitchinterval()
    tel = make_telemetry(tracing=False)
    assert sys.getswitchinterval() == before
    tel.shutdown()
    tel = make_telemetry(tracing=False, gil_switch_interval_s=0.001)
    try:
        assert sys.getswitchinterval() == pytest.approx(0.001)
        (line,) = [
            r
            for r in log_stream.by_logger("aiaas.telemetry")
            if "configured" in r["message"] and "gil_switch_interval_s" in r["config"]
        ]
        assert line["config"]["gil_switch_interval_s"] == "0.001"
    finally:
        tel.shutdown()
    assert sys.getswitchinterval() == pytest.approx(before)
    tel.shutdown()  # idempotent: nothing set twice
    assert sys.getswitchinterval() == pytest.approx(before)


@pytest.mark.parametrize("value", [0, -0.001, 1.5, math.nan, True, "0.001"])
def test_gil_switch_interval_is_validated(make_telemetry: Any, value: Any) -> None:
    before = sys.getswitchinterval()
    with pytest.raises(ValueError, match="gil_switch_interval_s"):
        make_telemetry(tracing=False, gil_switch_interval_s=value)
    assert sys.getswitchinterval() == before


def test_the_resource_hashes_once_and_like_the_sdks(make_telemetry: Any) -> None:
    from opentelemetry.sdk.resources import Resource

    tel = make_telemetry(span_exporter=BatchRecorder(), service_version="1.2.3")
    resource = tel.tracer_provider.resource
    plain = Resource(resource.attributes, resource.schema_url)
    assert resource == plain
    assert plain == resource
    assert hash(resource) == hash(plain) == hash(resource)
    assert resource.attributes["service.version"] == "1.2.3"
    assert resource != Resource({"service.name": "other"})
