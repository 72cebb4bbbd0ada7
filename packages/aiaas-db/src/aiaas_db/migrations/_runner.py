"""Running one change set in one direction, with its bookkeeping.

A transactional change set runs in one transaction together with its bookkeeping (ledger,
``schema_migrations``, history, audit): it is either applied and recorded, or not applied at all
and recorded as ``failed`` afterwards -- never dirty. A no-transaction set first records itself as
dirty (committed), then runs statement by statement; a failure (or a crash) leaves it dirty with
the failing statement named.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg
from psycopg import sql

from aiaas_db._errors import (
    MigrationCheckFailedError,
    MigrationError,
    MigrationFailedError,
    redact_data_values,
)
from aiaas_db.migrations._changesets import ChangeSet, Script
from aiaas_db.migrations._context import RunContext, Settings, now
from aiaas_db.migrations._models import MigrationResult
from aiaas_db.migrations._state import HistoryStatus, LedgerEntry, expected_golang
from aiaas_db.migrations._telemetry import emit, set_attributes, span

__all__: list[str] = []

_DML_TARGET: Final = re.compile(
    r"^\s*(?P<verb>insert\s+into|update(?:\s+only)?|delete\s+from(?:\s+only)?)\s+"
    r"(?P<table>(?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)",
    re.IGNORECASE,
)
_VERB_KEY: Final = {"insert": "inserted", "update": "updated", "delete": "deleted"}


# A data exception (SQLSTATE class 22) quotes the offending value in its message -- a row's
# personal data or a secret, e.g. `invalid input syntax for type bigint: "+1-555-0100"`. It
# must not reach reports, logs, spans, error bodies or the history: the message and the
# SQLSTATE say what was wrong, the value stays in the database.
# From the first double quote to the last: a value may hold quotes itself.


def error_text(exc: BaseException) -> tuple[str, str | None]:
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


class Stats:
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


class SetFailedError(Exception):
    """Internal: a statement (or check) of a change set failed."""

    def __init__(self, cause: BaseException, statement: str | None, index: int | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.statement = statement
        self.index = index


def applied_head(ledger: Mapping[int, LedgerEntry]) -> int | None:
    """The newest applied version of ``ledger`` (``None``: nothing applied)."""
    applied = [v for v, e in ledger.items() if e.status == "applied"]
    return max(applied) if applied else None


def golang_after(
    ledger: dict[int, LedgerEntry], version: int, entry: LedgerEntry | None
) -> tuple[int | None, bool]:
    """Put ``entry`` for ``version`` into ``ledger``; return ``schema_migrations``' state then."""
    if entry is None:
        ledger.pop(version, None)
    else:
        ledger[version] = entry
    return expected_golang(ledger)


def set_timeouts(settings: Settings, conn: psycopg.Connection[Any], *, local: bool) -> None:
    """Apply the statement and DDL lock timeouts (``SET LOCAL`` inside a transaction)."""
    scope = sql.SQL("SET LOCAL" if local else "SET")
    for name, value in (
        ("statement_timeout", settings.statement_timeout),
        ("lock_timeout", settings.ddl_lock_timeout),
    ):
        if value is not None:
            conn.execute(
                sql.SQL("{} {} = {}").format(
                    scope, sql.Identifier(name), sql.Literal(f"{int(value * 1000)}ms")
                )
            )


def execute_script(
    conn: psycopg.Connection[Any], script: Script
) -> tuple[int, dict[str, dict[str, int]]]:
    """Run ``script`` statement by statement; return (count, per-statement DML counts)."""
    statements = script.statements
    counts: dict[str, dict[str, int]] = {}
    with conn.cursor() as cur:
        for index, stmt in enumerate(statements):
            try:
                cur.execute(stmt.encode())
            except psycopg.Error as exc:
                raise SetFailedError(exc, stmt, index) from exc
            m = _DML_TARGET.match(_strip_leading_comments(stmt))
            if m and cur.rowcount >= 0:
                verb = m.group("verb").split()[0].lower()
                table = m.group("table").replace('"', "")
                entry = counts.setdefault(table, {"inserted": 0, "updated": 0, "deleted": 0})
                entry[_VERB_KEY[verb]] += cur.rowcount
    return len(statements), counts


def execute_counted(
    conn: psycopg.Connection[Any], stats: Stats, cs: ChangeSet, direction: Literal["up", "down"]
) -> tuple[int, dict[str, dict[str, int]]]:
    """Run ``cs``'s ``direction`` script (and its check after an up) in ``conn``'s transaction;
    return (statement count, the rows it changed per table, by the transaction's counters)."""
    # Not zero even in a fresh transaction: PostgreSQL 15 reports counts of earlier
    # transactions that it has not flushed to the statistics yet.
    before = stats.snapshot()
    count, _dml = execute_script(conn, cs.up if direction == "up" else cs.down)
    if direction == "up" and cs.check is not None:
        run_check(conn, cs.check)
    return count, Stats.diff(before, stats.snapshot())


def run_check(conn: psycopg.Connection[Any], check: Script) -> None:
    """Run a change set's check script: every row it returns must be ``true``."""
    with conn.cursor() as cur:
        for index, stmt in enumerate(check.statements):
            try:
                cur.execute(stmt.encode())
            except psycopg.Error as exc:
                raise SetFailedError(exc, stmt, index) from exc
            if cur.description is None:
                continue
            rows = cur.fetchall()
            bad = not rows or any(row[0] is not True for row in rows)
            if bad:
                raise SetFailedError(
                    MigrationCheckFailedError(
                        f"check {check.name} statement {index + 1} did not return only true "
                        f"(got {rows[:3]!r})"
                    ),
                    stmt,
                    index,
                )


@dataclass(slots=True)
class _Step:
    """One change set run in one direction within a run (a recovery's when ``action`` is set)."""

    run: RunContext
    cs: ChangeSet
    direction: Literal["up", "down"]
    #: The run's view of the ledger, kept in line with what is committed.
    ledger: dict[int, LedgerEntry]
    action: str | None
    reason: str | None
    started: datetime
    t0: float

    @property
    def script(self) -> Script:
        return self.cs.up if self.direction == "up" else self.cs.down

    @property
    def settled(self) -> Literal["applied", "rolled_back"]:
        return "applied" if self.direction == "up" else "rolled_back"

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000


def announce(
    run: RunContext, cs: ChangeSet, direction: Literal["up", "down"], *, dry_run: bool
) -> dict[str, Any]:
    """Emit ``migration_start`` for running ``cs`` ``direction``; return its span's attributes."""
    component = run.component
    script = cs.up if direction == "up" else cs.down
    emit(
        "migration_start",
        f"{'dry run ' if dry_run else ''}{direction} {cs.name} ({component})",
        component=component,
        direction=direction,
        version=cs.version,
        slug=cs.slug,
        dry_run=dry_run,
        no_transaction=script.no_transaction,
        checksum=script.checksum,
        run_id=run.run_id,
    )
    return {
        "db.system": "postgresql",
        "db.migration.component": component,
        "db.migration.direction": direction,
        "db.migration.version": cs.version,
        "db.migration.slug": cs.slug,
        "db.migration.dry_run": dry_run,
        "db.migration.no_transaction": script.no_transaction,
    }


def announce_result(
    run: RunContext, cs: ChangeSet, result: MigrationResult, message: str, *, dry_run: bool
) -> None:
    """Emit ``migration_finish`` (``migration_failed`` for a failed result) for ``cs``."""
    failed = result.status == "failed"
    emit(
        "migration_failed" if failed else "migration_finish",
        message,
        level=logging.ERROR if failed else logging.INFO,
        component=run.component,
        direction=result.direction,
        version=cs.version,
        slug=cs.slug,
        dry_run=dry_run,
        status=result.status,
        duration_ms=round(result.duration_ms, 3),
        statements=result.statements,
        rows_affected={k: dict(v) for k, v in result.rows_affected.items()},
        row_deltas=result.row_deltas,
        run_id=run.run_id,
    )


def run_set(
    run: RunContext,
    cs: ChangeSet,
    direction: Literal["up", "down"],
    ledger: dict[int, LedgerEntry],
    *,
    action: str | None = None,
    reason: str | None = None,
) -> MigrationResult:
    """Run ``cs`` ``direction`` with its span and events; ``ledger`` follows what is committed.

    Raises :class:`MigrationFailedError` (recorded as failed, or dirty) when it fails.
    """
    component = run.component
    attributes = announce(run, cs, direction, dry_run=False)
    with span("aiaas_db.migration", attributes) as current:
        step = _Step(run, cs, direction, ledger, action, reason, now(), time.perf_counter())
        try:
            if step.script.no_transaction:
                result = _run_no_transaction(step)
            else:
                result = _run_transactional(step)
        except MigrationFailedError as exc:
            duration = step.elapsed_ms()
            set_attributes(
                current,
                {"db.migration.status": "failed", "db.migration.duration_ms": duration},
            )
            emit(
                "migration_failed",
                exc.message,
                level=logging.ERROR,
                component=component,
                direction=direction,
                version=cs.version,
                slug=cs.slug,
                dry_run=False,
                status="failed",
                dirty=exc.dirty,
                duration_ms=round(duration, 3),
                error_code=exc.code,
                sqlstate=exc.sqlstate,
                run_id=run.run_id,
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
        announce_result(
            run,
            cs,
            result,
            f"{direction} {cs.name} {result.status} in {result.duration_ms:.1f} ms",
            dry_run=False,
        )
        return result


def _run_transactional(step: _Step) -> MigrationResult:
    run, cs, conn = step.run, step.cs, step.run.conn
    script = step.script
    stats = Stats(conn, run.settings.state_tables)
    snapshot = dict(step.ledger)
    try:
        with conn.transaction():
            set_timeouts(run.settings, conn, local=True)
            count, rows = execute_counted(conn, stats, cs, step.direction)
            duration = step.elapsed_ms()
            _record_success(
                step, duration_ms=duration, statements=count, rows=rows, history_id=None
            )
    except (SetFailedError, psycopg.Error) as exc:
        # A failed statement or check, or the transaction itself failing (e.g. at commit):
        # either way PostgreSQL rolled everything back, so the ledger goes back too.
        failure = exc if isinstance(exc, SetFailedError) else SetFailedError(exc, None, None)
        step.ledger.clear()
        step.ledger.update(snapshot)
        raise _record_failure(
            step, failure, duration_ms=step.elapsed_ms(), dirty=False, history_id=None
        ) from None
    return MigrationResult(
        version=cs.version,
        slug=cs.slug,
        direction=step.direction,
        status=step.settled,
        checksum=script.checksum,
        duration_ms=duration,
        statements=count,
        rows_affected=rows,
    )


def _run_no_transaction(step: _Step) -> MigrationResult:
    run, cs, conn, direction = step.run, step.cs, step.run.conn, step.direction
    script = step.script
    prior = step.ledger.get(cs.version)
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
        run.tables.write_ledger(
            conn,
            version=cs.version,
            slug=cs.slug,
            status="dirty",
            direction=direction,
            checksum=dirty_entry.checksum,
            down_checksum=cs.down.checksum,
            no_transaction=True,
            applied_by=run.actor,
        )
        run.tables.write_golang(conn, *golang_after(step.ledger, cs.version, dirty_entry))
        history_id = _insert_history(step, status="running")
    # 2. Run statement by statement, each in its own implicit transaction.
    try:
        set_timeouts(run.settings, conn, local=False)
        try:
            count, rows = execute_script(conn, script)
            if direction == "up" and cs.check is not None:
                run_check(conn, cs.check)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("RESET statement_timeout")
                conn.execute("RESET lock_timeout")
    except SetFailedError as failure:
        raise _record_failure(
            step, failure, duration_ms=step.elapsed_ms(), dirty=True, history_id=history_id
        ) from None
    # 3. Mark clean.
    duration = step.elapsed_ms()
    with conn.transaction():
        _record_success(
            step, duration_ms=duration, statements=count, rows=rows, history_id=history_id
        )
    return MigrationResult(
        version=cs.version,
        slug=cs.slug,
        direction=direction,
        status=step.settled,
        checksum=script.checksum,
        no_transaction=True,
        duration_ms=duration,
        statements=count,
        rows_affected=rows,
    )


def _insert_history(
    step: _Step,
    *,
    status: HistoryStatus,
    returning: bool = True,
    finished_at: datetime | None = None,
    duration_ms: float | None = None,
    statements: int | None = None,
    rows_affected: Mapping[str, Mapping[str, int]] | None = None,
    error: str | None = None,
    failed_statement: str | None = None,
) -> int:
    """Insert the history row of ``step`` (a recovery's when its ``action`` is set)."""
    run, cs = step.run, step.cs
    return run.tables.insert_history(
        run.conn,
        returning=returning,
        run_id=run.run_id,
        version=cs.version,
        slug=cs.slug,
        direction="recover" if step.action else step.direction,
        action=step.action,
        checksum=step.script.checksum,
        status=status,
        applied_by=run.actor,
        approved_by=run.approved_by,
        environment=run.environment,
        started_at=step.started,
        finished_at=finished_at,
        duration_ms=duration_ms,
        statements=statements,
        rows_affected=rows_affected,
        error=error,
        failed_statement=failed_statement,
        reason=step.reason,
    )


def _final_entry(step: _Step, prior: LedgerEntry | None) -> LedgerEntry:
    cs, direction = step.cs, step.direction
    return LedgerEntry(
        version=cs.version,
        slug=cs.slug,
        status=step.settled,
        direction=direction,
        checksum=cs.checksum if direction == "up" or prior is None else prior.checksum,
        down_checksum=cs.down.checksum,
        no_transaction=step.script.no_transaction,
        applied_by=step.run.actor,
        approved_by=step.run.approved_by,
    )


def _record_success(
    step: _Step,
    *,
    duration_ms: float,
    statements: int,
    rows: Mapping[str, Mapping[str, int]],
    history_id: int | None,
) -> None:
    entry = _final_entry(step, step.ledger.get(step.cs.version))
    # One round trip for the bookkeeping: nothing here needs an answer before the next.
    with step.run.conn.pipeline():
        _write_success(
            step,
            entry,
            duration_ms=duration_ms,
            statements=statements,
            rows=rows,
            history_id=history_id,
        )


def _write_success(
    step: _Step,
    entry: LedgerEntry,
    *,
    duration_ms: float,
    statements: int,
    rows: Mapping[str, Mapping[str, int]],
    history_id: int | None,
) -> None:
    run, cs, direction, script = step.run, step.cs, step.direction, step.script
    conn, tables = run.conn, run.tables
    tables.write_ledger(
        conn,
        version=cs.version,
        slug=cs.slug,
        status=entry.status,
        direction=direction,
        checksum=entry.checksum,
        down_checksum=cs.down.checksum,
        no_transaction=script.no_transaction,
        applied_by=run.actor,
        approved_by=run.approved_by,
        touch_applied_at=direction == "up",
    )
    tables.write_golang(conn, *golang_after(step.ledger, cs.version, entry))
    finished = now()
    if history_id is None:
        _insert_history(
            step,
            status=step.settled,
            returning=False,
            finished_at=finished,
            duration_ms=duration_ms,
            statements=statements,
            rows_affected=rows,
        )
    else:
        tables.finish_history(
            conn,
            history_id,
            status=step.settled,
            finished_at=finished,
            duration_ms=duration_ms,
            statements=statements,
            rows_affected=rows,
        )
    run.audit(
        action="migration.apply" if direction == "up" else "migration.rollback",
        target=f"{run.component}:{cs.name}",
        metadata={
            "component": run.component,
            "version": cs.version,
            "slug": cs.slug,
            "direction": direction,
            "checksum": script.checksum,
            "approved_by": run.approved_by,
            "environment": run.environment,
            "run_id": run.run_id,
            "reason": step.reason,
            "rows_affected": {k: dict(v) for k, v in rows.items()},
        },
    )


def _record_failure(
    step: _Step,
    failure: SetFailedError,
    *,
    duration_ms: float,
    dirty: bool,
    history_id: int | None,
) -> MigrationFailedError:
    run, cs, direction, script = step.run, step.cs, step.direction, step.script
    conn, tables = run.conn, run.tables
    text, state = error_text(failure.cause)
    where = f" at statement {failure.index + 1}" if failure.index is not None else ""
    stmt = failure.statement
    prior = step.ledger.get(cs.version)
    try:
        with conn.transaction():
            if dirty:
                # Still dirty: keep the ledger entry dirty, note what failed.
                tables.write_ledger(
                    conn,
                    version=cs.version,
                    slug=cs.slug,
                    status="dirty",
                    direction=direction,
                    checksum=cs.checksum if prior is None or direction == "up" else prior.checksum,
                    down_checksum=cs.down.checksum,
                    no_transaction=True,
                    applied_by=run.actor,
                    error=text,
                    failed_statement=stmt,
                )
            elif direction == "up" and step.action is None:
                tables.write_ledger(
                    conn,
                    version=cs.version,
                    slug=cs.slug,
                    status="failed",
                    direction="up",
                    checksum=cs.checksum,
                    down_checksum=cs.down.checksum,
                    applied_by=run.actor,
                    error=text,
                    failed_statement=stmt,
                )
                step.ledger[cs.version] = LedgerEntry(
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
                tables.write_ledger(
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
            finished = now()
            if history_id is None:
                _insert_history(
                    step,
                    status="failed",
                    finished_at=finished,
                    duration_ms=duration_ms,
                    error=text,
                    failed_statement=stmt,
                )
            else:
                tables.finish_history(
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
            run.audit(
                action="migration.failed",
                target=f"{run.component}:{cs.name}",
                metadata={
                    "component": run.component,
                    "version": cs.version,
                    "direction": direction,
                    "checksum": script.checksum,
                    "error": text,
                    "dirty": dirty,
                    "run_id": run.run_id,
                },
            )
    except psycopg.Error as record_error:
        lost, _state = error_text(record_error)
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
        component=run.component,
        versions=[cs.version],
        statement=stmt,
        sqlstate=state,
        dirty=dirty,
    )


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
