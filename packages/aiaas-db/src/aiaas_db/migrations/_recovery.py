"""Recovery and overrides: resolving a failed or dirty head, forcing a version, accepting an edited
change set's checksum. Each needs a reason, takes the lock and is recorded in the history and
audit; none reapplies anything on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final, Literal

from aiaas_db._errors import (
    MigrationNotFoundError,
    MigrationRefusedError,
    NothingToRecoverError,
)
from aiaas_db.migrations._changesets import ChangeSet
from aiaas_db.migrations._checks import adopt, check_approval, read_view, require_reason
from aiaas_db.migrations._context import RunContext, Settings, now, open_run
from aiaas_db.migrations._models import MigrationResult, RunReport
from aiaas_db.migrations._runner import applied_head, golang_after, run_set
from aiaas_db.migrations._state import LedgerEntry, Settled
from aiaas_db.migrations._telemetry import emit

__all__ = ["RECOVER_ACTIONS", "RecoverAction"]

RecoverAction = Literal["mark-rolled-back", "mark-applied", "run-down"]
RECOVER_ACTIONS: Final = ("mark-rolled-back", "mark-applied", "run-down")


def recover(
    settings: Settings,
    action: RecoverAction,
    *,
    reason: str,
    version: int | None,
    approved_by: str | None,
) -> RunReport:
    """Resolve a failed or dirty head (see :meth:`Migrator.recover`)."""
    if action not in RECOVER_ACTIONS:
        raise MigrationRefusedError(
            f"unknown recover action {action!r}; use one of {', '.join(RECOVER_ACTIONS)}",
            code="MIGRATION_RECOVER_ACTION_INVALID",
        )
    why = require_reason(reason, "recover")
    sets = settings.load_sets()
    check_approval(settings, [("recover", None)], approved_by, "recover")
    with open_run(
        settings,
        "recover",
        write=True,
        sets=sets,
        approved_by=approved_by,
        span_attributes={"db.migration.action": action},
    ) as run:
        conn, component, by_version = run.conn, run.component, run.by_version
        run.tables.close_interrupted(conn)
        view = adopt(run)
        before = view.head
        target: int | None
        kind: str
        if view.dirty is not None:
            target, kind = view.dirty.version, "external" if view.dirty.external else "dirty"
        elif view.failed is not None:
            target, kind = view.failed.version, "failed"
        else:
            raise NothingToRecoverError(
                f"{component} has no failed or dirty change set to recover",
                component=component,
            )
        if version is not None and version != target:
            raise NothingToRecoverError(
                f"version {version} is not the failed or dirty change set "
                f"({target} is); pass --version {target} or leave it out",
                component=component,
                versions=[version],
            )
        emit(
            "migration_recover",
            f"recover {component} {kind} version {target}: {action}",
            level=logging.WARNING,
            component=component,
            version=target,
            action=action,
            kind=kind,
            reason=why,
            run_id=run.run_id,
        )
        ledger = dict(view.ledger)
        results: list[MigrationResult] = []
        if kind == "external":
            if action == "run-down":
                if target is None or target not in by_version:
                    raise MigrationNotFoundError(
                        f"no change set {target} in the source to run down",
                        component=component,
                    )
                results.append(_run_down(run, by_version[target], ledger, reason=why))
                ledger = run.tables.read_ledger(conn)
            keep = target if action == "mark-applied" else _previous(sets, target)
            _force_state(run, ledger, version=keep, reason=why, direction="recover", action=action)
        else:
            assert target is not None
            cs = by_version.get(target)
            if action == "run-down":
                if cs is None:
                    raise MigrationNotFoundError(
                        f"no change set {target} in the source to run down",
                        component=component,
                        versions=[target],
                    )
                results.append(_run_down(run, cs, ledger, reason=why))
            else:
                _mark(run, target, cs, ledger, action=action, reason=why)
        after = applied_head(run.tables.read_ledger(conn))
        return run.report(
            operation="recover",
            status="succeeded",
            dry_run=False,
            before=before,
            after=after,
            results=results,
        )


def force(
    settings: Settings, version: int | None, *, reason: str, approved_by: str | None
) -> RunReport:
    """Declare the database to be at ``version`` (see :meth:`Migrator.force`)."""
    why = require_reason(reason, "force")
    if version is not None and version < 0:
        version = None
    sets = settings.load_sets()
    if version is not None and version not in {cs.version for cs in sets}:
        raise MigrationNotFoundError(
            f"no change set with version {version} in {settings.source_origin}",
            component=settings.component,
            versions=[version],
        )
    check_approval(settings, [("force", None)], approved_by, "force")
    with open_run(
        settings,
        "force",
        write=True,
        sets=sets,
        approved_by=approved_by,
        span_attributes={"db.migration.version": -1 if version is None else version},
    ) as run:
        run.tables.close_interrupted(run.conn)
        view = read_view(run.tables, run.conn, sets)
        emit(
            "migration_recover",
            f"force {settings.component} to {version}",
            level=logging.WARNING,
            component=settings.component,
            version=version,
            action="force",
            reason=why,
            run_id=run.run_id,
        )
        _force_state(
            run, view.ledger, version=version, reason=why, direction="force", action="force"
        )
        return run.report(
            operation="force",
            status="succeeded",
            dry_run=False,
            before=view.head,
            after=version,
            results=(),
        )


def accept_checksum(
    settings: Settings, versions: Sequence[int], *, reason: str, approved_by: str | None
) -> RunReport:
    """Accept the current content of applied, edited change sets (see
    :meth:`Migrator.accept_checksum`)."""
    why = require_reason(reason, "accept-checksum")
    if not versions:
        raise MigrationRefusedError("name the version(s) whose new checksum to accept")
    sets = settings.load_sets()
    by_version = {cs.version: cs for cs in sets}
    check_approval(settings, [("accept-checksum", None)], approved_by, "accept-checksum")
    with open_run(
        settings, "accept-checksum", write=True, sets=sets, approved_by=approved_by
    ) as run:
        conn, component = run.conn, run.component
        view = adopt(run)
        for v in versions:
            entry = view.applied.get(v)
            if entry is None or v not in by_version:
                raise MigrationNotFoundError(
                    f"version {v} is not an applied change set present in the source",
                    component=component,
                    versions=[v],
                )
            if entry.checksum == by_version[v].checksum:
                raise MigrationRefusedError(
                    f"version {v}'s checksum matches already; nothing to accept",
                    code="MIGRATION_CHECKSUM_MATCHES",
                    component=component,
                    versions=[v],
                )
        at = now()
        with conn.transaction():
            for v in versions:
                cs, entry = by_version[v], view.applied[v]
                run.tables.write_ledger(
                    conn,
                    version=v,
                    slug=cs.slug,
                    status="applied",
                    direction=entry.direction,
                    checksum=cs.checksum,
                    down_checksum=cs.down.checksum,
                    no_transaction=entry.no_transaction,
                )
                run.tables.insert_history(
                    conn,
                    run_id=run.run_id,
                    version=v,
                    slug=cs.slug,
                    direction="accept_checksum",
                    checksum=cs.checksum,
                    status="applied",
                    applied_by=run.actor,
                    approved_by=approved_by,
                    environment=run.environment,
                    started_at=at,
                    finished_at=at,
                    duration_ms=0.0,
                    reason=f"{why} (checksum {entry.checksum} -> {cs.checksum})",
                )
                run.audit(
                    action="migration.accept_checksum",
                    target=f"{component}:{cs.name}",
                    metadata={
                        "component": component,
                        "version": v,
                        "checksum": cs.checksum,
                        "previous_checksum": entry.checksum,
                        "reason": why,
                        "approved_by": approved_by,
                        "run_id": run.run_id,
                    },
                )
        emit(
            "migration_recover",
            f"accepted new checksums for {list(versions)}",
            level=logging.WARNING,
            component=component,
            action="accept_checksum",
            versions=list(versions),
            reason=why,
            run_id=run.run_id,
        )
        return run.report(
            operation="accept_checksum",
            status="succeeded",
            dry_run=False,
            before=view.head,
            after=view.head,
            results=(),
        )


def _run_down(
    run: RunContext, cs: ChangeSet, ledger: dict[int, LedgerEntry], *, reason: str
) -> MigrationResult:
    # A failed transactional set must not be recorded as "failed" again by a down failure:
    # the runner keeps the ledger as it is when an action is given.
    return run_set(run, cs, "down", ledger, action="run-down", reason=reason)


def _mark(
    run: RunContext,
    version: int,
    cs: ChangeSet | None,
    ledger: dict[int, LedgerEntry],
    *,
    action: str,
    reason: str,
) -> None:
    """Mark the failed or dirty ``version`` applied or rolled back, running no SQL of it."""
    conn, tables = run.conn, run.tables
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
    at = now()
    with conn.transaction():
        _settle(
            run,
            version=version,
            cs=cs,
            slug=slug,
            checksum=checksum,
            status=status,
            history=("recover", action),
            reason=reason,
            at=at,
        )
        tables.write_golang(conn, *golang_after(ledger, version, entry))
        run.audit(
            action="migration.recover",
            target=f"{run.component}:{version}_{slug}",
            metadata={
                "component": run.component,
                "version": version,
                "action": action,
                "checksum": checksum,
                "reason": reason,
                "approved_by": run.approved_by,
                "run_id": run.run_id,
            },
        )


def _settle(
    run: RunContext,
    *,
    version: int,
    cs: ChangeSet | None,
    slug: str,
    checksum: str,
    status: Settled,
    history: tuple[Literal["force", "recover"], str],
    reason: str,
    at: datetime,
) -> None:
    """Record ``version`` as ``status`` without running any of its SQL: its ledger entry and an
    instant history row (``history``: the row's direction and action) in the open transaction."""
    run.tables.write_ledger(
        run.conn,
        version=version,
        slug=slug,
        status=status,
        direction="up" if status == "applied" else "down",
        checksum=checksum,
        down_checksum=cs.down.checksum if cs else None,
        applied_by=run.actor,
        approved_by=run.approved_by,
        touch_applied_at=status == "applied",
    )
    run.tables.insert_history(
        run.conn,
        run_id=run.run_id,
        version=version,
        slug=slug,
        direction=history[0],
        action=history[1],
        checksum=checksum,
        status=status,
        applied_by=run.actor,
        approved_by=run.approved_by,
        environment=run.environment,
        started_at=at,
        finished_at=at,
        duration_ms=0.0,
        reason=reason,
    )


def _force_state(
    run: RunContext,
    ledger: Mapping[int, LedgerEntry],
    *,
    version: int | None,
    reason: str,
    direction: Literal["force", "recover"],
    action: str,
) -> list[int]:
    """Make exactly the versions up to ``version`` applied; return the versions changed."""
    conn, tables = run.conn, run.tables
    by_version = run.by_version
    changed: list[int] = []
    at = now()
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
            _settle(
                run,
                version=v,
                cs=cs,
                slug=slug,
                checksum=checksum,
                status=want,
                history=(direction, action),
                reason=reason,
                at=at,
            )
            changed.append(v)
        tables.write_golang(conn, version, False)
        run.audit(
            action=f"migration.{direction}",
            target=f"{run.component}:{version if version is not None else -1}",
            metadata={
                "component": run.component,
                "version": version,
                "action": action,
                "changed_versions": changed,
                "checksums": {str(v): by_version[v].checksum for v in changed if v in by_version},
                "reason": reason,
                "approved_by": run.approved_by,
                "run_id": run.run_id,
            },
        )
    return changed


def _previous(sets: Sequence[ChangeSet], version: int | None) -> int | None:
    if version is None:
        return None
    below = [cs.version for cs in sets if cs.version < version]
    return below[-1] if below else None
