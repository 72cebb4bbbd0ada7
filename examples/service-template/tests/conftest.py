"""Fixtures: the service under test, the error body's schema, telemetry and a real uvicorn server.

The service's module is imported here and nowhere else in the tests: that import is the one
line ``tools/new_service.py`` has to rename here. The tests reach the service's name, environment
prefix and console script only through the fixtures below.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aiaas_core import error_response_schema

# The service's package: the one place the tests name it (tools/new_service.py renames it). An
# import_module call rather than an import statement keeps the imports sorted whatever the name.
service_module = importlib.import_module("service_template")


@pytest.fixture(scope="session")
def service() -> ModuleType:
    """The service's package (``SERVICE_NAME``, ``ENV_PREFIX``, ``create_app``, ``main`` ...)."""
    return service_module


@pytest.fixture(scope="session")
def script() -> Path:
    """The installed console script that runs ``<module>:main``."""
    target = f"{service_module.__name__}:main"
    names = [
        ep.name
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.value.replace(" ", "") == target
    ]
    assert names, f"no console script runs {target}: is the project installed?"
    return Path(sys.executable).parent / names[0]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the service's or telemetry's variables, plus ``extra``.

    No collector runs here: traces go to a closed port, so exports fail fast (and are counted)
    and the service must carry on regardless.
    """
    prefixes = (service_module.ENV_PREFIX, "OTEL_", "AIAAS_TELEMETRY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "200"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def clean_env() -> Callable[..., dict[str, str]]:
    """``clean_env(**extra)``: an environment for running the command (see ``_clean_env``)."""
    return _clean_env


@pytest.fixture(scope="session")
def error_validator() -> Callable[[Any], None]:
    """Validates a body against the error body's schema as the installed aiaas-core ships it
    (``aiaas_core.error_response_schema()``); raises if invalid."""
    import jsonschema

    validator = jsonschema.Draft7Validator(
        error_response_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return validator.validate


class LogCapture(io.StringIO):
    """The JSON log lines written by the service, parsed."""

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def log_stream() -> LogCapture:
    return LogCapture()


@pytest.fixture(scope="module")
def spans() -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def telemetry(log_stream: LogCapture, spans: Any) -> Iterator[Any]:
    """The service's telemetry, logging to ``log_stream`` and tracing into ``spans``."""
    from aiaas_telemetry import load_profile, setup

    tel = setup(
        load_profile({"service_name": service_module.SERVICE_NAME}, environ={}),
        span_exporter=spans,
        schedule_delay_ms=10,
        log_stream=log_stream,
    )
    yield tel
    tel.shutdown(timeout_s=1)


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free port; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture(scope="session")
def serve() -> Callable[[Any], Any]:
    """``with serve(app) as base_url:`` runs any ASGI app under a real uvicorn server."""
    return _serve


@pytest.fixture(scope="module")
def base_url(telemetry: Any) -> Iterator[str]:
    """The service's app (``create_app``) served for real."""
    with _serve(service_module.create_app(telemetry)) as url:
        yield url
