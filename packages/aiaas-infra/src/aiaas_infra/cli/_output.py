"""Rendering for people: plan tables, apply progress and summaries, drift and state (rich)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from aiaas_infra._errors import PreflightProblem
    from aiaas_infra.provision._apply import ApplyResult
    from aiaas_infra.provision._drift import DriftReport
    from aiaas_infra.provision._plan import Plan
    from aiaas_infra.provision._state import SnapshotInfo, StateSnapshot

__all__: list[str] = []

_STYLE = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red"}
_SIGN = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def render_plan(plan: Plan, console: Console) -> None:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    if not plan.has_changes:
        console.print(
            f"[bold green]No changes.[/] {plan.spec.name} matches its spec "
            f"({len(plan.desired)} resources, {plan.api_calls} API calls)."
        )
        return
    table = Table(title=f"Plan for {plan.spec.name}", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("resource", no_wrap=True)
    table.add_column("environments")
    table.add_column("changes")
    for change in plan.changes:
        style = _STYLE[change.action]
        details: list[str] = []
        for diff in change.diffs:
            mark = " [forces replacement]" if diff.forces_replacement else ""
            details.append(f"{diff.field}: {_value(diff.before)} -> {_value(diff.after)}{mark}")
        if change.via:
            details.append(f"(with {change.via})")
        if change.reason and not change.diffs:
            details.append(change.reason)
        table.add_row(
            Text(_SIGN[change.action], style=style),
            Text(change.address, style=style),
            ", ".join(change.environments) or "shared",
            "\n".join(details),
        )
    console.print(table)
    counts = plan.summary()
    console.print(
        f"Plan: [green]{counts['create']} to create[/], [yellow]{counts['update']} to update[/], "
        f"[magenta]{counts['replace']} to replace[/], [red]{counts['delete']} to delete[/]."
    )
    for warning in plan.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")


def render_problems(problems: tuple[PreflightProblem, ...], console: Console) -> None:
    console.print("[bold red]Preflight failed; nothing was created.[/]")
    for p in problems:
        console.print(f"  [red]{p.code}[/] {p.subject}: {p.message}")


def render_apply(result: ApplyResult, console: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    colour = {"applied": "green", "no_changes": "green", "rolled_back": "yellow", "partial": "red"}
    console.print(
        f"[bold {colour[result.outcome]}]{result.outcome}[/] in {result.duration_s:.1f}s, "
        f"{result.api_calls} API calls"
        + (f", snapshot {result.snapshot.id}" if result.snapshot is not None else "")
    )
    if result.error:
        console.print(f"[red]error:[/] {result.error}")
    if result.rollback:
        table = Table(title="Rollback")
        table.add_column("resource")
        table.add_column("action")
        table.add_column("outcome")
        table.add_column("note")
        for step in result.rollback:
            table.add_row(step.address, step.action, step.outcome, step.error or step.note)
        console.print(table)
    for addr in result.unrestorable:
        console.print(f"[red]not restorable:[/] {addr} was deleted before the failure")
    for t in result.transitions:
        console.print(f"environment {t.environment}: {t.from_status or '(new)'} -> {t.to_status}")


def render_drift(report: DriftReport, console: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    colour = {"none": "green", "minor": "yellow", "major": "red"}
    console.print(f"Drift: [bold {colour[report.level]}]{report.level}[/]")
    if report.findings:
        table = Table()
        table.add_column("severity")
        table.add_column("resource")
        table.add_column("what")
        table.add_column("expected")
        table.add_column("actual")
        for f in report.findings:
            table.add_row(f.severity, f.address, f.message, _value(f.expected), _value(f.actual))
        console.print(table)
    for env, level in sorted(report.environments.items()):
        console.print(f"  {env}: [{colour[level]}]{level}[/]")
    if report.pending:
        console.print(f"{len(report.pending)} pending spec change(s): run `aiaas-infra plan`")


def render_snapshots(infos: list[SnapshotInfo], console: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="State snapshots")
    for col in ("id", "created", "outcome", "actor", "resources", "run"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.id, i.created_at, i.outcome, i.actor, str(i.resources), i.run_id[:12])
    console.print(table)


def render_snapshot(snapshot: StateSnapshot, console: Console) -> None:
    from rich.table import Table  # noqa: PLC0415

    console.print(
        f"snapshot {snapshot.id} of {snapshot.platform}: {snapshot.outcome} by {snapshot.actor} "
        f"at {snapshot.created_at}"
    )
    table = Table()
    for col in ("resource", "id", "environments", "secrets"):
        table.add_column(col)
    for addr, rec in sorted(snapshot.resources.items()):
        table.add_row(
            addr,
            rec.id,
            ", ".join(rec.environments) or "shared",
            ", ".join(f"{k}={v}" for k, v in sorted(rec.secret_fingerprints.items())),
        )
    console.print(table)
    for env, status in sorted(snapshot.environments.items()):
        console.print(f"  {env}: {status}")


class ProgressDisplay:
    """Turns apply events into a live progress bar (on a terminal) or plain lines."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal and self.total:
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("applying", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def __call__(self, event: Mapping[str, Any]) -> None:
        name = event.get("event", "")
        addr = event.get("address", "")
        if name == "infra.step.finish":
            line = (
                f"[green]done[/] {event.get('action')} {addr} ({event.get('duration_s', 0):.1f}s)"
            )
            if self._progress is not None:
                self._progress.advance(self._task)
        elif name == "infra.step.start":
            line = f"start {event.get('action')} {addr}"
            if self._progress is not None:
                self._progress.update(self._task, description=f"{event.get('action')} {addr}")
                return
        elif name == "infra.step.wait":
            line = f"waiting for {addr} ({event.get('what')})"
        elif name == "infra.step.failure":
            line = f"[red]failed[/] {event.get('action')} {addr}: {event.get('error')}"
        elif name == "infra.rollback.start":
            line = "[yellow]rolling back[/]"
        else:
            return
        self.console.print(line)
