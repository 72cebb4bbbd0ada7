"""Rehearsals: the dry run (run the plan in a transaction that is rolled back, and report it) and
the drill (apply, roll back and reapply each pending change set, comparing catalog fingerprints).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

from aiaas_db._errors import (
    DrillFailedError,
    MigrationNotFoundError,
    MigrationRefusedError,
    OutOfOrderError,
)
from aiaas_db.migrations._changesets import ChangeSet
from aiaas_db.migrations._checks import adopt, check_sources, check_state
from aiaas_db.migrations._context import PROTECTED_ENVIRONMENTS, RunContext, Settings, now, open_run
from aiaas_db.migrations._fingerprint import CatalogFingerprint, catalog_fingerprint
from aiaas_db.migrations._models import DrillReport, DrillStep, MigrationResult
from aiaas_db.migrations._runner import (
    SetFailedError,
    Stats,
    announce,
    announce_result,
    error_text,
    execute_counted,
    run_set,
    set_timeouts,
)
from aiaas_db.migrations._state import LedgerEntry
from aiaas_db.migrations._telemetry import emit, set_attributes, span

__all__: list[str] = []


def dry_run(
    run: RunContext, plan: Sequence[ChangeSet], direction: Literal["up", "down"]
) -> list[MigrationResult]:
    """Run ``plan`` inside one transaction that is rolled back; record it as a dry run.

    No-transaction sets are listed, not executed; the first failing set ends the run.
    """
    conn = run.conn
    results: list[MigrationResult] = []
    stats = Stats(conn, run.settings.state_tables)
    with conn.transaction(force_rollback=True):
        set_timeouts(run.settings, conn, local=True)
        for cs in plan:
            script = cs.up if direction == "up" else cs.down
            statements = tuple(script.statements)
            attributes = announce(run, cs, direction, dry_run=True)
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
                            count, rows = execute_counted(conn, stats, cs, direction)
                    except SetFailedError as failure:
                        text, _state = error_text(failure.cause)
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
            announce_result(
                run, cs, result, f"dry run {direction} {cs.name}: {result.status}", dry_run=True
            )
            results.append(result)
            if result.status == "failed":
                break
    if run.tables.ours_exist(conn):
        at = now()
        with conn.transaction():
            for r in results:
                run.tables.insert_history(
                    conn,
                    run_id=run.run_id,
                    version=r.version,
                    slug=r.slug,
                    direction=direction,
                    checksum=r.checksum,
                    status="failed"
                    if r.status == "failed"
                    else ("applied" if direction == "up" else "rolled_back"),
                    applied_by=run.actor,
                    approved_by=run.approved_by,
                    environment=run.environment,
                    started_at=at,
                    finished_at=at,
                    duration_ms=r.duration_ms,
                    dry_run=True,
                    statements=r.statements,
                    rows_affected=r.rows_affected,
                    error=r.error,
                    failed_statement=r.failed_statement,
                )
    return results


def drill(settings: Settings, *, to: int | None) -> DrillReport:
    """Apply, roll back and reapply each pending change set (see :meth:`Migrator.drill`)."""
    if settings.environment in PROTECTED_ENVIRONMENTS:
        raise MigrationRefusedError(
            f"drill applies and rolls back change sets; it is refused in {settings.environment}. "
            "Run it against a disposable copy",
            code="MIGRATION_DRILL_REFUSED",
            component=settings.component,
        )
    sets = settings.load_sets()
    if to is not None and to not in {cs.version for cs in sets}:
        raise MigrationNotFoundError(
            f"no change set with version {to} in {settings.source_origin}",
            component=settings.component,
            versions=[to],
        )
    with open_run(settings, "drill", write=True, sets=sets, span_attributes={}) as run:
        run.tables.close_interrupted(run.conn)
        view = adopt(run)
        check_state(run, view)
        check_sources(run, view)
        plan = [cs for cs in sets if cs.version not in view.applied]
        if to is not None:
            plan = [cs for cs in plan if cs.version <= to]
        head = view.head
        late = [cs.version for cs in plan if head is not None and cs.version < head]
        if late:
            raise OutOfOrderError(
                f"change set(s) {late} are older than the applied head {head}; a drill runs "
                "sets in order only",
                component=settings.component,
                versions=late,
            )
        run.emit_checks(ok=True)
        ledger = dict(view.ledger)
        steps = [_drill_one(run, cs, ledger) for cs in plan]
        run.set_status("succeeded")
        return DrillReport(
            run_id=run.run_id,
            component=settings.component,
            steps=tuple(steps),
            started_at=run.started,
            finished_at=now(),
        )


def _drill_one(run: RunContext, cs: ChangeSet, ledger: dict[int, LedgerEntry]) -> DrillStep:
    """Up, down, up for one change set; raises :class:`DrillFailedError` on a mismatch."""

    def fp() -> CatalogFingerprint:
        return catalog_fingerprint(run.conn, exclude=run.settings.state_tables)

    before = fp()
    run_set(run, cs, "up", ledger)
    after_up = fp()
    run_set(run, cs, "down", ledger)
    after_down = fp()
    differences = [
        f"after down {cs.name}, compared with before its up: {line}"
        for line in before.diff(after_down)
    ]
    after_reapply = after_up
    if not differences:
        # Reapplying on top of a bad rollback would only fail confusingly: the
        # down script is what the drill reports then.
        run_set(run, cs, "up", ledger)
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
    emit(
        "migration_drill",
        f"drill {cs.name}: {'ok' if step.ok else 'MISMATCH'}",
        level=logging.INFO if step.ok else logging.ERROR,
        component=run.component,
        version=cs.version,
        slug=cs.slug,
        ok=step.ok,
        differences=list(differences),
        run_id=run.run_id,
    )
    if not step.ok:
        run.set_status("failed")
        what = (
            "its down script does not exactly undo its up"
            if step.before != step.after_down
            else "reapplying it does not reproduce its first up"
        )
        raise DrillFailedError(
            f"drill failed at {cs.name}: {what} ({len(differences)} difference(s))",
            differences=differences,
            component=run.component,
            versions=[cs.version],
        )
    return step
