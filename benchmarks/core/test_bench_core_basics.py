"""aiaas-core: import time, error rendering and request context.

Reference figures from the platform's Go libraries, to read beside ours: config load 0.2 µs,
request-context middleware 1.46 µs per request.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from typing import Any

import pytest

from aiaas_core import NotFoundError, error_body, error_response, problem_details, request_context

IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| aiaas_core$", re.M)


def _import_time_us() -> int:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import aiaas_core"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    match = IMPORT_LINE.search(out.stderr)
    assert match, out.stderr[-500:]
    return int(match.group(1))


@pytest.mark.benchmark(group="core-import")
def test_import_aiaas_core(benchmark: Any) -> None:
    """Cumulative `import aiaas_core` time (-X importtime), budget 50 ms."""
    samples: list[int] = []

    def run() -> None:
        samples.append(_import_time_us())

    benchmark.pedantic(run, rounds=15, iterations=1)
    median_ms = statistics.median(samples) / 1000
    benchmark.extra_info["import_ms_median"] = round(median_ms, 2)
    benchmark.extra_info["budget_ms"] = 50


@pytest.mark.benchmark(group="core-errors")
def test_error_body(benchmark: Any) -> None:
    exc = NotFoundError("environment 'qa' does not exist")
    benchmark(error_body, exc, request_id="req-12345678", trace_id="0" * 32)


@pytest.mark.benchmark(group="core-errors")
def test_error_response_bytes(benchmark: Any) -> None:
    exc = NotFoundError("environment 'qa' does not exist")
    benchmark(error_response, exc, request_id="req-12345678", trace_id="0" * 32)


@pytest.mark.benchmark(group="core-errors")
def test_problem_details(benchmark: Any) -> None:
    exc = NotFoundError("environment 'qa' does not exist")
    benchmark(problem_details, exc, request_id="req-12345678", trace_id="0" * 32)


@pytest.mark.benchmark(group="core-context")
def test_request_context_enter_exit(benchmark: Any) -> None:
    """What a request-context middleware pays per request (Go reference: 1.46 µs)."""
    inbound = "req-0af7651916cd43dd"

    def run() -> None:
        with request_context(inbound, trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
            pass

    benchmark(run)
    benchmark.extra_info["go_reference_us"] = 1.46
