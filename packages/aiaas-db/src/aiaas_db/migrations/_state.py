"""Where migration state lives, and how it is read and written.

* ``<schema>.<table>`` (default ``schema_migrations_<component>``): golang-migrate's table,
  ``version bigint not null primary key, dirty boolean not null``, one row, rewritten by
  ``TRUNCATE`` + ``INSERT`` in one transaction, no row for "nothing applied" (and ``(-1, true)``
  for a dirty nil version), exactly as golang-migrate's Postgres driver keeps it.
* ``<schema>.aiaas_migration_ledger``: one row per component and version with its current
  status (``applied``, ``rolled_back``, ``failed``, ``dirty``) and the checksum it was applied
  with: the applied *set*, which out-of-order sets make more than a head version.
* ``<schema>.aiaas_migration_history``: one row per operation (append-only by convention):
  direction, checksum, status, start, finish, duration, who applied and approved, dry run, rows
  affected per touched table, error text and the failing statement, the reason given.
* ``audit_log_entries`` (the platform's, when it exists): one row per apply, rollback, recovery
  and override, actor type ``migration``, the script checksum in ``metadata``, written through
  :func:`aiaas_db.platform._audit.write_audit` (the actor as a keyed digest and a ciphertext).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
from psycopg import sql

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.platform._pii import PiiProtector

__all__ = ["HistoryEntry"]

LedgerStatus = Literal["applied", "rolled_back", "failed", "dirty"]
Settled = Literal["applied", "rolled_back"]
Direction = Literal["up", "down"]
HistoryDirection = Literal["up", "down", "recover", "force", "accept_checksum", "adopt"]
HistoryStatus = Literal["running", "applied", "rolled_back", "failed"]

LEDGER_TABLE: Final = "aiaas_migration_ledger"
HISTORY_TABLE: Final = "aiaas_migration_history"
# Serialises creation of the shared state tables across components and processes.
_SETUP_LOCK_KEY: Final = 0x61696161_73646231  # "aiaasdb1"


@attrs.frozen
class LedgerEntry:
    """The current state of one change set of a component."""

    version: int
    slug: str
    status: LedgerStatus
    direction: Direction
    checksum: str
    down_checksum: str | None = None
    no_transaction: bool = False
    applied_at: datetime | None = None
    applied_by: str | None = None
    approved_by: str | None = None
    updated_at: datetime | None = None
    error: str | None = None
    failed_statement: str | None = None


@attrs.frozen
class HistoryEntry:
    """One recorded operation (apply, rollback, recovery, override, adoption)."""

    id: int
    run_id: str
    component: str
    version: int
    slug: str
    direction: HistoryDirection
    action: str | None
    checksum: str | None
    status: HistoryStatus
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    applied_by: str
    approved_by: str | None
    environment: str | None
    dry_run: bool
    statements: int | None
    rows_affected: dict[str, Any]
    error: str | None
    failed_statement: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        for key in ("started_at", "finished_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        return out


@attrs.frozen
class DirtyInfo:
    """A change set left partially applied (or a dirty flag set by another tool)."""

    version: int | None
    direction: Direction | None
    external: bool
    error: str | None = None
    statement: str | None = None


@attrs.frozen
class StateView:
    """The reconciled state of one component."""

    applied: Mapping[int, LedgerEntry]
    ledger: Mapping[int, LedgerEntry]
    dirty: DirtyInfo | None
    failed: LedgerEntry | None
    golang: tuple[int | None, bool] | None
    adoptions: tuple[tuple[int, Settled], ...] = ()

    @property
    def head(self) -> int | None:
        return max(self.applied) if self.applied else None


def expected_golang(ledger: Mapping[int, LedgerEntry]) -> tuple[int | None, bool]:
    """What schema_migrations must read for ``ledger`` (golang-migrate's semantics)."""
    applied = sorted(v for v, e in ledger.items() if e.status == "applied")
    dirty = [e for e in ledger.values() if e.status == "dirty"]
    if dirty:
        entry = max(dirty, key=lambda e: e.version)
        if entry.direction == "up":
            return entry.version, True
        below = [v for v in applied if v < entry.version]
        return (below[-1] if below else None), True
    return (applied[-1] if applied else None), False


def reconcile(
    ledger: Mapping[int, LedgerEntry],
    golang: tuple[int | None, bool] | None,
    source_versions: Iterable[int],
) -> StateView:
    """Combine our ledger with golang-migrate's table.

    When schema_migrations disagrees with what the ledger implies, another tool moved it: a
    clean version ``V`` means every version up to ``V`` is applied and none above (the versions in
    between are *adopted*); a dirty flag we did not set is reported as external dirt.
    """
    applied = {v: e for v, e in ledger.items() if e.status == "applied"}
    failed_entries = [e for e in ledger.values() if e.status == "failed"]
    failed = min(failed_entries, key=lambda e: e.version) if failed_entries else None
    ours_dirty = [e for e in ledger.values() if e.status == "dirty"]
    dirty = (
        DirtyInfo(
            version=ours_dirty[0].version,
            direction=ours_dirty[0].direction,
            external=False,
            error=ours_dirty[0].error,
            statement=ours_dirty[0].failed_statement,
        )
        if ours_dirty
        else None
    )
    if golang is None or golang == expected_golang(ledger):
        return StateView(applied, ledger, dirty, failed, golang)
    gv, gdirty = golang
    if gdirty:
        # Not the dirty mark we set (that one equals the expected value): another tool's.
        return StateView(
            applied,
            ledger,
            DirtyInfo(version=gv, direction=None, external=True),
            failed,
            golang,
        )
    adoptions: list[tuple[int, Settled]] = [
        (e.version, "applied" if gv is not None and e.version <= gv else "rolled_back")
        for e in ours_dirty
    ]
    head = max(applied) if applied else None
    if gv is not None and (head is None or gv > head):
        adoptions.extend(
            (v, "applied")
            for v in sorted(set(source_versions) | {gv})
            if (head is None or v > head) and v <= gv and v not in applied
        )
    if head is not None and (gv is None or gv < head):
        adoptions.extend((v, "rolled_back") for v in sorted(applied) if gv is None or v > gv)
    merged = dict(adoptions)
    new_applied = {v: e for v, e in applied.items() if merged.get(v, "applied") == "applied"}
    for v, status in merged.items():
        if status == "applied" and v not in new_applied:
            base = ledger.get(v)
            new_applied[v] = (
                attrs.evolve(base, status="applied", direction="up")
                if base is not None
                else LedgerEntry(version=v, slug="", status="applied", direction="up", checksum="")
            )
    failed_left = failed if failed is None or merged.get(failed.version) != "applied" else None
    return StateView(new_applied, ledger, None, failed_left, golang, tuple(sorted(merged.items())))


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


class StateTables:
    """Reads and writes one component's state in ``schema``."""

    def __init__(self, *, schema: str, table: str, component: str) -> None:
        self.schema = schema
        self.table = table
        self.component = component

    # -- setup ---------------------------------------------------------------------------------

    def ours_exist(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (self._qualified(LEDGER_TABLE), self._qualified(HISTORY_TABLE)),
        ).fetchone()
        return bool(row and row[0])

    def golang_exists(self, conn: psycopg.Connection[Any]) -> bool:
        # golang-migrate's own existence check (works for read-only users too).
        row = conn.execute(
            "SELECT COUNT(1) FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = %s LIMIT 1",
            (self.schema, self.table),
        ).fetchone()
        return bool(row and row[0] == 1)

    def _qualified(self, name: str) -> str:
        return (
            f'"{self.schema.replace(chr(34), chr(34) * 2)}"."{name.replace(chr(34), chr(34) * 2)}"'
        )

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the state tables that are missing (idempotent, safe under concurrency)."""
        if self.ours_exist(conn) and self.golang_exists(conn):
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK_KEY,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(self.schema)))
            if not self.golang_exists(conn):
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} "
                        "(version bigint not null primary key, dirty boolean not null)"
                    ).format(_ident(self.schema, self.table))
                )
            conn.execute(
                sql.SQL(
                    """
                    CREATE TABLE IF NOT EXISTS {ledger} (
                        component text NOT NULL,
                        version bigint NOT NULL,
                        slug text NOT NULL,
                        status text NOT NULL
                            CHECK (status IN ('applied', 'rolled_back', 'failed', 'dirty')),
                        direction text NOT NULL CHECK (direction IN ('up', 'down')),
                        checksum text NOT NULL,
                        down_checksum text,
                        no_transaction boolean NOT NULL DEFAULT false,
                        applied_at timestamptz,
                        applied_by text,
                        approved_by text,
                        updated_at timestamptz NOT NULL DEFAULT now(),
                        error text,
                        failed_statement text,
                        PRIMARY KEY (component, version)
                    );
                    CREATE TABLE IF NOT EXISTS {history} (
                        id bigserial PRIMARY KEY,
                        run_id uuid NOT NULL,
                        component text NOT NULL,
                        version bigint NOT NULL,
                        slug text NOT NULL DEFAULT '',
                        direction text NOT NULL CHECK (direction IN
                            ('up', 'down', 'recover', 'force', 'accept_checksum', 'adopt')),
                        action text,
                        checksum text,
                        status text NOT NULL
                            CHECK (status IN ('running', 'applied', 'rolled_back', 'failed')),
                        started_at timestamptz NOT NULL,
                        finished_at timestamptz,
                        duration_ms double precision,
                        applied_by text NOT NULL,
                        approved_by text,
                        environment text,
                        dry_run boolean NOT NULL DEFAULT false,
                        statements integer,
                        rows_affected jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                        error text,
                        failed_statement text,
                        reason text
                    );
                    CREATE INDEX IF NOT EXISTS {history_idx} ON {history} (component, id);
                    """
                ).format(
                    ledger=_ident(self.schema, LEDGER_TABLE),
                    history=_ident(self.schema, HISTORY_TABLE),
                    history_idx=_ident(f"{HISTORY_TABLE}_component_idx"),
                )
            )

    # -- golang-migrate's table ----------------------------------------------------------------

    def read_golang(self, conn: psycopg.Connection[Any]) -> tuple[int | None, bool] | None:
        """``(version, dirty)`` as golang-migrate reads it; ``None`` when the table is missing."""
        if not self.golang_exists(conn):
            return None
        row = conn.execute(
            sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(_ident(self.schema, self.table))
        ).fetchone()
        if row is None:
            return None, False
        version = int(row[0])
        return (None if version < 0 else version), bool(row[1])

    def write_golang(self, conn: psycopg.Connection[Any], version: int | None, dirty: bool) -> None:
        """golang-migrate's SetVersion: TRUNCATE, then INSERT unless clean at no version.

        Call inside a transaction (it is one statement pair of the caller's transaction).
        """
        target = _ident(self.schema, self.table)
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        v = -1 if version is None else version
        if v >= 0 or dirty:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(target),
                (v, dirty),
            )

    # -- ledger --------------------------------------------------------------------------------

    def read_ledger(self, conn: psycopg.Connection[Any]) -> dict[int, LedgerEntry]:
        rows = conn.execute(
            sql.SQL(
                "SELECT version, slug, status, direction, checksum, down_checksum, no_transaction,"
                " applied_at, applied_by, approved_by, updated_at, error, failed_statement"
                " FROM {} WHERE component = %s ORDER BY version"
            ).format(_ident(self.schema, LEDGER_TABLE)),
            (self.component,),
        ).fetchall()
        return {
            int(r[0]): LedgerEntry(
                version=int(r[0]),
                slug=r[1],
                status=r[2],
                direction=r[3],
                checksum=r[4],
                down_checksum=r[5],
                no_transaction=bool(r[6]),
                applied_at=r[7],
                applied_by=r[8],
                approved_by=r[9],
                updated_at=r[10],
                error=r[11],
                failed_statement=r[12],
            )
            for r in rows
        }

    def write_ledger(
        self,
        conn: psycopg.Connection[Any],
        *,
        version: int,
        slug: str,
        status: LedgerStatus,
        direction: Direction,
        checksum: str,
        down_checksum: str | None = None,
        no_transaction: bool = False,
        applied_by: str | None = None,
        approved_by: str | None = None,
        error: str | None = None,
        failed_statement: str | None = None,
        touch_applied_at: bool = False,
    ) -> None:
        conn.execute(
            sql.SQL(
                """
                INSERT INTO {t} AS l (component, version, slug, status, direction, checksum,
                    down_checksum, no_transaction, applied_at, applied_by, approved_by,
                    updated_at, error, failed_statement)
                VALUES (%(component)s, %(version)s, %(slug)s, %(status)s, %(direction)s,
                    %(checksum)s, %(down_checksum)s, %(no_transaction)s,
                    CASE WHEN %(touch)s THEN clock_timestamp() END, %(applied_by)s,
                    %(approved_by)s, clock_timestamp(), %(error)s, %(failed_statement)s)
                ON CONFLICT (component, version) DO UPDATE SET
                    slug = EXCLUDED.slug,
                    status = EXCLUDED.status,
                    direction = EXCLUDED.direction,
                    checksum = EXCLUDED.checksum,
                    down_checksum = coalesce(EXCLUDED.down_checksum, l.down_checksum),
                    no_transaction = EXCLUDED.no_transaction,
                    applied_at = CASE WHEN %(touch)s THEN EXCLUDED.applied_at ELSE l.applied_at END,
                    applied_by = coalesce(EXCLUDED.applied_by, l.applied_by),
                    approved_by = CASE WHEN %(touch)s THEN EXCLUDED.approved_by
                                       ELSE l.approved_by END,
                    updated_at = EXCLUDED.updated_at,
                    error = EXCLUDED.error,
                    failed_statement = EXCLUDED.failed_statement
                """
            ).format(t=_ident(self.schema, LEDGER_TABLE)),
            {
                "component": self.component,
                "version": version,
                "slug": slug,
                "status": status,
                "direction": direction,
                "checksum": checksum,
                "down_checksum": down_checksum,
                "no_transaction": no_transaction,
                "touch": touch_applied_at,
                "applied_by": applied_by,
                "approved_by": approved_by,
                "error": error,
                "failed_statement": failed_statement,
            },
        )

    # -- history -------------------------------------------------------------------------------

    def insert_history(
        self,
        conn: psycopg.Connection[Any],
        *,
        returning: bool = True,
        run_id: str,
        version: int,
        slug: str,
        direction: HistoryDirection,
        status: HistoryStatus,
        applied_by: str,
        started_at: datetime,
        finished_at: datetime | None = None,
        duration_ms: float | None = None,
        action: str | None = None,
        checksum: str | None = None,
        approved_by: str | None = None,
        environment: str | None = None,
        dry_run: bool = False,
        statements: int | None = None,
        rows_affected: Mapping[str, Any] | None = None,
        error: str | None = None,
        failed_statement: str | None = None,
        reason: str | None = None,
    ) -> int:
        cur = conn.execute(
            sql.SQL(
                """
                INSERT INTO {t} (run_id, component, version, slug, direction, action, checksum,
                    status, started_at, finished_at, duration_ms, applied_by, approved_by,
                    environment, dry_run, statements, rows_affected, error, failed_statement,
                    reason)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    %s::jsonb, %s, %s, %s)
                {returning}
                """
            ).format(
                t=_ident(self.schema, HISTORY_TABLE),
                returning=sql.SQL("RETURNING id" if returning else ""),
            ),
            (
                run_id,
                self.component,
                version,
                slug,
                direction,
                action,
                checksum,
                status,
                started_at,
                finished_at,
                duration_ms,
                applied_by,
                approved_by,
                environment,
                dry_run,
                statements,
                json.dumps(dict(rows_affected or {}), sort_keys=True),
                error,
                failed_statement,
                reason,
            ),
        )
        if not returning:
            return -1
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def finish_history(
        self,
        conn: psycopg.Connection[Any],
        history_id: int,
        *,
        status: HistoryStatus,
        finished_at: datetime,
        duration_ms: float,
        statements: int | None,
        rows_affected: Mapping[str, Any],
        error: str | None = None,
        failed_statement: str | None = None,
    ) -> None:
        conn.execute(
            sql.SQL(
                "UPDATE {t} SET status = %s, finished_at = %s, duration_ms = %s, statements = %s,"
                " rows_affected = %s::jsonb, error = %s, failed_statement = %s WHERE id = %s"
            ).format(t=_ident(self.schema, HISTORY_TABLE)),
            (
                status,
                finished_at,
                duration_ms,
                statements,
                json.dumps(dict(rows_affected), sort_keys=True),
                error,
                failed_statement,
                history_id,
            ),
        )

    def close_interrupted(self, conn: psycopg.Connection[Any]) -> int:
        """Mark ``running`` history rows (their migrator died: we hold the lock) as failed."""
        cur = conn.execute(
            sql.SQL(
                "UPDATE {t} SET status = 'failed', finished_at = clock_timestamp(),"
                " error = coalesce(error, 'interrupted: the migrator ended before finishing"
                " (killed or disconnected)') WHERE component = %s AND status = 'running'"
            ).format(t=_ident(self.schema, HISTORY_TABLE)),
            (self.component,),
        )
        return cur.rowcount

    def read_history(
        self, conn: psycopg.Connection[Any], *, limit: int | None = 50, run_id: str | None = None
    ) -> list[HistoryEntry]:
        where: sql.SQL | sql.Composed = sql.SQL("component = %s")
        params: list[Any] = [self.component]
        if run_id is not None:
            where = sql.SQL("{} AND run_id = %s").format(where)
            params.append(run_id)
        query: sql.SQL | sql.Composed = sql.SQL(
            "SELECT id, run_id::text, component, version, slug, direction, action, checksum,"
            " status, started_at, finished_at, duration_ms, applied_by, approved_by, environment,"
            " dry_run, statements, rows_affected, error, failed_statement, reason FROM {t}"
            " WHERE {where} ORDER BY id DESC"
        ).format(t=_ident(self.schema, HISTORY_TABLE), where=where)
        if limit is not None:
            query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(limit))
        rows = conn.execute(query, params).fetchall()
        return [
            HistoryEntry(
                id=int(r[0]),
                run_id=r[1],
                component=r[2],
                version=int(r[3]),
                slug=r[4],
                direction=r[5],
                action=r[6],
                checksum=r[7],
                status=r[8],
                started_at=r[9],
                finished_at=r[10],
                duration_ms=r[11],
                applied_by=r[12],
                approved_by=r[13],
                environment=r[14],
                dry_run=bool(r[15]),
                statements=r[16],
                rows_affected=dict(r[17] or {}),
                error=r[18],
                failed_statement=r[19],
                reason=r[20],
            )
            for r in rows
        ]

    def last_migration_at(self, conn: psycopg.Connection[Any]) -> datetime | None:
        row = conn.execute(
            sql.SQL(
                "SELECT max(finished_at) FROM {t} WHERE component = %s AND NOT dry_run"
                " AND status IN ('applied', 'rolled_back')"
            ).format(t=_ident(self.schema, HISTORY_TABLE)),
            (self.component,),
        ).fetchone()
        return None if row is None else row[0]

    # -- audit ---------------------------------------------------------------------------------

    @staticmethod
    def audit(
        conn: psycopg.Connection[Any],
        *,
        action: str,
        actor: str,
        target: str,
        metadata: Mapping[str, Any],
        protector: PiiProtector | None,
    ) -> bool:
        """Write an audit entry (through :func:`~aiaas_db.platform._audit.write_audit`) when the
        platform's
        ``audit_log_entries`` exists; the actor is stored as a keyed digest and a ciphertext.

        ``protector`` is the run's PII protector; when the table exists and none was resolved at
        the start of the run (a change set created the table in a way the migrator could not
        foresee), the keys are read from the environment now, and missing keys fail the step.
        """
        if not audit_table_exists(conn):
            return False
        from aiaas_db.platform._audit import write_audit  # noqa: PLC0415 -- only when auditing
        from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415

        write_audit(
            conn,
            actor_type="migration",
            actor=actor,
            action=action,
            target=target,
            metadata=metadata,
            protector=protector if protector is not None else PiiProtector.from_env(),
        )
        return True


def audit_table_exists(conn: psycopg.Connection[Any]) -> bool:
    """Whether the platform's ``audit_log_entries`` table is visible on ``conn``."""
    row = conn.execute("SELECT to_regclass('audit_log_entries') IS NOT NULL").fetchone()
    return bool(row and row[0])
