"""The route handlers of the schema API (:class:`SchemaApi`); see ``_app`` for the stack."""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from aiaas_core import (
    Actor,
    AiaasError,
    CheckResult,
    ConflictError,
    HealthRegistry,
    MethodNotAllowedError,
    NotFoundError,
    Receive,
    Scope,
    Send,
    ServiceUnavailableError,
    run_lifespan,
    send_json,
)
from aiaas_db._errors import (
    ChangeSetError,
    DatabaseUnavailableError,
    MigrationError,
    MigrationNotFoundError,
)
from aiaas_db.server._catalog import _read_entities
from aiaas_db.server._http import (
    APPLY_PATH,
    ENTITIES_PATH,
    ROLLBACK_PATH,
    ROLLUP_PATH,
    ROLLUP_STATUS_PATH,
    STATUS_PATH,
    _bool,
    _check_keys,
    _component,
    _invalid,
    _iso,
    _match,
    _read_json,
    _timestamp,
    _version,
)
from aiaas_db.server._runs import (
    MAX_RUNS_KEPT,
    RollupRequest,
    RollupTrigger,
    _Progress,
    _Run,
    _RunBook,
)

if TYPE_CHECKING:
    from aiaas_db.migrations._changesets import ChangeSet, ChangeSetSource
    from aiaas_db.migrations._migrator import Migrator
    from aiaas_db.migrations._models import MigrationStatus, RunReport
    from aiaas_db.platform._classification import Classification
    from aiaas_db.platform._pii import PiiProtector

__all__ = ["SchemaApi"]

COMPONENTS: Final = ("operational", "analytics")
#: Longest rollup window per request: hourly 31 days, daily 400 days.
MAX_ROLLUP_WINDOW: Final[dict[str, timedelta]] = {
    "hour": timedelta(days=31),
    "day": timedelta(days=400),
}

_log = logging.getLogger("aiaas.db.serve")


# -- the application ---------------------------------------------------------------------------


class SchemaApi:
    """The routes of the schema management API (wrap it with :func:`create_schema_app`).

    ``sources`` maps each component to its change sets (default: the platform's,
    ``aiaas_db.platform._components.platform_source``). ``rollups`` runs rollup requests (``None``:
    rollups
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
            from aiaas_db.platform._classification import platform_classification  # noqa: PLC0415

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
        module = importlib.import_module("aiaas_db.platform._components")
        source: ChangeSetSource = module.platform_source(component)
        return source

    def migrator(self, component: str, *, actor: str | None = None) -> Migrator:
        from aiaas_db.migrations._migrator import Migrator  # noqa: PLC0415 -- keeps import cheap

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
                f"Method not allowed: {route} answers {', '.join(allowed)}", allow=allowed
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
        from aiaas_db.migrations._lock import AdvisoryLock, lock_keys  # noqa: PLC0415

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
