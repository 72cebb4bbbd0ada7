"""Reading request bodies in plain ASGI: a size limit, and strict JSON with clear errors.

A route that takes JSON calls :func:`read_json` (or, with a framework's request object,
:func:`parse_json` on the bytes it read). Every failure is an :class:`aiaas_core.AiaasError`
that :class:`aiaas_telemetry.TelemetryMiddleware` renders as the shared error body:

=====================================  ===================================  ======
problem                                code                                 status
=====================================  ===================================  ======
``Content-Type`` is not JSON           ``REQUEST_UNSUPPORTED_MEDIA_TYPE``   415
body larger than ``max_body_bytes``    ``REQUEST_TOO_LARGE``                413
empty body, not UTF-8, not JSON,       ``REQUEST_JSON_INVALID``             400
``NaN``/``Infinity``, nested too deep
client went away mid-body              ``REQUEST_INCOMPLETE``               400
=====================================  ===================================  ======
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiaas_core import (
    BadRequestError,
    PayloadTooLargeError,
    Receive,
    Scope,
    UnsupportedMediaTypeError,
)

__all__ = [
    "UnsupportedMediaTypeError",
    "is_json_content_type",
    "parse_json",
    "read_body",
    "read_json",
]

JSON_INVALID: Final = "REQUEST_JSON_INVALID"


def is_json_content_type(value: str | bytes | None) -> bool:
    """Whether a ``Content-Type`` value is ``application/json`` or ``application/*+json``."""
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _require_json(content_type: str | bytes | None) -> None:
    if not is_json_content_type(content_type):
        raise UnsupportedMediaTypeError(
            "Unsupported media type: send the body as application/json",
            detail="the Content-Type header must be application/json",
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(
    body: bytes | bytearray | str,
    content_type: str | bytes | None = None,
    *,
    require_content_type: bool = True,
) -> Any:
    """Decode a JSON request body strictly (no ``NaN``/``Infinity``), or raise a 4xx error.

    With ``require_content_type`` (the default), ``content_type`` must be JSON, else
    :class:`UnsupportedMediaTypeError` (415).
    """
    if require_content_type:
        _require_json(content_type)
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError(
                "Request body is not valid JSON: it is not UTF-8 text", code=JSON_INVALID
            ) from None
    else:
        text = body
    if not text.strip():
        raise BadRequestError("Request body is empty; send a JSON document", code=JSON_INVALID)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            "Request body is not valid JSON",
            detail=f"line {exc.lineno} column {exc.colno}: {exc.msg}",
            code=JSON_INVALID,
        ) from None
    except ValueError as exc:  # NaN / Infinity
        raise BadRequestError(
            "Request body is not valid JSON", detail=str(exc), code=JSON_INVALID
        ) from None
    except RecursionError:
        raise BadRequestError(
            "Request body is not valid JSON: nested too deeply", code=JSON_INVALID
        ) from None


async def read_body(receive: Receive, *, max_body_bytes: int | None = None) -> bytes:
    """Read the whole ASGI request body, refusing more than ``max_body_bytes``.

    Raises :class:`aiaas_core.PayloadTooLargeError` (413) past the limit and
    :class:`aiaas_core.BadRequestError` (``REQUEST_INCOMPLETE``) when the client disconnects.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise BadRequestError(
                "Request body incomplete: the client disconnected", code="REQUEST_INCOMPLETE"
            )
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if max_body_bytes is not None and size > max_body_bytes:
                raise PayloadTooLargeError(
                    f"Request body too large: the limit is {max_body_bytes} bytes"
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _content_type(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bytes(value)
    return None


async def read_json(
    scope: Scope,
    receive: Receive,
    *,
    max_body_bytes: int | None = None,
    require_content_type: bool = True,
) -> Any:
    """Read and decode a JSON request body (see :func:`parse_json` and :func:`read_body`).

    The ``Content-Type`` is checked before a byte of the body is read.
    """
    content_type = _content_type(scope)
    if require_content_type:
        _require_json(content_type)
    body = await read_body(receive, max_body_bytes=max_body_bytes)
    return parse_json(body, content_type, require_content_type=False)
