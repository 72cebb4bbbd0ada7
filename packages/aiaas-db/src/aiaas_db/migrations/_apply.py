"""Applying and rolling back change sets: the plan, its guardrails, then one set after another.

Every run connects, creates the state tables when missing, takes the component's advisory locks,
reconciles golang-migrate's ``schema_migrations`` with our ledger, runs its pre-checks (clean
head, unchanged and present sources, order, destructive sets confirmed, approval), and only then
touches the schema. A failed or dirty head blocks further work until recovery; nothing is ever
reapplied on its own.
"""

from __future__ import annotations

from typing import Literal

from aiaas_db._errors import (
    ApprovalRequiredError,
    MigrationFailedError,
    MigrationNotFoundError,
    MigrationRefusedError,
    OutOfOrderError,
)
from aiaas_db.migrations._changesets import ChangeSet
from aiaas_db.migrations._checks import (
    adopt,
    check_approval,
    check_sources,
    check_state,
    read_view,
)
from aiaas_db.migrations._context import PROTECTED_ENVIRONMENTS, RunContext, Settings, open_run
from aiaas_db.migrations._drill import dry_run as rehearse
from aiaas_db.migrations._models import MigrationResult, RunReport
from aiaas_db.migrations._runner import applied_head, run_set
from aiaas_db.migrations._state import StateView
from aiaas_db.migrations._telemetry import set_attributes

__all__: list[str] = []


def apply(
    settings: Settings,
    direction: Literal["up", "down"],
    *,
    to: int | None,
    steps: int | None,
    dry_run: bool,
    approved_by: str | None,
    allow_out_of_order: bool,
    allow_destructive: bool,
) -> RunReport:
    """Run ``direction`` (see :meth:`Migrator.up` and :meth:`Migrator.down`)."""
    sets = settings.load_sets()
    if direction == "up" and to is not None and to not in {cs.version for cs in sets}:
        raise MigrationNotFoundError(
            f"no change set with version {to} in {settings.source_origin}",
            component=settings.component,
            versions=[to],
        )
    if settings.environment in PROTECTED_ENVIRONMENTS and not (approved_by or "").strip():
        # Refused before connecting: nothing can run without an approver.
        check_approval(settings, [], approved_by, direction)
    with open_run(
        settings,
        direction,
        write=not dry_run,
        sets=sets,
        approved_by=approved_by,
        span_attributes={"db.migration.direction": direction, "db.migration.dry_run": dry_run},
    ) as run:
        if not dry_run:
            run.tables.close_interrupted(run.conn)
            view = adopt(run)
        else:
            view = read_view(run.tables, run.conn, sets)
        check_state(run, view)
        plan = _plan(run, view, direction, to=to, steps=steps)
        _check_plan(
            run,
            view,
            plan,
            direction,
            dry_run=dry_run,
            allow_out_of_order=allow_out_of_order,
            allow_destructive=allow_destructive,
        )
        run.emit_checks(ok=True)
        set_attributes(run.span, {"db.migration.planned": len(plan)})

        before = view.head
        if not plan:
            run.set_status("noop")
            return run.report(
                operation=direction,
                status="noop",
                dry_run=dry_run,
                before=before,
                after=before,
                results=(),
            )
        if dry_run:
            results = rehearse(run, plan, direction)
            failed = any(r.status == "failed" for r in results)
            run.set_status("failed" if failed else "succeeded")
            return run.report(
                operation=direction,
                status="failed" if failed else "succeeded",
                dry_run=True,
                before=before,
                after=before,
                results=results,
            )
        ledger = dict(view.ledger)
        results = []
        for cs in plan:
            try:
                results.append(run_set(run, cs, direction, ledger))
            except MigrationFailedError as exc:
                script = cs.up if direction == "up" else cs.down
                results.append(
                    MigrationResult(
                        version=cs.version,
                        slug=cs.slug,
                        direction=direction,
                        status="failed",
                        checksum=script.checksum,
                        no_transaction=script.no_transaction,
                        error=exc.message,
                        failed_statement=exc.statement,
                    )
                )
                run.set_status("failed")
                exc.report = run.report(
                    operation=direction,
                    status="failed",
                    dry_run=False,
                    before=before,
                    after=applied_head(ledger),
                    results=results,
                )
                raise
        run.set_status("succeeded")
        return run.report(
            operation=direction,
            status="succeeded",
            dry_run=False,
            before=before,
            after=applied_head(ledger),
            results=results,
        )


def _plan(
    run: RunContext,
    view: StateView,
    direction: Literal["up", "down"],
    *,
    to: int | None,
    steps: int | None,
) -> list[ChangeSet]:
    """The sets to run, in order; checks that the source holds them (and all applied ones)."""
    if direction == "up":
        plan = [cs for cs in run.sets if cs.version not in view.applied]
        if to is not None:
            plan = [cs for cs in plan if cs.version <= to]
        check_sources(run, view)
        return plan
    by_version = run.by_version
    applied_desc = sorted(view.applied, reverse=True)
    targets = [v for v in applied_desc if v > to] if to is not None else applied_desc[: steps or 1]
    check_sources(run, view, need=targets)
    return [by_version[v] for v in targets if v in by_version]


def _check_plan(
    run: RunContext,
    view: StateView,
    plan: list[ChangeSet],
    direction: Literal["up", "down"],
    *,
    dry_run: bool,
    allow_out_of_order: bool,
    allow_destructive: bool,
) -> None:
    """Order (up), destructive sets confirmed, approval."""
    if direction == "up":
        before = view.head
        late = [cs.version for cs in plan if before is not None and cs.version < before]
        if late and not allow_out_of_order:
            run.refuse("order", f"older than head {before}: {late}")
            raise OutOfOrderError(
                f"change set(s) {late} are older than the applied head {before} and were "
                "never applied. Renumber them after the head, or apply them deliberately "
                "with --allow-out-of-order",
                component=run.component,
                versions=late,
            )
        run.passed(
            "order",
            "no out-of-order change sets" if not late else f"out of order, allowed: {late}",
        )
    destructive = [
        cs.version for cs in plan if (cs.up if direction == "up" else cs.down).destructive
    ]
    if destructive and not allow_destructive and not dry_run:
        run.refuse("destructive", f"destructive: {destructive}")
        raise MigrationRefusedError(
            f"change set(s) {destructive} are marked aiaas:destructive (they drop data); "
            "confirm with --yes (allow_destructive=True)",
            code="MIGRATION_DESTRUCTIVE_UNCONFIRMED",
            component=run.component,
            versions=destructive,
        )
    try:
        check_approval(
            run.settings, [(cs.name, cs.author) for cs in plan], run.approved_by, direction
        )
    except ApprovalRequiredError:
        run.refuse("approval", "approval missing or self-approved")
        raise
    if run.environment in PROTECTED_ENVIRONMENTS:
        run.passed("approval", f"approved by {run.approved_by}")
