"""The start-up version-skew check: services (log, gauge, degraded /ready), commands (exit 78)."""

from __future__ import annotations

import io
import subprocess
import sys
from importlib import metadata
from typing import Any

import pytest

from aiaas_core import HealthRegistry
from aiaas_telemetry import (
    EXIT_VERSION_SKEW,
    VERSION_SKEW_PROBLEMS,
    check_cli_compatibility,
    check_service_compatibility,
)

# Stand-ins for what is installed: the service and the aiaas packages it composes.
FITTING = {
    "my-service": ("1.0.0", ["aiaas-core>=0.1,<0.2", "aiaas-telemetry>=0.1,<0.2", "httpx"]),
    "aiaas-core": ("0.1.4", ["attrs>=23.1"]),
    "aiaas-telemetry": ("0.1.0", ["aiaas-core>=0.1,<0.2"]),
}
SKEWED = {
    **FITTING,
    "aiaas-core": ("0.2.0", ["attrs>=23.1"]),  # newer than both ranges allow
}


async def test_a_fitting_install_is_quiet_and_ready(make_telemetry: Any, log_stream: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    health = HealthRegistry()
    report = check_service_compatibility("my-service", telemetry, health, distributions=FITTING)
    assert report.ok
    assert report.versions == {
        "my-service": "1.0.0",
        "aiaas-core": "0.1.4",
        "aiaas-telemetry": "0.1.0",
    }
    assert telemetry.registry.get_sample_value(VERSION_SKEW_PROBLEMS) == 0.0
    ready = await health.run("readiness")
    assert ready.http_status == 200
    check = ready.to_dict()["checks"]["version-skew"]
    assert check["status"] == "ok"
    assert check["details"]["distributions"]["aiaas-core"] == "0.1.4"
    assert "version skew" not in log_stream.getvalue()


async def test_a_skewed_install_warns_counts_and_degrades_ready(
    make_telemetry: Any, log_stream: Any
) -> None:
    telemetry = make_telemetry(tracing=False)
    health = HealthRegistry()
    report = check_service_compatibility("my-service", telemetry, health, distributions=SKEWED)
    assert [p.distribution for p in report.problems] == ["aiaas-telemetry", "my-service"]
    assert telemetry.registry.get_sample_value(VERSION_SKEW_PROBLEMS) == 2.0

    lines = [r for r in log_stream.by_logger("test-service") if "version skew" in r["message"]]
    assert len(lines) == 2
    assert all(line["level"] == "warn" for line in lines)
    assert lines[1]["message"].startswith(
        "aiaas version skew: my-service 1.0.0 requires aiaas-core>=0.1,<0.2, but aiaas-core "
        "0.2.0 is installed"
    )

    ready = (await health.run("readiness")).to_dict()
    assert ready["status"] == "degraded"  # still serving: 200, but the body says what is wrong
    check = ready["checks"]["version-skew"]
    assert check["critical"] is False
    assert "2 installed aiaas distribution(s) outside a declared range" in check["reason"]
    assert [p["distribution"] for p in check["details"]["problems"]] == [
        "aiaas-telemetry",
        "my-service",
    ]

    # A second app on the same telemetry updates the same gauge (no duplicate registration).
    check_service_compatibility("my-service", telemetry, distributions=FITTING)
    assert telemetry.registry.get_sample_value(VERSION_SKEW_PROBLEMS) == 0.0


def test_a_missing_sibling_is_a_problem(make_telemetry: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    without = {k: v for k, v in FITTING.items() if k != "aiaas-telemetry"}
    report = check_service_compatibility("my-service", telemetry, distributions=without)
    (problem,) = report.problems
    assert problem.distribution == "my-service"
    assert "aiaas-telemetry is not installed; install 'aiaas-telemetry>=0.1,<0.2'" in str(problem)


def test_the_installed_distributions_are_read_from_the_program_down(make_telemetry: Any) -> None:
    """No stand-ins: aiaas-telemetry's own metadata and aiaas-core's, as installed here."""
    telemetry = make_telemetry(tracing=False)
    report = check_service_compatibility("aiaas-telemetry", telemetry)
    assert report.ok, str(report)
    assert report.versions == {
        "aiaas-core": metadata.version("aiaas-core"),
        "aiaas-telemetry": metadata.version("aiaas-telemetry"),
    }
    assert check_cli_compatibility("aiaas-telemetry") is None
    # A program that is not installed has nothing to check.
    assert check_service_compatibility("no-such-program", telemetry).versions == {}


def test_a_command_refuses_with_its_own_exit_status() -> None:
    assert check_cli_compatibility("my-service", distributions=FITTING) is None
    err = io.StringIO()
    assert check_cli_compatibility("my-service", distributions=SKEWED, stream=err) == 78
    assert EXIT_VERSION_SKEW == 78
    text = err.getvalue()
    assert text.startswith(
        "my-service: error VERSION_SKEW: the installed aiaas packages do not fit"
    )
    assert "  - my-service 1.0.0 requires aiaas-core>=0.1,<0.2, but aiaas-core 0.2.0" in text
    assert "Install versions inside the declared ranges" in text


def test_a_command_writes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cli_compatibility("my-service", distributions=SKEWED) == EXIT_VERSION_SKEW
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error VERSION_SKEW" in captured.err


def test_the_check_is_cheap_to_import() -> None:
    """The module loads neither prometheus-client nor OpenTelemetry until a service asks."""
    code = (
        "import sys; from aiaas_telemetry import check_cli_compatibility as c; "
        "c('aiaas-telemetry'); "
        "print([m for m in ('opentelemetry', 'prometheus_client') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
