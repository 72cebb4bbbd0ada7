"""The world-service ASGI application and the middleware stack around it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiaas_core import (
    Actor,
    ApiKeyVerifier,
    ASGIApp,
    AuthenticationError,
    CheckResult,
    HealthRegistry,
    InMemoryApiKeyStore,
    MethodNotAllowedError,
    NotFoundError,
    Policy,
    PolicyRule,
    Receive,
    RouteRule,
    Scope,
    Send,
    run_lifespan,
    send_json,
    settings_summary,
)
from aiaas_telemetry import ServiceAuth, Telemetry, check_service_compatibility, service_stack
from world_service._settings import Settings

SERVICE_NAME = "world-service"
ROUTES = ("/world", "/health", "/ready", "/admin/config")
PUBLIC_PATHS = ("/world", "/health", "/ready", "/metrics")


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2024-05-01T12:00:00.123Z``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WorldApp:
    """``GET /world``, ``/health``, ``/ready`` and the privileged ``GET /admin/config``."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        health: HealthRegistry,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.health = health
        self._clock = clock or (lambda: datetime.now(UTC))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise NotFoundError("world-service speaks HTTP only")
        path: str = scope["path"]
        method: str = scope["method"]
        if path not in ROUTES:
            raise NotFoundError(f"Not found: no route {path}")
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(
                f"Method not allowed: {path} answers GET and HEAD", allow=("GET", "HEAD")
            )
        head = method == "HEAD"
        if path == "/world":
            await send_json(
                send,
                200,
                {"message": f"Hello, {SERVICE_NAME}!", "timestamp": utc_timestamp(self._clock())},
                head=head,
            )
        elif path in ("/health", "/ready"):
            report = await self.health.run("liveness" if path == "/health" else "readiness")
            await send_json(send, report.http_status, report.to_dict(), head=head)
        else:  # /admin/config, reached only through AuthMiddleware with config:read
            self.telemetry.logger.info("configuration read by an administrator")
            await send_json(
                send,
                200,
                {
                    "service": settings_summary(self.settings),
                    "telemetry": self.telemetry.profile.summary(),
                },
                head=head,
            )


def _health(settings: Settings, telemetry: Telemetry) -> HealthRegistry:
    health = HealthRegistry(cache_ttl=1.0)
    queue_limit = 2048

    @health.register(name="event-loop", kind="liveness", timeout=1.0)
    async def event_loop() -> None:
        await asyncio.sleep(0)

    @health.register(name="api-keys", critical=False)
    async def api_keys() -> CheckResult:
        count = len(settings.api_keys)
        if not count:
            return CheckResult.degraded("no API keys configured: the admin routes refuse everyone")
        return CheckResult.ok({"keys": count})

    @health.register(name="telemetry", critical=False)
    async def telemetry_queue() -> CheckResult:
        queued = telemetry.registry.get_sample_value("aiaas_telemetry_span_queue_size") or 0.0
        if queued >= queue_limit * 0.9:
            return CheckResult.degraded("span queue nearly full: the collector is not keeping up")
        return CheckResult.ok({"queued_spans": int(queued)})

    # The aiaas packages installed beside us, against the ranges we and they declare: a warning
    # line, aiaas_version_skew_problems and a degraded "version-skew" readiness check if not.
    check_service_compatibility("world-service", telemetry, health)
    return health


async def _no_keys(credential: str) -> Actor:
    raise AuthenticationError(
        "Authentication failed: this service has no API keys configured", code="API_KEY_INVALID"
    )


def create_app(settings: Settings, telemetry: Telemetry) -> ASGIApp:
    """The full stack (:func:`aiaas_telemetry.service_stack`): telemetry middleware, then
    authentication, then the routes."""
    health = _health(settings, telemetry)
    store = InMemoryApiKeyStore(settings.key_records())
    hasher = settings.hasher()
    app = WorldApp(settings, telemetry, health)
    authenticate: Callable[[str], Awaitable[Actor]] = (
        _no_keys if hasher is None else ApiKeyVerifier(store, hasher, touch_interval=None).verify
    )
    policy = Policy(
        [
            PolicyRule(
                id="admins-read-config",
                effect="allow",
                roles=["admin"],
                permissions=["config:read"],
            )
        ]
    )
    return service_stack(
        app,
        telemetry=telemetry,
        auth=ServiceAuth(
            authenticate=authenticate,
            policy=policy,
            rules=[RouteRule("GET", "/admin/config", "config:read")],
            public_paths=PUBLIC_PATHS,
        ),
        routes=list(ROUTES),
    )
