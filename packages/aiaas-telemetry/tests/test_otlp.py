"""The lean OTLP encoder and exporter: the bytes decode to exactly what the SDK's encoder builds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from aiaas_telemetry import LeanOTLPSpanExporter, encode_otlp_spans, load_profile
from aiaas_telemetry._otlp import _varint
from aiaas_telemetry._tracing import _cached_hash, build_exporter

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


def decode(data: bytes) -> Any:
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request


def assert_same_as_sdk(spans: Sequence[ReadableSpan]) -> Any:
    ours = decode(encode_otlp_spans(spans))
    theirs = sdk_encode(spans)
    assert ours == theirs
    # Presence of the always-set messages (resource, scope, status) matches too.
    for rs_ours, rs_sdk in zip(ours.resource_spans, theirs.resource_spans, strict=True):
        assert rs_ours.HasField("resource") == rs_sdk.HasField("resource")
        for ss_ours, ss_sdk in zip(rs_ours.scope_spans, rs_sdk.scope_spans, strict=True):
            assert ss_ours.HasField("scope") == ss_sdk.HasField("scope")
            for a, b in zip(ss_ours.spans, ss_sdk.spans, strict=True):
                assert a.HasField("status") == b.HasField("status")
    return ours


def recorded_spans(
    resource: Resource | None = None, limits: SpanLimits | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource or _cached_hash(Resource.create({"service.name": "otlp-test"})),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# --------------------------------------------------------------------------- equivalence


def test_a_realistic_batch_decodes_to_the_sdk_message() -> None:
    provider, exporter = recorded_spans()
    tracer = provider.get_tracer("aiaas_telemetry", "0.1.0")
    other = provider.get_tracer("handler", None, schema_url="https://opentelemetry.io/schemas/1.21")
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "opaque"), ("other", "x-1")]),
    )
    parent = set_span_in_context(NonRecordingSpan(remote))
    linked_local = SpanContext(0x1234, 0x5678, is_remote=False)
    server = tracer.start_span(
        "GET /v1/items/{id}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.path": "/v1/items/42",
            "http.route": "/v1/items/{id}",
            "aiaas.request_id": "req-0001",
            "empty": "",
            "unicode": "zürich ☃ \U0001f600",
        },
        links=[Link(remote, {"link.kind": "follows"}), Link(linked_local)],
    )
    child = tracer.start_span("db.query", context=set_span_in_context(server), kind=SpanKind.CLIENT)
    child.set_attributes(
        {
            "int": 7,
            "negative": -5,
            "big": INT64_MAX,
            "small": INT64_MIN,
            "zero": 0,
            "float": 1.5,
            "negative_float": -0.25,
            "true": True,
            "false": False,
            "strings": ["a", "", "ç"],
            "ints": [1, -2, 3],
            "floats": [0.5, 2.0],
            "bools": [True, False],
            "empty_list": [],
        }
    )
    child.add_event("retry", {"attempt": 2, "reason": "timeout"})
    child.add_event("no attributes")
    child.set_status(Status(StatusCode.ERROR, "connection reset"))
    child.end()
    handler = other.start_span("render", context=set_span_in_context(server))
    handler.set_status(Status(StatusCode.OK))
    handler.end()
    server.set_attribute("http.response.status_code", 200)
    server.end()
    producer = tracer.start_span("publish", kind=SpanKind.PRODUCER)
    producer.end()
    consumer = tracer.start_span("consume", kind=SpanKind.CONSUMER)
    consumer.record_exception(ValueError("bad"))
    consumer.end()

    spans = exporter.get_finished_spans()
    ours = assert_same_as_sdk(spans)
    (rs,) = ours.resource_spans
    assert [ss.scope.name for ss in rs.scope_spans] == ["aiaas_telemetry", "handler"]
    assert rs.scope_spans[1].schema_url == "https://opentelemetry.io/schemas/1.21"
    by_name = {s.name: s for ss in rs.scope_spans for s in ss.spans}
    served = by_name["GET /v1/items/{id}"]
    assert served.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert served.parent_span_id.hex() == "00f067aa0ba902b7"
    assert served.trace_state == "vendor=opaque,other=x-1"
    assert served.flags == 0x300  # parent is remote
    assert [link.flags for link in served.links] == [0x300, 0x100]
    assert by_name["db.query"].status.message == "connection reset"
    assert {a.key for a in rs.resource.attributes} >= {"service.name", "telemetry.sdk.name"}


def test_limits_dropped_counts_and_grouping_by_equal_resources() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1)
    attributes = {"service.name": "grouped", "deployment.environment": "test"}
    # Two equal resources (distinct objects, one without the cached hash) group together, as
    # the SDK groups them; a different one gets its own ResourceSpans.
    first, first_exporter = recorded_spans(_cached_hash(Resource.create(attributes)), limits)
    second, second_exporter = recorded_spans(Resource.create(attributes), limits)
    third, third_exporter = recorded_spans(Resource({"service.name": "other"}, "https://s/1"))
    for provider in (first, second, third):
        span = provider.get_tracer("t").start_span(
            "limited",
            attributes={"a": 1, "b": 2, "c": 3},
            links=[Link(SpanContext(1, 2, False)), Link(SpanContext(3, 4, True))],
        )
        span.add_event("one")
        span.add_event("two", {"x": 1, "y": 2})  # the newest event is kept
        span.end()
    spans = [
        *first_exporter.get_finished_spans(),
        *third_exporter.get_finished_spans(),
        *second_exporter.get_finished_spans(),
    ]
    ours = assert_same_as_sdk(spans)
    assert len(ours.resource_spans) == 2
    assert ours.resource_spans[1].schema_url == "https://s/1"
    limited = ours.resource_spans[0].scope_spans[0].spans[0]
    assert limited.dropped_attributes_count == 1
    assert limited.dropped_events_count == 1
    assert limited.dropped_links_count == 1
    assert limited.events[0].dropped_attributes_count == 1


def test_spans_built_by_hand_with_no_scope_and_no_times() -> None:
    context = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    span = ReadableSpan(
        name="",
        context=context,
        parent=SpanContext(0xABC, 0x1, is_remote=False),
        resource=Resource({}),
        attributes={"nested": {"k": "v", "n": [1, 2]}, "raw": b"\x00\xff"},
        events=(Event("at-zero", {"a": "b"}, timestamp=0),),
        kind=SpanKind.INTERNAL,
        instrumentation_scope=None,
        status=Status(StatusCode.UNSET),
    )
    ours = assert_same_as_sdk([span])
    encoded = ours.resource_spans[0].scope_spans[0]
    assert encoded.HasField("scope")
    assert encoded.scope.name == ""
    assert encoded.spans[0].flags == 0x100


def test_a_none_value_is_an_empty_any_value() -> None:
    """As SDK 1.4x encodes it (1.33 dropped the attribute); SDK spans never hold None."""
    span = ReadableSpan(
        name="none",
        context=SpanContext(0x1, 0x2, is_remote=False),
        resource=Resource({}),
        attributes={"nothing": None, "list": ["a", None]},
        status=Status(StatusCode.UNSET),
    )
    nothing, items = (
        decode(encode_otlp_spans([span])).resource_spans[0].scope_spans[0].spans[0].attributes
    )
    assert nothing.key == "nothing"
    assert nothing.HasField("value")
    assert nothing.value.WhichOneof("value") is None
    assert [v.WhichOneof("value") for v in items.value.array_value.values] == ["string_value", None]


def test_unencodable_attributes_are_dropped_like_the_sdk_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = SpanContext(0x1, 0x2, is_remote=False)
    span = ReadableSpan(
        name="odd",
        context=context,
        resource=Resource({"service.name": "odd"}),
        instrumentation_scope=InstrumentationScope("odd", "1", None, {"scope.attr": "x"}),
        attributes={
            "too_big": 1 << 64,
            "too_small": INT64_MIN - 1,
            "in_list": [1, 1 << 70],
            "surrogate": "\ud800",
            "object": object(),
            "kept": "yes",
        },
        status=Status(StatusCode.UNSET),
    )
    with caplog.at_level(logging.ERROR):
        ours = decode(encode_otlp_spans([span]))
    theirs = sdk_encode([span])
    assert ours == theirs
    (kept,) = ours.resource_spans[0].scope_spans[0].spans[0].attributes
    assert kept.key == "kept"
    assert ours.resource_spans[0].scope_spans[0].scope.attributes[0].key == "scope.attr"


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_otlp_spans([]) == b""
    assert decode(b"") == sdk_encode([])


def test_a_span_without_context_is_refused() -> None:
    span = ReadableSpan(name="no context", context=None)
    with pytest.raises(ValueError, match="span context"):
        encode_otlp_spans([span])


def test_repeated_values_hit_the_cache_and_it_stays_bounded() -> None:
    provider, exporter = recorded_spans()
    tracer = provider.get_tracer("t")
    for i in range(5000):  # more distinct values than the cache holds: it is emptied and refilled
        tracer.start_span("s", attributes={"path": f"/items/{i}", "method": "GET"}).end()
    spans = exporter.get_finished_spans()
    for start in range(0, len(spans), 512):
        assert_same_as_sdk(spans[start : start + 512])


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**64 - 1])
def test_varint(value: int) -> None:
    from google.protobuf.internal.encoder import _VarintBytes

    assert _varint(value) == _VarintBytes(value)


scalars = st.one_of(
    st.text(max_size=20),
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.floats(allow_nan=False),
)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=5), max_size=4),
    st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=4),
    st.lists(st.booleans(), max_size=4),
)
attribute_maps = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(
        st.tuples(
            st.text(max_size=20),
            st.sampled_from(list(SpanKind)),
            attribute_maps,
            st.lists(st.tuples(st.text(max_size=8), attribute_maps), max_size=2),
            st.sampled_from([StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR]),
            st.integers(min_value=1, max_value=(1 << 128) - 1),
            st.integers(min_value=1, max_value=(1 << 64) - 1),
            st.booleans(),
        ),
        max_size=5,
    )
)
def test_any_batch_decodes_to_the_sdk_message(batch: list[Any]) -> None:
    provider, exporter = recorded_spans()
    tracer = provider.get_tracer("prop", "1.0")
    for name, kind, attributes, events, code, trace_id, span_id, remote in batch:
        parent = SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(1))
        span = tracer.start_span(
            name,
            context=set_span_in_context(NonRecordingSpan(parent)),
            kind=kind,
            attributes=attributes,
        )
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        span.set_status(Status(code, "why" if code is StatusCode.ERROR else None))
        span.end()
    assert_same_as_sdk(exporter.get_finished_spans())


# --------------------------------------------------------------------------- the exporter


class RawReceiver:
    """An OTLP/HTTP endpoint keeping the raw request bodies and answering a chosen status."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.bodies.append(body)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/traces"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def raw_receiver() -> Iterator[RawReceiver]:
    receiver = RawReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def some_spans(count: int = 3) -> Sequence[ReadableSpan]:
    provider, exporter = recorded_spans()
    tracer = provider.get_tracer("aiaas_telemetry", "0.1.0")
    for i in range(count):
        tracer.start_span(f"GET /{i}", kind=SpanKind.SERVER, attributes={"n": i}).end()
    return exporter.get_finished_spans()


def test_the_default_exporter_is_lean_and_posts_the_sdk_message(
    raw_receiver: RawReceiver,
) -> None:
    profile = load_profile(
        {
            "service_name": "lean",
            "otel_exporter": {"endpoint": raw_receiver.url[: -len("/v1/traces")]},
        },
        environ={},
    )
    exporter = build_exporter(profile)
    assert isinstance(exporter, LeanOTLPSpanExporter)
    assert exporter.lean
    spans = some_spans()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        (body,) = raw_receiver.bodies
        assert decode(body) == sdk_encode(spans)
        raw_receiver.status = 400  # refused, not retried
        assert exporter.export(spans) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    # After shutdown the SDK's own answer: refused without a request.
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(raw_receiver.bodies) == 2


def test_an_encoder_failure_falls_back_to_the_sdk(
    raw_receiver: RawReceiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = LeanOTLPSpanExporter(endpoint=raw_receiver.url, timeout=2)
    spans = some_spans()

    def broken(batch: Sequence[ReadableSpan]) -> bytes:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(exporter._encoder, "encode", broken)
    try:
        with caplog.at_level(logging.WARNING, logger="aiaas.telemetry"):
            assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert "encoding with the SDK" in caplog.text
    (body,) = raw_receiver.bodies
    assert decode(body) == sdk_encode(spans)


def test_without_a_transport_hook_the_sdk_encodes(raw_receiver: RawReceiver) -> None:
    exporter = LeanOTLPSpanExporter(endpoint=raw_receiver.url, timeout=2)
    exporter._send_encoded = None  # as with an SDK that offers no way to send encoded bytes
    assert not exporter.lean
    spans = some_spans()
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    (body,) = raw_receiver.bodies
    assert decode(body) == sdk_encode(spans)


def test_a_request_over_the_size_limit_is_dropped_before_sending(
    raw_receiver: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = LeanOTLPSpanExporter(endpoint=raw_receiver.url, timeout=2)
    try:
        if hasattr(exporter, "_client"):  # SDKs with a max_request_size
            exporter._max_request_size = 400
            exporter._send_encoded = exporter._transport()
            with caplog.at_level(logging.WARNING, logger="aiaas.telemetry"):
                assert exporter.export(some_spans(5)) is SpanExportResult.FAILURE
            assert raw_receiver.bodies == []
            assert "max_request_size" in caplog.text
            assert exporter.export(some_spans(1)) is SpanExportResult.SUCCESS
        else:  # older SDKs send whatever size
            assert exporter.export(some_spans(5)) is SpanExportResult.SUCCESS
        assert len(raw_receiver.bodies) == 1
    finally:
        exporter.shutdown()


def test_older_sdks_send_through_export_serialized_spans(raw_receiver: RawReceiver) -> None:
    """opentelemetry-exporter-otlp-proto-http 1.33 .. 1.3x: bytes go to _export_serialized_spans."""
    exporter = LeanOTLPSpanExporter(endpoint=raw_receiver.url, timeout=2)
    sent: list[bytes] = []

    def export_serialized_spans(data: bytes) -> SpanExportResult:
        sent.append(data)
        return SpanExportResult.SUCCESS

    client = getattr(exporter, "_client", None)
    try:
        exporter._client = object()  # no export(): not the 1.4x client
        exporter._export_serialized_spans = export_serialized_spans  # type: ignore[method-assign]
        exporter._send_encoded = exporter._transport()
        assert exporter.lean
        spans = some_spans(2)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert [decode(data) for data in sent] == [sdk_encode(spans)]
    finally:
        if client is not None:
            exporter._client = client
        exporter.shutdown()
