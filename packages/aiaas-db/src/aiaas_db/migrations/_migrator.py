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

:class:`Migrator` holds the configuration and validates arguments; each operation reads the
configuration once (:class:`~aiaas_db.migrations._context.Settings`) and hands it to its job
module: ``_apply`` (up and down), ``_recovery`` (recover, force, accept-checksum), ``_drill``
(dry run and drill), ``_status`` (status and history). A run's id, connection, lock, checks,
approver and PII protector travel in one :class:`~aiaas_db.migrations._context.RunContext`.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psycopg

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.migrations._apply import apply
from aiaas_db.migrations._changesets import ChangeSetSource, DirectorySource
from aiaas_db.migrations._context import PROTECTED_ENVIRONMENTS, Settings
from aiaas_db.migrations._drill import drill
from aiaas_db.migrations._fingerprint import CatalogFingerprint, catalog_fingerprint
from aiaas_db.migrations._models import DrillReport, MigrationStatus, PendingChangeSet, RunReport
from aiaas_db.migrations._recovery import RecoverAction, accept_checksum, force, recover
from aiaas_db.migrations._state import HISTORY_TABLE, LEDGER_TABLE, StateTables
from aiaas_db.migrations._status import read_history, read_status

if TYPE_CHECKING:
    from aiaas_db.platform._pii import PiiProtector

__all__ = ["PROTECTED_ENVIRONMENTS", "Migrator", "RecoverAction"]

_COMPONENT: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _default_actor() -> str:
    env = os.environ.get("AIAAS_DB_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _quote_table(schema: str, name: str) -> str:
    return f"{schema}.{name}"


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
        self.tables = StateTables(schema=schema, table=self.migrations_table, component=component)
        self._state_tables = frozenset(
            {
                _quote_table(schema, self.migrations_table),
                _quote_table(schema, LEDGER_TABLE),
                _quote_table(schema, HISTORY_TABLE),
            }
        )

    def __repr__(self) -> str:
        origin = None if self.source is None else self.source.origin
        return (
            f"Migrator(component={self.component!r}, source={origin!r}, "
            f"table={self.schema}.{self.migrations_table})"
        )

    def _settings(self) -> Settings:
        """The configuration as of now, for one operation."""
        return Settings(
            dsn=self._dsn,
            source=self.source,
            component=self.component,
            schema=self.schema,
            migrations_table=self.migrations_table,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
            ddl_lock_timeout=self.ddl_lock_timeout,
            actor=self.actor,
            environment=self.environment,
            connect_timeout=self.connect_timeout,
            protector=self.protector,
            tables=self.tables,
            state_tables=self._state_tables,
        )

    def connect(self, purpose: str = "status") -> psycopg.Connection[Any]:
        """An autocommit connection named ``aiaas-db <purpose> <component>`` in pg_stat_activity."""
        return self._settings().connect(purpose)

    # -- applying and rolling back -------------------------------------------------------------

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
        return apply(
            self._settings(),
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
        return apply(
            self._settings(),
            "down",
            to=to,
            steps=steps if to is not None or steps is not None else 1,
            dry_run=dry_run,
            approved_by=approved_by,
            allow_out_of_order=True,
            allow_destructive=allow_destructive,
        )

    # -- reading -------------------------------------------------------------------------------

    def status(self, *, history_limit: int = 20) -> MigrationStatus:
        """Read where the component stands; takes no lock and writes nothing."""
        settings = self._settings()
        sets = settings.load_sets() if self.source is not None else ()
        return read_status(settings, sets, history_limit=history_limit)

    def history(self, *, limit: int | None = 50, run_id: str | None = None) -> list[Any]:
        """Recorded operations, newest first (optionally one run's)."""
        return read_history(self._settings(), limit=limit, run_id=run_id)

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
        return recover(
            self._settings(), action, reason=reason, version=version, approved_by=approved_by
        )

    def force(
        self, version: int | None, *, reason: str, approved_by: str | None = None
    ) -> RunReport:
        """Declare the database to be at ``version`` (``None``/-1: nothing applied), clean.

        Like golang-migrate's ``force``: runs no SQL; every version up to ``version`` is marked
        applied and every later one rolled back; dirty and failed marks are cleared. Audited.
        """
        return force(self._settings(), version, reason=reason, approved_by=approved_by)

    def accept_checksum(
        self, versions: Sequence[int], *, reason: str, approved_by: str | None = None
    ) -> RunReport:
        """Accept the current file content of applied, edited change sets (audited)."""
        return accept_checksum(self._settings(), versions, reason=reason, approved_by=approved_by)

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
        return drill(self._settings(), to=to)
