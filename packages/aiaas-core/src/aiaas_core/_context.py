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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


_request_id: ContextVar[str | None] = ContextVar("aiaas_request_id", default=None)
_trace_id: ContextVar[str | None] = ContextVar("aiaas_trace_id", default=None)
_span_id: ContextVar[str | None] = ContextVar("aiaas_span_id", default=None)
_actor: ContextVar[Actor | None] = ContextVar("aiaas_actor", default=None)


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
    return _request_id.get()


def get_trace_id() -> str | None:
    return _trace_id.get()


def get_span_id() -> str | None:
    return _span_id.get()


def get_actor() -> Actor | None:
    return _actor.get()


def set_actor(actor: Actor | None) -> None:
    """Record the authenticated actor for the rest of the current request's context."""
    _actor.set(actor)


def set_trace(trace_id: str | None, span_id: str | None = None) -> None:
    """Record W3C trace and span ids (lowercase hex) for the current context.

    Malformed ids raise :class:`ValueError`: they come from our own tracer, never from a client.
    """
    if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
        raise ValueError(f"trace id must be 32 lowercase hex characters, got {trace_id!r}")
    if span_id is not None and not _SPAN_ID.fullmatch(span_id):
        raise ValueError(f"span id must be 16 lowercase hex characters, got {span_id!r}")
    _trace_id.set(trace_id)
    _span_id.set(span_id)


@contextmanager
def request_context(
    request_id: str | bytes | None = None,
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    actor: Actor | None = None,
) -> Iterator[str]:
    """Set the request context for a block; yields the accepted (or fresh) request id."""
    rid = accept_request_id(request_id)
    if trace_id is not None and not _TRACE_ID.fullmatch(trace_id):
        raise ValueError(f"trace id must be 32 lowercase hex characters, got {trace_id!r}")
    if span_id is not None and not _SPAN_ID.fullmatch(span_id):
        raise ValueError(f"span id must be 16 lowercase hex characters, got {span_id!r}")
    tokens = (
        _request_id.set(rid),
        _trace_id.set(trace_id),
        _span_id.set(span_id),
        _actor.set(actor),
    )
    try:
        yield rid
    finally:
        _actor.reset(tokens[3])
        _span_id.reset(tokens[2])
        _trace_id.reset(tokens[1])
        _request_id.reset(tokens[0])
