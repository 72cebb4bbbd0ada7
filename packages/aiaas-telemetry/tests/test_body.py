"""Request bodies: size limits, strict JSON, and the errors they become."""

from __future__ import annotations

from typing import Any

import pytest

from aiaas_core import BadRequestError, PayloadTooLargeError
from aiaas_telemetry import (
    UnsupportedMediaTypeError,
    is_json_content_type,
    parse_json,
    read_body,
    read_json,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        (b"application/merge-patch+json", True),
        ("application/jsonx", False),
        ("text/json", False),
        ("text/plain", False),
        (None, False),
    ],
)
def test_is_json_content_type(value: Any, expected: bool) -> None:
    assert is_json_content_type(value) is expected


def test_parse_json_accepts_strict_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, null]}', "application/json") == {"a": [1, 2.5, None]}
    assert parse_json("[1]", require_content_type=False) == [1]
    assert parse_json(bytearray(b"true"), "application/json") is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[NaN]", "not valid JSON"),
        (b'{"x": Infinity}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_parse_json_rejects(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message) as exc:
        parse_json(body, "application/json")
    assert exc.value.code == "REQUEST_JSON_INVALID"
    assert exc.value.status == 400


def test_parse_json_detail_names_the_position() -> None:
    with pytest.raises(BadRequestError) as exc:
        parse_json(b'{"a": 1,\n "b": }', "application/json")
    assert exc.value.detail is not None
    assert "line 2" in exc.value.detail


def test_parse_json_requires_the_content_type() -> None:
    with pytest.raises(UnsupportedMediaTypeError) as exc:
        parse_json(b"{}", "text/plain")
    assert exc.value.status == 415
    assert exc.value.code == "REQUEST_UNSUPPORTED_MEDIA_TYPE"
    with pytest.raises(UnsupportedMediaTypeError):
        parse_json(b"{}")


async def test_read_body(asgi: Any) -> None:
    assert await read_body(asgi.body(b"ab", b"", b"cd")) == b"abcd"
    assert await read_body(asgi.body(b"abcd"), max_body_bytes=4) == b"abcd"
    with pytest.raises(PayloadTooLargeError, match="limit is 3 bytes"):
        await read_body(asgi.body(b"ab", b"cd"), max_body_bytes=3)

    messages = [{"type": "other"}, {"type": "http.request", "body": b"x", "more_body": True}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    with pytest.raises(BadRequestError) as exc:
        await read_body(receive)
    assert exc.value.code == "REQUEST_INCOMPLETE"


async def test_read_json_checks_the_content_type_before_reading(asgi: Any) -> None:
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        read = True
        return {"type": "http.request", "body": b"{}"}

    with pytest.raises(UnsupportedMediaTypeError):
        await read_json(asgi.scope("POST", "/", [(b"content-type", b"text/csv")]), receive)
    assert not read
    scope = asgi.scope("POST", "/", [(b"content-type", b"application/json")])
    assert await read_json(scope, asgi.body(b'{"k": 1}')) == {"k": 1}
    assert (
        await read_json(asgi.scope("POST", "/"), asgi.body(b"[]"), require_content_type=False) == []
    )
    with pytest.raises(PayloadTooLargeError):
        await read_json(scope, asgi.body(b'{"k": 1}'), max_body_bytes=2)
