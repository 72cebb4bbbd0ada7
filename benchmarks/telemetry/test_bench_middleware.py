"""aiaas-telemetry: the request middleware's CPU cost per request, beside a bare app and a peer.

Each benchmark drives one ASGI request in-process with a prebuilt scope, ``receive`` and ``send``
(no server, no sockets, no event loop: the coroutine is stepped once and completes), so the
figure is the middleware's own CPU work. The added cost of a middleware is its time minus the
bare app's, both measured in this run on this machine.

Variants:

- ``bare``: the app alone;
- ``aiaas, tracing off``: request id, request context, route template, duration histogram,
  in-flight gauge and one JSON access-log line (written to /dev/null);
- ``aiaas, tracing on``: the same plus one sampled SDK server span, trace context extracted from
  an inbound ``traceparent`` and the span queued for export (to an exporter that drops);
- ``aiaas, tracing on, no access log``: the span without the log line;
- ``peer``: OpenTelemetry's ``OpenTelemetryMiddleware`` (opentelemetry-instrumentation-asgi, the
  same SDK tracer provider and exporter) under a minimal prometheus-client histogram middleware,
  with and without its ``receive``/``send`` child spans.

Reference figures measured elsewhere (DESIGN.md): OTel's ASGI middleware 267 µs per request on
this kind of machine (78 µs without its receive/send spans), one SDK span 27 µs, one JSON log line
8 µs, a prometheus histogram middleware 2 µs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from time import perf_counter
from typing import Any, Literal

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Histogram

from aiaas_telemetry import Telemetry, load_profile, setup

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ROUTES = ["/v1/health", "/v1/models", "/v1/items/{id}", "/v1/items/{id}/parts/{part}"]
ROUNDS = 200
ITERATIONS = 25

Scope = dict[str, Any]


class DropExporter(SpanExporter):
    """Accepts spans and throws them away: export cost stays out of the request path."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def make_scope() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/items/42",
        "raw_path": b"/v1/items/42",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"api.example.com"),
            (b"user-agent", b"bench/1.0"),
            (b"accept", b"application/json"),
            (b"x-request-id", b"bench-request-000001"),
            (b"traceparent", TRACEPARENT),
        ],
        "client": ("10.0.0.7", 51234),
        "server": ("10.0.0.1", 8000),
        "state": {},
    }


RESPONSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
}
RESPONSE_BODY = {"type": "http.response.body", "body": b'{"ok":true}'}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def bare_app(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: Any) -> None:
    return None


def driver(app: Any) -> Callable[[], None]:
    """One request: step the coroutine once; every await completes at once."""
    scope = make_scope()

    def run() -> None:
        coro = app(dict(scope), receive, send)
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        raise RuntimeError("the app suspended: it is not driven synchronously")

    return run


@contextmanager
def only_our_log_handler() -> Iterator[None]:
    """Take pytest's log capture off the root logger while measuring.

    pytest formats and stores every INFO record in handlers it adds for each test phase; a
    service has only the JSON handler setup() installed.
    """
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_aiaas_telemetry_handler", False)]
    for handler in others:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in others:
            root.addHandler(handler)


def measure(benchmark: Any, run: Callable[[], None]) -> None:
    run()  # warm caches (label children, span names) outside the measurement
    with only_our_log_handler():
        benchmark.pedantic(run, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=5)
    stats = benchmark.stats.stats
    benchmark.extra_info["us_per_request_median"] = round(stats.median * 1e6, 2)


@pytest.fixture
def devnull() -> Iterator[Any]:
    with open(os.devnull, "w") as stream:
        yield stream


@pytest.fixture
def make_telemetry(devnull: Any) -> Iterator[Callable[..., Telemetry]]:
    made: list[Telemetry] = []

    def make(*, tracing: bool) -> Telemetry:
        profile = load_profile({"service_name": "bench"}, environ={})
        telemetry = setup(
            profile,
            tracing=tracing,
            span_exporter=DropExporter() if tracing else None,
            log_stream=devnull,
            process_metrics=False,
        )
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown(timeout_s=2)


@pytest.mark.benchmark(group="telemetry-middleware")
def test_bare_app(benchmark: Any) -> None:
    measure(benchmark, driver(bare_app))


@pytest.mark.benchmark(group="telemetry-middleware")
def test_aiaas_tracing_off(benchmark: Any, make_telemetry: Any) -> None:
    telemetry = make_telemetry(tracing=False)
    measure(benchmark, driver(telemetry.middleware(bare_app, routes=ROUTES)))


@pytest.mark.benchmark(group="telemetry-middleware")
def test_aiaas_tracing_on(benchmark: Any, make_telemetry: Any) -> None:
    telemetry = make_telemetry(tracing=True)
    measure(benchmark, driver(telemetry.middleware(bare_app, routes=ROUTES)))


@pytest.mark.benchmark(group="telemetry-middleware")
def test_aiaas_tracing_on_no_access_log(benchmark: Any, make_telemetry: Any) -> None:
    telemetry = make_telemetry(tracing=True)
    measure(benchmark, driver(telemetry.middleware(bare_app, routes=ROUTES, access_log=False)))


class PromHistogramMiddleware:
    """The minimal peer for metrics: a duration histogram by method, path and status."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.hist = Histogram(
            "peer_request_duration_seconds",
            "Request duration.",
            ("method", "path", "status"),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        start = perf_counter()
        status = 500

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.hist.labels(scope["method"], scope["path"], str(status)).observe(
                perf_counter() - start
            )


def _peer(make_telemetry: Any, exclude_spans: list[Literal["receive", "send"]] | None) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    telemetry = make_telemetry(tracing=True)
    otel = OpenTelemetryMiddleware(
        bare_app, tracer_provider=telemetry.tracer_provider, exclude_spans=exclude_spans
    )
    return PromHistogramMiddleware(otel, CollectorRegistry())


@pytest.mark.benchmark(group="telemetry-middleware")
def test_peer_otel_asgi_and_prometheus(benchmark: Any, make_telemetry: Any) -> None:
    measure(benchmark, driver(_peer(make_telemetry, None)))


@pytest.mark.benchmark(group="telemetry-middleware")
def test_peer_otel_asgi_no_receive_send_spans_and_prometheus(
    benchmark: Any, make_telemetry: Any
) -> None:
    measure(benchmark, driver(_peer(make_telemetry, ["receive", "send"])))
