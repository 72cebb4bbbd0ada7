"""The migration engine: apply, roll back, recover, force, dry-run, drill and status.

Every mutating operation connects, creates the state tables when missing, takes the component's
advisory locks (ours and golang-migrate's) by polling, reconciles golang-migrate's
``schema_migrations`` with our ledger, runs its pre-checks, and only then touches the schema.

A transactional change set runs in one transaction together with its bookkeeping (ledger,
``schema_migrations``, history, audit): it is either applied and recorded, or not applied at all
and recorded as ``failed`` afterwards -- never dirty. A no-transaction set first records itself as
dirty (committed), then runs statement by statement; a failure (or a crash) leaves it dirty with
the failing statement named. A failed or dirty head blocks further work until :meth:`recover` or
:meth:`force`, each of which needs a reason and is audited. Nothing is ever reapplied on its own.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import psycopg
from psycopg import sql

from aiaas_db._changesets import ChangeSet, ChangeSetSource, DirectorySource, Script
from aiaas_db._errors import (
    ApprovalRequiredError,
    ChecksumMismatchError,
    DatabaseUnavailableError,
    DrillFailedError,
    MigrationCheckFailedError,
    MigrationDirtyError,
    MigrationError,
    MigrationFailedError,
    MigrationFailedHeadError,
    MigrationNotFoundError,
    MigrationRefusedError,
    MissingChangeSetError,
    NothingToRecoverError,
    OutOfOrderError,
    redact_data_values,
)
from aiaas_db._fingerprint import CatalogFingerprint, catalog_fingerprint
from aiaas_db._lock import AdvisoryLock, lock_keys
from aiaas_db._models import (
    AppliedChangeSet,
    DrillReport,
    DrillStep,
    MigrationResult,
    MigrationStatus,
    PendingChangeSet,
    PreCheck,
    RunReport,
)
from aiaas_db._state import (
    HISTORY_TABLE,
    LEDGER_TABLE,
    LedgerEntry,
    Settled,
    StateTables,
    StateView,
    audit_table_exists,
    expected_golang,
    reconcile,
)
from aiaas_db._telemetry import emit, set_attributes, span

if TYPE_CHECKING:
    from aiaas_db._pii import PiiProtector

__all__ = ["PROTECTED_ENVIRONMENTS", "Migrator", "RecoverAction"]

RecoverAction = Literal["mark-rolled-back", "mark-applied", "run-down"]
RECOVER_ACTIONS: Final = ("mark-rolled-back", "mark-applied", "run-down")
#: Environments where every change needs an approver other than the author.
PROTECTED_ENVIRONMENTS: Final = frozenset({"production"})
_COMPONENT: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
_DML_TARGET: Final = re.compile(
    r"^\s*(?P<verb>insert\s+into|update(?:\s+only)?|delete\s+from(?:\s+only)?)\s+"
    r"(?P<table>(?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)",
    re.IGNORECASE,
)
_VERB_KEY: Final = {"insert": "inserted", "update": "updated", "delete": "deleted"}
#: An up script that creates the platform's audit table (the run must then write audit entries).
_CREATES_AUDIT: Final = re.compile(
    r"\bcreate\s+table\s+(?:if\s+not\s+exists\s+)?(?:\"?public\"?\.)?\"?audit_log_entries\b",
    re.IGNORECASE,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _default_actor() -> str:
    env = os.environ.get("AIAAS_DB_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


# A data exception (SQLSTATE class 22) quotes the offending value in its message -- a row's
# personal data or a secret, e.g. `invalid input syntax for type bigint: "+1-555-0100"`. It
# must not reach reports, logs, spans, error bodies or the history: the message and the
# SQLSTATE say what was wrong, the value stays in the database.
# From the first double quote to the last: a value may hold quotes itself.


def _error_text(exc: BaseException) -> tuple[str, str | None]:
    """A client-safe one-line description of ``exc`` and its SQLSTATE (data values redacted)."""
    if isinstance(exc, psycopg.Error):
        primary = exc.diag.message_primary or str(exc).strip().splitlines()[0]
        state = exc.sqlstate
        primary = redact_data_values(primary, state)
        hint = ""
        if isinstance(exc, psycopg.errors.QueryCanceled):
            hint = " (statement timeout: raise --statement-timeout or make the step smaller)"
        elif isinstance(exc, psycopg.errors.LockNotAvailable):
            hint = " (lock timeout: the table is busy; retry, or raise --ddl-lock-timeout)"
        return f"{primary}{hint}" + (f" [SQLSTATE {state}]" if state else ""), state
    if isinstance(exc, MigrationError):
        return exc.message, None
    return f"{type(exc).__name__}: {exc}", None


def _quote_table(schema: str, name: str) -> str:
    return f"{schema}.{name}"


class _Stats:
    """Per-table tuple counters of the current transaction (``pg_stat_xact_user_tables``)."""

    def __init__(self, conn: psycopg.Connection[Any], exclude: frozenset[str]) -> None:
        self._conn = conn
        self._exclude = exclude

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        rows = self._conn.execute(
            "SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del"
            " FROM pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0"
        ).fetchall()
        return {
            str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows if r[0] not in self._exclude
        }

    @staticmethod
    def diff(
        before: Mapping[str, tuple[int, int, int]], after: Mapping[str, tuple[int, int, int]]
    ) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for table, (ins, upd, dele) in after.items():
            b = before.get(table, (0, 0, 0))
            delta = (ins - b[0], upd - b[1], dele - b[2])
            if any(delta):
                out[table] = {"inserted": delta[0], "updated": delta[1], "deleted": delta[2]}
        return out


class _SetFailedError(Exception):
    """Internal: a statement (or check) of a change set failed."""

    def __init__(self, cause: BaseException, statement: str | None, index: int | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.statement = statement
        self.index = index


class Migrator:
    """Versioned, guarded schema changes for one component of one PostgreSQL database.

    ``dsn`` is a libpq connection string or ``postgresql://`` URL. ``source`` holds the change
    sets (a :class:`~aiaas_db.DirectorySource`, :class:`~aiaas_db.PackageSource`, or a path).
    ``migrations_table`` defaults to ``schema_migrations_<component>``; point it at
    ``schema_migrations`` to take over a database golang-migrate manages with its default table.
    ``lock_timeout`` bounds the wait for the migration lock (seconds); ``statement_timeout`` and
    ``ddl_lock_timeout`` (PostgreSQL's ``lock_timeout``) bound each statement of a change set.
    ``actor`` is recorded as who applied (default ``$AIAAS_DB_ACTOR`` or the OS user);
    ``environment`` ``production`` requires dual approval. ``protector`` protects the actor in
    the platform's audit log (:class:`~aiaas_db.PiiProtector`); without one, a run that writes
    audit entries (the database has ``audit_log_entries``, or a change set of the source creates
    it) reads the keys from the environment (:meth:`~aiaas_db.PiiProtector.from_env`) before
    changing anything.
    """

    def __init__(
        self,
        dsn: str,
        source: ChangeSetSource | str | os.PathLike[str] | None = None,
        *,
        component: str = "app",
        schema: str = "public",
        migrations_table: str | None = None,
        lock_timeout: float = 60.0,
        statement_timeout: float | None = None,
        ddl_lock_timeout: float | None = None,
        actor: str | None = None,
        environment: str | None = None,
        connect_timeout: int = 10,
        protector: PiiProtector | None = None,
    ) -> None:
        if not str(dsn or "").strip():
            raise MigrationRefusedError("a DSN is required (postgresql://... or key=value)")
        if not _COMPONENT.fullmatch(component):
            raise MigrationRefusedError(
                f"component must be lowercase letters, digits and underscores, starting with a "
                f"letter (got {component!r})",
                code="MIGRATION_COMPONENT_INVALID",
            )
        for name, value in (
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
            ("ddl_lock_timeout", ddl_lock_timeout),
        ):
            if value is not None and value < 0:
                raise MigrationRefusedError(f"{name} must be >= 0 seconds, got {value!r}")
        self._dsn = dsn
        if source is None or isinstance(source, ChangeSetSource):
            self.source: ChangeSetSource | None = source
        else:
            self.source = DirectorySource(Path(source))
        self.component = component
        self.schema = schema
        self.migrations_table = migrations_table or f"schema_migrations_{component}"
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.ddl_lock_timeout = ddl_lock_timeout
        self.actor = actor or _default_actor()
        self.environment = environment
        self.connect_timeout = connect_timeout
        self.protector = protector
        #: The protector of the current run (resolved when its session opens).
        self._run_protector: PiiProtector | None = protector
        self.tables = StateTables(schema=schema, table=self.migrations_table, component=component)
        self._state_tables = frozenset(
            {
                _quote_table(schema, self.migrations_table),
                _quote_table(schema, LEDGER_TABLE),
                _quote_table(schema, HISTORY_TABLE),
            }
        )

    def __repr__(self) -> str:
        return (
            f"Migrator(component={self.component!r}, source={self._source_origin()!r}, "
            f"table={self.schema}.{self.migrations_table})"
        )

    # -- plumbing ------------------------------------------------------------------------------

    def _source_origin(self) -> str | None:
        return None if self.source is None else self.source.origin

    def _load_sets(self) -> tuple[ChangeSet, ...]:
        if self.source is None:
            raise MigrationRefusedError(
                "no change-set source given (pass source=... / --source DIR)",
                code="MIGRATION_SOURCE_REQUIRED",
                component=self.component,
            )
        return self.source.load()

    def connect(self, purpose: str = "status") -> psycopg.Connection[Any]:
        """An autocommit connection named ``aiaas-db <purpose> <component>`` in pg_stat_activity."""
        try:
            return psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=f"aiaas-db {purpose} {self.component}"[:63],
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL ({self._where()}): {_mask(str(exc), self._dsn)}. "
                "Check that the server runs and the DSN (--dsn / AIAAS_DB_URL) is right",
                component=self.component,
            ) from None

    def _where(self) -> str:
        try:
            parts = psycopg.conninfo.conninfo_to_dict(self._dsn)
        except psycopg.Error:
            return "unparseable DSN"
        host = parts.get("host") or "localhost"
        return f"host {host} port {parts.get('port') or 5432} database {parts.get('dbname') or '?'}"

    @contextlib.contextmanager
    def _session(
        self,
        purpose: str,
        *,
        write: bool,
        checks: list[PreCheck],
        sets: Sequence[ChangeSet] = (),
    ) -> Iterator[tuple[psycopg.Connection[Any], AdvisoryLock]]:
        conn = self.connect(purpose)
        try:
            version = conn.info.server_version
            checks.append(PreCheck("connectivity", True, f"PostgreSQL {version // 10000}"))
            if write:
                self._resolve_protector(conn, sets, checks, purpose)
                self.tables.ensure(conn)
            dbname = conn.info.dbname
            waited: list[float] = []

            def on_wait(seconds: float) -> None:
                if not waited:
                    emit(
                        "migration_lock_wait",
                        "waiting for the migration lock",
                        component=self.component,
                        lock_timeout_s=self.lock_timeout,
                    )
                waited.append(seconds)

            lock = AdvisoryLock(
                conn,
                lock_keys(dbname, self.schema, self.migrations_table, self.component),
                timeout=self.lock_timeout,
                on_wait=on_wait,
                component=self.component,
            )
            try:
                lock.acquire()
            except MigrationError:
                checks.append(PreCheck("lock", False, f"not acquired in {self.lock_timeout:g} s"))
                self._emit_checks(purpose, checks, ok=False)
                raise
            checks.append(PreCheck("lock", True, f"acquired after {lock.waited_s:.3f} s"))
            try:
                yield conn, lock
            finally:
                lock.release()
        finally:
            conn.close()

    def _resolve_protector(
        self,
        conn: psycopg.Connection[Any],
        sets: Sequence[ChangeSet],
        checks: list[PreCheck],
        operation: str,
    ) -> None:
        """Settle the run's PII protector before anything changes.

        Needed when the run may write audit entries: the database has ``audit_log_entries`` or
        one of the change sets creates it. Missing keys fail here, with nothing applied.
        """
        self._run_protector = self.protector
        if self.protector is not None:
            checks.append(PreCheck("audit keys", True, "PII protector given"))
            return
        if not audit_table_exists(conn) and not any(
            _CREATES_AUDIT.search(cs.up.sql) for cs in sets
        ):
            return
        from aiaas_db._pii import PiiKeyError, PiiProtector  # noqa: PLC0415 -- only when auditing

        try:
            self._run_protector = PiiProtector.from_env()
        except PiiKeyError as exc:
            checks.append(PreCheck("audit keys", False, exc.code))
            self._emit_checks(operation, checks, ok=False)
            exc.component = self.component
            exc.message = (
                f"{exc.message}. The migrator writes audit_log_entries, whose actor is stored "
                "as a keyed digest and a ciphertext; nothing was changed"
            )
            exc.args = (exc.message,)
            raise
        checks.append(PreCheck("audit keys", True, "PII keys read from the environment"))

    def _emit_checks(self, operation: str, checks: Sequence[PreCheck], *, ok: bool) -> None:
        emit(
            "migration_pre_checks",
            f"pre-checks {'passed' if ok else 'failed'} for {operation} of {self.component}",
            level=logging.INFO if ok else logging.WARNING,
            component=self.component,
            operation=operation,
            ok=ok,
            checks=[{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        )

    def _read_view(self, conn: psycopg.Connection[Any], sets: Sequence[ChangeSet]) -> StateView:
        ledger = self.tables.read_ledger(conn) if self.tables.ours_exist(conn) else {}
        golang = self.tables.read_golang(conn)
        return reconcile(ledger, golang, [cs.version for cs in sets])

    def _adopt(
        self, conn: psycopg.Connection[Any], sets: Sequence[ChangeSet], run_id: str
    ) -> StateView:
        """Read the state and write down what another tool changed (under the lock)."""
        view = self._read_view(conn, sets)
        if not view.adoptions:
            return view
        by_version = {cs.version: cs for cs in sets}
        now = _now()
        with conn.transaction():
            for version, status in view.adoptions:
                cs = by_version.get(version)
                old = view.ledger.get(version)
                self.tables.write_ledger(
                    conn,
                    version=version,
                    slug=cs.slug if cs else (old.slug if old else ""),
                    status=status,
                    direction="up" if status == "applied" else "down",
                    checksum=cs.checksum if cs else (old.checksum if old else ""),
                    down_checksum=cs.down.checksum if cs else None,
                    applied_by="schema_migrations" if status == "applied" else None,
                    touch_applied_at=status == "applied",
                )
                self.tables.insert_history(
                    conn,
                    run_id=run_id,
                    version=version,
                    slug=cs.slug if cs else "",
                    direction="adopt",
                    status=status,
                    applied_by="schema_migrations",
                    started_at=now,
                    finished_at=now,
                    duration_ms=0.0,
                    checksum=cs.checksum if cs else None,
                    reason=(
                        f"schema_migrations reads {view.golang} (changed outside aiaas-db, e.g. "
                        "by golang-migrate); ledger brought in line"
                    ),
                )
        return self._read_view(conn, sets)

    # -- checks --------------------------------------------------------------------------------

    def _check_state(self, view: StateView, checks: list[PreCheck], operation: str) -> None:
        if view.dirty is not None:
            d = view.dirty
            where = f"version {d.version}" if d.version is not None else "no version"
            checks.append(PreCheck("clean_head", False, f"dirty at {where}"))
            self._emit_checks(operation, checks, ok=False)
            origin = (
                "schema_migrations is marked dirty (set by another tool such as golang-migrate)"
                if d.external
                else f"a no-transaction change set was interrupted while running {d.direction}"
            )
            stmt = f"; failed statement: {d.statement}" if d.statement else ""
            err = f"; error: {d.error}" if d.error else ""
            raise MigrationDirtyError(
                f"{self.component} is dirty at {where}: {origin}{err}{stmt}. Inspect the schema, "
                "then run `aiaas-db migrate recover --action mark-applied|mark-rolled-back|"
                "run-down --reason ...` (or `force VERSION`)",
                component=self.component,
                versions=[] if d.version is None else [d.version],
            )
        if view.failed is not None:
            f = view.failed
            checks.append(PreCheck("clean_head", False, f"version {f.version} failed"))
            self._emit_checks(operation, checks, ok=False)
            raise MigrationFailedHeadError(
                f"{self.component} change set {f.version}_{f.slug} failed (it was rolled back "
                f"and nothing of it is applied): {f.error or 'no error recorded'}. Fix it, then "
                "run `aiaas-db migrate recover --action mark-rolled-back --reason ...` to retry "
                "it (or mark-applied if it was applied by hand)",
                component=self.component,
                versions=[f.version],
            )
        checks.append(PreCheck("clean_head", True, "no failed or dirty change set"))

    def _check_sources(
        self,
        view: StateView,
        sets: Sequence[ChangeSet],
        checks: list[PreCheck],
        operation: str,
        *,
        need: Sequence[int] = (),
    ) -> None:
        by_version = {cs.version: cs for cs in sets}
        mismatched = [
            v
            for v, entry in view.applied.items()
            if v in by_version and entry.checksum and entry.checksum != by_version[v].checksum
        ]
        missing = sorted(v for v in view.applied if v not in by_version)
        missing_needed = sorted(v for v in need if v not in by_version)
        if mismatched:
            checks.append(PreCheck("checksums", False, f"changed after apply: {mismatched}"))
            self._emit_checks(operation, checks, ok=False)
            names = ", ".join(f"{v}_{by_version[v].slug}" for v in sorted(mismatched))
            raise ChecksumMismatchError(
                f"applied change set(s) {names} changed since they were applied. Restore the "
                "file(s); or, if the edit is deliberate and the schema already matches, accept it "
                "with `aiaas-db migrate accept-checksum VERSION --reason ...`",
                component=self.component,
                versions=sorted(mismatched),
            )
        checks.append(PreCheck("checksums", True, "applied change sets unchanged"))
        if missing or missing_needed:
            gone = sorted({*missing, *missing_needed})
            checks.append(PreCheck("sources", False, f"missing from the source: {gone}"))
            self._emit_checks(operation, checks, ok=False)
            raise MissingChangeSetError(
                f"version(s) {gone} are applied in the database but have no change set in "
                f"{self._source_origin()}. Point --source at the folder that holds them",
                component=self.component,
                versions=gone,
            )
        checks.append(PreCheck("sources", True, f"{len(sets)} change set(s) consistent"))

    def _check_approval(
        self, subjects: Sequence[tuple[str, str | None]], approved_by: str | None, operation: str
    ) -> None:
        """Dual approval in protected environments.

        ``subjects`` pairs what is approved with its author (``None``: the one running it). The
        approver must be named and must differ from every author.
        """
        if self.environment not in PROTECTED_ENVIRONMENTS:
            return
        approver = (approved_by or "").strip()
        if not approver:
            raise ApprovalRequiredError(
                f"{operation} in {self.environment} needs an approver: pass --approved-by NAME "
                "(someone other than the change set's author)",
                component=self.component,
            )
        self_approved = [
            what
            for what, author in subjects
            if (author or self.actor).strip().lower() == approver.lower()
        ]
        if self_approved:
            raise ApprovalRequiredError(
                f"{operation} in {self.environment} refused: {approver} is the author of "
                f"{', '.join(self_approved)} and cannot approve it; a different person must "
                "approve (--approved-by)",
                component=self.component,
            )

    @staticmethod
    def _require_reason(reason: str | None, what: str) -> str:
        text = (reason or "").strip()
        if not text:
            raise MigrationRefusedError(
                f"{what} needs a reason (--reason '...'): it is recorded in the history and audit",
                code="MIGRATION_REASON_REQUIRED",
            )
        return text

    # -- running one change set ----------------------------------------------------------------

    def _timeouts(self, conn: psycopg.Connection[Any], *, local: bool) -> None:
        scope = sql.SQL("SET LOCAL" if local else "SET")
        for name, value in (
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.ddl_lock_timeout),
        ):
            if value is not None:
                conn.execute(
                    sql.SQL("{} {} = {}").format(
                        scope, sql.Identifier(name), sql.Literal(f"{int(value * 1000)}ms")
                    )
                )

    def _execute_script(
        self, conn: psycopg.Connection[Any], script: Script
    ) -> tuple[int, dict[str, dict[str, int]]]:
        """Run ``script`` statement by statement; return (count, per-statement DML counts)."""
        statements = script.statements
        counts: dict[str, dict[str, int]] = {}
        with conn.cursor() as cur:
            for index, stmt in enumerate(statements):
                try:
                    cur.execute(stmt.encode())
                except psycopg.Error as exc:
                    raise _SetFailedError(exc, stmt, index) from exc
                m = _DML_TARGET.match(_strip_leading_comments(stmt))
                if m and cur.rowcount >= 0:
                    verb = m.group("verb").split()[0].lower()
                    table = m.group("table").replace('"', "")
                    entry = counts.setdefault(table, {"inserted": 0, "updated": 0, "deleted": 0})
                    entry[_VERB_KEY[verb]] += cur.rowcount
        return len(statements), counts

    def _run_check(self, conn: psycopg.Connection[Any], check: Script) -> None:
        with conn.cursor() as cur:
            for index, stmt in enumerate(check.statements):
                try:
                    cur.execute(stmt.encode())
                except psycopg.Error as exc:
                    raise _SetFailedError(exc, stmt, index) from exc
                if cur.description is None:
                    continue
                rows = cur.fetchall()
                bad = not rows or any(row[0] is not True for row in rows)
                if bad:
                    raise _SetFailedError(
                        MigrationCheckFailedError(
                            f"check {check.name} statement {index + 1} did not return only true "
                            f"(got {rows[:3]!r})"
                        ),
                        stmt,
                        index,
                    )

    def _golang_after(
        self, ledger: dict[int, LedgerEntry], version: int, entry: LedgerEntry | None
    ) -> tuple[int | None, bool]:
        if entry is None:
            ledger.pop(version, None)
        else:
            ledger[version] = entry
        return expected_golang(ledger)

    def _run_set(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        *,
        run_id: str,
        approved_by: str | None,
        action: str | None = None,
        reason: str | None = None,
    ) -> MigrationResult:
        script = cs.up if direction == "up" else cs.down
        attributes = {
            "db.system": "postgresql",
            "db.migration.component": self.component,
            "db.migration.direction": direction,
            "db.migration.version": cs.version,
            "db.migration.slug": cs.slug,
            "db.migration.dry_run": False,
            "db.migration.no_transaction": script.no_transaction,
        }
        emit(
            "migration_start",
            f"{direction} {cs.name} ({self.component})",
            component=self.component,
            direction=direction,
            version=cs.version,
            slug=cs.slug,
            dry_run=False,
            no_transaction=script.no_transaction,
            checksum=script.checksum,
            run_id=run_id,
        )
        with span("aiaas_db.migration", attributes) as current:
            started, t0 = _now(), time.perf_counter()
            try:
                if script.no_transaction:
                    result = self._run_no_transaction(
                        conn,
                        cs,
                        direction,
                        ledger,
                        run_id=run_id,
                        approved_by=approved_by,
                        started=started,
                        t0=t0,
                        action=action,
                        reason=reason,
                    )
                else:
                    result = self._run_transactional(
                        conn,
                        cs,
                        direction,
                        ledger,
                        run_id=run_id,
                        approved_by=approved_by,
                        started=started,
                        t0=t0,
                        action=action,
                        reason=reason,
                    )
            except MigrationFailedError as exc:
                duration = (time.perf_counter() - t0) * 1000
                set_attributes(
                    current,
                    {"db.migration.status": "failed", "db.migration.duration_ms": duration},
                )
                emit(
                    "migration_failed",
                    exc.message,
                    level=logging.ERROR,
                    component=self.component,
                    direction=direction,
                    version=cs.version,
                    slug=cs.slug,
                    dry_run=False,
                    status="failed",
                    dirty=exc.dirty,
                    duration_ms=round(duration, 3),
                    error_code=exc.code,
                    sqlstate=exc.sqlstate,
                    run_id=run_id,
                )
                raise
            set_attributes(
                current,
                {
                    "db.migration.status": result.status,
                    "db.migration.duration_ms": result.duration_ms,
                    "db.migration.rows_affected": result.rows_total,
                    "db.migration.statements": result.statements,
                    "db.migration.tables": ",".join(sorted(result.rows_affected)),
                },
            )
            emit(
                "migration_finish",
                f"{direction} {cs.name} {result.status} in {result.duration_ms:.1f} ms",
                component=self.component,
                direction=direction,
                version=cs.version,
                slug=cs.slug,
                dry_run=False,
                status=result.status,
                duration_ms=round(result.duration_ms, 3),
                statements=result.statements,
                rows_affected={k: dict(v) for k, v in result.rows_affected.items()},
                row_deltas=result.row_deltas,
                run_id=run_id,
            )
            return result

    def _final_entry(
        self,
        cs: ChangeSet,
        direction: Literal["up", "down"],
        approved_by: str | None,
        prior: LedgerEntry | None,
    ) -> LedgerEntry:
        return LedgerEntry(
            version=cs.version,
            slug=cs.slug,
            status="applied" if direction == "up" else "rolled_back",
            direction=direction,
            checksum=cs.checksum if direction == "up" or prior is None else prior.checksum,
            down_checksum=cs.down.checksum,
            no_transaction=(cs.up if direction == "up" else cs.down).no_transaction,
            applied_by=self.actor,
            approved_by=approved_by,
        )

    def _record_success(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        *,
        run_id: str,
        approved_by: str | None,
        started: datetime,
        duration_ms: float,
        statements: int,
        rows: Mapping[str, Mapping[str, int]],
        history_id: int | None,
        action: str | None,
        reason: str | None,
    ) -> None:
        script = cs.up if direction == "up" else cs.down
        entry = self._final_entry(cs, direction, approved_by, ledger.get(cs.version))
        # One round trip for the bookkeeping: nothing here needs an answer before the next.
        with conn.pipeline():
            self._write_success(
                conn,
                cs,
                direction,
                ledger,
                script=script,
                entry=entry,
                run_id=run_id,
                approved_by=approved_by,
                started=started,
                duration_ms=duration_ms,
                statements=statements,
                rows=rows,
                history_id=history_id,
                action=action,
                reason=reason,
            )

    def _write_success(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        *,
        script: Script,
        entry: LedgerEntry,
        run_id: str,
        approved_by: str | None,
        started: datetime,
        duration_ms: float,
        statements: int,
        rows: Mapping[str, Mapping[str, int]],
        history_id: int | None,
        action: str | None,
        reason: str | None,
    ) -> None:
        self.tables.write_ledger(
            conn,
            version=cs.version,
            slug=cs.slug,
            status=entry.status,
            direction=direction,
            checksum=entry.checksum,
            down_checksum=cs.down.checksum,
            no_transaction=script.no_transaction,
            applied_by=self.actor,
            approved_by=approved_by,
            touch_applied_at=direction == "up",
        )
        golang = self._golang_after(ledger, cs.version, entry)
        self.tables.write_golang(conn, *golang)
        finished = _now()
        status: Literal["applied", "rolled_back"] = (
            "applied" if direction == "up" else "rolled_back"
        )
        if history_id is None:
            self.tables.insert_history(
                conn,
                returning=False,
                run_id=run_id,
                version=cs.version,
                slug=cs.slug,
                direction="recover" if action else direction,
                action=action,
                checksum=script.checksum,
                status=status,
                applied_by=self.actor,
                approved_by=approved_by,
                environment=self.environment,
                started_at=started,
                finished_at=finished,
                duration_ms=duration_ms,
                statements=statements,
                rows_affected=rows,
                reason=reason,
            )
        else:
            self.tables.finish_history(
                conn,
                history_id,
                status=status,
                finished_at=finished,
                duration_ms=duration_ms,
                statements=statements,
                rows_affected=rows,
            )
        self.tables.audit(
            conn,
            action="migration.apply" if direction == "up" else "migration.rollback",
            actor=self.actor,
            protector=self._run_protector,
            target=f"{self.component}:{cs.name}",
            metadata={
                "component": self.component,
                "version": cs.version,
                "slug": cs.slug,
                "direction": direction,
                "checksum": script.checksum,
                "approved_by": approved_by,
                "environment": self.environment,
                "run_id": run_id,
                "reason": reason,
                "rows_affected": {k: dict(v) for k, v in rows.items()},
            },
        )

    def _record_failure(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        failure: _SetFailedError,
        *,
        run_id: str,
        approved_by: str | None,
        started: datetime,
        duration_ms: float,
        dirty: bool,
        history_id: int | None,
        action: str | None,
        reason: str | None,
    ) -> MigrationFailedError:
        script = cs.up if direction == "up" else cs.down
        text, state = _error_text(failure.cause)
        where = f" at statement {failure.index + 1}" if failure.index is not None else ""
        stmt = failure.statement
        prior = ledger.get(cs.version)
        try:
            with conn.transaction():
                if dirty:
                    # Still dirty: keep the ledger entry dirty, note what failed.
                    self.tables.write_ledger(
                        conn,
                        version=cs.version,
                        slug=cs.slug,
                        status="dirty",
                        direction=direction,
                        checksum=cs.checksum
                        if prior is None or direction == "up"
                        else prior.checksum,
                        down_checksum=cs.down.checksum,
                        no_transaction=True,
                        applied_by=self.actor,
                        error=text,
                        failed_statement=stmt,
                    )
                elif direction == "up" and action is None:
                    self.tables.write_ledger(
                        conn,
                        version=cs.version,
                        slug=cs.slug,
                        status="failed",
                        direction="up",
                        checksum=cs.checksum,
                        down_checksum=cs.down.checksum,
                        applied_by=self.actor,
                        error=text,
                        failed_statement=stmt,
                    )
                    ledger[cs.version] = LedgerEntry(
                        version=cs.version,
                        slug=cs.slug,
                        status="failed",
                        direction="up",
                        checksum=cs.checksum,
                        error=text,
                        failed_statement=stmt,
                    )
                elif prior is not None:
                    # A failed transactional rollback changed nothing: the set stays applied.
                    self.tables.write_ledger(
                        conn,
                        version=cs.version,
                        slug=prior.slug,
                        status=prior.status,
                        direction=prior.direction,
                        checksum=prior.checksum,
                        no_transaction=prior.no_transaction,
                        error=text,
                        failed_statement=stmt,
                    )
                finished = _now()
                if history_id is None:
                    self.tables.insert_history(
                        conn,
                        run_id=run_id,
                        version=cs.version,
                        slug=cs.slug,
                        direction="recover" if action else direction,
                        action=action,
                        checksum=script.checksum,
                        status="failed",
                        applied_by=self.actor,
                        approved_by=approved_by,
                        environment=self.environment,
                        started_at=started,
                        finished_at=finished,
                        duration_ms=duration_ms,
                        error=text,
                        failed_statement=stmt,
                        reason=reason,
                    )
                else:
                    self.tables.finish_history(
                        conn,
                        history_id,
                        status="failed",
                        finished_at=finished,
                        duration_ms=duration_ms,
                        statements=None,
                        rows_affected={},
                        error=text,
                        failed_statement=stmt,
                    )
                self.tables.audit(
                    conn,
                    action="migration.failed",
                    actor=self.actor,
                    protector=self._run_protector,
                    target=f"{self.component}:{cs.name}",
                    metadata={
                        "component": self.component,
                        "version": cs.version,
                        "direction": direction,
                        "checksum": script.checksum,
                        "error": text,
                        "dirty": dirty,
                        "run_id": run_id,
                    },
                )
        except psycopg.Error as record_error:
            lost, _state = _error_text(record_error)
            text += f" (the failure could not be recorded: {lost})"
        cls = (
            MigrationCheckFailedError
            if isinstance(failure.cause, MigrationCheckFailedError)
            else MigrationFailedError
        )
        state_note = (
            "the database is DIRTY (partially applied); recover it with `aiaas-db migrate recover`"
            if dirty
            else "it was rolled back completely; nothing of it is applied"
        )
        return cls(
            f"{direction} {cs.name} failed{where}: {text}; {state_note}",
            component=self.component,
            versions=[cs.version],
            statement=stmt,
            sqlstate=state,
            dirty=dirty,
        )

    def _run_transactional(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        *,
        run_id: str,
        approved_by: str | None,
        started: datetime,
        t0: float,
        action: str | None,
        reason: str | None,
    ) -> MigrationResult:
        script = cs.up if direction == "up" else cs.down
        stats = _Stats(conn, self._state_tables)
        snapshot = dict(ledger)
        try:
            with conn.transaction():
                self._timeouts(conn, local=True)
                # Not zero even in a fresh transaction: PostgreSQL 15 reports counts of earlier
                # transactions that it has not flushed to the statistics yet.
                before = stats.snapshot()
                count, _dml = self._execute_script(conn, script)
                if direction == "up" and cs.check is not None:
                    self._run_check(conn, cs.check)
                rows = _Stats.diff(before, stats.snapshot())
                duration = (time.perf_counter() - t0) * 1000
                self._record_success(
                    conn,
                    cs,
                    direction,
                    ledger,
                    run_id=run_id,
                    approved_by=approved_by,
                    started=started,
                    duration_ms=duration,
                    statements=count,
                    rows=rows,
                    history_id=None,
                    action=action,
                    reason=reason,
                )
        except (_SetFailedError, psycopg.Error) as exc:
            # A failed statement or check, or the transaction itself failing (e.g. at commit):
            # either way PostgreSQL rolled everything back, so the ledger goes back too.
            failure = exc if isinstance(exc, _SetFailedError) else _SetFailedError(exc, None, None)
            ledger.clear()
            ledger.update(snapshot)
            duration = (time.perf_counter() - t0) * 1000
            raise self._record_failure(
                conn,
                cs,
                direction,
                ledger,
                failure,
                run_id=run_id,
                approved_by=approved_by,
                started=started,
                duration_ms=duration,
                dirty=False,
                history_id=None,
                action=action,
                reason=reason,
            ) from None
        return MigrationResult(
            version=cs.version,
            slug=cs.slug,
            direction=direction,
            status="applied" if direction == "up" else "rolled_back",
            checksum=script.checksum,
            duration_ms=duration,
            statements=count,
            rows_affected=rows,
        )

    def _run_no_transaction(
        self,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        direction: Literal["up", "down"],
        ledger: dict[int, LedgerEntry],
        *,
        run_id: str,
        approved_by: str | None,
        started: datetime,
        t0: float,
        action: str | None,
        reason: str | None,
    ) -> MigrationResult:
        script = cs.up if direction == "up" else cs.down
        prior = ledger.get(cs.version)
        dirty_entry = LedgerEntry(
            version=cs.version,
            slug=cs.slug,
            status="dirty",
            direction=direction,
            checksum=cs.checksum if direction == "up" or prior is None else prior.checksum,
            down_checksum=cs.down.checksum,
            no_transaction=True,
        )
        # 1. Mark dirty first, committed, so a crash from here on is visible.
        with conn.transaction():
            self.tables.write_ledger(
                conn,
                version=cs.version,
                slug=cs.slug,
                status="dirty",
                direction=direction,
                checksum=dirty_entry.checksum,
                down_checksum=cs.down.checksum,
                no_transaction=True,
                applied_by=self.actor,
            )
            self.tables.write_golang(conn, *self._golang_after(ledger, cs.version, dirty_entry))
            history_id = self.tables.insert_history(
                conn,
                run_id=run_id,
                version=cs.version,
                slug=cs.slug,
                direction="recover" if action else direction,
                action=action,
                checksum=script.checksum,
                status="running",
                applied_by=self.actor,
                approved_by=approved_by,
                environment=self.environment,
                started_at=started,
                reason=reason,
            )
        # 2. Run statement by statement, each in its own implicit transaction.
        try:
            self._timeouts(conn, local=False)
            try:
                count, rows = self._execute_script(conn, script)
                if direction == "up" and cs.check is not None:
                    self._run_check(conn, cs.check)
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("RESET statement_timeout")
                    conn.execute("RESET lock_timeout")
        except _SetFailedError as failure:
            duration = (time.perf_counter() - t0) * 1000
            raise self._record_failure(
                conn,
                cs,
                direction,
                ledger,
                failure,
                run_id=run_id,
                approved_by=approved_by,
                started=started,
                duration_ms=duration,
                dirty=True,
                history_id=history_id,
                action=action,
                reason=reason,
            ) from None
        # 3. Mark clean.
        duration = (time.perf_counter() - t0) * 1000
        with conn.transaction():
            self._record_success(
                conn,
                cs,
                direction,
                ledger,
                run_id=run_id,
                approved_by=approved_by,
                started=started,
                duration_ms=duration,
                statements=count,
                rows=rows,
                history_id=history_id,
                action=action,
                reason=reason,
            )
        return MigrationResult(
            version=cs.version,
            slug=cs.slug,
            direction=direction,
            status="applied" if direction == "up" else "rolled_back",
            checksum=script.checksum,
            no_transaction=True,
            duration_ms=duration,
            statements=count,
            rows_affected=rows,
        )

    # -- dry run -------------------------------------------------------------------------------

    def _dry_run(
        self,
        conn: psycopg.Connection[Any],
        plan: Sequence[ChangeSet],
        direction: Literal["up", "down"],
        *,
        run_id: str,
        approved_by: str | None,
    ) -> list[MigrationResult]:
        results: list[MigrationResult] = []
        stats = _Stats(conn, self._state_tables)
        with conn.transaction(force_rollback=True):
            self._timeouts(conn, local=True)
            for cs in plan:
                script = cs.up if direction == "up" else cs.down
                statements = tuple(script.statements)
                emit(
                    "migration_start",
                    f"dry run {direction} {cs.name} ({self.component})",
                    component=self.component,
                    direction=direction,
                    version=cs.version,
                    slug=cs.slug,
                    dry_run=True,
                    no_transaction=script.no_transaction,
                    checksum=script.checksum,
                    run_id=run_id,
                )
                attributes = {
                    "db.system": "postgresql",
                    "db.migration.component": self.component,
                    "db.migration.direction": direction,
                    "db.migration.version": cs.version,
                    "db.migration.slug": cs.slug,
                    "db.migration.dry_run": True,
                    "db.migration.no_transaction": script.no_transaction,
                }
                with span("aiaas_db.migration", attributes) as current:
                    if script.no_transaction:
                        result = MigrationResult(
                            version=cs.version,
                            slug=cs.slug,
                            direction=direction,
                            status="skipped",
                            checksum=script.checksum,
                            no_transaction=True,
                            statements=len(statements),
                            sql=statements,
                            error="no-transaction change set: listed, not executed in a dry run",
                        )
                    else:
                        t0 = time.perf_counter()
                        try:
                            with conn.transaction():
                                before = stats.snapshot()
                                count, _dml = self._execute_script(conn, script)
                                if direction == "up" and cs.check is not None:
                                    self._run_check(conn, cs.check)
                                rows = _Stats.diff(before, stats.snapshot())
                        except _SetFailedError as failure:
                            text, _state = _error_text(failure.cause)
                            result = MigrationResult(
                                version=cs.version,
                                slug=cs.slug,
                                direction=direction,
                                status="failed",
                                checksum=script.checksum,
                                duration_ms=(time.perf_counter() - t0) * 1000,
                                statements=len(statements),
                                sql=statements,
                                error=text,
                                failed_statement=failure.statement,
                            )
                        else:
                            result = MigrationResult(
                                version=cs.version,
                                slug=cs.slug,
                                direction=direction,
                                status="dry_run",
                                checksum=script.checksum,
                                duration_ms=(time.perf_counter() - t0) * 1000,
                                statements=count,
                                rows_affected=rows,
                                sql=statements,
                            )
                    set_attributes(
                        current,
                        {
                            "db.migration.status": result.status,
                            "db.migration.duration_ms": result.duration_ms,
                            "db.migration.rows_affected": result.rows_total,
                            "db.migration.statements": result.statements,
                        },
                    )
                emit(
                    "migration_failed" if result.status == "failed" else "migration_finish",
                    f"dry run {direction} {cs.name}: {result.status}",
                    level=logging.ERROR if result.status == "failed" else logging.INFO,
                    component=self.component,
                    direction=direction,
                    version=cs.version,
                    slug=cs.slug,
                    dry_run=True,
                    status=result.status,
                    duration_ms=round(result.duration_ms, 3),
                    statements=result.statements,
                    rows_affected={k: dict(v) for k, v in result.rows_affected.items()},
                    row_deltas=result.row_deltas,
                    run_id=run_id,
                )
                results.append(result)
                if result.status == "failed":
                    break
        if self.tables.ours_exist(conn):
            now = _now()
            with conn.transaction():
                for r in results:
                    self.tables.insert_history(
                        conn,
                        run_id=run_id,
                        version=r.version,
                        slug=r.slug,
                        direction=direction,
                        checksum=r.checksum,
                        status="failed"
                        if r.status == "failed"
                        else ("applied" if direction == "up" else "rolled_back"),
                        applied_by=self.actor,
                        approved_by=approved_by,
                        environment=self.environment,
                        started_at=now,
                        finished_at=now,
                        duration_ms=r.duration_ms,
                        dry_run=True,
                        statements=r.statements,
                        rows_affected=r.rows_affected,
                        error=r.error,
                        failed_statement=r.failed_statement,
                    )
        return results

    # -- public operations ---------------------------------------------------------------------

    def _report(
        self,
        *,
        run_id: str,
        operation: Literal["up", "down", "recover", "force", "accept_checksum"],
        status: Literal["succeeded", "failed", "noop"],
        dry_run: bool,
        started: datetime,
        before: int | None,
        after: int | None,
        results: Sequence[MigrationResult],
        checks: Sequence[PreCheck],
        lock_wait: float,
        approved_by: str | None,
    ) -> RunReport:
        return RunReport(
            run_id=run_id,
            component=self.component,
            operation=operation,
            status=status,
            dry_run=dry_run,
            started_at=started,
            finished_at=_now(),
            version_before=before,
            version_after=after,
            results=tuple(results),
            checks=tuple(checks),
            lock_wait_s=lock_wait,
            environment=self.environment,
            applied_by=self.actor,
            approved_by=approved_by,
        )

    def plan_up(self, *, to: int | None = None) -> tuple[PendingChangeSet, ...]:
        """The change sets ``up(to=...)`` would apply, read without taking the lock."""
        status = self.status(history_limit=0)
        return tuple(p for p in status.pending if to is None or p.version <= to)

    def up(
        self,
        *,
        to: int | None = None,
        dry_run: bool = False,
        approved_by: str | None = None,
        allow_out_of_order: bool = False,
        allow_destructive: bool = False,
    ) -> RunReport:
        """Apply pending change sets (up to and including ``to``), oldest first.

        Raises the guardrail errors (dirty, failed head, checksum mismatch, out of order, approval,
        destructive) before anything runs, and :class:`MigrationFailedError` (with ``.report``)
        when a set fails.
        """
        return self._apply(
            "up",
            to=to,
            steps=None,
            dry_run=dry_run,
            approved_by=approved_by,
            allow_out_of_order=allow_out_of_order,
            allow_destructive=allow_destructive,
        )

    def down(
        self,
        *,
        to: int | None = None,
        steps: int | None = None,
        dry_run: bool = False,
        approved_by: str | None = None,
        allow_destructive: bool = False,
    ) -> RunReport:
        """Roll back applied change sets, newest first.

        ``to=V`` keeps versions up to ``V`` applied (``to=0`` rolls back everything); ``steps=N``
        rolls back the newest ``N``; neither rolls back one.
        """
        if to is not None and steps is not None:
            raise MigrationRefusedError("pass either to= or steps=, not both")
        if steps is not None and steps < 1:
            raise MigrationRefusedError(f"steps must be >= 1, got {steps}")
        return self._apply(
            "down",
            to=to,
            steps=steps if to is not None or steps is not None else 1,
            dry_run=dry_run,
            approved_by=approved_by,
            allow_out_of_order=True,
            allow_destructive=allow_destructive,
        )

    def _apply(
        self,
        direction: Literal["up", "down"],
        *,
        to: int | None,
        steps: int | None,
        dry_run: bool,
        approved_by: str | None,
        allow_out_of_order: bool,
        allow_destructive: bool,
    ) -> RunReport:
        sets = self._load_sets()
        by_version = {cs.version: cs for cs in sets}
        if direction == "up" and to is not None and to not in by_version:
            raise MigrationNotFoundError(
                f"no change set with version {to} in {self._source_origin()}",
                component=self.component,
                versions=[to],
            )
        if self.environment in PROTECTED_ENVIRONMENTS and not (approved_by or "").strip():
            # Refused before connecting: nothing can run without an approver.
            self._check_approval([], approved_by, direction)
        run_id = str(uuid.uuid4())
        started = _now()
        checks: list[PreCheck] = []
        with (
            span(
                "aiaas_db.migrate",
                {
                    "db.system": "postgresql",
                    "db.migration.component": self.component,
                    "db.migration.operation": direction,
                    "db.migration.direction": direction,
                    "db.migration.dry_run": dry_run,
                    "db.migration.run_id": run_id,
                },
            ) as run_span,
            self._session(direction, write=not dry_run, checks=checks, sets=sets) as (conn, lock),
        ):
            if not dry_run:
                self.tables.close_interrupted(conn)
                view = self._adopt(conn, sets, run_id)
            else:
                view = self._read_view(conn, sets)
            self._check_state(view, checks, direction)
            before = view.head
            if direction == "up":
                plan = [cs for cs in sets if cs.version not in view.applied]
                if to is not None:
                    plan = [cs for cs in plan if cs.version <= to]
                need: list[int] = []
            else:
                applied_desc = sorted(view.applied, reverse=True)
                if to is not None:
                    targets = [v for v in applied_desc if v > to]
                else:
                    targets = applied_desc[: steps or 1]
                need = targets
                plan = [by_version[v] for v in targets if v in by_version]
            self._check_sources(view, sets, checks, direction, need=need)
            if direction == "up":
                late = [cs.version for cs in plan if before is not None and cs.version < before]
                if late and not allow_out_of_order:
                    checks.append(PreCheck("order", False, f"older than head {before}: {late}"))
                    self._emit_checks(direction, checks, ok=False)
                    raise OutOfOrderError(
                        f"change set(s) {late} are older than the applied head {before} and were "
                        "never applied. Renumber them after the head, or apply them deliberately "
                        "with --allow-out-of-order",
                        component=self.component,
                        versions=late,
                    )
                checks.append(
                    PreCheck(
                        "order",
                        True,
                        "no out-of-order change sets"
                        if not late
                        else f"out of order, allowed: {late}",
                    )
                )
            destructive = [
                cs.version for cs in plan if (cs.up if direction == "up" else cs.down).destructive
            ]
            if destructive and not allow_destructive and not dry_run:
                checks.append(PreCheck("destructive", False, f"destructive: {destructive}"))
                self._emit_checks(direction, checks, ok=False)
                raise MigrationRefusedError(
                    f"change set(s) {destructive} are marked aiaas:destructive (they drop data); "
                    "confirm with --yes (allow_destructive=True)",
                    code="MIGRATION_DESTRUCTIVE_UNCONFIRMED",
                    component=self.component,
                    versions=destructive,
                )
            try:
                self._check_approval([(cs.name, cs.author) for cs in plan], approved_by, direction)
            except ApprovalRequiredError:
                checks.append(PreCheck("approval", False, "approval missing or self-approved"))
                self._emit_checks(direction, checks, ok=False)
                raise
            if self.environment in PROTECTED_ENVIRONMENTS:
                checks.append(PreCheck("approval", True, f"approved by {approved_by}"))
            self._emit_checks(direction, checks, ok=True)
            set_attributes(run_span, {"db.migration.planned": len(plan)})

            if not plan:
                set_attributes(run_span, {"db.migration.status": "noop"})
                return self._report(
                    run_id=run_id,
                    operation=direction,
                    status="noop",
                    dry_run=dry_run,
                    started=started,
                    before=before,
                    after=before,
                    results=(),
                    checks=checks,
                    lock_wait=lock.waited_s,
                    approved_by=approved_by,
                )
            if dry_run:
                results = self._dry_run(
                    conn, plan, direction, run_id=run_id, approved_by=approved_by
                )
                failed = any(r.status == "failed" for r in results)
                set_attributes(
                    run_span, {"db.migration.status": "failed" if failed else "succeeded"}
                )
                return self._report(
                    run_id=run_id,
                    operation=direction,
                    status="failed" if failed else "succeeded",
                    dry_run=True,
                    started=started,
                    before=before,
                    after=before,
                    results=results,
                    checks=checks,
                    lock_wait=lock.waited_s,
                    approved_by=approved_by,
                )
            ledger = dict(view.ledger)
            results = []
            for cs in plan:
                try:
                    results.append(
                        self._run_set(
                            conn, cs, direction, ledger, run_id=run_id, approved_by=approved_by
                        )
                    )
                except MigrationFailedError as exc:
                    text = exc.message
                    results.append(
                        MigrationResult(
                            version=cs.version,
                            slug=cs.slug,
                            direction=direction,
                            status="failed",
                            checksum=(cs.up if direction == "up" else cs.down).checksum,
                            no_transaction=(cs.up if direction == "up" else cs.down).no_transaction,
                            error=text,
                            failed_statement=exc.statement,
                        )
                    )
                    set_attributes(run_span, {"db.migration.status": "failed"})
                    exc.report = self._report(
                        run_id=run_id,
                        operation=direction,
                        status="failed",
                        dry_run=False,
                        started=started,
                        before=before,
                        after=_applied_head(ledger),
                        results=results,
                        checks=checks,
                        lock_wait=lock.waited_s,
                        approved_by=approved_by,
                    )
                    raise
            set_attributes(run_span, {"db.migration.status": "succeeded"})
            return self._report(
                run_id=run_id,
                operation=direction,
                status="succeeded",
                dry_run=False,
                started=started,
                before=before,
                after=_applied_head(ledger),
                results=results,
                checks=checks,
                lock_wait=lock.waited_s,
                approved_by=approved_by,
            )

    def status(self, *, history_limit: int = 20) -> MigrationStatus:
        """Read where the component stands; takes no lock and writes nothing."""
        sets = self._load_sets() if self.source is not None else ()
        by_version = {cs.version: cs for cs in sets}
        with self.connect("status") as conn:
            initialized = self.tables.ours_exist(conn)
            view = self._read_view(conn, sets)
            history = (
                tuple(self.tables.read_history(conn, limit=history_limit))
                if initialized and history_limit > 0
                else ()
            )
            last = self.tables.last_migration_at(conn) if initialized else None
        head = view.head
        pending = tuple(
            PendingChangeSet(
                version=cs.version,
                slug=cs.slug,
                no_transaction=cs.up.no_transaction,
                destructive=cs.up.destructive,
                author=cs.author,
                out_of_order=head is not None and cs.version < head,
            )
            for cs in sets
            if cs.version not in view.applied
        )
        applied = tuple(
            AppliedChangeSet(
                version=v,
                slug=e.slug or (by_version[v].slug if v in by_version else ""),
                checksum=e.checksum,
                applied_at=e.applied_at,
                applied_by=e.applied_by,
                approved_by=e.approved_by,
                checksum_matches=(
                    None
                    if v not in by_version or not e.checksum
                    else e.checksum == by_version[v].checksum
                ),
            )
            for v, e in sorted(view.applied.items())
        )
        dirty = view.dirty
        detail = None
        if dirty is not None:
            detail = (
                "schema_migrations marked dirty outside aiaas-db"
                if dirty.external
                else f"no-transaction {dirty.direction} interrupted"
                + (f": {dirty.error}" if dirty.error else "")
            )
        golang = view.golang or (None, False)
        return MigrationStatus(
            component=self.component,
            initialized=initialized,
            current_version=head,
            dirty=dirty is not None,
            dirty_version=None if dirty is None else dirty.version,
            dirty_detail=detail,
            failed_version=None if view.failed is None else view.failed.version,
            failed_error=None if view.failed is None else view.failed.error,
            applied=applied,
            pending=pending,
            history=history,
            last_migration_at=last,
            checksum_mismatches=tuple(a.version for a in applied if a.checksum_matches is False),
            missing=tuple(v for v in sorted(view.applied) if sets and v not in by_version),
            out_of_order=tuple(p.version for p in pending if p.out_of_order),
            golang_version=golang[0],
            golang_dirty=golang[1],
            source=self._source_origin(),
        )

    def history(self, *, limit: int | None = 50, run_id: str | None = None) -> list[Any]:
        """Recorded operations, newest first (optionally one run's)."""
        with self.connect("history") as conn:
            if not self.tables.ours_exist(conn):
                return []
            return list(self.tables.read_history(conn, limit=limit, run_id=run_id))

    # -- recovery and overrides ----------------------------------------------------------------

    def recover(
        self,
        action: RecoverAction,
        *,
        reason: str,
        version: int | None = None,
        approved_by: str | None = None,
    ) -> RunReport:
        """Resolve a failed or dirty head, explicitly and audited.

        ``mark-rolled-back``: the set is not applied (a failed set becomes pending again);
        ``mark-applied``: the set is applied (completed by hand); ``run-down``: run its down script,
        then mark it rolled back. For a dirty flag set by another tool at version ``V`` these are
        golang-migrate's ``force V`` / ``force <previous>`` (run-down runs ``V``'s down first).
        """
        if action not in RECOVER_ACTIONS:
            raise MigrationRefusedError(
                f"unknown recover action {action!r}; use one of {', '.join(RECOVER_ACTIONS)}",
                code="MIGRATION_RECOVER_ACTION_INVALID",
            )
        why = self._require_reason(reason, "recover")
        sets = self._load_sets()
        by_version = {cs.version: cs for cs in sets}
        self._check_approval([("recover", None)], approved_by, "recover")
        run_id = str(uuid.uuid4())
        started = _now()
        checks: list[PreCheck] = []
        with (
            span(
                "aiaas_db.migrate",
                {
                    "db.system": "postgresql",
                    "db.migration.component": self.component,
                    "db.migration.operation": "recover",
                    "db.migration.action": action,
                    "db.migration.run_id": run_id,
                },
            ),
            self._session("recover", write=True, checks=checks, sets=sets) as (conn, lock),
        ):
            self.tables.close_interrupted(conn)
            view = self._adopt(conn, sets, run_id)
            before = view.head
            target: int | None
            kind: str
            if view.dirty is not None:
                target, kind = view.dirty.version, "external" if view.dirty.external else "dirty"
            elif view.failed is not None:
                target, kind = view.failed.version, "failed"
            else:
                raise NothingToRecoverError(
                    f"{self.component} has no failed or dirty change set to recover",
                    component=self.component,
                )
            if version is not None and version != target:
                raise NothingToRecoverError(
                    f"version {version} is not the failed or dirty change set "
                    f"({target} is); pass --version {target} or leave it out",
                    component=self.component,
                    versions=[version],
                )
            emit(
                "migration_recover",
                f"recover {self.component} {kind} version {target}: {action}",
                level=logging.WARNING,
                component=self.component,
                version=target,
                action=action,
                kind=kind,
                reason=why,
                run_id=run_id,
            )
            ledger = dict(view.ledger)
            results: list[MigrationResult] = []
            if kind == "external":
                if action == "run-down":
                    if target is None or target not in by_version:
                        raise MigrationNotFoundError(
                            f"no change set {target} in the source to run down",
                            component=self.component,
                        )
                    results.append(
                        self._run_down_for_recovery(
                            conn=conn,
                            cs=by_version[target],
                            ledger=ledger,
                            run_id=run_id,
                            approved_by=approved_by,
                            reason=why,
                        )
                    )
                    ledger = self.tables.read_ledger(conn)
                keep = target if action == "mark-applied" else _previous(sets, target)
                self._force_state(
                    conn=conn,
                    sets=sets,
                    ledger=ledger,
                    version=keep,
                    run_id=run_id,
                    reason=why,
                    approved_by=approved_by,
                    direction="recover",
                    action=action,
                )
            else:
                assert target is not None
                cs = by_version.get(target)
                if action == "run-down":
                    if cs is None:
                        raise MigrationNotFoundError(
                            f"no change set {target} in the source to run down",
                            component=self.component,
                            versions=[target],
                        )
                    results.append(
                        self._run_down_for_recovery(
                            conn=conn,
                            cs=cs,
                            ledger=ledger,
                            run_id=run_id,
                            approved_by=approved_by,
                            reason=why,
                        )
                    )
                else:
                    self._mark(
                        conn=conn,
                        version=target,
                        cs=cs,
                        ledger=ledger,
                        action=action,
                        run_id=run_id,
                        reason=why,
                        approved_by=approved_by,
                    )
            after = _applied_head(self.tables.read_ledger(conn))
            return self._report(
                run_id=run_id,
                operation="recover",
                status="succeeded",
                dry_run=False,
                started=started,
                before=before,
                after=after,
                results=results,
                checks=checks,
                lock_wait=lock.waited_s,
                approved_by=approved_by,
            )

    def _run_down_for_recovery(
        self,
        *,
        conn: psycopg.Connection[Any],
        cs: ChangeSet,
        ledger: dict[int, LedgerEntry],
        run_id: str,
        approved_by: str | None,
        reason: str,
    ) -> MigrationResult:
        # A failed transactional set must not be recorded as "failed" again by a down failure:
        # _record_failure keeps the ledger as it is when an action is given.
        return self._run_set(
            conn,
            cs,
            "down",
            ledger,
            run_id=run_id,
            approved_by=approved_by,
            action="run-down",
            reason=reason,
        )

    def _mark(
        self,
        *,
        conn: psycopg.Connection[Any],
        version: int,
        cs: ChangeSet | None,
        ledger: dict[int, LedgerEntry],
        action: str,
        run_id: str,
        reason: str,
        approved_by: str | None,
    ) -> None:
        prior = ledger.get(version)
        status: Settled = "applied" if action == "mark-applied" else "rolled_back"
        slug = cs.slug if cs else (prior.slug if prior else "")
        checksum = cs.checksum if cs else (prior.checksum if prior else "")
        entry = LedgerEntry(
            version=version,
            slug=slug,
            status=status,
            direction="up" if status == "applied" else "down",
            checksum=checksum,
        )
        now = _now()
        with conn.transaction():
            self.tables.write_ledger(
                conn,
                version=version,
                slug=slug,
                status=status,
                direction=entry.direction,
                checksum=checksum,
                down_checksum=cs.down.checksum if cs else None,
                applied_by=self.actor,
                approved_by=approved_by,
                touch_applied_at=status == "applied",
            )
            self.tables.write_golang(conn, *self._golang_after(ledger, version, entry))
            self.tables.insert_history(
                conn,
                run_id=run_id,
                version=version,
                slug=slug,
                direction="recover",
                action=action,
                checksum=checksum,
                status=status,
                applied_by=self.actor,
                approved_by=approved_by,
                environment=self.environment,
                started_at=now,
                finished_at=now,
                duration_ms=0.0,
                reason=reason,
            )
            self.tables.audit(
                conn,
                action="migration.recover",
                actor=self.actor,
                protector=self._run_protector,
                target=f"{self.component}:{version}_{slug}",
                metadata={
                    "component": self.component,
                    "version": version,
                    "action": action,
                    "checksum": checksum,
                    "reason": reason,
                    "approved_by": approved_by,
                    "run_id": run_id,
                },
            )

    def _force_state(
        self,
        *,
        conn: psycopg.Connection[Any],
        sets: Sequence[ChangeSet],
        ledger: Mapping[int, LedgerEntry],
        version: int | None,
        run_id: str,
        reason: str,
        approved_by: str | None,
        direction: Literal["force", "recover"],
        action: str,
    ) -> list[int]:
        """Make exactly the versions up to ``version`` applied; return the versions changed."""
        by_version = {cs.version: cs for cs in sets}
        changed: list[int] = []
        now = _now()
        with conn.transaction():
            for v in sorted({*by_version, *ledger}):
                want: Settled = "applied" if version is not None and v <= version else "rolled_back"
                prior = ledger.get(v)
                if prior is None and want == "rolled_back":
                    continue
                if prior is not None and prior.status == want:
                    continue
                cs = by_version.get(v)
                slug = cs.slug if cs else (prior.slug if prior else "")
                checksum = cs.checksum if cs else (prior.checksum if prior else "")
                self.tables.write_ledger(
                    conn,
                    version=v,
                    slug=slug,
                    status=want,
                    direction="up" if want == "applied" else "down",
                    checksum=checksum,
                    down_checksum=cs.down.checksum if cs else None,
                    applied_by=self.actor,
                    approved_by=approved_by,
                    touch_applied_at=want == "applied",
                )
                self.tables.insert_history(
                    conn,
                    run_id=run_id,
                    version=v,
                    slug=slug,
                    direction=direction,
                    action=action,
                    checksum=checksum,
                    status=want,
                    applied_by=self.actor,
                    approved_by=approved_by,
                    environment=self.environment,
                    started_at=now,
                    finished_at=now,
                    duration_ms=0.0,
                    reason=reason,
                )
                changed.append(v)
            self.tables.write_golang(conn, version, False)
            self.tables.audit(
                conn,
                action=f"migration.{direction}",
                actor=self.actor,
                protector=self._run_protector,
                target=f"{self.component}:{version if version is not None else -1}",
                metadata={
                    "component": self.component,
                    "version": version,
                    "action": action,
                    "changed_versions": changed,
                    "checksums": {
                        str(v): by_version[v].checksum for v in changed if v in by_version
                    },
                    "reason": reason,
                    "approved_by": approved_by,
                    "run_id": run_id,
                },
            )
        return changed

    def force(
        self, version: int | None, *, reason: str, approved_by: str | None = None
    ) -> RunReport:
        """Declare the database to be at ``version`` (``None``/-1: nothing applied), clean.

        Like golang-migrate's ``force``: runs no SQL; every version up to ``version`` is marked
        applied and every later one rolled back; dirty and failed marks are cleared. Audited.
        """
        why = self._require_reason(reason, "force")
        if version is not None and version < 0:
            version = None
        sets = self._load_sets()
        if version is not None and version not in {cs.version for cs in sets}:
            raise MigrationNotFoundError(
                f"no change set with version {version} in {self._source_origin()}",
                component=self.component,
                versions=[version],
            )
        self._check_approval([("force", None)], approved_by, "force")
        run_id = str(uuid.uuid4())
        started = _now()
        checks: list[PreCheck] = []
        with (
            span(
                "aiaas_db.migrate",
                {
                    "db.system": "postgresql",
                    "db.migration.component": self.component,
                    "db.migration.operation": "force",
                    "db.migration.version": -1 if version is None else version,
                    "db.migration.run_id": run_id,
                },
            ),
            self._session("force", write=True, checks=checks, sets=sets) as (conn, lock),
        ):
            self.tables.close_interrupted(conn)
            view = self._read_view(conn, sets)
            emit(
                "migration_recover",
                f"force {self.component} to {version}",
                level=logging.WARNING,
                component=self.component,
                version=version,
                action="force",
                reason=why,
                run_id=run_id,
            )
            self._force_state(
                conn=conn,
                sets=sets,
                ledger=view.ledger,
                version=version,
                run_id=run_id,
                reason=why,
                approved_by=approved_by,
                direction="force",
                action="force",
            )
            return self._report(
                run_id=run_id,
                operation="force",
                status="succeeded",
                dry_run=False,
                started=started,
                before=view.head,
                after=version,
                results=(),
                checks=checks,
                lock_wait=lock.waited_s,
                approved_by=approved_by,
            )

    def accept_checksum(
        self, versions: Sequence[int], *, reason: str, approved_by: str | None = None
    ) -> RunReport:
        """Accept the current file content of applied, edited change sets (audited)."""
        why = self._require_reason(reason, "accept-checksum")
        if not versions:
            raise MigrationRefusedError("name the version(s) whose new checksum to accept")
        sets = self._load_sets()
        by_version = {cs.version: cs for cs in sets}
        self._check_approval([("accept-checksum", None)], approved_by, "accept-checksum")
        run_id = str(uuid.uuid4())
        started = _now()
        checks: list[PreCheck] = []
        with self._session("accept-checksum", write=True, checks=checks, sets=sets) as (conn, lock):
            view = self._adopt(conn, sets, run_id)
            for v in versions:
                entry = view.applied.get(v)
                if entry is None or v not in by_version:
                    raise MigrationNotFoundError(
                        f"version {v} is not an applied change set present in the source",
                        component=self.component,
                        versions=[v],
                    )
                if entry.checksum == by_version[v].checksum:
                    raise MigrationRefusedError(
                        f"version {v}'s checksum matches already; nothing to accept",
                        code="MIGRATION_CHECKSUM_MATCHES",
                        component=self.component,
                        versions=[v],
                    )
            now = _now()
            with conn.transaction():
                for v in versions:
                    cs, entry = by_version[v], view.applied[v]
                    self.tables.write_ledger(
                        conn,
                        version=v,
                        slug=cs.slug,
                        status="applied",
                        direction=entry.direction,
                        checksum=cs.checksum,
                        down_checksum=cs.down.checksum,
                        no_transaction=entry.no_transaction,
                    )
                    self.tables.insert_history(
                        conn,
                        run_id=run_id,
                        version=v,
                        slug=cs.slug,
                        direction="accept_checksum",
                        checksum=cs.checksum,
                        status="applied",
                        applied_by=self.actor,
                        approved_by=approved_by,
                        environment=self.environment,
                        started_at=now,
                        finished_at=now,
                        duration_ms=0.0,
                        reason=f"{why} (checksum {entry.checksum} -> {cs.checksum})",
                    )
                    self.tables.audit(
                        conn,
                        action="migration.accept_checksum",
                        actor=self.actor,
                        protector=self._run_protector,
                        target=f"{self.component}:{cs.name}",
                        metadata={
                            "component": self.component,
                            "version": v,
                            "checksum": cs.checksum,
                            "previous_checksum": entry.checksum,
                            "reason": why,
                            "approved_by": approved_by,
                            "run_id": run_id,
                        },
                    )
            emit(
                "migration_recover",
                f"accepted new checksums for {list(versions)}",
                level=logging.WARNING,
                component=self.component,
                action="accept_checksum",
                versions=list(versions),
                reason=why,
                run_id=run_id,
            )
            return self._report(
                run_id=run_id,
                operation="accept_checksum",
                status="succeeded",
                dry_run=False,
                started=started,
                before=view.head,
                after=view.head,
                results=(),
                checks=checks,
                lock_wait=lock.waited_s,
                approved_by=approved_by,
            )

    # -- drill ---------------------------------------------------------------------------------

    def fingerprint(self) -> CatalogFingerprint:
        """The catalog fingerprint of the database, without the migration state tables."""
        with self.connect("fingerprint") as conn:
            return catalog_fingerprint(conn, exclude=self._state_tables)

    def drill(self, *, to: int | None = None) -> DrillReport:
        """Apply, roll back and reapply each pending change set (up to ``to``), one at a time.

        After each step the catalog fingerprint must match: the rollback must restore the catalog
        from before the up exactly, and the reapply must reproduce the catalog after the first up.
        Raises :class:`DrillFailedError` with the differences on the first mismatch. Refused in
        protected environments. The drilled sets are left applied.
        """
        if self.environment in PROTECTED_ENVIRONMENTS:
            raise MigrationRefusedError(
                f"drill applies and rolls back change sets; it is refused in {self.environment}. "
                "Run it against a disposable copy",
                code="MIGRATION_DRILL_REFUSED",
                component=self.component,
            )
        sets = self._load_sets()
        by_version = {cs.version: cs for cs in sets}
        if to is not None and to not in by_version:
            raise MigrationNotFoundError(
                f"no change set with version {to} in {self._source_origin()}",
                component=self.component,
                versions=[to],
            )
        run_id = str(uuid.uuid4())
        started = _now()
        checks: list[PreCheck] = []
        steps: list[DrillStep] = []
        with (
            span(
                "aiaas_db.migrate",
                {
                    "db.system": "postgresql",
                    "db.migration.component": self.component,
                    "db.migration.operation": "drill",
                    "db.migration.run_id": run_id,
                },
            ) as run_span,
            self._session("drill", write=True, checks=checks, sets=sets) as (conn, _lock),
        ):
            self.tables.close_interrupted(conn)
            view = self._adopt(conn, sets, run_id)
            self._check_state(view, checks, "drill")
            self._check_sources(view, sets, checks, "drill")
            plan = [cs for cs in sets if cs.version not in view.applied]
            if to is not None:
                plan = [cs for cs in plan if cs.version <= to]
            head = view.head
            late = [cs.version for cs in plan if head is not None and cs.version < head]
            if late:
                raise OutOfOrderError(
                    f"change set(s) {late} are older than the applied head {head}; a drill runs "
                    "sets in order only",
                    component=self.component,
                    versions=late,
                )
            self._emit_checks("drill", checks, ok=True)
            ledger = dict(view.ledger)

            def fp() -> CatalogFingerprint:
                return catalog_fingerprint(conn, exclude=self._state_tables)

            for cs in plan:
                before = fp()
                self._run_set(conn, cs, "up", ledger, run_id=run_id, approved_by=None)
                after_up = fp()
                self._run_set(conn, cs, "down", ledger, run_id=run_id, approved_by=None)
                after_down = fp()
                differences = [
                    f"after down {cs.name}, compared with before its up: {line}"
                    for line in before.diff(after_down)
                ]
                after_reapply = after_up
                if not differences:
                    # Reapplying on top of a bad rollback would only fail confusingly: the
                    # down script is what the drill reports then.
                    self._run_set(conn, cs, "up", ledger, run_id=run_id, approved_by=None)
                    after_reapply = fp()
                    differences = [
                        f"after reapplying {cs.name}, compared with its first up: {line}"
                        for line in after_up.diff(after_reapply)
                    ]
                step = DrillStep(
                    version=cs.version,
                    slug=cs.slug,
                    before=before.digest,
                    after_up=after_up.digest,
                    after_down=after_down.digest,
                    after_reapply=after_reapply.digest,
                    differences=tuple(differences),
                )
                steps.append(step)
                emit(
                    "migration_drill",
                    f"drill {cs.name}: {'ok' if step.ok else 'MISMATCH'}",
                    level=logging.INFO if step.ok else logging.ERROR,
                    component=self.component,
                    version=cs.version,
                    slug=cs.slug,
                    ok=step.ok,
                    differences=list(differences),
                    run_id=run_id,
                )
                if not step.ok:
                    set_attributes(run_span, {"db.migration.status": "failed"})
                    what = (
                        "its down script does not exactly undo its up"
                        if step.before != step.after_down
                        else "reapplying it does not reproduce its first up"
                    )
                    raise DrillFailedError(
                        f"drill failed at {cs.name}: {what} ({len(differences)} difference(s))",
                        differences=differences,
                        component=self.component,
                        versions=[cs.version],
                    )
            set_attributes(run_span, {"db.migration.status": "succeeded"})
            return DrillReport(
                run_id=run_id,
                component=self.component,
                steps=tuple(steps),
                started_at=started,
                finished_at=_now(),
            )


def _applied_head(ledger: Mapping[int, LedgerEntry]) -> int | None:
    applied = [v for v, e in ledger.items() if e.status == "applied"]
    return max(applied) if applied else None


def _previous(sets: Sequence[ChangeSet], version: int | None) -> int | None:
    if version is None:
        return None
    below = [cs.version for cs in sets if cs.version < version]
    return below[-1] if below else None


def _strip_leading_comments(stmt: str) -> str:
    text = stmt.lstrip()
    while text.startswith(("--", "/*")):
        if text.startswith("--"):
            nl = text.find("\n")
            text = "" if nl < 0 else text[nl + 1 :].lstrip()
        else:
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2 :].lstrip()
    return text


def _mask(text: str, dsn: str) -> str:
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text
