"""The middleware's light server span: exported exactly as the SDK's span would be.

While the counting batch processor is the tracer provider's only span processor, the middleware
records its server span as a light ``ServerSpan`` that becomes the SDK's ``ReadableSpan`` in the
export thread; once another processor is added, the server span is the SDK's own again (the
processor's ``on_start`` sees it). Each test runs the same requests both ways and compares what
the exporter received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from aiaas_telemetry import load_profile
from aiaas_telemetry._tracing import ServerSpan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
LINKED = trace.SpanContext(0x1234, 0x5678, is_remote=True)


def _sdk_offers_the_light_path() -> bool:
    """Whether this opentelemetry-sdk has what the light span needs (the tracer's self-metrics
    hook and enabled check, random-trace-id flags: 1.42 and later, not the lowest allowed 1.33):
    without them the middleware's server span is the SDK's own, and these tests check that what
    is exported is the same."""
    tracer = TracerProvider().get_tracer("probe")
    return (
        hasattr(tracer, "_tracer_metrics")
        and callable(getattr(tracer, "_is_enabled", None))
        and callable(getattr(RandomIdGenerator(), "is_trace_id_random", None))
        and hasattr(trace.TraceFlags, "RANDOM_TRACE_ID")
    )


def _sdk_keeps_mappings() -> bool:
    """Whether this SDK keeps mapping attribute values (older ones drop them with a warning)."""
    span = TracerProvider().get_tracer("probe").start_span("probe")
    span.set_attribute("map", {"k": "v"})  # type: ignore[arg-type]
    span.end()
    return "map" in (span.attributes or {})  # type: ignore[attr-defined]


MAPS = _sdk_keeps_mappings()


def _sdk_counts_invalid_keys() -> bool:
    """Whether this SDK counts an attribute with an invalid key as dropped (older ones do not)."""
    span = TracerProvider().get_tracer("probe").start_span("probe")
    span.set_attribute("", "no key")
    span.end()
    return span.dropped_attributes == 1  # type: ignore[attr-defined]


COUNTS_INVALID_KEYS = _sdk_counts_invalid_keys()


#: The span class the middleware records while its processor is the provider's only one.
LIGHT = ServerSpan if _sdk_offers_the_light_path() else SdkSpan


class SeenProcessor(SpanProcessor):
    """A processor a user adds: records the spans it is shown."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


async def busy_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Uses the server span through the OTel API the way application code does."""
    span = trace.get_current_span()
    scope["state"]["server_span"] = span
    span.set_attribute("app.items", [1, 2, 3])
    span.set_attributes({"app.flag": True, "app.ratio": 0.5})
    span.set_attribute("url.scheme", "https")  # set again: moves to the end
    if MAPS:
        span.set_attribute("app.map", {"k": ["v"]})  # copied when set
    span.set_attribute("", "no key")  # dropped and counted
    span.set_attribute(None, "no key")  # type: ignore[arg-type]  # dropped and counted
    span.add_event("cache.miss", {"key": "items:42"})
    span.add_link(LINKED, {"why": "batch"})
    span.add_link(trace.INVALID_SPAN_CONTEXT)  # nothing to link: not kept
    span.update_name("GET renamed")
    tracer = scope["state"]["tracer"]  # the service's provider's tracer (not the global one)
    with tracer.start_as_current_span("db.query") as child:
        child.set_attribute("db.rows", 3)
    try:
        raise ValueError("item 42 is odd")
    except ValueError as exc:
        span.record_exception(exc, {"app.handled": "yes"})
    span.set_status(StatusCode.ERROR, "odd item")
    span.set_status(Status(StatusCode.UNSET))  # ignored, as by the SDK
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def shape(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads of a span, except the fresh ids and the times."""
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time >= span.start_time
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": list(span.attributes.items()),  # order included
        "dropped_attributes": span.dropped_attributes,
        "status": (span.status.status_code, span.status.description),
        "events": [
            (e.name, list(e.attributes.items()) if e.attributes else None) for e in span.events
        ],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "parent": None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        "flags": span.context.trace_flags if span.context else None,
        "trace_state": span.context.trace_state if span.context else None,
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


def stack_trace_free(shape_: dict[str, Any]) -> dict[str, Any]:
    """The exception event's stack trace names the line of the call: drop it for comparing."""
    events = [
        (name, [(k, v) for k, v in attrs or () if k != "exception.stacktrace"])
        for name, attrs in shape_["events"]
    ]
    return {**shape_, "events": events}


async def run_both(
    make_telemetry: Callable[..., Any],
    memory_exporter: Any,
    asgi: Any,
    app: Any,
    headers: list[tuple[bytes, bytes]],
    **setup_kwargs: Any,
) -> tuple[list[ReadableSpan], list[ReadableSpan], list[Any], SeenProcessor]:
    """The request through the light path, then (a processor added) through the SDK's."""
    tel = make_telemetry(span_exporter=memory_exporter, schedule_delay_ms=10, **setup_kwargs)
    wrapped = tel.middleware(app, routes=["/v1/items/{id}"])
    headers = [(b"x-request-id", b"same-request-0001"), *headers]  # the same in both spans
    light_scope = asgi.scope("GET", "/v1/items/42", list(headers))
    light_scope["state"] = {"tracer": tel.tracer_provider.get_tracer("app")}
    assert (await asgi.call(wrapped, light_scope)).status in {200, 204}
    tel.tracer_provider.force_flush()
    light = list(memory_exporter.get_finished_spans())
    memory_exporter.clear()

    seen = SeenProcessor()
    tel.tracer_provider.add_span_processor(seen)
    sdk_scope = asgi.scope("GET", "/v1/items/42", list(headers))
    sdk_scope["state"] = {"tracer": tel.tracer_provider.get_tracer("app")}
    assert (await asgi.call(wrapped, sdk_scope)).status in {200, 204}
    tel.tracer_provider.force_flush()
    sdk = list(memory_exporter.get_finished_spans())
    servers = [light_scope["state"].get("server_span"), sdk_scope["state"].get("server_span")]
    return light, sdk, servers, seen


async def test_the_light_span_exports_what_the_sdk_span_exports(
    make_telemetry: Any, memory_exporter: Any, asgi: Any
) -> None:
    light, sdk, servers, seen = await run_both(
        make_telemetry,
        memory_exporter,
        asgi,
        busy_app,
        [(b"traceparent", TRACEPARENT), (b"user-agent", b"t/1")],
    )
    assert isinstance(servers[0], LIGHT)  # the light path was taken ...
    assert isinstance(servers[1], SdkSpan)  # ... and the SDK's once a processor was added
    assert [s.name for s in light] == ["db.query", "GET renamed"]
    assert [s.name for s in sdk] == ["db.query", "GET renamed"]
    child, server = light
    # The child the app made through the OTel API is the server span's child, in one trace.
    assert child.parent is not None
    assert server.context is not None
    assert child.parent.span_id == server.context.span_id
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.kind is SpanKind.SERVER
    attributes = dict(server.attributes)
    assert attributes["app.items"] == (1, 2, 3)  # a list is copied into a tuple when set
    if MAPS:
        assert attributes["app.map"] == {"k": ("v",)}
    assert "" not in attributes
    assert None not in attributes
    assert server.dropped_attributes == (2 if COUNTS_INVALID_KEYS else 0)
    assert list(server.attributes) == [
        "http.request.method",
        "url.path",
        "aiaas.request_id",
        "http.route",
        "user_agent.original",
        "app.items",
        "app.flag",
        "app.ratio",
        "url.scheme",  # set again by the app: moved to the end
        *(["app.map"] if MAPS else []),
        "http.response.status_code",
    ]
    assert attributes["url.scheme"] == "https"
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "odd item"
    assert [e.name for e in server.events] == ["cache.miss", "exception"]
    exception = server.events[1].attributes
    assert exception is not None
    assert exception["exception.type"] == "ValueError"
    assert exception["exception.message"] == "item 42 is odd"
    assert "item 42 is odd" in str(exception["exception.stacktrace"])
    assert exception["app.handled"] == "yes"
    assert [link.context for link in server.links] == [LINKED]
    # Field by field, in order, the light span is what the SDK span was.
    assert stack_trace_free(shape(server)) == stack_trace_free(shape(sdk[1]))
    # The child spans match too, each the child of its own request's server span.
    assert {**shape(child), "parent": None} == {**shape(sdk[0]), "parent": None}
    assert sdk[0].parent is not None
    assert sdk[1].context is not None
    assert sdk[0].parent.span_id == sdk[1].context.span_id
    # The processor added by the user saw the SDK server span start and end.
    assert [s.name for s in seen.ended] == ["db.query", "GET renamed"]
    assert any(isinstance(s, SdkSpan) and s.kind is SpanKind.SERVER for s in seen.started)


async def test_limits_apply_to_the_light_span_as_to_the_sdk_span(
    make_telemetry: Any, memory_exporter: Any, asgi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "0")
    light, sdk, servers, _ = await run_both(
        make_telemetry, memory_exporter, asgi, busy_app, [(b"traceparent", TRACEPARENT)]
    )
    assert isinstance(servers[0], LIGHT)
    server = light[1]
    assert len(server.attributes) == 5
    assert server.dropped_attributes > 0
    assert all(len(v) <= 4 for v in server.attributes.values() if isinstance(v, str))
    assert [e.name for e in server.events] == ["exception"]  # the oldest event went
    assert server.dropped_events == 1
    assert server.links == ()
    assert server.dropped_links == 1
    assert stack_trace_free(shape(server)) == stack_trace_free(shape(sdk[1]))


@pytest.mark.parametrize(
    ("sampler", "headers"),
    [
        ("always_on", [(b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00".encode())]),
        ("always_off", []),
    ],
    ids=["unsampled-parent", "always-off"],
)
async def test_an_unsampled_request_has_a_non_recording_span_and_exports_nothing(
    make_telemetry: Any,
    memory_exporter: Any,
    asgi: Any,
    sampler: str,
    headers: list[tuple[bytes, bytes]],
) -> None:
    profile = load_profile(
        {"service_name": "test-service", "tracing": {"sampler": sampler}}, environ={}
    )
    light, sdk, servers, _ = await run_both(
        make_telemetry, memory_exporter, asgi, busy_app, headers, profile=profile
    )
    assert light == sdk == []
    for span in servers:
        assert type(span) is trace.NonRecordingSpan
        assert not span.is_recording()
    light_context, sdk_context = (s.get_span_context() for s in servers)
    assert light_context.trace_flags == sdk_context.trace_flags
    assert not light_context.trace_flags.sampled
    if headers:  # the client's trace goes on, unsampled
        assert format(light_context.trace_id, "032x") == TRACE_ID


async def test_the_ended_light_span_refuses_changes_as_the_sdk_span_does(
    make_telemetry: Any, memory_exporter: Any, asgi: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def keep(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["server_span"] = trace.get_current_span()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    light, sdk, servers, _ = await run_both(make_telemetry, memory_exporter, asgi, keep, [])
    assert isinstance(servers[0], LIGHT)
    messages: list[list[str]] = []
    for span in servers:
        assert not span.is_recording()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="opentelemetry.sdk.trace"):
            span.set_attribute("late", 1)
            span.set_attributes({"late": 2})
            span.add_event("late")
            span.add_link(LINKED)
            span.update_name("late")
            span.set_status(StatusCode.ERROR)
            span.end()
        messages.append([r.getMessage() for r in caplog.records])
    assert messages[0] == messages[1]
    assert "Calling end() on an ended span." in messages[0]
    assert "Setting attribute on ended span." in messages[0]
    # Nothing changed and nothing was queued twice.
    assert stack_trace_free(shape(light[0])) == stack_trace_free(shape(sdk[0]))
    assert [s.name for s in light] == ["GET /v1/items/{id}"]
    tel_spans = memory_exporter.get_finished_spans()
    assert len(tel_spans) == 1


async def test_an_ok_status_stays_and_a_status_description_alongside_is_ignored(
    make_telemetry: Any, memory_exporter: Any, asgi: Any
) -> None:
    async def statuses(scope: dict[str, Any], receive: Any, send: Any) -> None:
        span = trace.get_current_span()
        scope["state"]["server_span"] = span
        span.set_status(Status(StatusCode.OK), "ignored description")
        span.set_status(StatusCode.ERROR, "too late: OK stays")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    light, sdk, servers, _ = await run_both(make_telemetry, memory_exporter, asgi, statuses, [])
    assert isinstance(servers[0], LIGHT)
    assert light[0].status.status_code is StatusCode.OK
    assert light[0].status.description is None
    assert shape(light[0]) == shape(sdk[0])


async def test_a_root_span_gets_a_fresh_random_trace(
    make_telemetry: Any, memory_exporter: Any, asgi: Any
) -> None:
    async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["server_span"] = trace.get_current_span()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    light, sdk, servers, _ = await run_both(make_telemetry, memory_exporter, asgi, plain, [])
    assert isinstance(servers[0], LIGHT)
    (server,) = light
    assert server.parent is None
    assert server.context is not None
    assert server.context.trace_flags.sampled
    assert server.context.trace_id != sdk[0].context.trace_id  # type: ignore[union-attr]
    assert shape(server) == shape(sdk[0])
    assert server.attributes["http.response.status_code"] == 200
    # The ids in the span are the ones the request context (and so the log lines) carried.
    assert servers[0].get_span_context() == server.context
    assert isinstance(server, ReadableSpan)
