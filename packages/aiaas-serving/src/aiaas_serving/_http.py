"""The HTTP rules every OpenAI-compatible endpoint of this package shares (pure ASGI).

The embeddings endpoint (:mod:`aiaas_serving._asgi`) and the generation endpoint
(:mod:`aiaas_serving._openai_generation`) answer through these: OpenAI's error shape, the one
``Content-Type`` rule (415), a bounded body (413, aiaas-core's ``read_body``), JSON that never
turns into a 500 (400), one request id per request, and a watch for a client that disconnects.
Nothing here is public; the ASGI types, the 405 error, body reading and the lifespan are
aiaas-core's service kit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Final

from aiaas_core import (
    AiaasError,
    BadRequestError,
    Receive,
    Scope,
    Send,
    UnsupportedMediaTypeError,
    accept_request_id,
    get_request_id,
)

JSON_HEADER: Final = (b"content-type", b"application/json")
#: The default bound of a request body, in bytes.
MAX_BODY: Final = 4 * 1024 * 1024
_JSON_SUFFIX: Final = "+json"


class ParamError(BadRequestError):
    """A bad request naming the parameter at fault (OpenAI's ``param``; ``None``: the body)."""

    def __init__(self, message: str, param: str | None, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "server_error"


def error_payload(exc: BaseException) -> tuple[AiaasError, dict[str, Any]]:
    """``exc`` as an :class:`AiaasError` (a generic 500 unless it is one: its text never reaches
    the client) and its body in OpenAI's shape, ``{"error": {"message", "type", "param",
    "code"}}``, with the aiaas stable code in lower case as ``code``."""
    err = exc if isinstance(exc, AiaasError) else AiaasError()
    return err, {
        "error": {
            "message": err.message,
            "type": error_type(err.status),
            "param": getattr(err, "param", None),
            "code": err.code.lower(),
        }
    }


def openai_error(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers (no content-length) and body of ``exc`` in OpenAI's error shape."""
    err, payload = error_payload(exc)
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [JSON_HEADER]
    headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()
    )
    return err.status, headers, body


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def request_ids(scope: Scope) -> tuple[str, str | None]:
    """The request's id and the id this endpoint must send as ``X-Request-ID`` (``None`` when a
    middleware sends it): the request context's (set by aiaas-telemetry's middleware), else
    the client's ``X-Request-ID`` or a fresh one, sent here. One id per request."""
    request_id = get_request_id()
    if request_id is not None:
        return request_id, None
    request_id = accept_request_id(header(scope, b"x-request-id"))
    return request_id, request_id


async def send_response(
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    request_id: str | None,
) -> None:
    """Answer; ``request_id`` is sent as ``X-Request-ID`` unless ``None`` (a middleware sends
    it)."""
    extra = [(b"content-length", str(len(body)).encode())]
    if request_id is not None:
        extra.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": body})


def check_json_content_type(scope: Scope) -> None:
    """Refuse a body that does not say it is JSON (415): ``application/json`` or
    ``application/<anything>+json``, parameters allowed, a ``charset`` only ``utf-8``."""
    raw = header(scope, b"content-type")
    how = "send the body as JSON with 'Content-Type: application/json'"
    if raw is None:
        raise UnsupportedMediaTypeError(f"the request has no Content-Type: {how}")
    text = raw.decode("latin-1")
    media, *params = (part.strip() for part in text.split(";"))
    media = media.lower()
    kind, _, subtype = media.partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith(_JSON_SUFFIX)):
        shown = media[:64] or "(empty)"
        raise UnsupportedMediaTypeError(f"Content-Type {shown!r} is not JSON: {how}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaTypeError(
                f"the charset of a JSON body must be utf-8, not {value.strip()[:32]!r}: {how}"
            )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 ``request_invalid`` (never a 500) for anything else:
    not UTF-8, not JSON, nested deeper than Python parses, a number too long to convert."""
    try:
        request = json.loads(raw)
    except RecursionError:
        raise ParamError(
            "the request body nests JSON too deeply: send a flat JSON object", None
        ) from None
    except ValueError:  # not UTF-8, not JSON, or a number too long to convert
        raise ParamError("the request body is not valid JSON: send a JSON object", None) from None
    if not isinstance(request, dict):
        raise ParamError("the request body must be a JSON object", None)
    return request


def model_card(model_id: str) -> dict[str, Any]:
    """One entry of ``GET /v1/models``."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "aiaas"}


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the request body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def watch_disconnect(receive: Receive) -> asyncio.Task[None]:
    """A task done when the client disconnects; cancel it when the answer is complete."""
    return asyncio.create_task(wait_for_disconnect(receive))


async def finished_before_disconnect(
    work: asyncio.Future[Any], receive: Receive, withdraw: Callable[[], object]
) -> bool:
    """Wait for ``work`` or the client's disconnect, whichever comes first.

    True when ``work`` is done (its result or error is the caller's to read). When the client
    left first, or this handler is cancelled, ``withdraw()`` gives the work's requests up (the
    model frees what they hold) and ``work`` is cancelled: False, or the cancellation raised.
    """
    watch = watch_disconnect(receive)
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled: withdraw everything
        withdraw()
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work in done:
        return True
    withdraw()  # the client went away first
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return False
