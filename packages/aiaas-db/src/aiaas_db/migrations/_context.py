"""The context of one migrator operation: its settings, run id, connection, lock and checks.

:class:`Settings` is what a :class:`~aiaas_db.Migrator` is configured with, read once per
operation. :func:`open_run` starts a mutating operation (or a dry run): it opens the operation's
``aiaas_db.migrate`` span, connects, settles the PII protector for the audit entries, creates the
state tables when missing and takes the component's advisory locks (ours and golang-migrate's) by
polling. The :class:`RunContext` it yields carries all of that to the jobs -- running change sets,
recovery and force, dry run and drill -- so they take one argument instead of having the run id,
connection, approver and protector threaded through every call.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import psycopg

from aiaas_db._errors import (
    DatabaseUnavailableError,
    MigrationError,
    MigrationRefusedError,
    mask_password,
)
from aiaas_db.migrations._changesets import ChangeSet, ChangeSetSource
from aiaas_db.migrations._lock import AdvisoryLock, lock_keys
from aiaas_db.migrations._models import MigrationResult, PreCheck, RunReport
from aiaas_db.migrations._state import StateTables, audit_table_exists
from aiaas_db.migrations._telemetry import emit, set_attributes, span

if TYPE_CHECKING:
    from aiaas_db.platform._pii import PiiProtector

__all__ = ["CREATES_AUDIT", "PROTECTED_ENVIRONMENTS"]

#: Environments where every change needs an approver other than the author.
PROTECTED_ENVIRONMENTS: Final = frozenset({"production"})
#: An up script that creates the platform's audit table (the run must then write audit entries).
CREATES_AUDIT: Final = re.compile(
    r"\bcreate\s+table\s+(?:if\s+not\s+exists\s+)?(?:\"?public\"?\.)?\"?audit_log_entries\b",
    re.IGNORECASE,
)


def now() -> datetime:
    """The current time, in UTC (what the history and reports record)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Settings:
    """A :class:`~aiaas_db.Migrator`'s configuration as one operation reads it.

    The DSN (which may hold a password) is left out of the ``repr``.
    """

    dsn: str = field(repr=False)
    source: ChangeSetSource | None
    component: str
    schema: str
    migrations_table: str
    lock_timeout: float
    statement_timeout: float | None
    ddl_lock_timeout: float | None
    actor: str
    environment: str | None
    connect_timeout: int
    protector: PiiProtector | None
    tables: StateTables
    #: The migrator's own tables (``schema.table``), left out of row counts and fingerprints.
    state_tables: frozenset[str]

    @property
    def source_origin(self) -> str | None:
        return None if self.source is None else self.source.origin

    def load_sets(self) -> tuple[ChangeSet, ...]:
        if self.source is None:
            raise MigrationRefusedError(
                "no change-set source given (pass source=... / --source DIR)",
                code="MIGRATION_SOURCE_REQUIRED",
                component=self.component,
            )
        return self.source.load()

    def connect(self, purpose: str) -> psycopg.Connection[Any]:
        """An autocommit connection named ``aiaas-db <purpose> <component>`` in pg_stat_activity."""
        try:
            return psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=f"aiaas-db {purpose} {self.component}"[:63],
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL ({self._where()}): "
                f"{mask_password(str(exc), self.dsn)}. "
                "Check that the server runs and the DSN (--dsn / AIAAS_DB_URL) is right",
                component=self.component,
            ) from None

    def _where(self) -> str:
        try:
            parts = psycopg.conninfo.conninfo_to_dict(self.dsn)
        except psycopg.Error:
            return "unparseable DSN"
        host = parts.get("host") or "localhost"
        return f"host {host} port {parts.get('port') or 5432} database {parts.get('dbname') or '?'}"

    def emit_checks(self, operation: str, checks: Sequence[PreCheck], *, ok: bool) -> None:
        emit(
            "migration_pre_checks",
            f"pre-checks {'passed' if ok else 'failed'} for {operation} of {self.component}",
            level=logging.INFO if ok else logging.WARNING,
            component=self.component,
            operation=operation,
            ok=ok,
            checks=[{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        )


@dataclass(frozen=True, slots=True)
class RunContext:
    """One operation under way: created once by :func:`open_run`, passed to every job."""

    settings: Settings
    #: What runs (``up``, ``down``, ``recover``, ``force``, ``accept-checksum``, ``drill``): it
    #: names the connection and the pre-check events.
    operation: str
    run_id: str
    started: datetime
    conn: psycopg.Connection[Any]
    lock: AdvisoryLock
    #: The change sets of the source, as loaded for this operation.
    sets: tuple[ChangeSet, ...]
    #: The pre-checks so far (connectivity, audit keys, lock, then the operation's own).
    checks: list[PreCheck]
    approved_by: str | None
    #: The PII protector for the audit entries of this run (``None``: none needed, or read from
    #: the environment when an entry is written).
    protector: PiiProtector | None
    #: The operation's ``aiaas_db.migrate`` span (``None`` for an operation without one).
    span: Any

    @property
    def component(self) -> str:
        return self.settings.component

    @property
    def actor(self) -> str:
        return self.settings.actor

    @property
    def environment(self) -> str | None:
        return self.settings.environment

    @property
    def tables(self) -> StateTables:
        return self.settings.tables

    @property
    def by_version(self) -> dict[int, ChangeSet]:
        return {cs.version: cs for cs in self.sets}

    def passed(self, name: str, detail: str) -> None:
        """Record a pre-check that passed."""
        self.checks.append(PreCheck(name, True, detail))

    def refuse(self, name: str, detail: str) -> None:
        """Record a pre-check that failed and emit the checks (the caller raises next)."""
        self.checks.append(PreCheck(name, False, detail))
        self.emit_checks(ok=False)

    def emit_checks(self, *, ok: bool) -> None:
        self.settings.emit_checks(self.operation, self.checks, ok=ok)

    def set_status(self, status: str) -> None:
        """Set the outcome on the operation's span."""
        if self.span is not None:
            set_attributes(self.span, {"db.migration.status": status})

    def audit(self, *, action: str, target: str, metadata: Mapping[str, Any]) -> None:
        """Write an audit entry as the run's actor, when the platform's audit table exists."""
        self.tables.audit(
            self.conn,
            action=action,
            actor=self.actor,
            protector=self.protector,
            target=target,
            metadata=metadata,
        )

    def report(
        self,
        *,
        operation: Literal["up", "down", "recover", "force", "accept_checksum"],
        status: Literal["succeeded", "failed", "noop"],
        dry_run: bool,
        before: int | None,
        after: int | None,
        results: Sequence[MigrationResult],
    ) -> RunReport:
        return RunReport(
            run_id=self.run_id,
            component=self.component,
            operation=operation,
            status=status,
            dry_run=dry_run,
            started_at=self.started,
            finished_at=now(),
            version_before=before,
            version_after=after,
            results=tuple(results),
            checks=tuple(self.checks),
            lock_wait_s=self.lock.waited_s,
            environment=self.environment,
            applied_by=self.actor,
            approved_by=self.approved_by,
        )


@contextlib.contextmanager
def open_run(
    settings: Settings,
    operation: str,
    *,
    write: bool,
    sets: tuple[ChangeSet, ...],
    approved_by: str | None = None,
    span_attributes: Mapping[str, Any] | None = None,
) -> Iterator[RunContext]:
    """Start ``operation``: span, connection, PII protector (``write``), state tables, lock.

    ``span_attributes`` are the operation's own attributes of its ``aiaas_db.migrate`` span
    (``None``: no span). Everything is released when the block ends.
    """
    run_id = str(uuid.uuid4())
    started = now()
    checks: list[PreCheck] = []
    traced: contextlib.AbstractContextManager[Any] = (
        contextlib.nullcontext()
        if span_attributes is None
        else span(
            "aiaas_db.migrate",
            {
                "db.system": "postgresql",
                "db.migration.component": settings.component,
                "db.migration.operation": operation,
                **span_attributes,
                "db.migration.run_id": run_id,
            },
        )
    )
    with traced as run_span:
        conn = settings.connect(operation)
        try:
            version = conn.info.server_version
            checks.append(PreCheck("connectivity", True, f"PostgreSQL {version // 10000}"))
            protector = settings.protector
            if write:
                protector = _resolve_protector(settings, conn, sets, checks, operation)
                settings.tables.ensure(conn)
            lock = _acquire(settings, conn, checks, operation)
            try:
                yield RunContext(
                    settings=settings,
                    operation=operation,
                    run_id=run_id,
                    started=started,
                    conn=conn,
                    lock=lock,
                    sets=sets,
                    checks=checks,
                    approved_by=approved_by,
                    protector=protector,
                    span=run_span,
                )
            finally:
                lock.release()
        finally:
            conn.close()


def _acquire(
    settings: Settings, conn: psycopg.Connection[Any], checks: list[PreCheck], operation: str
) -> AdvisoryLock:
    waited: list[float] = []

    def on_wait(seconds: float) -> None:
        if not waited:
            emit(
                "migration_lock_wait",
                "waiting for the migration lock",
                component=settings.component,
                lock_timeout_s=settings.lock_timeout,
            )
        waited.append(seconds)

    lock = AdvisoryLock(
        conn,
        lock_keys(conn.info.dbname, settings.schema, settings.migrations_table, settings.component),
        timeout=settings.lock_timeout,
        on_wait=on_wait,
        component=settings.component,
    )
    try:
        lock.acquire()
    except MigrationError:
        checks.append(PreCheck("lock", False, f"not acquired in {settings.lock_timeout:g} s"))
        settings.emit_checks(operation, checks, ok=False)
        raise
    checks.append(PreCheck("lock", True, f"acquired after {lock.waited_s:.3f} s"))
    return lock


def _resolve_protector(
    settings: Settings,
    conn: psycopg.Connection[Any],
    sets: Sequence[ChangeSet],
    checks: list[PreCheck],
    operation: str,
) -> PiiProtector | None:
    """Settle the run's PII protector before anything changes.

    Needed when the run may write audit entries: the database has ``audit_log_entries`` or
    one of the change sets creates it. Missing keys fail here, with nothing applied.
    """
    if settings.protector is not None:
        checks.append(PreCheck("audit keys", True, "PII protector given"))
        return settings.protector
    if not audit_table_exists(conn) and not any(CREATES_AUDIT.search(cs.up.sql) for cs in sets):
        return None
    from aiaas_db.platform._pii import PiiKeyError, PiiProtector  # noqa: PLC0415 -- only when auditing

    try:
        protector = PiiProtector.from_env()
    except PiiKeyError as exc:
        checks.append(PreCheck("audit keys", False, exc.code))
        settings.emit_checks(operation, checks, ok=False)
        exc.component = settings.component
        exc.message = (
            f"{exc.message}. The migrator writes audit_log_entries, whose actor is stored "
            "as a keyed digest and a ciphertext; nothing was changed"
        )
        exc.args = (exc.message,)
        raise
    checks.append(PreCheck("audit keys", True, "PII keys read from the environment"))
    return protector
