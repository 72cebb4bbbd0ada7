"""The inference-service ASGI application: embeddings on the batching runtime, API keys from the
platform database, usage events off the critical path, health, readiness and metrics.

Stack (outermost first): aiaas-telemetry's ``TelemetryMiddleware`` (request id, span, access log,
``/metrics``) → aiaas-core's ``AuthMiddleware`` (API key → actor → policy) → the routes:
``POST /v1/embeddings`` and ``GET /v1/models`` (aiaas-serving's OpenAI endpoint),
``GET /health`` and ``GET /ready``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import attrs

from aiaas_core import (
    Actor,
    AiaasError,
    ApiKeyStore,
    ApiKeyVerifier,
    AuthMiddleware,
    CheckResult,
    HealthRegistry,
    KeyedHasher,
    NotFoundError,
    PermissionDeniedError,
    Policy,
    PolicyRule,
    RouteRule,
    ServiceUnavailableError,
    run_lifespan,
    send_json,
)
from aiaas_serving import (
    BatchPolicy,
    EmbeddingsOutcome,
    ModelAdapter,
    OpenAIEmbeddings,
    PrometheusMetrics,
    Runtime,
)
from aiaas_telemetry import Telemetry
from inference_service._keys import CachedKeyStore, KeyDirectory
from inference_service._settings import SERVICE_NAME, Settings
from inference_service._usage import UsageEvent, UsageRecorder

__all__ = ["ModelPrice", "Service", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Connect = Callable[[], Awaitable[Any]]

RUNTIME_MODEL: Final = "embedder"
ROUTES: Final = ("/v1/embeddings", "/v1/models", "/v1/models/{model}", "/health", "/ready")
PUBLIC_PATHS: Final = ("/health", "/ready", "/metrics")
#: Roles that may create embeddings (organisation roles of aiaas-db's users and service keys).
EMBEDDING_ROLES: Final = ("owner", "admin", "developer", "service")

logger = logging.getLogger(SERVICE_NAME)


@attrs.frozen
class ModelPrice:
    """The registry entry usage is recorded against: its id and price per 1000 tokens."""

    model_id: uuid.UUID | None
    cost_per_1k_tokens_usd: Decimal

    def cost(self, tokens: int) -> Decimal:
        return (Decimal(tokens) * self.cost_per_1k_tokens_usd / 1000).quantize(Decimal("1e-8"))


async def lookup_model(connect: Connect, name: str) -> ModelPrice:
    """The newest active global ``model_registry_entries`` row named ``name`` (or no id and a
    zero price, with a warning, when the registry has none)."""
    async with await connect() as conn:
        cur = await conn.execute(
            "SELECT model_registry_entry_id, cost_per_1k_tokens_usd FROM model_registry_entries"
            " WHERE name = %s AND organization_id IS NULL AND status = 'active'"
            " AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 1",
            (name,),
        )
        row = await cur.fetchone()
    if row is None:
        logger.warning(
            "model %r is not in model_registry_entries: usage is recorded without a model id"
            " and at no cost",
            name,
        )
        return ModelPrice(None, Decimal(0))
    return ModelPrice(row[0], Decimal(row[1]))


class _MethodNotAllowedError(AiaasError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    title = "Method not allowed"


class _UsageCollector:
    """``inference_usage_events_total{outcome}``, ``inference_usage_events_pending`` and
    ``inference_usage_database_up`` from :attr:`UsageRecorder.stats` at scrape time."""

    def __init__(self, recorder: UsageRecorder) -> None:
        self._recorder = recorder

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        stats = self._recorder.stats
        events = CounterMetricFamily(
            "inference_usage_events",
            "Usage events by outcome: written to usage_events, or dropped (buffer full, shutdown).",
            labels=["outcome"],
        )
        events.add_metric(["written"], stats.written)
        events.add_metric(["dropped_buffer_full"], stats.dropped_buffer_full)
        events.add_metric(["dropped_shutdown"], stats.dropped_shutdown)
        yield events
        yield GaugeMetricFamily(
            "inference_usage_events_pending",
            "Usage events buffered, not yet written.",
            value=stats.pending,
        )
        yield GaugeMetricFamily(
            "inference_usage_database_up",
            "1 while usage events are being written.",
            value=1 if stats.database_up else 0,
        )


class Service:
    """The parts of a running inference-service and the ASGI routes over them.

    ``connect`` opens an autocommit psycopg ``AsyncConnection`` to the platform database;
    ``key_store`` reads ``api_keys`` (aiaas-db's ``PostgresApiKeyStore`` in production);
    ``adapter`` is the model (the MiniLM sentence-embedding adapter by default).
    """

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        connect: Connect,
        key_store: ApiKeyStore,
        hasher: KeyedHasher,
        adapter_factory: Callable[[], ModelAdapter[Any, Any, Any]],
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._connect = connect
        self._adapter_factory = adapter_factory
        self.runtime = Runtime(
            device=settings.device,
            metrics=PrometheusMetrics(telemetry.registry),
            tracer_provider=telemetry.tracer_provider,
        )
        self.keys = CachedKeyStore(key_store)
        self.directory = KeyDirectory(connect)
        self.verifier = ApiKeyVerifier(self.keys, hasher, touch_interval=timedelta(minutes=5))
        self.price = ModelPrice(None, Decimal(0))
        self.usage = UsageRecorder(
            connect,
            buffer_limit=settings.usage_buffer,
            batch_size=settings.usage_batch,
            flush_interval=settings.usage_flush_interval.total_seconds(),
        )
        self.embeddings = OpenAIEmbeddings(
            self.runtime,
            models={settings.model: RUNTIME_MODEL},
            timeout=settings.request_timeout.total_seconds(),
            on_complete=self._record_usage,
        )
        self.health = self._health()
        self.started = False
        self.drained = False
        self._scopes: dict[str, frozenset[str]] = {}
        self._register_metrics()

    # -- metrics ---------------------------------------------------------------------------------

    def _register_metrics(self) -> None:
        """Usage counts are read from the recorder when Prometheus scrapes, so recording an
        event costs the request nothing but an append."""
        self.telemetry.registry.register(_UsageCollector(self.usage))

    # -- auth and usage --------------------------------------------------------------------------

    async def authenticate(self, credential: str) -> Actor:
        """API key → actor (subject: the key id); also learns the key's organisation."""
        record = await self.verifier.verify_record(credential)
        owner = self.directory.cached(record.key_id)
        if owner is None:
            try:
                owner = await self.directory.owner(record.key_id)
            except Exception as exc:
                raise ServiceUnavailableError(
                    "the key directory is unavailable: retry shortly", retry_after=5
                ) from exc
            if owner is None:  # deleted between the two reads
                raise ServiceUnavailableError("the API key changed while in use: retry")
        self._scopes[record.key_id] = frozenset(record.scopes)
        return Actor(subject=record.key_id, roles=record.roles, kind="api_key")

    def _require_scope(self, scope: Scope) -> None:
        """A key with scopes must hold the one the route needs (``*`` holds all); a key without
        scopes is limited by its roles alone."""
        actor = scope.get("aiaas.actor")
        if not isinstance(actor, Actor):
            return
        held = self._scopes.get(actor.subject, frozenset())
        needed = "embeddings:create" if scope["path"].endswith("/embeddings") else "models:read"
        if held and needed not in held and "*" not in held:
            raise PermissionDeniedError(
                f"this API key's scopes do not include {needed}: use a key that has it",
                code="API_KEY_SCOPE_DENIED",
            )

    def _record_usage(self, scope: Scope, outcome: EmbeddingsOutcome) -> None:
        actor = scope.get("aiaas.actor")
        owner = self.directory.cached(actor.subject) if isinstance(actor, Actor) else None
        if owner is None:
            return  # not an authenticated call: nothing to bill
        if outcome.status == 200:
            status, code, tokens = "success", None, outcome.prompt_tokens
        elif outcome.status == 429:
            status, code, tokens = "rate_limited", outcome.error_code or "RATE_LIMITED", 0
        else:
            status, code, tokens = (
                "error",
                outcome.error_code or "INTERNAL_ERROR",
                outcome.prompt_tokens,
            )
        self.usage.record(
            UsageEvent(
                occurred_at=datetime.now(UTC),
                organization_id=owner.organization_id,
                api_key_id=owner.api_key_id,
                model_id=self.price.model_id if outcome.model == self.settings.model else None,
                request_id=outcome.request_id,
                tokens_consumed=tokens,
                latency_ms=round(outcome.duration_s * 1000),
                status=status,  # type: ignore[arg-type]
                error_code=code,
                region=self.settings.region,
                cost_usd=self.price.cost(tokens) if status == "success" else Decimal(0),
            )
        )

    # -- health ----------------------------------------------------------------------------------

    def _health(self) -> HealthRegistry:
        health = HealthRegistry(cache_ttl=1.0)

        @health.register(name="event-loop", kind="liveness", timeout=1.0)
        async def event_loop() -> None:
            await asyncio.sleep(0)

        @health.register(name="model", timeout=1.0)
        async def model() -> CheckResult:
            if not self.started or self.drained:
                return CheckResult.failing("the model is not being served (starting or draining)")
            info = self.runtime.model_info(RUNTIME_MODEL)
            return CheckResult.ok({"queued": info.queued, "device": str(info.device)})

        @health.register(name="usage-writer", critical=False, timeout=1.0)
        async def usage_writer() -> CheckResult:
            stats = self.usage.stats
            details = {"pending": stats.pending, "dropped": stats.dropped_buffer_full}
            if not stats.database_up:
                return CheckResult.degraded(
                    "usage events are buffered: the database is not accepting them", details
                )
            return CheckResult.ok(details)

        @health.register(name="database", critical=False, timeout=2.0)
        async def database() -> CheckResult:
            async with await self._connect() as conn:
                await conn.execute("SELECT 1")
            return CheckResult.ok()

        return health

    # -- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Load the model, look up its registry entry and start the usage writer."""
        self.usage.start()
        try:
            self.price = await lookup_model(self._connect, self.settings.model)
        except Exception:
            logger.warning("could not read model_registry_entries: usage costs 0", exc_info=True)
        policy = BatchPolicy(
            max_batch_size=self.settings.max_batch_size, max_queue=self.settings.max_queue
        )
        adapter = await asyncio.to_thread(self._adapter_factory)
        await self.runtime.add_model(RUNTIME_MODEL, adapter, policy=policy)
        self.started = True
        logger.info("serving %s", self.settings.model)

    async def shutdown(self) -> None:
        """Drain: finish every accepted request, then write the buffered usage events."""
        self.drained = True
        timeout = self.settings.graceful_timeout.total_seconds()
        started = time.monotonic()
        await self.runtime.aclose()
        await self.verifier.drain()
        left = max(1.0, timeout - (time.monotonic() - started))
        stats = await self.usage.aclose(timeout=left)
        logger.info(
            "usage flushed",
            extra={
                "written": stats.written,
                "dropped_buffer_full": stats.dropped_buffer_full,
                "dropped_shutdown": stats.dropped_shutdown,
            },
        )

    # -- routes ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise NotFoundError("inference-service speaks HTTP only")
        path: str = scope["path"]
        if self.embeddings.handles(path):
            self._require_scope(scope)
            await self.embeddings(scope, receive, send)
            return
        if path not in ("/health", "/ready"):
            raise NotFoundError(f"Not found: no route {path}")
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            raise _MethodNotAllowedError(
                f"Method not allowed: {path} answers GET and HEAD", headers={"Allow": "GET, HEAD"}
            )
        report = await self.health.run("liveness" if path == "/health" else "readiness")
        await send_json(send, report.http_status, report.to_dict(), head=method == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async def startup() -> None:
            try:
                await self.startup()
            except Exception:
                logger.exception("inference-service could not start")
                raise

        await run_lifespan(receive, send, startup=startup, shutdown=self.shutdown)


def create_app(service: Service) -> ASGIApp:
    """The full stack around ``service``: telemetry, then authentication, then the routes."""
    policy = Policy(
        [
            PolicyRule(
                id="members-embed",
                effect="allow",
                roles=list(EMBEDDING_ROLES),
                permissions=["embeddings:create", "models:read"],
            )
        ]
    )
    guarded = AuthMiddleware(
        service,
        authenticate=service.authenticate,
        policy=policy,
        rules=[
            RouteRule("POST", "/v1/embeddings", "embeddings:create"),
            RouteRule("GET", "/v1/models", "models:read"),
            RouteRule("GET", "/v1/models/{model}", "models:read"),
            RouteRule("HEAD", "/v1/models", "models:read"),
        ],
        public_paths=PUBLIC_PATHS,
        audit=service.telemetry.audit.auth_hook(),
    )
    return service.telemetry.middleware(
        guarded,
        routes=list(ROUTES),
        metrics_path="/metrics",
        exclude_paths=("/health", "/ready"),
    )
