"""setup(): handles, validation, optional pieces, global install and bounded exit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import aiaas_telemetry
from aiaas_core import ConfigError
from aiaas_telemetry import load_profile, setup


def test_handles(make_telemetry: Any, memory_exporter: Any, log_stream: Any) -> None:
    registry = CollectorRegistry()
    profile = load_profile(
        {
            "service_name": "handles",
            "otel_exporter": {"headers": {"authorization": "Bearer setup-secret"}},
        },
        environ={},
    )
    tel = make_telemetry(
        profile,
        registry=registry,
        span_exporter=memory_exporter,
        service_version="9.9.9",
        config_summary={"db.password": "<redacted>", "db.pool_size": 5, "nothing": None},
        static_log_fields={"environment": "test"},
    )
    assert tel.registry is registry
    assert tel.logger.name == "handles"
    assert tel.profile is profile
    assert tel.log_handler is not None
    assert repr(tel) == "<Telemetry 'handles' tracing=on open>"
    assert (
        registry.get_sample_value(
            "aiaas_service_info",
            {
                **tel.profile.summary(),
                "aiaas_telemetry_version": aiaas_telemetry.__version__,
                "service_version": "9.9.9",
                "config_db_password": "<redacted>",
                "config_db_pool_size": "5",
                "config_nothing": "",
            },
        )
        == 1
    )
    (line,) = [r for r in log_stream.by_logger("aiaas.telemetry") if "configured" in r["message"]]
    assert line["config"]["service_name"] == "handles"
    assert line["environment"] == "test"
    assert "setup-secret" not in log_stream.getvalue()
    tel.logger.warning("from the service")
    assert log_stream.by_logger("handles")[0]["level"] == "warn"

    with tel.tracer.start_as_current_span("outgoing"):
        headers = tel.inject({})
    assert headers["traceparent"].startswith("00-")
    hist = tel.histogram("http_server_request_duration_seconds_extra", "x", ["a"])
    hist.labels("1").observe(1)
    app = tel.metrics_app()
    assert callable(app)

    with tel:
        pass
    assert tel.closed
    assert repr(tel).endswith("closed>")
    assert tel.shutdown() is True


def test_logging_can_be_left_alone(make_telemetry: Any, log_stream: Any) -> None:
    tel = make_telemetry(tracing=False, configure_logs=False)
    assert tel.log_handler is None
    tel.logger.warning("not ours to format")
    assert log_stream.getvalue() == ""
    assert "tracing=off" in repr(tel)


def test_setup_validates_arguments() -> None:
    profile = load_profile({"service_name": "v"}, environ={})
    with pytest.raises(TypeError, match="TelemetryProfile"):
        setup({"service_name": "v"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown_timeout_s"):
        setup(profile, shutdown_timeout_s=0)


@pytest.mark.parametrize(
    ("profile_doc", "needs"),
    [
        ({"tracing": {"propagators": ["tracecontext", "b3"]}}, "opentelemetry-propagator-b3"),
        ({"tracing": {"propagators": ["jaeger"]}}, "opentelemetry-propagator-jaeger"),
        ({"otel_exporter": {"protocol": "grpc"}}, "opentelemetry-exporter-otlp-proto-grpc"),
    ],
)
def test_missing_optional_packages_are_config_errors(
    profile_doc: dict[str, Any], needs: str
) -> None:
    profile = load_profile({"service_name": "opt", **profile_doc}, environ={})
    with pytest.raises(ConfigError) as exc:
        setup(profile, configure_logs=False)
    assert needs in str(exc.value)


def test_install_global_and_bounded_exit(silent_listener: int) -> None:
    """A process that never calls shutdown still exits promptly with a hung collector."""
    code = textwrap.dedent(
        f"""
        import io, json
        from opentelemetry import propagate, trace
        from aiaas_telemetry import load_profile, setup

        profile = load_profile(
            {{"service_name": "global",
              "otel_exporter": {{"endpoint": "http://127.0.0.1:{silent_listener}",
                                 "timeout_ms": 5000}}}},
            environ={{}},
        )
        tel = setup(profile, install_global=True, shutdown_timeout_s=1.0,
                    log_stream=io.StringIO(), schedule_delay_ms=10)
        assert trace.get_tracer_provider() is tel.tracer_provider
        assert propagate.get_global_textmap() is tel.propagator
        for i in range(5):
            trace.get_tracer("x").start_span(f"s{{i}}").end()
        print(json.dumps({{"ok": True}}))
        """
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True}
    assert elapsed < 15  # the SDK's own exit hook would wait on the 5 s export, and more


def test_span_ids_leave_the_global_random_state_alone(
    make_telemetry: Any, memory_exporter: Any
) -> None:
    # The SDK's default id generator draws from the global ``random``; ours has its own, so a
    # service's seeded ``random`` (and Hypothesis, which checks it between draws) is not moved.
    import random

    tel = make_telemetry(span_exporter=memory_exporter)
    random.seed(7)
    before = random.getstate()
    contexts = []
    for _ in range(50):
        with tel.tracer.start_as_current_span("work") as span:
            contexts.append(span.get_span_context())
    assert random.getstate() == before
    assert len({c.trace_id for c in contexts}) == 50
    assert len({c.span_id for c in contexts}) == 50
    assert all(0 < c.trace_id < 2**128 and 0 < c.span_id < 2**64 for c in contexts)


def test_forked_children_do_not_repeat_the_parents_ids() -> None:
    # Reseeded after fork: without it a child would hand out the very ids its parent hands out
    # next (both continuing one generator state).
    import os

    from aiaas_telemetry._tracing import _ID_GENERATOR

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child reports through the pipe
        os.close(read)
        os.write(write, _ID_GENERATOR.generate_span_id().to_bytes(8, "big"))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = int.from_bytes(pipe.read(), "big")
    os.waitpid(pid, 0)
    assert child != _ID_GENERATOR.generate_span_id()
