"""Shared fixtures: the contracts, a real uvicorn server, a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from aiaas_core import error_response_schema

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def error_schema() -> dict[str, Any]:
    """The error body's schema as the installed aiaas-core ships it."""
    return error_response_schema()


@pytest.fixture(scope="session")
def profile_schema() -> dict[str, Any]:
    """The telemetry profile contract (tests/contracts/telemetry-profile.schema.json)."""
    return json.loads((CONTRACTS_DIR / "telemetry-profile.schema.json").read_text("utf-8"))


@pytest.fixture
def error_validator(error_schema: dict[str, Any]) -> Callable[[Any], None]:
    import jsonschema

    validator = jsonschema.Draft7Validator(
        error_schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return validator.validate


# --------------------------------------------------------------------------- logs


class LogCapture(io.StringIO):
    """A stream for setup(log_stream=...) that parses its JSON lines."""

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]

    def by_logger(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("logger") == name]


@pytest.fixture
def log_stream() -> LogCapture:
    return LogCapture()


# --------------------------------------------------------------------------- ports and servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers: a hung collector."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server() -> Callable[[Any], Any]:
    return serve


# --------------------------------------------------------------------------- OTLP receiver


class OtlpReceiver:
    """A real OTLP/HTTP traces endpoint on 127.0.0.1 that decodes what exporters POST."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append(request)
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.lock:
            requests = list(self.requests)
        for request in requests:
            for rs in request.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs: dict[str, Any] = {}
                        for a in span.attributes:
                            v = a.value
                            kind = v.WhichOneof("value")
                            attrs[a.key] = getattr(v, kind) if kind else None
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "attributes": attrs,
                                "status_code": span.status.code,
                                "events": [e.name for e in span.events],
                                "resource": resource,
                            }
                        )
        return out

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.02)
        raise AssertionError(f"spans never matched; got {self.spans()!r}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# --------------------------------------------------------------------------- ASGI driving


class Recorder:
    """Drive an ASGI app in-process: prebuilt scope, receive and a recording send."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(next(m for m in self.messages if m["type"] == "http.response.start")["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return dict(start.get("headers", []))

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    def json(self) -> Any:
        return json.loads(self.body)


def http_scope(
    method: str = "GET", path: str = "/", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def body_receiver(*chunks: bytes) -> Callable[[], Any]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or (b"",))
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


async def call(app: Any, scope: dict[str, Any], receive: Any = None) -> Recorder:
    recorder = Recorder()
    await app(scope, receive or body_receiver(), recorder.send)
    return recorder


@pytest.fixture
def asgi() -> Any:
    """Helpers to drive ASGI apps in-process: asgi.call, asgi.scope, asgi.body."""

    class Helpers:
        scope = staticmethod(http_scope)
        body = staticmethod(body_receiver)
        call = staticmethod(call)

    return Helpers


# --------------------------------------------------------------------------- telemetry


@pytest.fixture
def make_telemetry(log_stream: LogCapture) -> Iterator[Callable[..., Any]]:
    """setup() with test defaults (JSON logs into ``log_stream``); shut down afterwards."""
    from aiaas_telemetry import load_profile, setup

    made: list[Any] = []

    def make(profile: Any = None, **kwargs: Any) -> Any:
        if profile is None:
            profile = load_profile({"service_name": "test-service"}, environ={})
        kwargs.setdefault("log_stream", log_stream)
        kwargs.setdefault("environ", {})  # no OTEL_BSP_* from the shell running the tests
        telemetry = setup(profile, **kwargs)
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout_s=1.0)


@pytest.fixture
def memory_exporter() -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


# --------------------------------------------------------------------------- a demo ASGI app

DEMO_ROUTES = [
    "/v1/items/{id}",
    "/v1/echo",
    "/v1/upload",
    "/boom",
    "/missing",
    "/health",
    "/stream-fail",
    "/no-response",
]


async def _respond(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"x-app", b"demo")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def demo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app exercising every middleware path."""
    import logging

    from opentelemetry import trace

    from aiaas_core import NotFoundError, get_request_id, get_span_id, get_trace_id
    from aiaas_telemetry import read_body, read_json

    assert scope["type"] == "http"
    path = scope["path"]
    log = logging.getLogger("demo.app")
    if path.startswith("/v1/items/"):
        log.info(
            "fetching item",
            extra={
                "item": path.rsplit("/", 1)[1],
                "authorization": "Bearer demo-secret-token",
                "nested": {"db": {"password": "demo-db-password"}},
            },
        )
        current = trace.get_current_span().get_span_context()
        await _respond(
            send,
            200,
            {
                "id": path.rsplit("/", 1)[1],
                "request_id": get_request_id(),
                "trace_id": get_trace_id(),
                "span_id": get_span_id(),
                "otel_trace_id": format(current.trace_id, "032x"),
            },
        )
    elif path == "/v1/echo":
        data = await read_json(scope, receive, max_body_bytes=1 << 20)
        await _respond(send, 200, {"echo": data})
    elif path == "/v1/upload":
        body = await read_body(receive)
        await _respond(send, 200, {"size": len(body)})
    elif path == "/boom":
        raise RuntimeError("kaboom: internal detail")
    elif path == "/missing":
        raise NotFoundError("No such item: check the id")
    elif path == "/health":
        await _respond(send, 200, {"status": "ok"})
    elif path == "/stream-fail":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("failed mid-stream")
    elif path == "/no-response":
        return
    else:
        await _respond(send, 404, {"error": "not here"})


@pytest.fixture
def demo() -> Any:
    return demo_app
