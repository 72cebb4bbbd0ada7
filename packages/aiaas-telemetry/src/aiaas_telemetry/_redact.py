"""Redaction of secret-looking values in structured log and audit data.

A key is *secret-looking* when, lower-cased and with ``-`` read as ``_``, it contains one of
:data:`SECRET_KEY_PARTS` (``authorization``, ``token``, ``password``, ``api_key``, ``secret``,
``cookie`` ...): ``Authorization``, ``X-Api-Key``, ``refresh_token``, ``DB_PASSWORD`` and
``Set-Cookie`` all are. The whole value under such a key is replaced by :data:`REDACTED`, whatever
its type -- a nested mapping under ``credentials`` is not searched, it is dropped.

Redaction walks mappings, lists, tuples and sets at any depth, and reads a sequence of
``(name, value)`` pairs (ASGI and ``requests`` style header lists) as a mapping. Data nested
deeper than :data:`MAX_DEPTH`, or that refers back to itself, is replaced rather than walked, so a
hostile or cyclic structure cannot leak past redaction or exhaust the stack.

Token *counts* are not secrets: exact key names in :data:`DEFAULT_ALLOWED_KEYS` (``max_tokens``,
``prompt_tokens`` ...) are left alone, because an inference platform logs them everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = [
    "DEFAULT_ALLOWED_KEYS",
    "MAX_DEPTH",
    "REDACTED",
    "SECRET_KEY_PARTS",
    "is_secret_key",
    "redact",
]

#: What a secret value is replaced with.
REDACTED: Final = "[REDACTED]"
#: What data nested deeper than :data:`MAX_DEPTH` (or cyclic data) is replaced with.
TRUNCATED: Final = "[TRUNCATED]"
#: How deep :func:`redact` walks before it replaces the rest.
MAX_DEPTH: Final = 32

#: Substrings that make a key secret-looking (matched on the lower-cased key, ``-`` as ``_``).
SECRET_KEY_PARTS: Final[tuple[str, ...]] = (
    "authorization",
    "token",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "secret",
    "cookie",
    "credential",
    "private_key",
)

#: Exact key names (lower-case) that contain a secret-looking part but hold no secret.
DEFAULT_ALLOWED_KEYS: Final[frozenset[str]] = frozenset(
    {
        "tokens",
        "max_tokens",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "token_count",
        "token_budget",
        "tokens_per_second",
    }
)


@lru_cache(maxsize=4096)
def _secret(key: str) -> bool:
    norm = key.lower().replace("-", "_")
    if norm in DEFAULT_ALLOWED_KEYS:
        return False
    return any(part in norm for part in SECRET_KEY_PARTS)


def is_secret_key(key: object) -> bool:
    """Whether values under ``key`` must never be logged.

    ``bytes`` keys (ASGI header names) are read as Latin-1; other non-string keys are never
    secret-looking.
    """
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    return _secret(key)


def _is_pair(item: object) -> bool:
    return isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str | bytes)


def redact(value: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """Return a copy of ``value`` with every value under a secret-looking key replaced.

    Mappings come back as ``dict``, lists and tuples as ``list`` (JSON has no tuple), sets as
    sorted ``list``; every other value is returned as it is. The input is never modified.
    """
    return _redact(value, max_depth, set())


def _redact(value: Any, depth: int, seen: set[int]) -> Any:
    if isinstance(value, str | int | float | bool | bytes) or value is None:
        return value
    if isinstance(value, Mapping):
        if depth <= 0 or id(value) in seen:
            return TRUNCATED
        seen.add(id(value))
        try:
            return {
                k: REDACTED if is_secret_key(k) else _redact(v, depth - 1, seen)
                for k, v in value.items()
            }
        finally:
            seen.discard(id(value))
    if isinstance(value, list | tuple | set | frozenset):
        if depth <= 0 or id(value) in seen:
            return TRUNCATED
        seen.add(id(value))
        try:
            items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
            return [_redact_item(item, depth - 1, seen) for item in items]
        finally:
            seen.discard(id(value))
    return value


def _redact_item(item: Any, depth: int, seen: set[int]) -> Any:
    # A ``(name, value)`` pair inside a sequence reads like one entry of a header list.
    if _is_pair(item) and is_secret_key(item[0]):
        return [item[0], REDACTED]
    return _redact(item, depth, seen)


def redact_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``dict(pairs)`` with secret-looking keys' values redacted (nested data too)."""
    return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in pairs}
