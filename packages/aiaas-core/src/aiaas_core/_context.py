"""Per-request context: request id, trace ids and the acting principal, in context variables.

Context variables follow the task that set them, so concurrent requests on one event loop never
see each other's ids. :func:`request_context` sets them for a block and restores the previous
values afterwards; the ASGI middlewares use it for every request.

Inbound request ids (``X-Request-ID``) are accepted only when well-formed
(:data:`REQUEST_ID_PATTERN`): 8 to 128 characters of letters, digits and ``. _ : -``, starting
with a letter or digit. Anything else -- empty, too long, control characters, spaces -- is
replaced by a fresh id, so a client can never inject text into logs through the header.
"""

from __future__ import annotations

import os
import re
from contextlib import ContextDecorator
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Final, Literal

import attrs

__all__ = [
    "REQUEST_ID_PATTERN",
    "Actor",
    "ActorKind",
    "accept_request_id",
    "get_actor",
    "get_request_id",
    "get_span_id",
    "get_trace_id",
    "new_request_id",
    "request_context",
    "set_actor",
    "set_trace",
]

ActorKind = Literal["user", "service", "migration", "api_key"]
_ACTOR_KINDS: Final = frozenset({"user", "service", "migration", "api_key"})

REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{7,127}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")


def _non_empty(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty string")


def _roles(_inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(r, str) and r for r in value):
        raise ValueError(f"{attribute.name} must be a tuple of non-empty names")


def _kind(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _ACTOR_KINDS:
        raise ValueError(f"actor kind must be one of {sorted(_ACTOR_KINDS)}, got {value!r}")


def _to_roles(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(sorted(value)) if isinstance(value, (set, frozenset)) else tuple(value)
    raise TypeError(f"roles must be a sequence of strings, got {type(value).__name__}")


@attrs.frozen
class Actor:
    """Who is acting: a subject (user id, service name, API key id), its roles and, for a
    credential that carries them (an API key), its scopes.

    ``scopes`` narrow what the roles allow (see :class:`~aiaas_core.RouteRule`'s ``scope``):
    empty (the default) means the actor is limited by its roles alone; ``*`` holds every scope.
    """

    subject: str = attrs.field(validator=_non_empty)
    roles: tuple[str, ...] = attrs.field(converter=_to_roles, validator=_roles)
    kind: ActorKind = attrs.field(default="user", validator=_kind)
    scopes: tuple[str, ...] = attrs.field(
        default=(), converter=_to_roles, validator=_roles, kw_only=True
    )

    def has_scope(self, scope: str) -> bool:
        """Whether a route that needs ``scope`` is open to this actor: an actor without scopes
        is limited by its roles alone; otherwise it must hold ``scope`` or ``*``."""
        return not self.scopes or scope in self.scopes or "*" in self.scopes


# The whole request context is one immutable tuple in one context variable -- (request id,
# trace id, span id, actor) -- so entering and leaving a request sets and resets one variable,
# not four; the setters below replace the tuple, never change it in place (a task that copied
# the context keeps what it saw).
_State = tuple[str | None, str | None, str | None, Actor | None]
_EMPTY: Final[_State] = (None, None, None, None)
_state: ContextVar[_State] = ContextVar("aiaas_request_context", default=_EMPTY)


def new_request_id() -> str:
    """A fresh request id: 32 lowercase hex characters (128 random bits)."""
    return os.urandom(16).hex()


def accept_request_id(value: str | bytes | None) -> str:
    """Return ``value`` when it is a well-formed request id, otherwise a fresh one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return new_request_id()
    if value and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return new_request_id()


def get_request_id() -> str | None:
    return _state.get()[0]


def get_trace_id() -> str | None:
    return _state.get()[1]


def get_span_id() -> str | None:
    return _state.get()[2]


def get_actor() -> Actor | None:
    return _state.get()[3]


def set_actor(actor: Actor | None) -> None:
    """Record the authenticated actor for the rest of the current request's context."""
    state = _state.get()
    _state.set((state[0], state[1], state[2], actor))


def set_trace(trace_id: str | None, span_id: str | None = None) -> None:
    """Record W3C trace and span ids (lowercase hex) for the current context.

    Malformed ids raise :class:`ValueError`: they come from our own tracer, never from a client.
    """
    if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
        raise ValueError(f"trace id must be 32 lowercase hex characters, got {trace_id!r}")
    if span_id is not None and not _SPAN_ID.fullmatch(span_id):
        raise ValueError(f"span id must be 16 lowercase hex characters, got {span_id!r}")
    state = _state.get()
    _state.set((state[0], trace_id, span_id, state[3]))


class _RequestContext(ContextDecorator):
    """What :func:`request_context` returns: a plain context manager (no generator), set up on
    entry, restoring the previous context on exit whatever happened inside. Used as a decorator,
    each call of the decorated function gets a fresh one (as with ``contextlib.contextmanager``).
    """

    __slots__ = ("_actor", "_request_id", "_span_id", "_token", "_trace_id")

    def __init__(
        self,
        request_id: str | bytes | None,
        trace_id: str | None,
        span_id: str | None,
        actor: Actor | None,
    ) -> None:
        self._request_id = request_id
        self._trace_id = trace_id
        self._span_id = span_id
        self._actor = actor
        self._token: Token[_State] | None = None

    def _recreate_cm(self) -> _RequestContext:
        return _RequestContext(self._request_id, self._trace_id, self._span_id, self._actor)

    def __enter__(self) -> str:
        rid = accept_request_id(self._request_id)
        trace_id, span_id = self._trace_id, self._span_id
        if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
            raise ValueError(f"trace id must be 32 lowercase hex characters, got {trace_id!r}")
        if span_id is not None and not _SPAN_ID.fullmatch(span_id):
            raise ValueError(f"span id must be 16 lowercase hex characters, got {span_id!r}")
        self._token = _state.set((rid, trace_id, span_id, self._actor))
        return rid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        token = self._token
        if token is not None:
            self._token = None
            _state.reset(token)


def request_context(
    request_id: str | bytes | None = None,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    actor: Actor | None = None,
) -> _RequestContext:
    """Set the request context for a block; yields the accepted (or fresh) request id.

    The ids are checked when the block is entered: a malformed ``trace_id`` or ``span_id``
    raises :class:`ValueError` there. The context before the block is back after it, whatever
    :func:`set_trace` and :func:`set_actor` did inside. Also a decorator (each call of the
    decorated function gets a fresh context).
    """
    return _RequestContext(request_id, trace_id, span_id, actor)
