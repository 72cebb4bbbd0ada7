"""The bare baseline for the world-service end-to-end benchmark (benchmark-only code).

``GET /world`` answers exactly what world-service's route answers -- the same JSON body
(``{"message": "Hello, world-service!", "timestamp": "<ISO-8601 UTC, ms>"}``, built the same way)
and the same headers -- with no middleware at all: no request id, trace, metrics, access log or
authentication. Anything else is a 404. Served by ``python -m uvicorn _bare_world:app``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVICE_NAME = "world-service"


def utc_timestamp() -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` (as world-service writes it)."""
    moment = datetime.now(UTC).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/world" and scope["method"] == "GET":
        await _json(send, 200, {"message": f"Hello, {SERVICE_NAME}!", "timestamp": utc_timestamp()})
    else:
        await _json(send, 404, {"error": "not found"})
