"""HTTP plumbing of the schema API: routes, the 415 error, request body validation.

The ASGI types, the 405 error, body reading and JSON responses come from aiaas-core's service kit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiaas_core import (
    BadRequestError,
    Receive,
    Scope,
    UnsupportedMediaTypeError,
    ValidationError,
    read_body,
)

__all__: list[str] = []

MAX_BODY_BYTES: Final = 64 * 1024
_VERSION_RE: Final = re.compile(r"[0-9]{1,18}")

ENTITIES_PATH: Final = "/v1/schema/entities"
APPLY_PATH: Final = "/v1/schema/migrations/apply"
ROLLBACK_PATH: Final = "/v1/schema/migrations/rollback"
STATUS_PATH: Final = "/v1/schema/migrations/status/{runId}"
ROLLUP_PATH: Final = "/v1/analytics/rollups/run"
ROLLUP_STATUS_PATH: Final = "/v1/analytics/rollups/runs/{runId}"
ROUTES: Final = (
    ENTITIES_PATH,
    APPLY_PATH,
    ROLLBACK_PATH,
    STATUS_PATH,
    ROLLUP_PATH,
    ROLLUP_STATUS_PATH,
    "/health",
    "/ready",
)
PUBLIC_PATHS: Final = ("/health", "/ready", "/metrics")


def _invalid(message: str, *, code: str = "VALIDATION_FAILED") -> ValidationError:
    return ValidationError(message, code=code)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _read_json(scope: Scope, receive: Receive) -> dict[str, Any]:
    ctype = b""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            ctype = value.split(b";", 1)[0].strip().lower()
    if ctype != b"application/json" and not (
        ctype.startswith(b"application/") and ctype.endswith(b"+json")
    ):
        raise UnsupportedMediaTypeError(
            "send the request body as JSON with 'Content-Type: application/json'",
            code="UNSUPPORTED_MEDIA_TYPE",  # the schema API's documented code
        )
    raw = await read_body(scope, receive, limit=MAX_BODY_BYTES)
    if raw is None:
        raise BadRequestError("the client went away before sending the whole body")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError(
            "the request body is not valid JSON", code="REQUEST_MALFORMED_JSON"
        ) from None
    if not isinstance(value, dict):
        raise _invalid(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def _check_keys(body: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _invalid(
            f"unknown field(s) in the {what}: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _component(body: Mapping[str, Any], components: Sequence[str]) -> str:
    value = body.get("component")
    if value is None:
        raise _invalid(f"'component' is required (one of {', '.join(components)})")
    if not isinstance(value, str) or value not in components:
        raise _invalid(f"'component' must be one of {', '.join(components)}, got {value!r}")
    return value


def _bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(f"'{key}' must be true or false, got {value!r}")
    return value


def _version(value: object, key: str) -> int:
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        raise _invalid(
            f"'{key}' must be a change-set version as a string of digits "
            f'(YYYYMMDDHHMM, e.g. "202611260001"), got {value!r}'
        )
    return int(value)


def _timestamp(body: Mapping[str, Any], key: str) -> datetime:
    value = body.get(key)
    if value is None:
        raise _invalid(f"'{key}' is required (RFC 3339 date-time with an offset)")
    if not isinstance(value, str):
        raise _invalid(f"'{key}' must be an RFC 3339 date-time string, got {value!r}")
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"'{key}' is not an RFC 3339 date-time: {value!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _invalid(f"'{key}' needs a UTC offset (e.g. 2026-11-26T00:00:00Z), got {value!r}")
    return moment.astimezone(UTC)


_TEMPLATES: Final = tuple(
    (
        template,
        re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"),
    )
    for template in ROUTES
)


def _match(path: str) -> tuple[str | None, dict[str, str]]:
    for template, pattern in _TEMPLATES:
        found = pattern.match(path)
        if found is not None:
            return template, found.groupdict()
    return None, {}
