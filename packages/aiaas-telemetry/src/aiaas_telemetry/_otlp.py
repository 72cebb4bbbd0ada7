"""A lean OTLP span encoder: ``ExportTraceServiceRequest`` bytes written straight from SDK spans.

The SDK's OTLP exporters turn every span into a graph of protobuf objects (the span, a
``KeyValue`` and an ``AnyValue`` per attribute, the status, the resource and scope again for every
batch) and then serialise the graph: about 35-40 µs per span on a small VM, spent in the exporter
thread while it holds the GIL, so the event loop waits. :func:`encode_otlp_spans` writes the same
protobuf wire format directly:

- the resource and the instrumentation scope are encoded once and reused (a resource and a scope
  are immutable);
- an attribute whose value repeats (method, route, scheme, user agent, status code) is encoded
  once: its ``KeyValue`` bytes are cached (bounded);
- each span is one ``bytearray`` with no intermediate objects.

The result decodes to exactly the message the SDK's encoder builds for the same spans (same
grouping by resource and scope, same ids, names, kinds, times, attributes, events, links, status,
flags, dropped counts and schema URLs; tests compare the two with ``opentelemetry-proto``), so any
OTLP collector reads it. Values the SDK's encoder cannot encode (an integer outside int64, a string
that is not valid Unicode, an unknown type) drop that attribute as the SDK's encoder does.

:class:`LeanOTLPSpanExporter` is the SDK's OTLP/HTTP span exporter (endpoint, headers, timeout,
compression, TLS, retries and every ``OTEL_EXPORTER_OTLP_*`` variable unchanged) with this
encoder in front of its transport. When the installed SDK offers no way to hand it encoded bytes,
it encodes with the SDK, as the plain exporter does.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

__all__ = ["LeanOTLPSpanExporter", "encode_otlp_spans"]

_log = logging.getLogger("aiaas.telemetry")

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64: Final = 1 << 64
_CACHE_LIMIT: Final = 4096  # cached attribute encodings; emptied when full
_CACHED_STR_MAX: Final = 256  # longer string values are not cached
_KIND: Final[Mapping[SpanKind, bytes]] = {
    # Span.kind (field 6, varint): the proto's SPAN_KIND_* numbers are the SDK's values + 1.
    kind: bytes((0x30, kind.value + 1))
    for kind in SpanKind
}
_FLAGS_LOCAL: Final = b"\x85\x01" + struct.pack("<I", 0x100)  # field 16, fixed32: HAS_IS_REMOTE
_FLAGS_REMOTE: Final = b"\x85\x01" + struct.pack("<I", 0x300)  # ... and IS_REMOTE
_LINK_FLAGS_LOCAL: Final = b"\x35" + struct.pack("<I", 0x100)  # Link.flags, field 6, fixed32
_LINK_FLAGS_REMOTE: Final = b"\x35" + struct.pack("<I", 0x300)
_DOUBLE: Final = struct.Struct("<d").pack
_FIXED64: Final = struct.Struct("<Q").pack
_SMALL: Final = tuple(bytes((n,)) for n in range(128))


class _Unencodable(Exception):  # noqa: N818 -- internal signal, never escapes this module
    """A value the OTLP encoding cannot carry; its attribute is dropped (as the SDK does)."""


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 127:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: bytes, payload: bytes | bytearray) -> bytes:
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str) -> bytes:
    """A string field; empty strings are left out (proto3 default)."""
    if not text:
        return b""
    data = text.encode("utf-8")
    return tag + _varint(len(data)) + data


def _any_value(value: Any) -> bytes:
    """``AnyValue`` message bytes (not length-prefixed), as the SDK's ``_encode_value`` builds."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Unencodable(str(exc)) from None
        return b"\x0a" + _varint(len(data)) + data
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _Unencodable(f"{value} is outside int64")
        return b"\x18" + _varint(value % _UINT64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return b"\x3a" + _varint(len(value)) + value
    if isinstance(value, Sequence):
        items = b"".join(_length_delimited(b"\x0a", _any_value(item)) for item in value)
        return _length_delimited(b"\x2a", items)
    if isinstance(value, Mapping):
        pairs = b"".join(b"\x0a" + _key_value(str(k), v) for k, v in value.items())
        return _length_delimited(b"\x32", pairs)
    raise _Unencodable(f"invalid type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """One length-prefixed ``KeyValue`` (tag not included)."""
    body = _string(b"\x0a", key) + _length_delimited(b"\x12", _any_value(value))
    return _varint(len(body)) + body


class _AttributeCache:
    """Encoded ``KeyValue`` bytes (with their repeated-field tag) for values that repeat."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, str, type, Any], bytes] = {}

    def encode(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        cache = self._cache
        parts: list[bytes] = []
        for key, value in attributes.items():
            kind = type(value)
            cacheable = (kind is str and len(value) <= _CACHED_STR_MAX) or kind in (int, bool)
            if cacheable:
                entry = (tag, key, kind, value)
                found = cache.get(entry)
                if found is not None:
                    parts.append(found)
                    continue
            try:
                encoded = tag + _key_value(key, value)
            except (_Unencodable, RecursionError, TypeError, ValueError) as exc:
                _log.warning("span attribute %r not exported: %s", key, exc)
                continue
            if cacheable:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()  # high-cardinality values (paths, ids) filled it
                cache[entry] = encoded
            parts.append(encoded)
        return b"".join(parts)


def _scope_bytes(scope: Any) -> bytes:
    """``InstrumentationScope`` message bytes."""
    if scope is None:
        return b""
    return (
        _string(b"\x0a", scope.name)
        + _string(b"\x12", scope.version or "")
        + _AttributeCache().encode(b"\x1a", scope.attributes)
    )


class _Encoder:
    """Keeps the encodings worth keeping between batches (resources, scopes, attributes)."""

    def __init__(self) -> None:
        self._attributes = _AttributeCache()
        self._resources: dict[Any, bytes] = {}
        self._scopes: dict[Any, bytes] = {}

    def _resource(self, resource: Any) -> bytes:
        found = self._resources.get(resource)
        if found is None:
            body = _AttributeCache().encode(b"\x0a", resource.attributes)
            found = _length_delimited(b"\x0a", body)  # ResourceSpans.resource, always present
            if len(self._resources) >= 64:
                self._resources.clear()
            self._resources[resource] = found
        return found

    def _scope(self, scope: Any) -> bytes:
        found = self._scopes.get(scope)
        if found is None:
            found = _length_delimited(b"\x0a", _scope_bytes(scope))  # ScopeSpans.scope
            if len(self._scopes) >= 64:
                self._scopes.clear()
            self._scopes[scope] = found
        return found

    def span(self, span: ReadableSpan) -> bytes:
        """One ``Span`` message, length-prefixed with its ``ScopeSpans.spans`` tag."""
        context = span.get_span_context()
        if context is None:  # the SDK's encoder fails on such a span too
            raise ValueError("span without a span context")
        attributes = self._attributes.encode
        out = bytearray(b"\x0a\x10")
        out += context.trace_id.to_bytes(16, "big")
        out += b"\x12\x08"
        out += context.span_id.to_bytes(8, "big")
        state = context.trace_state
        if state:
            out += _string(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items()))
        parent = span.parent
        if parent:
            out += b"\x22\x08"
            out += parent.span_id.to_bytes(8, "big")
        out += _string(b"\x2a", span.name)
        out += _KIND[span.kind]
        start, end = span.start_time, span.end_time
        if start:
            out += b"\x39"
            out += _FIXED64(start)
        if end:
            out += b"\x41"
            out += _FIXED64(end)
        out += attributes(b"\x4a", span.attributes)
        dropped = span.dropped_attributes
        if dropped:
            out += b"\x50"
            out += _varint(dropped)
        for event in span.events:
            body = bytearray()
            if event.timestamp:
                body += b"\x09"
                body += _FIXED64(event.timestamp)
            body += _string(b"\x12", event.name)
            body += attributes(b"\x1a", event.attributes)
            if event.dropped_attributes:
                body += b"\x20"
                body += _varint(event.dropped_attributes)
            out += b"\x5a"
            out += _varint(len(body))
            out += body
        if span.dropped_events:
            out += b"\x60"
            out += _varint(span.dropped_events)
        for link in span.links:
            linked = link.context
            body = bytearray(b"\x0a\x10")
            body += linked.trace_id.to_bytes(16, "big")
            body += b"\x12\x08"
            body += linked.span_id.to_bytes(8, "big")
            body += attributes(b"\x22", link.attributes)
            if link.dropped_attributes:
                body += b"\x28"
                body += _varint(link.dropped_attributes)
            body += _LINK_FLAGS_REMOTE if linked.is_remote else _LINK_FLAGS_LOCAL
            out += b"\x6a"
            out += _varint(len(body))
            out += body
        if span.dropped_links:
            out += b"\x70"
            out += _varint(span.dropped_links)
        status = span.status
        if status is not None:
            body = bytearray(_string(b"\x12", status.description or ""))
            code = status.status_code.value
            if code:
                body += b"\x18"
                body += _varint(code)
            out += b"\x7a"
            out += _varint(len(body))
            out += body
        out += _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL
        return b"\x12" + _varint(len(out)) + out

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        # Grouped as the SDK groups them: by resource, then by scope (equal ones together), in
        # order of first sight. Each distinct pair of objects is looked up (hashed) only once.
        groups: dict[Any, dict[Any, list[bytes]]] = {}
        targets: dict[tuple[int, int], list[bytes]] = {}
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            target = targets.get((id(resource), id(scope)))
            if target is None:
                scopes = groups.setdefault(resource, {})
                target = targets[id(resource), id(scope)] = scopes.setdefault(scope, [])
            target.append(self.span(span))
        out = bytearray()
        for resource, scopes in groups.items():
            body = bytearray(self._resource(resource))
            for scope, encoded_spans in scopes.items():
                scope_body = bytearray(self._scope(scope))
                for encoded_span in encoded_spans:
                    scope_body += encoded_span
                if scope is not None:
                    scope_body += _string(b"\x1a", scope.schema_url or "")
                body += b"\x12"
                body += _varint(len(scope_body))
                body += scope_body
            body += _string(b"\x1a", resource.schema_url or "")
            out += b"\x0a"
            out += _varint(len(body))
            out += body
        return bytes(out)


_DEFAULT = _Encoder()


def encode_otlp_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """``ExportTraceServiceRequest`` protobuf bytes for ``spans``: what an OTLP exporter POSTs.

    Decodes to the message the SDK's ``encode_spans`` builds for the same spans. Raises
    ``ValueError`` (or ``TypeError``) for a span the SDK's encoder cannot encode either.
    """
    return _DEFAULT.encode(spans)


class LeanOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter with :func:`encode_otlp_spans` as its encoder.

    Takes the same arguments and honours the same ``OTEL_EXPORTER_OTLP_*`` variables; only the
    encoding differs, and the bytes sent decode to the same message. Should the lean encoder fail
    on a batch, that batch is encoded by the SDK instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = _Encoder()
        self._send_encoded: Callable[[bytes, int], SpanExportResult] | None = self._transport()

    @property
    def lean(self) -> bool:
        """Whether batches go through :func:`encode_otlp_spans` (the installed SDK allows it)."""
        return self._send_encoded is not None

    def _transport(self) -> Callable[[bytes, int], SpanExportResult] | None:
        client = getattr(self, "_client", None)  # opentelemetry-exporter-otlp-proto-http >= 1.4x
        client_export = getattr(client, "export", None)
        if callable(client_export):
            max_size = getattr(self, "_max_request_size", 0) or 0

            metrics = getattr(self, "_metrics", None)  # the SDK's opt-in exporter metrics

            def send_client(data: bytes, count: int) -> SpanExportResult:
                operation = getattr(metrics, "export_operation", None)
                if operation is None:
                    return post(data, count, None)
                with operation(count) as outcome:
                    return post(data, count, outcome)

            def post(data: bytes, count: int, outcome: Any) -> SpanExportResult:
                if 0 < max_size < len(data):
                    _log.warning(
                        "dropping a batch of %d span(s): %d bytes encoded, over the exporter's"
                        " max_request_size of %d bytes",
                        count,
                        len(data),
                        max_size,
                    )
                    if outcome is not None:
                        outcome.error = ValueError("request over max_request_size")
                    return SpanExportResult.FAILURE
                result = client_export(data)
                if getattr(result, "success", False):
                    return SpanExportResult.SUCCESS
                if outcome is not None:
                    outcome.error = getattr(result, "error", None) or RuntimeError("export failed")
                return SpanExportResult.FAILURE

            return send_client
        serialized = getattr(self, "_export_serialized_spans", None)  # 1.33 .. 1.3x
        if callable(serialized):

            def send_serialized(data: bytes, count: int) -> SpanExportResult:
                result: SpanExportResult = serialized(data)
                return result

            return send_serialized
        return None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        send = self._send_encoded
        if send is None or getattr(self, "_shutdown", False):
            return super().export(spans)  # the SDK's own path (and its shutdown answer)
        try:
            data = self._encoder.encode(spans)
        except Exception:  # noqa: BLE001 -- the SDK's encoder gets its chance
            _log.warning("lean span encoding failed; encoding with the SDK", exc_info=True)
            return super().export(spans)
        return send(data, len(spans))
