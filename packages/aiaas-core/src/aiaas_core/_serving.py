"""The ASGI service kit: the small pieces every pure-ASGI aiaas service needs.

- ``Scope``, ``Message``, ``Receive``, ``Send`` and ``ASGIApp``: the ASGI 3 types, spelled once.
- :func:`read_body` reads a request body up to a byte limit (413 ``PayloadTooLargeError`` past
  it, checked against ``Content-Length`` first and then as the body streams in).
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
- :func:`serve` runs an app under uvicorn (the ``serve`` extra: ``aiaas-core[serve]``) the way
  every aiaas service does: no access log or ``Server`` header of uvicorn's own (the telemetry
  middleware writes the access log), the lifespan protocol on, a bounded graceful shutdown on
  SIGTERM/SIGINT, and a normal return afterwards (see :func:`signals_end_normally`) so the
  caller flushes its telemetry.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from aiaas_core._errors import PayloadTooLargeError, ServiceUnavailableError

if TYPE_CHECKING:
    from aiaas_core._errors import AiaasError

__all__ = [
    "ASGIApp",
    "ErrorRenderer",
    "ErrorRenderers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "run_lifespan",
    "send_json",
    "serve",
    "signals_end_normally",
]

#: An ASGI connection scope (``type``, ``path``, ``method``, ``headers``...).
Scope: TypeAlias = MutableMapping[str, Any]
#: One ASGI event, received or sent.
Message: TypeAlias = MutableMapping[str, Any]
#: The ASGI ``receive`` callable.
Receive: TypeAlias = Callable[[], Awaitable[Message]]
#: The ASGI ``send`` callable.
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application (or middleware).
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

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


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == b"content-length":
            raw = bytes(value).strip()
            return int(raw) if raw.isdigit() and len(raw) <= 19 else None
    return None


async def read_body(scope: Scope, receive: Receive, *, limit: int) -> bytes | None:
    """The request body, at most ``limit`` bytes; ``None`` when the client disconnected first.

    A ``Content-Length`` over ``limit`` is refused before anything is read, and a body that
    streams past it as soon as it does: both raise :class:`PayloadTooLargeError` (413,
    ``REQUEST_TOO_LARGE``). An unreadable ``Content-Length`` is left to the byte count.
    """
    bound: object = limit  # checked at run time too: callers may pass anything
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
        raise ValueError(f"limit must be a whole number of bytes >= 0, got {limit!r}")
    too_large = f"the request body is larger than {limit} bytes"
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(too_large)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(
    send: Send,
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
    receive: Receive,
    send: Send,
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


def _seconds(value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"graceful_timeout must be positive, got {value!r}")
    return seconds


def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_timeout: float | timedelta = 10.0,
    on_ready: Callable[[int], object] | None = None,
) -> signal.Signals | None:
    """Run ``app`` under uvicorn until SIGTERM or SIGINT; return the signal that stopped it.

    The app gets the lifespan protocol (a failing startup stops the server: ``serve`` raises),
    HTTP only (no WebSocket), no ``Server`` header and no uvicorn access log; logging goes
    through whatever the process configured. On SIGTERM/SIGINT uvicorn stops accepting, lets
    in-flight requests finish for up to ``graceful_timeout`` (at least one whole second), and
    ``serve`` returns the signal instead of dying from it, so the caller can flush telemetry
    and exit normally. ``on_ready(port)`` is called once the server listens (``port=0`` picks
    a free port; ``on_ready`` receives the bound one).

    Raises :class:`ServiceUnavailableError` (``SERVER_START_FAILED``) when the server could not
    start (the address is taken or not local, or the app's startup failed), and
    ``ModuleNotFoundError`` naming the extra when uvicorn is not installed.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port!r}")
    graceful_s = _seconds(graceful_timeout)
    try:
        import uvicorn  # noqa: PLC0415 -- optional: the `serve` extra
    except ImportError as exc:
        raise ModuleNotFoundError(
            "aiaas_core.serve needs uvicorn: install the `serve` extra (pip install "
            "'aiaas-core[serve]')",
            name="uvicorn",
        ) from exc

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready(_bound_port(self, port))

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's lines go through the process's handlers
        access_log=False,  # the telemetry middleware writes the access log
        lifespan="on",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(graceful_s)),
    )
    server = _Server(config)
    with signals_end_normally() as received:
        try:
            server.run()  # returns after SIGTERM/SIGINT, once in-flight requests are done
        except SystemExit as exc:  # uvicorn exits when it cannot bind or start up
            raise ServiceUnavailableError(
                f"the server could not start on {host}:{port} (uvicorn exit status {exc.code}):"
                " the address is in use or not local, or the app's startup failed; see the log",
                code="SERVER_START_FAILED",
            ) from None
    return signal.Signals(received[0]) if received else None


def _bound_port(server: Any, requested: int) -> int:
    for listener in getattr(server, "servers", ()):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return requested
