"""The HTTP routes, as a plain ASGI app, and the telemetry middleware around them.

CHANGE: replace the greeting with your own routes. For each one: add its path (a template such as
``/v1/items/{id}`` for a path with parameters) to the route table in :meth:`ServiceApp.__init__`.
Handlers return ``(status, JSON payload)`` and signal client errors by raising an
:class:`aiaas_core.AiaasError` (``ValidationError`` is a 422, ``NotFoundError`` a 404 ...): the
middleware turns it into the shared error body (``contracts/error-response.schema.json``). Any
other exception becomes a 500 whose text stays in the server log.

Prefer Starlette or FastAPI for a larger API: wrap it with ``telemetry.middleware`` the same way
(see the aiaas-telemetry README).
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qs

from aiaas_core import (
    ASGIApp,
    BadRequestError,
    CheckResult,
    HealthRegistry,
    MethodNotAllowedError,
    NotFoundError,
    Receive,
    Scope,
    Send,
    ValidationError,
    run_lifespan,
    send_json,
)
from aiaas_telemetry import Telemetry, check_service_compatibility, service_stack

Handler = Callable[[Scope], Awaitable[tuple[int, Any]]]

#: Longest name ``GET /v1/greeting`` accepts.
MAX_NAME_LENGTH: Final = 64
#: Spans the exporter may queue (passed to ``aiaas_telemetry.setup``); readiness degrades near it.
SPAN_QUEUE_SIZE: Final = 2048


def greeting_name(name: str | None) -> str:
    """Check a ``name`` query value and tidy it: ``"  mary-jane  smith"`` -> ``"Mary-Jane Smith"``.

    A name is 1 to 64 letters (any script), spaces and hyphens, with at least one letter. Runs of
    spaces are collapsed and the first letter of each word is capitalised (title case); the rest
    is kept as given ("McDonald" stays "McDonald").

    Raises :class:`aiaas_core.ValidationError` (a 422) saying what is wrong with the name.
    """
    if name is None:
        raise ValidationError("the query parameter 'name' is required: GET /v1/greeting?name=Ada")
    name = unicodedata.normalize("NFC", name)  # "e" + combining accent -> one letter
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(
            f"name is too long: at most {MAX_NAME_LENGTH} characters, got {len(name)}"
        )
    if not all(char.isalpha() or char in " -" for char in name):
        raise ValidationError("name may contain only letters, spaces and hyphens")
    if not any(char.isalpha() for char in name):
        raise ValidationError("name must contain at least one letter")
    words = " ".join(name.split())
    return "".join(
        _capital(char) if index == 0 or words[index - 1] in " -" else char
        for index, char in enumerate(words)
    )


def _capital(letter: str) -> str:
    titled = letter.title()
    return titled if len(titled) == 1 else letter  # "ß" stays "ß" rather than become "Ss"


def _query(scope: Scope) -> dict[str, list[str]]:
    raw: bytes = scope.get("query_string", b"")
    try:
        return parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequestError(
            "the query string is malformed: send at most 32 fields, percent-encoded UTF-8"
        ) from None


class ServiceApp:
    """The routes: ``GET /v1/greeting``, ``/health`` (liveness) and ``/ready`` (readiness)."""

    def __init__(self, health: HealthRegistry) -> None:
        self.health = health
        # CHANGE: your routes. Path -> handler; every route answers GET and HEAD here.
        self.routes: dict[str, Handler] = {
            "/v1/greeting": self.greeting,
            "/health": self.liveness,
            "/ready": self.readiness,
        }

    async def greeting(self, scope: Scope) -> tuple[int, Any]:
        values = _query(scope).get("name")
        if values is not None and len(values) > 1:
            raise ValidationError("give the query parameter 'name' once")
        name = greeting_name(values[0] if values else None)
        return 200, {"greeting": f"Hello, {name}!"}

    async def liveness(self, scope: Scope) -> tuple[int, Any]:
        report = await self.health.run("liveness")
        return report.http_status, report.to_dict()

    async def readiness(self, scope: Scope) -> tuple[int, Any]:
        report = await self.health.run("readiness")
        return report.http_status, report.to_dict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # CHANGE: open and close your connection pools and clients here:
            # run_lifespan(receive, send, startup=..., shutdown=...) with async functions.
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise NotFoundError("this service speaks HTTP only")
        handler = self.routes.get(scope["path"])
        if handler is None:
            raise NotFoundError("Not found: no route at this path (try GET /v1/greeting?name=Ada)")
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowedError(
                "Method not allowed: this route answers GET and HEAD",
                allow=("GET", "HEAD"),
            )
        status, payload = await handler(scope)
        await send_json(send, status, payload, head=scope["method"] == "HEAD")


def build_health(telemetry: Telemetry) -> HealthRegistry:
    """The liveness and readiness checks behind ``/health`` and ``/ready``.

    CHANGE: register one readiness check per dependency (database, downstream service). A failing
    ``critical`` check makes ``/ready`` answer 503 (out of the load balancer until it recovers);
    a non-critical one only degrades it. Liveness checks look inside the process only: a failing
    one gets the container restarted, which never fixes a dependency.
    """
    health = HealthRegistry(cache_ttl=1.0)  # probes are frequent: run the checks once a second

    @health.register(name="event-loop", kind="liveness", timeout=1.0)
    async def event_loop() -> None:
        await asyncio.sleep(0)

    @health.register(name="telemetry", critical=False)
    async def span_queue() -> CheckResult:
        queued = int(telemetry.registry.get_sample_value("aiaas_telemetry_span_queue_size") or 0)
        if queued >= SPAN_QUEUE_SIZE * 0.9:
            return CheckResult.degraded("the span queue is nearly full: is the collector up?")
        return CheckResult.ok({"queued_spans": queued})

    # The aiaas packages installed beside us, against the ranges we and they declare: a warning
    # line, aiaas_version_skew_problems and a degraded "version-skew" readiness check if not.
    check_service_compatibility("service-template", telemetry, health)
    return health


def create_app(telemetry: Telemetry, health: HealthRegistry | None = None) -> ASGIApp:
    """The service's ASGI app: the routes inside the telemetry middleware.

    :func:`aiaas_telemetry.service_stack` (no authentication here: add ``auth=ServiceAuth(...)``
    to require API keys). Its middleware gives every request one ``X-Request-ID``, a span,
    metrics and an access-log line, answers ``/metrics``, and renders errors as the shared error
    body. The probes are kept out of the request metrics and traces.
    """
    app = ServiceApp(health if health is not None else build_health(telemetry))
    return service_stack(app, telemetry=telemetry, routes=list(app.routes))
