"""The aiaas exception tree, and the one error body every service returns.

Every error a library or service raises on purpose is an :class:`AiaasError`: it carries a stable
machine-readable ``code`` and the HTTP ``status`` it maps to. Anything else that escapes a handler
is rendered as :class:`InternalError` -- its text never reaches a client.

::

    AiaasError                      INTERNAL_ERROR          500
    ├── ConfigError                 CONFIG_INVALID          500
    ├── BadRequestError             REQUEST_INVALID         400
    │   ├── PayloadTooLargeError    REQUEST_TOO_LARGE       413
    │   ├── UnsupportedMediaTypeError
    │   │                           REQUEST_UNSUPPORTED_MEDIA_TYPE  415
    │   └── ValidationError         VALIDATION_FAILED       422
    ├── AuthenticationError         AUTH_UNAUTHENTICATED    401
    ├── PermissionDeniedError       AUTH_ROLE_DENIED        403
    ├── NotFoundError               NOT_FOUND               404
    ├── MethodNotAllowedError       METHOD_NOT_ALLOWED      405  (with ``Allow``)
    ├── ConflictError               CONFLICT                409
    ├── LockedError                 RESOURCE_LOCKED         423
    ├── RateLimitedError            RATE_LIMITED            429
    ├── ServiceUnavailableError     SERVICE_UNAVAILABLE     503
    ├── GatewayTimeoutError         GATEWAY_TIMEOUT         504
    └── InternalError               INTERNAL_ERROR          500

Two renderings exist: :func:`error_body` (the shared error schema,
``contracts/error-response.schema.json``) and :func:`problem_details` (RFC 7807
``application/problem+json``). Both fill the request id, trace id and actor from the current
request context when the caller does not pass them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from aiaas_core._context import Actor, get_actor, get_request_id, get_trace_id, new_request_id

__all__ = [
    "AiaasError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "GatewayTimeoutError",
    "InternalError",
    "LockedError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "as_aiaas_error",
    "error_body",
    "error_response",
    "problem_details",
]

#: The W3C "no trace" id, used in error bodies rendered outside any trace.
NO_TRACE_ID: Final = "0" * 32
PROBLEM_TYPE_BASE: Final = "https://errors.aiaas.dev/"


class AiaasError(Exception):
    """Base of every deliberate aiaas error.

    ``message`` must be safe to show a client: it is what the error body's ``error`` field
    carries. ``detail`` is optional extra context, also client-safe. Never put secrets, SQL or
    stack traces in either.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message if message is not None else self.title
        self.detail = detail
        if code is not None:
            # An instance may refine the class's code (e.g. API_KEY_REVOKED under 401).
            self.code = code  # type: ignore[misc]
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(AiaasError):
    """Configuration could not be loaded; ``problems`` lists every problem found at once."""

    code = "CONFIG_INVALID"
    title = "Invalid configuration"

    def __init__(
        self,
        message: str | None = None,
        *,
        problems: tuple[Any, ...] | list[Any] = (),
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        self.problems = tuple(problems)
        if message is None:
            lines = [str(p) for p in self.problems]
            message = (
                f"{len(lines)} configuration problem(s):\n  - " + "\n  - ".join(lines)
                if lines
                else self.title
            )
        super().__init__(message, detail=detail, code=code)


class BadRequestError(AiaasError):
    """The request is malformed (bad JSON, bad header, bad parameter)."""

    code = "REQUEST_INVALID"
    status = 400
    title = "Bad request"


class PayloadTooLargeError(BadRequestError):
    """The request body or a header is larger than the service accepts."""

    code = "REQUEST_TOO_LARGE"
    status = 413
    title = "Payload too large"


class UnsupportedMediaTypeError(BadRequestError):
    """The request body is not in a media type the route accepts (415)."""

    code = "REQUEST_UNSUPPORTED_MEDIA_TYPE"
    status = 415
    title = "Unsupported media type"


class ValidationError(BadRequestError):
    """The request is well-formed but its content fails validation."""

    code = "VALIDATION_FAILED"
    status = 422
    title = "Validation failed"


class AuthenticationError(AiaasError):
    """No valid credentials were presented."""

    code = "AUTH_UNAUTHENTICATED"
    status = 401
    title = "Authentication required"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = {"WWW-Authenticate": 'Bearer realm="aiaas"'}
        merged.update(headers or {})
        super().__init__(message, detail=detail, code=code, headers=merged)


class PermissionDeniedError(AiaasError):
    """The actor is authenticated but not allowed to do this."""

    code = "AUTH_ROLE_DENIED"
    status = 403
    title = "Permission denied"


class NotFoundError(AiaasError):
    code = "NOT_FOUND"
    status = 404
    title = "Not found"


_METHOD: Final = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")


class MethodNotAllowedError(AiaasError):
    """The path exists but does not answer this method (405, with an ``Allow`` header).

    ``allow`` names the methods the path answers (``("GET", "HEAD")``); they become the
    ``Allow`` header every 405 must carry (RFC 9110). A caller may instead pass
    ``headers={"Allow": "GET, HEAD"}``; a 405 with neither is a ``ValueError``, and so is a
    method that is not an upper-case token.
    """

    code = "METHOD_NOT_ALLOWED"
    status = 405
    title = "Method not allowed"

    def __init__(
        self,
        message: str | None = None,
        *,
        allow: Iterable[str] | None = None,
        detail: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        merged = dict(headers or {})
        if allow is not None:
            methods: list[object] = [allow] if isinstance(allow, str) else list(allow)
            bad = [m for m in methods if not isinstance(m, str) or not _METHOD.fullmatch(m)]
            if bad or not methods:
                raise ValueError(
                    f"allow must name at least one HTTP method in upper case, got {methods!r}"
                )
            merged["Allow"] = ", ".join(dict.fromkeys(str(m) for m in methods))
        if not any(name.lower() == "allow" for name in merged):
            raise ValueError("a 405 must say which methods the path answers: pass allow=[...]")
        self.allow: tuple[str, ...] = tuple(
            m.strip()
            for name, value in merged.items()
            if name.lower() == "allow"
            for m in value.split(",")
            if m.strip()
        )
        super().__init__(message, detail=detail, code=code, headers=merged)


class ConflictError(AiaasError):
    code = "CONFLICT"
    status = 409
    title = "Conflict"


class LockedError(AiaasError):
    """The resource is locked (for example, an environment under maintenance)."""

    code = "RESOURCE_LOCKED"
    status = 423
    title = "Locked"


class _RetryableError(AiaasError):
    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after!r}")
        self.retry_after = retry_after
        merged = dict(headers or {})
        if retry_after is not None:
            # Retry-After takes whole seconds; round up so clients never retry early.
            merged["Retry-After"] = str(max(0, int(-(-retry_after // 1))))
        super().__init__(message, detail=detail, code=code, headers=merged)


class RateLimitedError(_RetryableError):
    code = "RATE_LIMITED"
    status = 429
    title = "Too many requests"


class ServiceUnavailableError(_RetryableError):
    code = "SERVICE_UNAVAILABLE"
    status = 503
    title = "Service unavailable"


class GatewayTimeoutError(AiaasError):
    """A step the request waited on (a model, an upstream service) did not answer in time."""

    code = "GATEWAY_TIMEOUT"
    status = 504
    title = "Gateway timeout"


class InternalError(AiaasError):
    """What any unexpected exception becomes on its way to a client."""


def as_aiaas_error(exc: BaseException) -> AiaasError:
    """Return ``exc`` itself when it is an :class:`AiaasError`, else a generic internal error.

    The original exception's text is deliberately dropped: it may hold secrets or internals.
    """
    if isinstance(exc, AiaasError):
        return exc
    return InternalError()


def _timestamp(now: datetime | None) -> str:
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("error timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ids(request_id: str | None, trace_id: str | None) -> tuple[str, str]:
    rid = request_id or get_request_id() or new_request_id()
    tid = trace_id or get_trace_id() or NO_TRACE_ID
    return rid, tid


def error_body(
    exc: BaseException,
    *,
    request_id: str | None = None,
    trace_id: str | None = None,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Render ``exc`` as the shared error body (``error-response.schema.json``)."""
    err = as_aiaas_error(exc)
    rid, tid = _ids(request_id, trace_id)
    body: dict[str, Any] = {
        "error": err.message,
        "code": err.code,
        "request_id": rid,
        "trace_id": tid,
        "timestamp": _timestamp(now),
    }
    if err.detail:
        body["detail"] = err.detail
    who = actor if actor is not None else get_actor()
    if who is not None and who.roles:
        body["actor"] = {"subject": who.subject, "roles": list(who.roles)}
    return body


def problem_details(
    exc: BaseException,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
    now: datetime | None = None,
    type_base: str = PROBLEM_TYPE_BASE,
) -> dict[str, Any]:
    """Render ``exc`` as an RFC 7807 problem document (``application/problem+json``).

    ``code``, ``request_id``, ``trace_id`` and ``timestamp`` are carried as extension members.
    """
    err = as_aiaas_error(exc)
    rid, tid = _ids(request_id, trace_id)
    doc: dict[str, Any] = {
        "type": f"{type_base}{err.code.lower().replace('_', '-')}",
        "title": err.title,
        "status": err.status,
        "detail": err.message if not err.detail else f"{err.message}: {err.detail}",
        "code": err.code,
        "request_id": rid,
        "trace_id": tid,
        "timestamp": _timestamp(now),
    }
    if instance is not None:
        doc["instance"] = instance
    return doc


def error_response(
    exc: BaseException,
    *,
    problem: bool = False,
    instance: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers and body bytes for ``exc``, ready for an ASGI ``send``.

    With ``problem=True`` the body is RFC 7807 ``application/problem+json``; otherwise the
    shared error body as ``application/json``. ``Retry-After`` and ``WWW-Authenticate`` headers
    carried by the error are included.
    """
    err = as_aiaas_error(exc)
    if problem:
        payload = problem_details(err, instance=instance, request_id=request_id, trace_id=trace_id)
        ctype = b"application/problem+json"
    else:
        payload = error_body(err, request_id=request_id, trace_id=trace_id)
        ctype = b"application/json"
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [
        (b"content-type", ctype),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()
    )
    return err.status, headers, body
