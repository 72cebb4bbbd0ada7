"""Small pieces every pure-ASGI aiaas service needs: a JSON response, the lifespan protocol, and
a clean exit after the server's own graceful shutdown.

- :func:`send_json` answers one request with a JSON body (``content-length`` and
  ``cache-control: no-store`` set; ``head=True`` sends the headers only).
- :func:`run_lifespan` speaks the ASGI lifespan protocol, calling optional ``startup`` and
  ``shutdown`` coroutines: a startup that raises is reported as ``lifespan.startup.failed`` (the
  server then refuses to start), and ``shutdown`` is always followed by
  ``lifespan.shutdown.complete``.
- :class:`ErrorRenderers`: which :data:`ErrorRenderer` answers a path's errors (by path prefix,
  the longest first), for APIs that answer in another error shape than the platform's (an
  OpenAI-compatible ``/v1/``); the auth and telemetry middlewares take one as ``error_renderers``.
- :func:`signals_end_normally`: uvicorn handles SIGTERM/SIGINT with a graceful shutdown and then
  raises the signal again against the handler installed before it started. With the default
  handlers that kills the process (SIGTERM) or raises ``KeyboardInterrupt`` (SIGINT) before the
  service has flushed its telemetry; inside this context manager the signal is only recorded,
  so the command ends normally. The previous handlers are restored on exit. Outside the main
  thread (where handlers cannot be installed) it does nothing.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiaas_core._errors import AiaasError

__all__ = [
    "ErrorRenderer",
    "ErrorRenderers",
    "run_lifespan",
    "send_json",
    "signals_end_normally",
]

#: Renders an error as (status, ASGI headers, body) for the paths under one prefix.
ErrorRenderer = Callable[["AiaasError"], tuple[int, list[tuple[bytes, bytes]], bytes]]


class ErrorRenderers:
    """Error renderers by path prefix, checked once; the longest matching prefix wins.

    ``ErrorRenderers({"/v1/": openai_error_response})``: errors of paths under ``/v1/`` are
    rendered by that function, all others (``for_path`` returns ``None``) by the platform's
    error body. A mapping, ``None`` (no renderers) or another ``ErrorRenderers`` is accepted.
    """

    __slots__ = ("_pairs",)

    def __init__(
        self, renderers: Mapping[str, ErrorRenderer] | ErrorRenderers | None = None
    ) -> None:
        if isinstance(renderers, ErrorRenderers):
            self._pairs: tuple[tuple[str, ErrorRenderer], ...] = renderers._pairs
            return
        if renderers is None:
            self._pairs = ()
            return
        if not isinstance(renderers, Mapping):
            raise TypeError("error_renderers must map path prefixes to renderers")
        for prefix, renderer in renderers.items():
            if not prefix.startswith("/"):
                raise ValueError(
                    f"error_renderers keys are path prefixes starting with '/', got {prefix!r}"
                )
            if not callable(renderer):
                raise TypeError(f"the error renderer for {prefix!r} is not callable")
        self._pairs = tuple(sorted(renderers.items(), key=lambda item: -len(item[0])))

    def for_path(self, path: str) -> ErrorRenderer | None:
        """The renderer for ``path``'s errors, or ``None`` for the platform's error body."""
        for prefix, renderer in self._pairs:
            if path.startswith(prefix):
                return renderer
        return None

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __repr__(self) -> str:
        return f"ErrorRenderers({[prefix for prefix, _ in self._pairs]!r})"


_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


async def send_json(
    send: _Send,
    status: int,
    payload: Any,
    *,
    head: bool = False,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send ``payload`` as a compact JSON response with ``status`` (body omitted for HEAD)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def run_lifespan(
    receive: _Receive,
    send: _Send,
    *,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Answer the ASGI lifespan messages until shutdown, running the given hooks."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if startup is not None:
                try:
                    await startup()
                except Exception as exc:  # noqa: BLE001 - any failure: the server must not start
                    await send(
                        {
                            "type": "lifespan.startup.failed",
                            "message": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                if shutdown is not None:
                    await shutdown()
            finally:
                await send({"type": "lifespan.shutdown.complete"})
            return


@contextmanager
def signals_end_normally() -> Iterator[list[int]]:
    """Record SIGTERM/SIGINT instead of dying, for the span of a server's run (see the module
    docs); yields the list of signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
