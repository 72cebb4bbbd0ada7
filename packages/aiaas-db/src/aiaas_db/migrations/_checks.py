"""Reading the migration state and the guardrails every operation checks before it changes anything.

:func:`adopt` writes down what another tool (golang-migrate) changed; :func:`check_state` refuses
a failed or dirty head, :func:`check_sources` edited or missing change sets, :func:`check_approval`
a missing or self-approval in a protected environment, :func:`require_reason` an override without
a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from aiaas_db._errors import (
    ApprovalRequiredError,
    ChecksumMismatchError,
    MigrationDirtyError,
    MigrationFailedHeadError,
    MigrationRefusedError,
    MissingChangeSetError,
)
from aiaas_db.migrations._changesets import ChangeSet
from aiaas_db.migrations._context import PROTECTED_ENVIRONMENTS, RunContext, Settings, now
from aiaas_db.migrations._state import StateTables, StateView, reconcile

__all__: list[str] = []


def read_view(
    tables: StateTables, conn: psycopg.Connection[Any], sets: Sequence[ChangeSet]
) -> StateView:
    """The state as our ledger and golang-migrate's table show it, reconciled."""
    ledger = tables.read_ledger(conn) if tables.ours_exist(conn) else {}
    golang = tables.read_golang(conn)
    return reconcile(ledger, golang, [cs.version for cs in sets])


def adopt(run: RunContext) -> StateView:
    """Read the state and write down what another tool changed (under the lock)."""
    conn, tables = run.conn, run.tables
    view = read_view(tables, conn, run.sets)
    if not view.adoptions:
        return view
    by_version = run.by_version
    at = now()
    with conn.transaction():
        for version, status in view.adoptions:
            cs = by_version.get(version)
            old = view.ledger.get(version)
            tables.write_ledger(
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
            tables.insert_history(
                conn,
                run_id=run.run_id,
                version=version,
                slug=cs.slug if cs else "",
                direction="adopt",
                status=status,
                applied_by="schema_migrations",
                started_at=at,
                finished_at=at,
                duration_ms=0.0,
                checksum=cs.checksum if cs else None,
                reason=(
                    f"schema_migrations reads {view.golang} (changed outside aiaas-db, e.g. "
                    "by golang-migrate); ledger brought in line"
                ),
            )
    return read_view(tables, conn, run.sets)


def check_state(run: RunContext, view: StateView) -> None:
    """Refuse a dirty or failed head."""
    component = run.component
    if view.dirty is not None:
        d = view.dirty
        where = f"version {d.version}" if d.version is not None else "no version"
        run.refuse("clean_head", f"dirty at {where}")
        origin = (
            "schema_migrations is marked dirty (set by another tool such as golang-migrate)"
            if d.external
            else f"a no-transaction change set was interrupted while running {d.direction}"
        )
        stmt = f"; failed statement: {d.statement}" if d.statement else ""
        err = f"; error: {d.error}" if d.error else ""
        raise MigrationDirtyError(
            f"{component} is dirty at {where}: {origin}{err}{stmt}. Inspect the schema, "
            "then run `aiaas-db migrate recover --action mark-applied|mark-rolled-back|"
            "run-down --reason ...` (or `force VERSION`)",
            component=component,
            versions=[] if d.version is None else [d.version],
        )
    if view.failed is not None:
        f = view.failed
        run.refuse("clean_head", f"version {f.version} failed")
        raise MigrationFailedHeadError(
            f"{component} change set {f.version}_{f.slug} failed (it was rolled back "
            f"and nothing of it is applied): {f.error or 'no error recorded'}. Fix it, then "
            "run `aiaas-db migrate recover --action mark-rolled-back --reason ...` to retry "
            "it (or mark-applied if it was applied by hand)",
            component=component,
            versions=[f.version],
        )
    run.passed("clean_head", "no failed or dirty change set")


def check_sources(run: RunContext, view: StateView, *, need: Sequence[int] = ()) -> None:
    """Refuse applied change sets that were edited since, or that the source no longer holds.

    ``need`` names versions the operation must find in the source too (a rollback's targets).
    """
    by_version = run.by_version
    mismatched = [
        v
        for v, entry in view.applied.items()
        if v in by_version and entry.checksum and entry.checksum != by_version[v].checksum
    ]
    missing = sorted(v for v in view.applied if v not in by_version)
    missing_needed = sorted(v for v in need if v not in by_version)
    if mismatched:
        run.refuse("checksums", f"changed after apply: {mismatched}")
        names = ", ".join(f"{v}_{by_version[v].slug}" for v in sorted(mismatched))
        raise ChecksumMismatchError(
            f"applied change set(s) {names} changed since they were applied. Restore the "
            "file(s); or, if the edit is deliberate and the schema already matches, accept it "
            "with `aiaas-db migrate accept-checksum VERSION --reason ...`",
            component=run.component,
            versions=sorted(mismatched),
        )
    run.passed("checksums", "applied change sets unchanged")
    if missing or missing_needed:
        gone = sorted({*missing, *missing_needed})
        run.refuse("sources", f"missing from the source: {gone}")
        raise MissingChangeSetError(
            f"version(s) {gone} are applied in the database but have no change set in "
            f"{run.settings.source_origin}. Point --source at the folder that holds them",
            component=run.component,
            versions=gone,
        )
    run.passed("sources", f"{len(run.sets)} change set(s) consistent")


def check_approval(
    settings: Settings,
    subjects: Sequence[tuple[str, str | None]],
    approved_by: str | None,
    operation: str,
) -> None:
    """Dual approval in protected environments.

    ``subjects`` pairs what is approved with its author (``None``: the one running it). The
    approver must be named and must differ from every author.
    """
    if settings.environment not in PROTECTED_ENVIRONMENTS:
        return
    approver = (approved_by or "").strip()
    if not approver:
        raise ApprovalRequiredError(
            f"{operation} in {settings.environment} needs an approver: pass --approved-by NAME "
            "(someone other than the change set's author)",
            component=settings.component,
        )
    self_approved = [
        what
        for what, author in subjects
        if (author or settings.actor).strip().lower() == approver.lower()
    ]
    if self_approved:
        raise ApprovalRequiredError(
            f"{operation} in {settings.environment} refused: {approver} is the author of "
            f"{', '.join(self_approved)} and cannot approve it; a different person must "
            "approve (--approved-by)",
            component=settings.component,
        )


def require_reason(reason: str | None, what: str) -> str:
    """``reason`` stripped; an override without one is refused."""
    text = (reason or "").strip()
    if not text:
        raise MigrationRefusedError(
            f"{what} needs a reason (--reason '...'): it is recorded in the history and audit",
            code="MIGRATION_REASON_REQUIRED",
        )
    return text
