"""The schema management API (``contracts/schema-management.yaml``) as a pure-ASGI application.

:func:`create_schema_app` builds the whole stack, outermost first::

    TelemetryMiddleware (request id, trace, metrics, access log, /metrics, error bodies)
      -> AuthMiddleware (API keys, the role policy; /health, /ready, /metrics are public)
        -> SchemaApi (the routes below)

======  =======================================  ==========================  ==================
method  path                                     permission                  roles (default)
======  =======================================  ==========================  ==================
GET     ``/v1/schema/entities``                  ``schema:read``             platform-engineer,
                                                                             app-team, read-only
POST    ``/v1/schema/migrations/apply``          ``migrations:apply``        platform-engineer
POST    ``/v1/schema/migrations/rollback``       ``migrations:rollback``     platform-engineer
GET     ``/v1/schema/migrations/status/{runId}`` ``migrations:read``         platform-engineer,
                                                                             app-team, read-only
POST    ``/v1/analytics/rollups/run``            ``rollups:run``             platform-engineer
GET     ``/v1/analytics/rollups/runs/{runId}``   ``rollups:read``            as migrations:read
GET     ``/health``, ``/ready``, ``/metrics``    public
======  =======================================  ==========================  ==================

Runs are asynchronous. ``apply`` and ``rollback`` validate the request and the database's state
(the pre-checks a :class:`~aiaas_db.Migrator` would run: clean head, unchanged applied sets,
nothing missing or out of order, no unconfirmed destructive set, the migration lock free), then
answer ``202`` with a ``MigrationRun`` and run the real migrator in a worker thread; its status
endpoint shows ``pending`` -> ``running`` (``appliedVersions`` growing as each change set lands) ->
``succeeded`` / ``rolled_back`` / ``failed``. One run at a time per server (``409
MIGRATION_RUN_IN_PROGRESS``); across processes the migrator's advisory lock decides (``409
MIGRATION_LOCKED`` when another migrator -- aiaas-db or golang-migrate -- holds it).

``rollback`` with ``version`` V rolls back V and every applied version after it, newest first
(``aiaas-db migrate down --to <the version before V>``). Entities come from the live catalog
(tables of the schema, partitions and the tooling's own tables left out; relationships from
foreign keys, from the ``<singular>_id`` key convention where a table deliberately has no foreign
key, and ``derivedFrom`` for the rollups) with each field's class and retention from the
platform's classification map. ``/health`` (liveness) carries each component's schema version
and last migration time, and is only ever degraded, never failing, by the database;
``/ready`` fails when the database is unreachable.

Every error is the shared error body (``contracts/error-response.schema.json``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs

from aiaas_core import (
    Actor,
    AiaasError,
    BadRequestError,
    CheckResult,
    ConflictError,
    HealthRegistry,
    NotFoundError,
    PayloadTooLargeError,
    Policy,
    PolicyRule,
    RouteRule,
    ServiceUnavailableError,
    ValidationError,
    error_response,
    run_lifespan,
    send_json,
)
from aiaas_db._errors import (
    ChangeSetError,
    DatabaseUnavailableError,
    MigrationError,
    MigrationNotFoundError,
)

if TYPE_CHECKING:
    import psycopg

    from aiaas_db._changesets import ChangeSet, ChangeSetSource
    from aiaas_db._classification import Classification, ClassifiedEntity, ClassifiedField
    from aiaas_db._migrator import Migrator
    from aiaas_db._models import MigrationStatus, RunReport
    from aiaas_db._pii import PiiProtector
    from aiaas_telemetry import Telemetry

__all__ = [
    "SCHEMA_API_ROLE",
    "RollupRequest",
    "RollupTrigger",
    "SchemaApi",
    "create_schema_app",
    "default_rollup_trigger",
    "schema_api_policy",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticator = Callable[[str], Awaitable[Actor]]

#: The role that may change the schema (apply, roll back, run rollups).
SCHEMA_API_ROLE: Final = "platform-engineer"
#: Roles that may read entities and run status.
READER_ROLES: Final = ("app-team", "read-only")
COMPONENTS: Final = ("operational", "analytics")
MAX_BODY_BYTES: Final = 64 * 1024
#: Finished runs kept in memory for the status endpoints (the oldest finished ones go first).
MAX_RUNS_KEPT: Final = 1000
#: Longest rollup window per request: hourly 31 days, daily 400 days.
MAX_ROLLUP_WINDOW: Final[dict[str, timedelta]] = {
    "hour": timedelta(days=31),
    "day": timedelta(days=400),
}
_VERSION_RE: Final = re.compile(r"[0-9]{1,18}")
# Tables that belong to the tooling, not the data model.
_TOOLING_PREFIXES: Final = ("schema_migrations", "aiaas_")
# Derived tables whose rows are computed from another table (no foreign key can say so).
_DERIVED_FROM: Final[dict[str, str]] = {
    "analytics_hourly_rollups": "usage_events",
    "analytics_daily_rollups": "usage_events",
}

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

_log = logging.getLogger("aiaas.db.serve")


# -- errors ------------------------------------------------------------------------------------


class MethodNotAllowedError(AiaasError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    title = "Method not allowed"


class UnsupportedMediaTypeError(BadRequestError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415
    title = "Unsupported media type"


def _invalid(message: str, *, code: str = "VALIDATION_FAILED") -> ValidationError:
    return ValidationError(message, code=code)


# -- classification ----------------------------------------------------------------------------


def _entity_key(name: str) -> str:
    return name.replace("_", "").lower()


def _loose_field(entity: ClassifiedEntity, column: str) -> ClassifiedField | None:
    """A contract-format entry (no ``column:``) for ``column``: the same name, or a unique
    ``email`` -> ``email_digest`` / ``event_id`` -> ``usage_event_id`` match."""
    loose = [
        f for f in entity.fields if column.startswith(f"{f.name}_") or column.endswith(f"_{f.name}")
    ]
    return loose[0] if len(loose) == 1 else None


def _classify(
    classification: Classification | None, table: str, entity: str, column: str
) -> ClassifiedField | None:
    if classification is None:
        return None
    found = classification.for_table(table)
    if found is None:
        found = next(
            (e for e in classification.entities if _entity_key(e.name) == _entity_key(entity)),
            None,
        )
    if found is None:
        return None
    exact = found.field(column)
    if exact is not None or found.table is not None:
        return exact  # our own map names every column exactly
    return _loose_field(found, column)


# -- the live catalog --------------------------------------------------------------------------


def _singular(table: str) -> str:
    for plural, single in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if table.endswith(plural) and len(table) > len(plural):
            return table[: -len(plural)] + single
    return table


def entity_name(table: str) -> str:
    """``model_registry_entries`` -> ``ModelRegistryEntry``."""
    return "".join(part.capitalize() for part in _singular(table).split("_") if part)


def _read_entities(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    include_fields: bool,
    classification: Classification | None,
) -> list[dict[str, Any]]:
    tables = conn.execute(
        """
        SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY c.relname
        """,
        (schema,),
    ).fetchall()
    tables = [t for t in tables if not str(t[1]).startswith(_TOOLING_PREFIXES)]
    oids = [int(t[0]) for t in tables]
    names = {int(t[0]): str(t[1]) for t in tables}
    columns: dict[str, list[tuple[str, str, bool]]] = {name: [] for name in names.values()}
    for relid, column, type_name, nullable in conn.execute(
        """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
        FROM pg_attribute a
        WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
        """,
        (oids,),
    ).fetchall():
        columns[names[int(relid)]].append((str(column), str(type_name), bool(nullable)))
    foreign = {
        (str(src), str(dst))
        for src, dst in conn.execute(
            """
            SELECT s.relname, t.relname
            FROM pg_constraint k
            JOIN pg_class s ON s.oid = k.conrelid
            JOIN pg_class t ON t.oid = k.confrelid
            WHERE k.contype = 'f' AND s.oid = ANY(%s) AND t.oid = ANY(%s)
            """,
            (oids, oids),
        ).fetchall()
    }
    # The convention (`<singular>_id` is a table's key) names references that carry no foreign
    # key on purpose (usage_events, rollups: ingest speed).
    key_of = {
        f"{_singular(table)}_id": table
        for table, cols in columns.items()
        if any(c[0] == f"{_singular(table)}_id" for c in cols)
    }
    refs = set(foreign)
    for table, cols in columns.items():
        for column, _type, _null in cols:
            target = key_of.get(column)
            if target is not None and target != table:
                refs.add((table, target))
    relationships: dict[str, list[dict[str, str]]] = {name: [] for name in columns}
    for src, dst in sorted(refs):
        if src == dst:
            continue
        relationships[src].append(
            {"type": "references", "target": entity_name(dst), "cardinality": "many-to-one"}
        )
        relationships[dst].append(
            {"type": "owns", "target": entity_name(src), "cardinality": "one-to-many"}
        )
    for table, source in _DERIVED_FROM.items():
        if table in columns and source in columns:
            relationships[table].append(
                {"type": "derivedFrom", "target": entity_name(source), "cardinality": "many-to-one"}
            )
    entities: list[dict[str, Any]] = []
    for oid, table, comment in tables:
        name = entity_name(str(table))
        entity: dict[str, Any] = {
            "name": name,
            "description": str(comment) if comment else f"Table {schema}.{table}",
            "relationships": relationships[str(table)],
        }
        if include_fields:
            fields: list[dict[str, Any]] = []
            for column, type_name, nullable in columns[names[int(oid)]]:
                field: dict[str, Any] = {"name": column, "type": type_name, "nullable": nullable}
                policy = _classify(classification, str(table), name, column)
                if policy is not None:
                    field["classification"] = policy.classification
                    field["retentionDays"] = policy.retention_days
                fields.append(field)
            entity["fields"] = fields
        entities.append(entity)
    return entities


# -- rollups -----------------------------------------------------------------------------------


@attrs.frozen
class RollupRequest:
    """A validated rollup request: rebuild ``granularity`` buckets in ``[start, end)``."""

    run_id: str
    granularity: Literal["hour", "day"]
    start: datetime
    end: datetime
    reconcile_late_arrivals: bool = True


@runtime_checkable
class RollupTrigger(Protocol):
    """What the API calls (in a worker thread) to run one rollup request.

    It returns when the rollup is done and raises to report a failure (an
    :class:`~aiaas_core.AiaasError`'s code and message are shown in the run's ``error``).
    """

    def __call__(self, request: RollupRequest, /) -> object: ...


def default_rollup_trigger(dsn: str, target: str = "postgres") -> RollupTrigger | None:
    """The rollup engine (``aiaas_db._rollups.trigger_rollup``) bound to ``dsn`` and ``target``.

    ``None`` when the engine is not importable: the API then answers rollup requests with
    ``503 ROLLUPS_UNAVAILABLE`` rather than pretending.
    """
    try:
        module = importlib.import_module("aiaas_db._rollups")
    except ImportError:
        return None
    run = getattr(module, "trigger_rollup", None)
    if not callable(run):
        return None

    def trigger(request: RollupRequest, /) -> object:
        return run(dsn, request.granularity, request.start, request.end, target=target)

    return trigger


# -- runs --------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@attrs.define
class _Run:
    run_id: str
    kind: Literal["apply", "rollback", "rollup"]
    submitted_at: datetime
    status: str
    component: str | None = None
    target_version: str | None = None
    dry_run: bool = False
    versions: list[str] = attrs.Factory(list)
    granularities: tuple[str, ...] = ()
    completed_at: datetime | None = None
    metrics: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    thread_id: int | None = None

    @property
    def active(self) -> bool:
        return self.completed_at is None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"runId": self.run_id, "status": self.status}
        if self.kind == "rollup":
            doc["granularities"] = list(self.granularities)
            doc["submittedAt"] = _iso(self.submitted_at)
        else:
            doc["component"] = self.component
            doc["submittedAt"] = _iso(self.submitted_at)
            if self.target_version is not None:
                doc["targetVersion"] = self.target_version
            doc["appliedVersions"] = list(self.versions)
            if self.metrics is not None:
                doc["metrics"] = dict(self.metrics)
            doc["dryRun"] = self.dry_run
            doc["operation"] = self.kind
        if self.completed_at is not None:
            doc["completedAt"] = _iso(self.completed_at)
        if self.error is not None:
            doc["error"] = dict(self.error)
        return doc


class _RunBook:
    """Runs by id, thread-safe; at most one migration run and one rollup run active at once."""

    def __init__(self, keep: int = MAX_RUNS_KEPT) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._threads: list[threading.Thread] = []
        self._keep = keep

    def _refuse_if_busy(self, family: str) -> None:
        for other in self._runs.values():
            if other.active and ("rollup" if other.kind == "rollup" else "migration") == family:
                what = "rollup" if family == "rollup" else f"migration ({other.kind})"
                raise ConflictError(
                    f"a {what} run is in progress (runId {other.run_id}); wait for it to "
                    "finish (see its status) and retry",
                    code=f"{family.upper()}_RUN_IN_PROGRESS",
                )

    def ensure_idle(self, family: str) -> None:
        """Raise 409 when a run of ``family`` (``migration`` or ``rollup``) is active."""
        with self._lock:
            self._refuse_if_busy(family)

    def start(self, run: _Run, target: Callable[[_Run], None]) -> dict[str, Any]:
        """Register ``run`` (refusing when one of its kind is active) and start its thread."""
        with self._lock:
            self._refuse_if_busy("rollup" if run.kind == "rollup" else "migration")
            self._runs[run.run_id] = run
            self._trim()
            thread = threading.Thread(
                target=target, args=(run,), name=f"aiaas-db-{run.kind}-{run.run_id[:8]}"
            )
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
            return run.document()

    def _trim(self) -> None:
        while len(self._runs) > self._keep:
            oldest = next((k for k, r in self._runs.items() if not r.active), None)
            if oldest is None:
                return
            del self._runs[oldest]

    def update(self, run: _Run, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(run, key, value)

    def add_version(self, thread_id: int, version: str) -> None:
        with self._lock:
            for run in self._runs.values():
                if run.active and run.thread_id == thread_id and run.kind != "rollup":
                    if run.status == "pending":
                        run.status = "running"
                    if version not in run.versions:
                        run.versions.append(version)

    def mark_running(self, thread_id: int) -> None:
        with self._lock:
            for run in self._runs.values():
                if run.active and run.thread_id == thread_id and run.status == "pending":
                    run.status = "running"

    def get(self, run_id: str, *, rollup: bool) -> dict[str, Any] | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or (run.kind == "rollup") != rollup:
                return None
            return run.document()

    def busy(self) -> bool:
        with self._lock:
            return any(r.active for r in self._runs.values())

    def join(self, timeout: float) -> None:
        for thread in list(self._threads):
            thread.join(timeout)


class _Progress(logging.Handler):
    """Feeds the migrator's events (logged from a worker thread) into that thread's run."""

    def __init__(self, book: _RunBook) -> None:
        super().__init__(logging.INFO)
        self.book = book

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if record.thread is None:
            return
        if event == "migration_finish" and not getattr(record, "dry_run", False):
            status = getattr(record, "status", "")
            if status in ("applied", "rolled_back"):
                self.book.add_version(record.thread, str(getattr(record, "version", "")))
        elif event in ("migration_start", "migration_pre_checks", "migration_dry_run"):
            self.book.mark_running(record.thread)


# -- request helpers ---------------------------------------------------------------------------


async def _read_json(scope: Scope, receive: Receive) -> dict[str, Any]:
    ctype = b""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            ctype = value.split(b";", 1)[0].strip().lower()
    if ctype != b"application/json" and not (
        ctype.startswith(b"application/") and ctype.endswith(b"+json")
    ):
        raise UnsupportedMediaTypeError(
            "send the request body as JSON with 'Content-Type: application/json'"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"the request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        value = json.loads(b"".join(chunks))
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


# -- the application ---------------------------------------------------------------------------


class SchemaApi:
    """The routes of the schema management API (wrap it with :func:`create_schema_app`).

    ``sources`` maps each component to its change sets (default: the platform's,
    ``aiaas_db._platform.platform_source``). ``rollups`` runs rollup requests (``None``: rollups
    are answered ``503 ROLLUPS_UNAVAILABLE``). ``classification`` adds each field's class and
    retention to the entities (default: the platform's own map; ``None``: none).
    ``lock_timeout`` is how long a worker waits for the migration lock after the request was
    accepted (the lock was seen free at acceptance). ``protector`` protects the actor in the
    platform's audit log (default: the migrator reads the PII keys from the environment when a
    run audits, and a run without them fails before changing anything).
    """

    def __init__(
        self,
        dsn: str,
        *,
        sources: Mapping[str, ChangeSetSource] | None = None,
        rollups: RollupTrigger | None = None,
        classification: Classification | Literal["platform"] | None = "platform",
        schema: str = "public",
        environment: str | None = None,
        lock_timeout: float = 5.0,
        statement_timeout: float | None = None,
        health_timeout: float = 2.0,
        protector: PiiProtector | None = None,
    ) -> None:
        if not str(dsn or "").strip():
            raise ValueError("a DSN is required")
        self.dsn = dsn
        self._sources = dict(sources) if sources is not None else None
        self.components: tuple[str, ...] = (
            tuple(self._sources) if self._sources is not None else COMPONENTS
        )
        if not self.components:
            raise ValueError("sources must name at least one component")
        self.rollups = rollups
        if classification == "platform":
            from aiaas_db._classification import platform_classification  # noqa: PLC0415

            classification = platform_classification()
        self.classification: Classification | None = classification
        self.schema = schema
        self.environment = environment
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.protector = protector
        self.runs = _RunBook()
        self._progress = _Progress(self.runs)
        self.health = self._health_registry(health_timeout)
        self._started = False

    # -- plumbing ------------------------------------------------------------------------------

    def source(self, component: str) -> ChangeSetSource:
        if self._sources is not None:
            return self._sources[component]
        module = importlib.import_module("aiaas_db._platform")
        source: ChangeSetSource = module.platform_source(component)
        return source

    def migrator(self, component: str, *, actor: str | None = None) -> Migrator:
        from aiaas_db._migrator import Migrator  # noqa: PLC0415 -- keeps import cheap

        return Migrator(
            self.dsn,
            self.source(component),
            component=component,
            schema=self.schema,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
            actor=actor,
            environment=self.environment,
            protector=self.protector,
        )

    def _attach(self) -> None:
        if self._started:
            return
        self._started = True
        logging.getLogger("aiaas.db.migrations").addHandler(self._progress)

    def close(self, timeout: float = 30.0) -> None:
        """Wait (bounded) for runs in flight, then detach the progress handler."""
        self.runs.join(timeout)
        logging.getLogger("aiaas.db.migrations").removeHandler(self._progress)
        self._started = False

    # -- health --------------------------------------------------------------------------------

    def schema_health(self) -> dict[str, Any]:
        """Schema version and last migration time per component (reads the database)."""
        out: dict[str, Any] = {}
        for component in self.components:
            status = self.migrator(component).status(history_limit=0)
            out[component] = status.health()
        return out

    def _health_registry(self, timeout: float) -> HealthRegistry:
        health = HealthRegistry(cache_ttl=1.0)

        @health.register(name="event-loop", kind="liveness", timeout=1.0)
        async def event_loop() -> None:
            await asyncio.sleep(0)

        @health.register(name="schema", kind="liveness", timeout=timeout, critical=False)
        async def schema_liveness() -> CheckResult:
            # Informational on /health: a database outage degrades, never fails, liveness.
            return await self._schema_check(degrade=True)

        @health.register(name="database", timeout=timeout)
        async def database() -> CheckResult:
            return await self._schema_check(degrade=False)

        return health

    async def _schema_check(self, *, degrade: bool) -> CheckResult:
        try:
            details = await asyncio.to_thread(self.schema_health)
        except DatabaseUnavailableError:
            reason = "the database is unreachable"
            return CheckResult.degraded(reason) if degrade else CheckResult.failing(reason)
        except MigrationError as exc:
            return CheckResult.degraded(f"{exc.code}: schema state unreadable")
        blocked = [c for c, h in details.items() if h["dirty"] or h["failed_version"] is not None]
        if blocked:
            return CheckResult.degraded(
                f"component(s) {', '.join(blocked)} are dirty or failed and await recovery",
                details,
            )
        return CheckResult.ok(details)

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise NotFoundError("the schema management API speaks HTTP only")
        self._attach()
        path: str = scope["path"]
        method: str = scope["method"]
        head = method == "HEAD"
        route, params = _match(path)
        if route is None:
            raise NotFoundError(f"Not found: no route {path}")
        allowed = (
            ("POST",) if route in (APPLY_PATH, ROLLBACK_PATH, ROLLUP_PATH) else ("GET", "HEAD")
        )
        if method not in allowed:
            raise MethodNotAllowedError(
                f"Method not allowed: {route} answers {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
        if route in ("/health", "/ready"):
            report = await self.health.run("liveness" if route == "/health" else "readiness")
            body = report.to_dict()
            if route == "/health":
                check = body["checks"].get("schema", {})
                body["schema"] = dict(check.get("details") or {})
            await send_json(send, report.http_status, body, head=head)
            return
        actor = scope.get("aiaas.actor")
        subject = actor.subject if isinstance(actor, Actor) else None
        if route == ENTITIES_PATH:
            status, payload = 200, await self._entities(scope)
        elif route == STATUS_PATH:
            status, payload = 200, self._run_status(params["runId"], rollup=False)
        elif route == ROLLUP_STATUS_PATH:
            status, payload = 200, self._run_status(params["runId"], rollup=True)
        elif route == APPLY_PATH:
            status, payload = 202, await self._apply(await _read_json(scope, receive), subject)
        elif route == ROLLBACK_PATH:
            status, payload = 202, await self._rollback(await _read_json(scope, receive), subject)
        else:
            status, payload = 202, self._rollup(await _read_json(scope, receive))
        await send_json(send, status, payload, head=head)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async def startup() -> None:
            self._attach()

        async def shutdown() -> None:
            await asyncio.to_thread(self.close)

        await run_lifespan(receive, send, startup=startup, shutdown=shutdown)

    # -- entities ------------------------------------------------------------------------------

    async def _entities(self, scope: Scope) -> dict[str, Any]:
        include = False
        query = scope.get("query_string", b"").decode("latin-1")
        from urllib.parse import parse_qsl  # noqa: PLC0415

        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "includeFields":
                continue
            if value.lower() not in ("true", "false"):
                raise _invalid(f"'includeFields' must be true or false, got {value!r}")
            include = value.lower() == "true"
        entities = await asyncio.to_thread(self._read_entities, include)
        return {"generatedAt": _iso(datetime.now(UTC)), "entities": entities}

    def _read_entities(self, include_fields: bool) -> list[dict[str, Any]]:
        import psycopg  # noqa: PLC0415

        try:
            with psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=5,
                application_name="aiaas-db serve entities",
            ) as conn:
                return _read_entities(
                    conn,
                    self.schema,
                    include_fields=include_fields,
                    classification=self.classification,
                )
        except psycopg.OperationalError:
            raise ServiceUnavailableError(
                "schema metadata is unavailable: the database cannot be reached; retry shortly",
                code="SCHEMA_METADATA_UNAVAILABLE",
                headers={"Retry-After": "5"},
            ) from None

    # -- migrations ----------------------------------------------------------------------------

    def _run_status(self, run_id: str, *, rollup: bool) -> dict[str, Any]:
        doc = self.runs.get(run_id, rollup=rollup)
        if doc is None:
            what = "rollup run" if rollup else "migration run"
            raise NotFoundError(
                f"no {what} with id {run_id!r} on this server (runs are kept in memory, the "
                f"latest {MAX_RUNS_KEPT})",
                code="RUN_NOT_FOUND",
            )
        return doc

    async def _apply(self, body: dict[str, Any], subject: str | None) -> dict[str, Any]:
        _check_keys(
            body,
            ("component", "targetVersion", "dryRun", "hooks", "confirmDestructive"),
            "apply request",
        )
        component = _component(body, self.components)
        self.runs.ensure_idle("migration")
        target = body.get("targetVersion")
        to = None if target is None else _version(target, "targetVersion")
        dry_run = _bool(body, "dryRun", False)
        confirm = _bool(body, "confirmDestructive", False)
        hooks = body.get("hooks", {})
        if not isinstance(hooks, dict):
            raise _invalid(f"'hooks' must be an object, got {hooks!r}")
        _check_keys(hooks, ("skipTelemetry",), "hooks")
        _bool(hooks, "skipTelemetry", False)
        migrator = self.migrator(component, actor=_actor_name(subject))
        await asyncio.to_thread(
            self._precheck, migrator, "up", to=to, dry_run=dry_run, confirm=confirm
        )
        run = _Run(
            run_id=str(uuid.uuid4()),
            kind="apply",
            submitted_at=datetime.now(UTC),
            status="pending",
            component=component,
            target_version=None if to is None else str(to),
            dry_run=dry_run,
        )

        def work(r: _Run) -> None:
            self._execute(
                r,
                lambda: migrator.up(to=to, dry_run=dry_run, allow_destructive=confirm),
            )

        return self.runs.start(run, work)

    async def _rollback(self, body: dict[str, Any], subject: str | None) -> dict[str, Any]:
        _check_keys(body, ("component", "version", "reason"), "rollback request")
        component = _component(body, self.components)
        self.runs.ensure_idle("migration")
        if "version" not in body:
            raise _invalid("'version' is required: the oldest version to roll back")
        version = _version(body["version"], "version")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise _invalid(f"'reason' must be a string, got {reason!r}")
        migrator = self.migrator(component, actor=_actor_name(subject))
        keep = await asyncio.to_thread(self._precheck_rollback, migrator, version)
        run = _Run(
            run_id=str(uuid.uuid4()),
            kind="rollback",
            submitted_at=datetime.now(UTC),
            status="pending",
            component=component,
            target_version=None if keep == 0 else str(keep),
        )
        if reason:
            _log.warning(
                "rollback of %s to before %s requested: %s",
                component,
                version,
                reason,
                extra={"run_id": run.run_id, "component": component, "version": version},
            )

        def work(r: _Run) -> None:
            self._execute(r, lambda: migrator.down(to=keep, allow_destructive=True))

        return self.runs.start(run, work)

    def _sets(self, migrator: Migrator) -> tuple[ChangeSet, ...]:
        try:
            return self.source(migrator.component).load()
        except ChangeSetError as exc:
            raise _invalid(exc.message, code=exc.code) from None

    def _state(self, migrator: Migrator) -> MigrationStatus:
        try:
            return migrator.status(history_limit=0)
        except ChangeSetError as exc:
            raise _invalid(exc.message, code=exc.code) from None

    def _lock_free(self, migrator: Migrator) -> None:
        """Refuse (409) when another process holds the component's migration lock."""
        from aiaas_db._lock import AdvisoryLock, lock_keys  # noqa: PLC0415

        with migrator.connect("serve-precheck") as conn:
            lock = AdvisoryLock(
                conn,
                lock_keys(
                    conn.info.dbname, migrator.schema, migrator.migrations_table, migrator.component
                ),
                timeout=0,
                component=migrator.component,
            )
            try:
                lock.acquire()
            except MigrationError as exc:
                raise ConflictError(
                    f"another migrator holds the {migrator.component} migration lock (aiaas-db or "
                    f"golang-migrate in another process): {exc.message}",
                    code="MIGRATION_LOCKED",
                ) from None
            lock.release()

    def _blockers(self, state: MigrationStatus) -> None:
        problems: list[tuple[str, str]] = []
        if state.dirty:
            problems.append(
                ("MIGRATION_DIRTY", f"dirty at version {state.dirty_version}: {state.dirty_detail}")
            )
        if state.failed_version is not None:
            problems.append(
                (
                    "MIGRATION_FAILED_HEAD",
                    f"change set {state.failed_version} failed and awaits `aiaas-db migrate "
                    "recover`",
                )
            )
        if state.checksum_mismatches:
            problems.append(
                (
                    "MIGRATION_CHECKSUM_MISMATCH",
                    f"applied change set(s) {list(state.checksum_mismatches)} were edited",
                )
            )
        if state.missing:
            problems.append(
                (
                    "MIGRATION_SOURCE_MISSING",
                    f"applied version(s) {list(state.missing)} have no change set",
                )
            )
        if problems:
            raise _invalid(
                f"pre-checks failed for {state.component}: "
                + "; ".join(text for _, text in problems),
                code=problems[0][0],
            )

    def _precheck(
        self, migrator: Migrator, direction: str, *, to: int | None, dry_run: bool, confirm: bool
    ) -> None:
        sets = self._sets(migrator)
        if to is not None and to not in {cs.version for cs in sets}:
            raise _invalid(
                f"no change set with version {to} for {migrator.component} (known: "
                f"{', '.join(str(cs.version) for cs in sets) or 'none'})",
                code=MigrationNotFoundError.code,
            )
        state = self._state(migrator)
        self._blockers(state)
        pending = [p for p in state.pending if to is None or p.version <= to]
        late = [p.version for p in pending if p.out_of_order]
        if late:
            raise _invalid(
                f"change set(s) {late} are older than the applied head {state.current_version}; "
                "renumber them (the API never applies out of order)",
                code="MIGRATION_OUT_OF_ORDER",
            )
        destructive = [p.version for p in pending if p.destructive]
        if destructive and not confirm and not dry_run:
            raise _invalid(
                f"change set(s) {destructive} are marked aiaas:destructive (they drop data); "
                'send "confirmDestructive": true to apply them',
                code="MIGRATION_DESTRUCTIVE_UNCONFIRMED",
            )
        if not dry_run:
            self._lock_free(migrator)

    def _precheck_rollback(self, migrator: Migrator, version: int) -> int:
        sets = self._sets(migrator)
        by_version = {cs.version: cs for cs in sets}
        if version not in by_version:
            raise _invalid(
                f"no change set (so no rollback script) with version {version} for "
                f"{migrator.component}",
                code=MigrationNotFoundError.code,
            )
        state = self._state(migrator)
        self._blockers(state)
        applied = sorted(a.version for a in state.applied)
        if version not in applied:
            raise ConflictError(
                f"version {version} of {migrator.component} is not applied: nothing to roll "
                f"back (applied: {', '.join(map(str, applied)) or 'none'})",
                code="MIGRATION_NOT_APPLIED",
            )
        self._lock_free(migrator)
        below = [v for v in applied if v < version]
        return below[-1] if below else 0

    def _execute(self, run: _Run, operation: Callable[[], RunReport]) -> None:
        self.runs.update(run, thread_id=threading.get_ident())
        report: RunReport | None = None
        error: dict[str, str] | None = None
        try:
            report = operation()
        except MigrationError as exc:
            report = exc.report
            error = {"code": exc.code, "message": exc.message}
        except Exception as exc:  # noqa: BLE001 -- a worker must record, not vanish
            _log.exception("migration run %s crashed", run.run_id)
            error = {"code": "INTERNAL_ERROR", "message": f"the run crashed: {type(exc).__name__}"}
        changes: dict[str, Any] = {"completed_at": datetime.now(UTC), "error": error}
        if report is not None:
            changes["metrics"] = {
                "durationSeconds": round(report.duration_s, 6),
                "rowChanges": report.rows_total,
                "tablesTouched": list(report.tables_touched),
            }
            done = [
                str(r.version)
                for r in report.results
                if r.status in ("applied", "rolled_back", "dry_run")
            ]
            changes["versions"] = done
        failed = error is not None or (report is not None and report.status == "failed")
        if failed:
            changes["status"] = "failed"
            if error is None and report is not None:
                bad = next((r for r in report.results if r.status == "failed"), None)
                changes["error"] = {
                    "code": "MIGRATION_FAILED",
                    "message": (
                        bad.error if bad is not None and bad.error else "a change set failed"
                    ),
                }
        else:
            changes["status"] = "rolled_back" if run.kind == "rollback" else "succeeded"
        self.runs.update(run, **changes)
        _log.info(
            "%s run %s finished: %s",
            run.kind,
            run.run_id,
            changes["status"],
            extra={"run_id": run.run_id, "component": run.component, "status": changes["status"]},
        )

    # -- rollups -------------------------------------------------------------------------------

    def _rollup(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_keys(
            body, ("granularity", "start", "end", "reconcileLateArrivals"), "rollup request"
        )
        granularity = body.get("granularity")
        if granularity not in ("hour", "day"):
            raise _invalid(f"'granularity' must be hour or day, got {granularity!r}")
        start = _timestamp(body, "start")
        end = _timestamp(body, "end")
        reconcile = _bool(body, "reconcileLateArrivals", True)
        if end <= start:
            raise _invalid("'end' must be after 'start' (the window is [start, end))")
        if end - start > MAX_ROLLUP_WINDOW[granularity]:
            raise _invalid(
                f"the window is longer than {MAX_ROLLUP_WINDOW[granularity].days} days for "
                f"{granularity} rollups; split it into several requests",
                code="ROLLUP_WINDOW_TOO_LARGE",
            )
        if not reconcile:
            raise _invalid(
                "reconcileLateArrivals=false is not supported: a window is always recomputed "
                "from the raw events, late arrivals included",
                code="ROLLUP_OPTION_UNSUPPORTED",
            )
        trigger = self.rollups
        self.runs.ensure_idle("rollup")
        if trigger is None:
            raise ServiceUnavailableError(
                "rollups are not available on this server (the rollup engine is not installed "
                "or not configured); run `aiaas-db rollup run` instead",
                code="ROLLUPS_UNAVAILABLE",
            )
        run = _Run(
            run_id=str(uuid.uuid4()),
            kind="rollup",
            submitted_at=datetime.now(UTC),
            status="queued",
            granularities=(granularity,),
        )
        request = RollupRequest(
            run_id=run.run_id,
            granularity=granularity,
            start=start,
            end=end,
            reconcile_late_arrivals=reconcile,
        )

        def work(r: _Run) -> None:
            self.runs.update(r, status="running", thread_id=threading.get_ident())
            error: dict[str, str] | None = None
            try:
                trigger(request)
            except AiaasError as exc:
                error = {"code": exc.code, "message": exc.message}
            except Exception as exc:  # noqa: BLE001 -- a worker must record, not vanish
                _log.exception("rollup run %s crashed", r.run_id)
                error = {
                    "code": "INTERNAL_ERROR",
                    "message": f"the run crashed: {type(exc).__name__}",
                }
            self.runs.update(
                r,
                status="failed" if error else "succeeded",
                error=error,
                completed_at=datetime.now(UTC),
            )

        return self.runs.start(run, work)


def _actor_name(subject: str | None) -> str | None:
    return None if subject is None else f"api:{subject}"


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


# -- the stack ---------------------------------------------------------------------------------


def schema_api_policy(
    *, admin_roles: Sequence[str] = (SCHEMA_API_ROLE,), reader_roles: Sequence[str] = READER_ROLES
) -> Policy:
    """The default policy: ``platform-engineer`` may do everything, readers may read."""
    rules = [
        PolicyRule(
            id="platform-engineers-manage-schema",
            effect="allow",
            roles=tuple(admin_roles),
            permissions=(
                "schema:read",
                "migrations:apply",
                "migrations:rollback",
                "migrations:read",
                "rollups:run",
                "rollups:read",
            ),
        )
    ]
    if reader_roles:
        rules.append(
            PolicyRule(
                id="readers-read-schema",
                effect="allow",
                roles=tuple(reader_roles),
                permissions=("schema:read", "migrations:read", "rollups:read"),
            )
        )
    return Policy(rules)


ROUTE_RULES: Final = (
    RouteRule("GET", ENTITIES_PATH, "schema:read"),
    RouteRule("POST", APPLY_PATH, "migrations:apply"),
    RouteRule("POST", ROLLBACK_PATH, "migrations:rollback"),
    RouteRule("GET", STATUS_PATH, "migrations:read"),
    RouteRule("POST", ROLLUP_PATH, "rollups:run"),
    RouteRule("GET", ROLLUP_STATUS_PATH, "rollups:read"),
    # Other methods on known paths reach the app (405 with Allow) for anyone who may read.
    RouteRule("*", ENTITIES_PATH, "schema:read"),
    RouteRule("*", APPLY_PATH, "schema:read"),
    RouteRule("*", ROLLBACK_PATH, "schema:read"),
    RouteRule("*", STATUS_PATH, "schema:read"),
    RouteRule("*", ROLLUP_PATH, "schema:read"),
    RouteRule("*", ROLLUP_STATUS_PATH, "schema:read"),
)


class _ErrorBoundary:
    """Renders an :class:`AiaasError` raised by the routes as the shared error body.

    TelemetryMiddleware does the same for anything that escapes; this keeps ``SchemaApi`` usable
    on its own (and in tests) without telemetry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except AiaasError as exc:
            if started:
                raise
            status, headers, body = error_response(exc, instance=scope.get("path"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})


def create_schema_app(
    api: SchemaApi,
    *,
    telemetry: Telemetry,
    authenticate: Authenticator,
    policy: Policy | None = None,
) -> ASGIApp:
    """Wrap ``api`` in the auth and telemetry middleware (see the module documentation).

    ``authenticate`` turns a credential into an :class:`~aiaas_core.Actor` (for example
    ``ApiKeyVerifier(...).verify``); ``policy`` defaults to :func:`schema_api_policy`.
    :class:`~aiaas_telemetry.TelemetryMiddleware` is the outermost layer.
    """
    from aiaas_core import AuthMiddleware  # noqa: PLC0415

    guarded = AuthMiddleware(
        _ErrorBoundary(api),
        authenticate=authenticate,
        policy=policy or schema_api_policy(),
        rules=ROUTE_RULES,
        public_paths=PUBLIC_PATHS,
        audit=telemetry.audit.auth_hook(),
    )
    app: ASGIApp = telemetry.middleware(
        guarded,
        routes=list(ROUTES),
        metrics_path="/metrics",
        exclude_paths=("/health", "/ready"),
    )
    return app
