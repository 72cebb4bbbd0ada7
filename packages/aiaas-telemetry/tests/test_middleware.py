"""TelemetryMiddleware driven in-process: ids, spans, metrics, access log, error bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from aiaas_core import Actor
from aiaas_telemetry import TelemetryMiddleware, load_profile

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@pytest.fixture
def tel(make_telemetry: Any, memory_exporter: Any) -> Any:
    return make_telemetry(span_exporter=memory_exporter, schedule_delay_ms=10)


def spans(tel: Any, exporter: Any) -> list[Any]:
    tel.tracer_provider.force_flush()
    return list(exporter.get_finished_spans())


def sample(tel: Any, name: str, **labels: str) -> float:
    return tel.registry.get_sample_value(name, labels) or 0.0


async def test_request_id_trace_and_route_template(
    tel: Any, memory_exporter: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    scope = asgi.scope(
        "GET",
        "/v1/items/42",
        [
            (b"x-request-id", b"client-req-0001"),
            (b"traceparent", TRACEPARENT),
            (b"user-agent", b"t/1"),
        ],
    )
    res = await asgi.call(app, scope)
    assert res.status == 200
    assert res.headers[b"x-request-id"] == b"client-req-0001"
    body = res.json()
    assert body["request_id"] == "client-req-0001"
    assert body["trace_id"] == TRACE_ID  # the client's trace continues
    assert body["otel_trace_id"] == TRACE_ID  # the server span is current in the handler
    (span,) = spans(tel, memory_exporter)
    assert span.name == "GET /v1/items/{id}"
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert body["span_id"] == format(span.context.span_id, "016x")
    attrs = dict(span.attributes)
    assert attrs["http.route"] == "/v1/items/{id}"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/v1/items/42"
    assert attrs["aiaas.request_id"] == "client-req-0001"
    assert attrs["user_agent.original"] == "t/1"
    labels = {"method": "GET", "route": "/v1/items/{id}", "status_class": "2xx"}
    assert sample(tel, "http_server_request_duration_seconds_count", **labels) == 1
    assert sample(tel, "http_server_active_requests", method="GET", route="/v1/items/{id}") == 0
    (access,) = log_stream.by_logger("aiaas.access")
    assert access["message"] == "GET /v1/items/42 200"
    assert access["http.route"] == "/v1/items/{id}"
    assert access["request_id"] == "client-req-0001"
    assert access["trace_id"] == TRACE_ID
    (app_line,) = log_stream.by_logger("demo.app")
    assert app_line["trace_id"] == TRACE_ID
    assert app_line["span_id"] == body["span_id"]
    assert app_line["authorization"] == "[REDACTED]"
    assert "demo-db-password" not in json.dumps(app_line)


async def test_malformed_request_id_is_replaced(tel: Any, demo: Any, asgi: Any) -> None:
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    res = await asgi.call(
        app, asgi.scope("GET", "/v1/items/1", [(b"x-request-id", b"bad id\x07<script>")])
    )
    rid = res.headers[b"x-request-id"].decode()
    assert rid != "bad id\x07<script>"
    assert len(rid) == 32
    assert res.json()["request_id"] == rid


async def test_unknown_route_gets_a_fixed_name(
    tel: Any, memory_exporter: Any, demo: Any, asgi: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    for path in ("/a/1", "/b/2", "/c/3"):
        res = await asgi.call(app, asgi.scope("GET", path))
        assert res.status == 404
    names = {s.name for s in spans(tel, memory_exporter)}
    assert names == {"GET <unmatched>"}
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="<unmatched>",
            status_class="4xx",
        )
        == 3
    )


async def test_unknown_methods_share_one_label(tel: Any, demo: Any, asgi: Any) -> None:
    app = tel.middleware(demo, routes=["/health"])
    await asgi.call(app, asgi.scope("BREW", "/health"))
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="_OTHER",
            route="/health",
            status_class="2xx",
        )
        == 1
    )


async def test_unhandled_exception_is_a_500_without_details(
    *, tel: Any, memory_exporter: Any, demo: Any, asgi: Any, log_stream: Any, error_validator: Any
) -> None:
    app = tel.middleware(demo, routes=["/boom"])
    res = await asgi.call(app, asgi.scope("GET", "/boom", [(b"traceparent", TRACEPARENT)]))
    assert res.status == 500
    body = res.json()
    error_validator(body)
    assert body["code"] == "INTERNAL_ERROR"
    assert body["trace_id"] == TRACE_ID
    assert body["request_id"] == res.headers[b"x-request-id"].decode()
    assert b"kaboom" not in res.body
    assert b"Traceback" not in res.body
    (err,) = log_stream.by_logger("aiaas.http")
    assert err["level"] == "error"
    assert "kaboom: internal detail" in err["exception.stacktrace"]
    assert err["trace_id"] == TRACE_ID
    (span,) = spans(tel, memory_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert (
        sample(tel, "http_server_errors_total", method="GET", route="/boom", code="INTERNAL_ERROR")
        == 1
    )
    (access,) = log_stream.by_logger("aiaas.access")
    assert access["error.code"] == "INTERNAL_ERROR"
    assert access["http.status_code"] == 500


async def test_aiaas_errors_keep_their_status(
    tel: Any, demo: Any, asgi: Any, log_stream: Any, error_validator: Any
) -> None:
    app = tel.middleware(demo, routes=["/missing"])
    res = await asgi.call(app, asgi.scope("GET", "/missing"))
    assert res.status == 404
    error_validator(res.json())
    assert res.json()["error"] == "No such item: check the id"
    assert log_stream.by_logger("aiaas.http") == []  # a 4xx is not a server error
    assert (
        sample(tel, "http_server_errors_total", method="GET", route="/missing", code="NOT_FOUND")
        == 1
    )


async def test_problem_details_rendering(tel: Any, demo: Any, asgi: Any) -> None:
    app = tel.middleware(demo, routes=["/missing"], problem_details=True)
    res = await asgi.call(app, asgi.scope("GET", "/missing"))
    assert res.status == 404
    assert res.headers[b"content-type"] == b"application/problem+json"
    assert res.json()["type"].endswith("not-found")


async def test_bad_content_length_is_a_400(
    tel: Any, demo: Any, asgi: Any, error_validator: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/upload"])
    for headers in (
        [(b"content-length", b"abc")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"5"), (b"content-length", b"6")],
    ):
        res = await asgi.call(app, asgi.scope("POST", "/v1/upload", headers))
        assert res.status == 400
        body = res.json()
        error_validator(body)
        assert body["code"] == "REQUEST_HEADER_INVALID"
    assert (
        sample(
            tel,
            "http_server_errors_total",
            method="POST",
            route="/v1/upload",
            code="REQUEST_HEADER_INVALID",
        )
        == 3
    )


async def test_declared_oversize_body_is_refused_before_the_app(
    make_telemetry: Any, asgi: Any, error_validator: Any
) -> None:
    tel = make_telemetry(tracing=False)
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    wrapped = tel.middleware(app, routes=["/up"], max_body_bytes=10)
    res = await asgi.call(wrapped, asgi.scope("POST", "/up", [(b"content-length", b"11")]))
    assert res.status == 413
    error_validator(res.json())
    assert res.json()["code"] == "REQUEST_TOO_LARGE"
    assert not called
    ok = await asgi.call(
        tel.middleware(app, routes=["/up"], max_body_bytes=None),
        asgi.scope("POST", "/up", [(b"content-length", b"11")]),
    )
    assert called  # with no limit the app runs (and, answering nothing, gets a 500 body)
    assert ok.status == 500
    assert ok.json()["code"] == "INTERNAL_ERROR"


async def test_streamed_oversize_body_is_cut_off(
    tel: Any, demo: Any, asgi: Any, error_validator: Any, log_stream: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/upload"], max_body_bytes=10)
    res = await asgi.call(
        app,
        asgi.scope("POST", "/v1/upload", [(b"transfer-encoding", b"chunked")]),
        asgi.body(b"12345", b"67890", b"X", b"more"),
    )
    assert res.status == 413
    error_validator(res.json())
    assert (
        sample(
            tel,
            "http_server_errors_total",
            method="POST",
            route="/v1/upload",
            code="REQUEST_TOO_LARGE",
        )
        == 1
    )
    assert log_stream.by_logger("aiaas.http") == []  # the app's read failure is expected
    small = await asgi.call(
        app,
        asgi.scope("POST", "/v1/upload", [(b"transfer-encoding", b"chunked")]),
        asgi.body(b"12345", b"67890"),
    )
    assert small.status == 200
    assert small.json() == {"size": 10}


async def test_app_that_keeps_sending_after_the_413(make_telemetry: Any, asgi: Any) -> None:
    tel = make_telemetry(tracing=False)

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ignored"})

    app = tel.middleware(stubborn, routes=["/up"], max_body_bytes=3)
    res = await asgi.call(app, asgi.scope("PUT", "/up"), asgi.body(b"abcd", b"e"))
    assert res.status == 413
    assert b"ignored" not in res.body
    assert len([m for m in res.messages if m["type"] == "http.response.start"]) == 1


async def test_bad_json_gets_the_error_body(
    tel: Any, demo: Any, asgi: Any, error_validator: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/echo"])
    json_ct = [(b"content-type", b"application/json")]
    good = await asgi.call(
        app, asgi.scope("POST", "/v1/echo", json_ct), asgi.body(b'{"a": [1, 2]}')
    )
    assert good.json() == {"echo": {"a": [1, 2]}}
    bad = await asgi.call(app, asgi.scope("POST", "/v1/echo", json_ct), asgi.body(b'{"a": '))
    assert bad.status == 400
    error_validator(bad.json())
    assert bad.json()["code"] == "REQUEST_JSON_INVALID"
    wrong_type = await asgi.call(
        app, asgi.scope("POST", "/v1/echo", [(b"content-type", b"text/plain")]), asgi.body(b"{}")
    )
    assert wrong_type.status == 415
    error_validator(wrong_type.json())


async def test_failure_after_response_started(
    tel: Any, memory_exporter: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    app = tel.middleware(demo, routes=["/stream-fail"])
    res = await asgi.call(app, asgi.scope("GET", "/stream-fail"))
    assert res.status == 200  # too late for an error body
    assert res.body == b"partial"
    (error,) = log_stream.by_logger("aiaas.http")
    assert "after the response started" in error["message"]
    assert "failed mid-stream" in error["exception.stacktrace"]
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="/stream-fail",
            status_class="5xx",
        )
        == 1
    )
    assert (
        sample(
            tel,
            "http_server_errors_total",
            method="GET",
            route="/stream-fail",
            code="INTERNAL_ERROR",
        )
        == 1
    )


async def test_app_returning_without_a_response_is_a_500(
    tel: Any, demo: Any, asgi: Any, log_stream: Any, error_validator: Any
) -> None:
    app = tel.middleware(demo, routes=["/no-response"])
    res = await asgi.call(app, asgi.scope("GET", "/no-response"))
    assert res.status == 500
    error_validator(res.json())
    assert any("without a response" in r["message"] for r in log_stream.by_logger("aiaas.http"))
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="/no-response",
            status_class="5xx",
        )
        == 1
    )


async def test_excluded_paths_get_only_the_request_id(
    tel: Any, memory_exporter: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    app = tel.middleware(demo, routes=["/health", "/boom"], exclude_paths=["/health", "/boom"])
    res = await asgi.call(app, asgi.scope("GET", "/health", [(b"x-request-id", b"probe-000001")]))
    assert res.status == 200
    assert res.headers[b"x-request-id"] == b"probe-000001"
    boom = await asgi.call(app, asgi.scope("GET", "/boom"))
    assert boom.status == 500
    assert boom.json()["code"] == "INTERNAL_ERROR"
    assert spans(tel, memory_exporter) == []
    assert log_stream.by_logger("aiaas.access") == []
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="GET",
            route="/health",
            status_class="2xx",
        )
        == 0
    )


async def test_metrics_path_is_served(tel: Any, demo: Any, asgi: Any) -> None:
    app = tel.middleware(demo, routes=["/health"], metrics_path="/metrics")
    await asgi.call(app, asgi.scope("GET", "/health"))
    res = await asgi.call(app, asgi.scope("GET", "/metrics"))
    assert res.status == 200
    assert b"http_server_request_duration_seconds_bucket" in res.body


async def test_non_http_scopes_pass_through(tel: Any, asgi: Any) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    wrapped = tel.middleware(app)
    await wrapped({"type": "lifespan"}, asgi.body(), None)
    await wrapped({"type": "websocket", "path": "/ws", "headers": []}, asgi.body(), None)
    assert seen == ["lifespan", "websocket"]


async def test_tracing_off_still_gives_ids_and_metrics(
    make_telemetry: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    tel = make_telemetry(tracing=False)
    assert tel.tracer is None
    assert tel.tracer_provider is None
    assert tel.span_processor is None
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    res = await asgi.call(app, asgi.scope("GET", "/v1/items/7", [(b"traceparent", TRACEPARENT)]))
    assert res.status == 200
    assert res.json()["trace_id"] is None
    assert res.json()["request_id"] == res.headers[b"x-request-id"].decode()
    (access,) = log_stream.by_logger("aiaas.access")
    assert access["request_id"] == res.json()["request_id"]


async def test_access_log_sampling_keeps_errors(
    make_telemetry: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    from aiaas_telemetry import load_profile

    profile = load_profile({"service_name": "sampled", "log": {"sampling_rate": 0}}, environ={})
    tel = make_telemetry(profile, tracing=False)
    app = tel.middleware(demo, routes=["/health", "/boom"])
    for _ in range(3):
        await asgi.call(app, asgi.scope("GET", "/health"))
    await asgi.call(app, asgi.scope("GET", "/boom"))
    lines = log_stream.by_logger("aiaas.access")
    assert [line["http.status_code"] for line in lines] == [500]


async def test_access_log_sampling_leaves_the_global_random_state_alone(
    make_telemetry: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    # A service's seeded ``random`` (and Hypothesis, which checks it between draws) must not be
    # moved by the middleware deciding whether to log a request.
    import random

    from aiaas_telemetry import load_profile

    profile = load_profile({"service_name": "sampled", "log": {"sampling_rate": 0.5}}, environ={})
    tel = make_telemetry(profile, tracing=False)
    app = tel.middleware(demo, routes=["/health"])
    random.seed(99)
    before = random.getstate()
    for _ in range(200):
        await asgi.call(app, asgi.scope("GET", "/health"))
    assert random.getstate() == before
    logged = len(log_stream.by_logger("aiaas.access"))
    assert 0 < logged < 200  # sampled: some kept, some not (each 2**-200 likely otherwise)


async def test_access_log_can_be_turned_off(
    tel: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    app = tel.middleware(demo, routes=["/health"], access_log=False)
    await asgi.call(app, asgi.scope("GET", "/health"))
    assert log_stream.by_logger("aiaas.access") == []


async def test_route_from_scope_after_the_app(tel: Any, memory_exporter: Any, asgi: Any) -> None:
    class Route:
        path = "/users/{uid}"
        endpoint = object()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = Route()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await asgi.call(tel.middleware(app), asgi.scope("DELETE", "/users/99"))
    (span,) = spans(tel, memory_exporter)
    assert span.name == "DELETE /users/{uid}"
    assert span.attributes["http.route"] == "/users/{uid}"
    assert (
        sample(
            tel,
            "http_server_request_duration_seconds_count",
            method="DELETE",
            route="/users/{uid}",
            status_class="2xx",
        )
        == 1
    )


async def test_a_failing_resolver_does_not_fail_the_request(
    tel: Any, demo: Any, asgi: Any, log_stream: Any
) -> None:
    def resolver(scope: Any) -> str | None:
        raise KeyError("bug")

    res = await asgi.call(tel.middleware(demo, routes=resolver), asgi.scope("GET", "/health"))
    assert res.status == 200
    assert any("route resolver failed" in r["message"] for r in log_stream.by_logger("aiaas.http"))


def test_constructor_validates(tel: Any, demo: Any) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        TelemetryMiddleware(demo, tel, max_body_bytes=-1)
    with pytest.raises(TypeError):
        TelemetryMiddleware(demo, tel, routes="/one/string")
    with pytest.raises(TypeError):
        TelemetryMiddleware(demo, tel, routes=42)


async def test_label_caches_are_bounded(tel: Any, asgi: Any, monkeypatch: Any) -> None:
    import aiaas_telemetry._middleware as mw

    monkeypatch.setattr(mw, "_CACHE_LIMIT", 2)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = tel.middleware(app, routes=lambda scope: scope["path"])
    for i in range(5):
        res = await asgi.call(wrapped, asgi.scope("GET", f"/p{i}"))
        assert res.status == 200
    assert len(wrapped._names) == 2
    assert len(wrapped._duration_children) == 2
    assert len(wrapped._active_children) == 2


# --------------------------------------------------------------------------- the lean hot path


@contextmanager
def root_handlers(*handlers: logging.Handler) -> Iterator[None]:
    """Only ``handlers`` on the root logger (pytest's capture handlers taken off meanwhile)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = list(handlers)
    try:
        yield
    finally:
        root.handlers[:] = saved


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_access_line_is_the_same_written_directly_or_through_logging(
    tel: Any, memory_exporter: Any, asgi: Any, log_stream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the JSON handler listening, the access line skips the LogRecord; same line."""
    from aiaas_telemetry import _middleware

    used: list[bool] = []
    original = _middleware.emit_access

    def spy(*args: Any) -> bool:
        used.append(original(*args))
        return used[-1]

    monkeypatch.setattr(_middleware, "emit_access", spy)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["aiaas.actor"] = Actor("key_abc", ("reader",), "api_key")
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    wrapped = tel.middleware(app, routes=["/v1/items/{id}"])
    headers = [(b"x-request-id", b"same-request-01"), (b"user-agent", b"t/2")]
    records = _Records()
    with root_handlers(tel.log_handler):
        await asgi.call(wrapped, asgi.scope("GET", "/v1/items/7", headers))
    with root_handlers(tel.log_handler, records):  # another handler: the usual way
        await asgi.call(wrapped, asgi.scope("GET", "/v1/items/7", headers))
    assert used == [True, False]
    direct, usual = log_stream.by_logger("aiaas.access")
    (record,) = [r for r in records.records if r.name == "aiaas.access"]
    assert record.getMessage() == "GET /v1/items/7 404"
    for line in (direct, usual):  # what differs between two requests
        for key in ("time", "duration_ms", "trace_id", "span_id"):
            line.pop(key)
    assert direct == usual
    assert direct == {
        "level": "info",
        "service": "test-service",
        "message": "GET /v1/items/7 404",
        "logger": "aiaas.access",
        "request_id": "same-request-01",
        "actor.subject": "key_abc",
        "http.method": "GET",
        "http.route": "/v1/items/{id}",
        "http.status_code": 404,
        "url.path": "/v1/items/7",
        "client.address": "127.0.0.1",
        "user_agent": "t/2",
    }
    first, second = spans(tel, memory_exporter)
    for span in (first, second):
        assert span.attributes["aiaas.actor.subject"] == "key_abc"
        assert span.attributes["http.response.status_code"] == 404
        assert "client.address" not in span.attributes  # in the access log, not the span


async def test_error_counter_children_are_cached(tel: Any, demo: Any, asgi: Any) -> None:
    app = tel.middleware(demo, routes=["/missing"])
    for _ in range(3):
        await asgi.call(app, asgi.scope("GET", "/missing"))
    assert len(app._error_children) == 1
    (code,) = {key[2] for key in app._error_children}
    labels = {"method": "GET", "route": "/missing", "code": code}
    assert sample(tel, "http_server_errors_total", **labels) == 3


# --------------------------------------------------------------------------- traceparent fast path


@pytest.mark.parametrize(
    "header",
    [
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"garbage",
    ],
)
def test_lone_traceparent_gives_what_the_propagator_gives(header: bytes) -> None:
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from aiaas_telemetry._middleware import _remote_parent

    expected = get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": header.decode()})
    ).get_span_context()
    fast = _remote_parent(header)
    if fast is None:  # not canonical: the middleware asks the propagator
        return
    got = get_current_span(fast).get_span_context()
    assert got == expected
    assert got.is_remote
    assert got.trace_flags == expected.trace_flags
    assert got.trace_state == expected.trace_state


def test_canonical_traceparents_take_the_fast_path() -> None:
    from aiaas_telemetry._middleware import _remote_parent

    assert _remote_parent(TRACEPARENT) is not None
    assert _remote_parent(b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01") is None
    assert _remote_parent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01") is None
    assert _remote_parent(TRACEPARENT + b"-x") is None


@pytest.mark.parametrize("propagators", [["tracecontext"], ["baggage", "tracecontext"]])
async def test_the_trace_continues_with_other_propagator_lists(
    propagators: list[str], make_telemetry: Any, memory_exporter: Any, demo: Any, asgi: Any
) -> None:
    profile = load_profile(
        {"service_name": "props", "tracing": {"propagators": propagators}}, environ={}
    )
    tel = make_telemetry(profile, span_exporter=memory_exporter)
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    for header in (TRACEPARENT, unsampled):
        res = await asgi.call(app, asgi.scope("GET", "/v1/items/1", [(b"traceparent", header)]))
        assert res.json()["trace_id"] == TRACE_ID
    tel.tracer_provider.force_flush()
    (span,) = memory_exporter.get_finished_spans()  # the unsampled parent: no span recorded
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote


async def test_traceparent_with_tracestate_goes_through_the_propagator(
    tel: Any, memory_exporter: Any, demo: Any, asgi: Any
) -> None:
    app = tel.middleware(demo, routes=["/v1/items/{id}"])
    headers = [(b"traceparent", TRACEPARENT), (b"tracestate", b"vendor=opaque")]
    res = await asgi.call(app, asgi.scope("GET", "/v1/items/1", headers))
    assert res.json()["trace_id"] == TRACE_ID
    (span,) = spans(tel, memory_exporter)
    assert span.parent.trace_state.get("vendor") == "opaque"


# --------------------------------------------------------------------------- issue 17


def _tagged(exc: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"message": exc.message, "code": exc.code.lower()}}).encode()
    return exc.status, [(b"content-type", b"application/json")], body


async def test_error_renderers_answer_the_paths_under_their_prefix(
    make_telemetry: Any, asgi: Any, error_validator: Any
) -> None:
    from aiaas_core import NotFoundError

    tel = make_telemetry(tracing=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].endswith("/silent"):
            return  # answers nothing: a 500
        raise NotFoundError("no such thing")

    wrapped = tel.middleware(app, max_body_bytes=10, error_renderers={"/v1/": _tagged})
    big = await asgi.call(wrapped, asgi.scope("POST", "/v1/up", [(b"content-length", b"11")]))
    assert (big.status, big.json()["error"]["code"]) == (413, "request_too_large")
    assert big.headers[b"x-request-id"]
    missing = await asgi.call(wrapped, asgi.scope("GET", "/v1/thing"))
    assert missing.json() == {"error": {"message": "no such thing", "code": "not_found"}}
    silent = await asgi.call(wrapped, asgi.scope("GET", "/v1/silent"))
    assert (silent.status, silent.json()["error"]["code"]) == (500, "internal_error")
    other = await asgi.call(wrapped, asgi.scope("GET", "/thing"))
    assert other.status == 404
    error_validator(other.json())  # outside the prefix: the shared error body
    with pytest.raises(ValueError, match="starting with '/'"):
        tel.middleware(app, error_renderers={"v1": _tagged})
    with pytest.raises(TypeError, match="not callable"):
        tel.middleware(app, error_renderers={"/v1/": None})
    with pytest.raises(TypeError, match="must map"):
        TelemetryMiddleware(app, tel, error_renderers=[("/v1/", _tagged)])  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_client_that_left_is_a_499_not_a_server_error(
    make_telemetry: Any, asgi: Any, log_stream: Any, method: str
) -> None:
    tel = make_telemetry(tracing=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # reading the body until the client is gone: nobody to answer

    chunks = [
        {"type": "http.request", "body": b'{"half": ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    wrapped = tel.middleware(app, routes=["/v1/upload"])
    res = await asgi.call(wrapped, asgi.scope(method, "/v1/upload"), receive)
    assert res.messages == []  # nothing sent to a closed connection
    assert log_stream.by_logger("aiaas.http") == []
    labels = {"method": method, "route": "/v1/upload"}
    assert sample(tel, "http_server_errors_total", code="CLIENT_DISCONNECTED", **labels) == 1
    assert sample(tel, "http_server_errors_total", code="INTERNAL_ERROR", **labels) == 0
    count = "http_server_request_duration_seconds_count"
    assert sample(tel, count, status_class="4xx", **labels) == 1
    assert sample(tel, count, status_class="5xx", **labels) == 0
    (access,) = log_stream.by_logger("aiaas.access")
    assert access["http.status_code"] == 499
    assert access["error.code"] == "CLIENT_DISCONNECTED"


async def test_a_raw_socket_that_sends_half_a_body_and_closes(
    make_telemetry: Any, server: Any, log_stream: Any
) -> None:
    import asyncio
    import socket
    from urllib.parse import urlsplit

    tel = make_telemetry(tracing=False)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            loop.call_soon_threadsafe(done.set)

    with server(tel.middleware(app, routes=["/v1/upload"])) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"x" * 400
            )
        await asyncio.wait_for(done.wait(), 10)
        labels = {"method": "POST", "route": "/v1/upload"}
        for _ in range(500):  # the middleware's bookkeeping follows the app's return
            if sample(tel, "http_server_errors_total", code="CLIENT_DISCONNECTED", **labels):
                break
            await asyncio.sleep(0.01)
    assert sample(tel, "http_server_errors_total", code="CLIENT_DISCONNECTED", **labels) == 1
    count = "http_server_request_duration_seconds_count"
    assert sample(tel, count, status_class="5xx", **labels) == 0
    assert [r for r in log_stream.records() if r["level"] == "error"] == []


@pytest.mark.parametrize(
    "amounts",
    [
        [0.0, 0.005, 0.0050001, 0.1, 2.5, 10.0, 10.5, 1e9, float("inf")],  # edges, beyond the last
        [0.0001] * 5 + [0.25, 0.25],
    ],
)
def test_metric_shortcuts_count_what_the_public_methods_count(amounts: list[float]) -> None:
    """The middleware's histogram observe and gauge add record the very samples the
    prometheus-client methods do, bucket edges included; anything else gets the public method."""
    from prometheus_client import CollectorRegistry, Gauge, Histogram

    from aiaas_telemetry._middleware import _gauge_adder, _observer

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for m in registry.collect() for s in m.samples]

    fast, public = CollectorRegistry(), CollectorRegistry()
    made = [
        (
            Histogram("h", "h", ("route",), registry=registry).labels("/x"),
            Gauge("g", "g", ("route",), registry=registry).labels("/x"),
        )
        for registry in (fast, public)
    ]
    observe, add = _observer(made[0][0]), _gauge_adder(made[0][1])
    assert observe != made[0][0].observe  # the shortcut is in use
    for amount in amounts:
        observe(amount)
        made[1][0].observe(amount)
        add(1.0)
        made[1][1].inc()
    add(-1.0)
    made[1][1].dec()
    got = [s for s in samples(fast) if not s[0].endswith("_created")]
    assert got == [s for s in samples(public) if not s[0].endswith("_created")]
    assert ("g", {"route": "/x"}, float(len(amounts) - 1)) in got

    class Odd:  # not a prometheus-client child: the public methods
        def observe(self, amount: float) -> None: ...

        def inc(self, amount: float = 1) -> None: ...

    odd = Odd()
    assert _observer(odd) == odd.observe
    assert _gauge_adder(odd) == odd.inc
