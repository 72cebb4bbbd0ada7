"""``aiaas-db migrate``: apply, roll back, inspect, drill and recover versioned change sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.cli._common import (
    DEFAULT_COMPONENT,
    EXIT_BLOCKED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    Output,
    confirm,
    dsn_option,
    output_option,
    resolve_dsn,
    run_command,
)

if TYPE_CHECKING:
    from aiaas_db.migrations._migrator import Migrator
    from aiaas_db.migrations._models import DrillReport, MigrationStatus, RunReport

__all__: list[str] = []

_F = TypeVar("_F", bound=Callable[..., Any])


def _migrate_options(func: _F) -> _F:
    options = [
        click.option(
            "--component",
            "-c",
            default=DEFAULT_COMPONENT,
            show_default=True,
            envvar="AIAAS_DB_COMPONENT",
            help="Component whose change sets and state to use. operational / analytics without "
            "--source: the platform's own change sets of that component.",
        ),
        click.option(
            "--platform",
            is_flag=True,
            help="Use the platform's own change sets (operational, then analytics; rollbacks in "
            "reverse). The default when neither --source nor a platform --component is given.",
        ),
        dsn_option,
        click.option(
            "--source",
            "-s",
            type=click.Path(file_okay=False, path_type=Path),
            envvar="AIAAS_DB_SOURCE",
            help="Folder of YYYYMMDDHHMM_slug.up.sql/.down.sql change sets (env AIAAS_DB_SOURCE).",
        ),
        click.option(
            "--schema", default="public", show_default=True, help="Schema of the state tables."
        ),
        click.option(
            "--migrations-table",
            help="golang-migrate's version table (default schema_migrations_<component>; use "
            "schema_migrations to share a database golang-migrate manages).",
        ),
        click.option(
            "--lock-timeout",
            type=click.FloatRange(min=0),
            default=60.0,
            show_default=True,
            help="Seconds to wait for the migration lock.",
        ),
        click.option(
            "--statement-timeout",
            type=click.FloatRange(min=0),
            help="Seconds each statement of a change set may run.",
        ),
        click.option(
            "--ddl-lock-timeout",
            type=click.FloatRange(min=0),
            help="Seconds a statement may wait for a table lock (PostgreSQL lock_timeout).",
        ),
        click.option(
            "--env",
            "environment",
            envvar="AIAAS_ENV",
            help="Environment name; production requires --approved-by (dual approval).",
        ),
        click.option(
            "--author",
            envvar="AIAAS_DB_ACTOR",
            help="Who runs this (recorded as applied_by; default: the OS user).",
        ),
        output_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _approval_options(func: _F) -> _F:
    func = click.option(
        "--yes",
        "-y",
        is_flag=True,
        help="Confirm without asking (rollbacks, recovery, overrides, destructive sets).",
    )(func)
    return click.option(
        "--approved-by", help="The approver (must differ from the change set's author)."
    )(func)


def _check_before_starting(targets: list[tuple[str, Any]], *, write: bool) -> None:
    """What a migrate command can check without a database, before a local cluster starts.

    Each source must load (it exists, its change sets are valid); a writing command whose change
    sets create ``audit_log_entries`` needs the PII keys (see :class:`~aiaas_db.Migrator`).
    """
    from aiaas_db.migrations._changesets import DirectorySource  # noqa: PLC0415 -- keeps --help fast
    from aiaas_db.migrations._context import CREATES_AUDIT  # noqa: PLC0415
    from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415

    creates_audit = False
    for component, source in targets:
        if source is None:
            raise MigrationRefusedError(
                "no change-set source given (pass source=... / --source DIR)",
                code="MIGRATION_SOURCE_REQUIRED",
                component=component,
            )
        loaded = (DirectorySource(source) if isinstance(source, Path) else source).load()
        creates_audit = creates_audit or any(CREATES_AUDIT.search(cs.up.sql) for cs in loaded)
    if write and creates_audit:
        PiiProtector.from_env()  # PII_KEYS_MISSING / PII_KEYS_INVALID, naming the variables


def _platform_components(params: dict[str, Any]) -> tuple[str, ...] | None:
    """The platform components a migrate command targets; ``None`` for a ``--source`` folder."""
    from aiaas_db.platform._components import PLATFORM_COMPONENTS  # noqa: PLC0415 -- keeps --help fast

    component = params["component"]
    if params["source"] is not None:
        if params.get("platform"):
            raise click.UsageError(
                "--platform uses the change sets shipped with aiaas-db; drop --source (or "
                "--platform to migrate your own folder)"
            )
        return None
    if component in PLATFORM_COMPONENTS:
        return (component,)
    if component == DEFAULT_COMPONENT:
        return PLATFORM_COMPONENTS
    if params.get("platform"):
        raise click.UsageError(
            f"--platform migrates the components {', '.join(PLATFORM_COMPONENTS)}; "
            f"--component {component!r} is not one of them"
        )
    return None


def _migrators(params: dict[str, Any], output: Output, *, write: bool = True) -> list[Migrator]:
    """One migrator per targeted component (several for the whole platform), in apply order.

    Without a DSN the local cluster is started; everything checkable is checked before that.
    """
    from aiaas_db.migrations._migrator import Migrator  # noqa: PLC0415 -- keeps --help fast
    from aiaas_db.platform._components import platform_source  # noqa: PLC0415

    components = _platform_components(params)
    if components is not None and len(components) > 1 and params["migrations_table"]:
        raise click.UsageError(
            "--migrations-table names one component's table; with the whole platform each "
            "component keeps schema_migrations_<component> (add --component to pick one)"
        )
    targets: list[tuple[str, Any]] = (
        [(params["component"], params["source"])]
        if components is None
        else [(c, platform_source(c)) for c in components]  # type: ignore[arg-type]
    )
    if not params["dsn"]:
        _check_before_starting(targets, write=write)
    dsn = resolve_dsn(params["dsn"], output)
    return [
        Migrator(
            dsn,
            source,
            component=component,
            schema=params["schema"],
            migrations_table=params["migrations_table"],
            lock_timeout=params["lock_timeout"],
            statement_timeout=params["statement_timeout"],
            ddl_lock_timeout=params["ddl_lock_timeout"],
            actor=params["author"],
            environment=params["environment"],
        )
        for component, source in targets
    ]


def _migrator(params: dict[str, Any], output: Output) -> Migrator:
    """The single migrator of a one-component command (recover, force, accept-checksum)."""
    migrators = _migrators(params, output)
    if len(migrators) > 1:
        raise click.UsageError(
            "this command acts on one component: add --component operational or "
            "--component analytics (or --source DIR for your own change sets)"
        )
    return migrators[0]


def _platform_document(output: Output, ok: bool, documents: list[dict[str, Any]]) -> None:
    output.document({"ok": ok, "platform": True, "components": documents})


# -- rendering ---------------------------------------------------------------------------------


def _fmt_version(version: int | None) -> str:
    return "—" if version is None else str(version)


def _render_report(output: Output, report: RunReport) -> None:
    if output.json:
        output.document({"ok": report.status != "failed", **report.to_dict()})
        return
    from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

    console = output.out
    if report.status == "noop":
        console.print(
            f"[green]✓[/] {report.component}: nothing to {report.operation} "
            f"(version {_fmt_version(report.version_after)})"
        )
        return
    title = f"{report.operation}{' (dry run)' if report.dry_run else ''} — {report.component}"
    table = Table(title=title, title_justify="left")
    for column in ("version", "slug", "status", "ms", "statements", "row deltas"):
        table.add_column(column)
    for r in report.results:
        style = {"failed": "red", "skipped": "yellow"}.get(r.status, "green")
        deltas = ", ".join(f"{t} {n:+d}" for t, n in sorted(r.row_deltas.items())) or "—"
        table.add_row(
            str(r.version),
            r.slug,
            f"[{style}]{r.status}[/]",
            f"{r.duration_ms:.1f}",
            str(r.statements),
            deltas,
        )
    console.print(table)
    if report.dry_run:
        for r in report.results:
            console.print(f"[bold]{r.version}_{r.slug}[/] ({r.status})")
            for stmt in r.sql:
                console.print(f"  [dim]{stmt}[/]", markup=True)
            if r.error:
                console.print(f"  [yellow]{r.error}[/]")
        console.print("[dim]dry run: everything was rolled back; the state is untouched[/]")
    console.print(
        f"version {_fmt_version(report.version_before)} → {_fmt_version(report.version_after)}"
        f" in {report.duration_s:.2f} s (run {report.run_id})"
    )


def _render_status(output: Output, status: MigrationStatus) -> None:
    if output.json:
        output.document({"ok": True, **status.to_dict(), "health": status.health()})
        return
    from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

    console = output.out
    summary = Table.grid(padding=(0, 2))
    summary.add_row("component", status.component)
    summary.add_row("version", _fmt_version(status.current_version))
    state = "[green]clean[/]"
    if status.dirty:
        state = f"[red]DIRTY at {_fmt_version(status.dirty_version)}[/] ({status.dirty_detail})"
    elif status.failed_version is not None:
        state = f"[red]FAILED at {status.failed_version}[/] ({status.failed_error})"
    summary.add_row("state", state)
    summary.add_row(
        "last migration",
        status.last_migration_at.isoformat() if status.last_migration_at else "—",
    )
    summary.add_row("pending", str(len(status.pending)))
    summary.add_row(
        "schema_migrations",
        f"{_fmt_version(status.golang_version)}{' dirty' if status.golang_dirty else ''}",
    )
    if status.checksum_mismatches:
        summary.add_row(
            "[red]edited after apply[/]", ", ".join(map(str, status.checksum_mismatches))
        )
    if status.out_of_order:
        summary.add_row("[yellow]out of order[/]", ", ".join(map(str, status.out_of_order)))
    if status.missing:
        summary.add_row("[red]missing files[/]", ", ".join(map(str, status.missing)))
    console.print(summary)
    if status.pending:
        pending = Table(title="pending", title_justify="left")
        for column in ("version", "slug", "author", "flags"):
            pending.add_column(column)
        for p in status.pending:
            flags = ", ".join(
                f
                for f, on in (
                    ("no-transaction", p.no_transaction),
                    ("destructive", p.destructive),
                    ("out-of-order", p.out_of_order),
                )
                if on
            )
            pending.add_row(str(p.version), p.slug, p.author or "—", flags or "—")
        console.print(pending)
    if status.history:
        history = Table(title="history (newest first)", title_justify="left")
        for column in ("when", "version", "direction", "status", "by", "approved", "ms", "note"):
            history.add_column(column)
        for h in status.history:
            note = h.error or h.reason or ("dry run" if h.dry_run else "")
            history.add_row(
                h.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(h.version),
                h.direction + (f" {h.action}" if h.action else ""),
                h.status + (" (dry run)" if h.dry_run else ""),
                h.applied_by,
                h.approved_by or "—",
                f"{h.duration_ms:.1f}" if h.duration_ms is not None else "—",
                (note[:60] + "…") if len(note) > 61 else note,
            )
        console.print(history)


def _render_drill(output: Output, report: DrillReport) -> None:
    if output.json:
        output.document({"ok": report.ok, **report.to_dict()})
        return
    from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

    table = Table(title=f"drill — {report.component}", title_justify="left")
    for column in ("version", "slug", "down restores", "reapply matches"):
        table.add_column(column)
    for s in report.steps:
        table.add_row(
            str(s.version),
            s.slug,
            "[green]yes[/]" if s.before == s.after_down else "[red]no[/]",
            "[green]yes[/]" if s.after_up == s.after_reapply else "[red]no[/]",
        )
    output.out.print(table if report.steps else "[green]✓[/] nothing pending to drill")


def _run_each(out: Output, migrators: list[Migrator], one: Callable[[Migrator], RunReport]) -> int:
    """Run ``one`` for each migrator in turn, stopping at the first failed run; print each
    report (with ``--output json`` and several components: one platform document)."""
    reports: list[RunReport] = []
    for m in migrators:
        report = one(m)
        reports.append(report)
        if len(migrators) == 1 or not out.json:
            _render_report(out, report)
        if report.status == "failed":
            break
    failed = any(r.status == "failed" for r in reports)
    if len(migrators) > 1 and out.json:
        _platform_document(out, not failed, [r.to_dict() for r in reports])
    return EXIT_FAILED if failed else EXIT_OK


@click.group()
def migrate() -> None:
    """Apply, roll back, inspect, drill and recover versioned change sets."""


@migrate.command("up")
@_migrate_options
@_approval_options
@click.option("--to", type=int, help="Apply up to and including this version.")
@click.option("--dry-run", is_flag=True, help="Run pending sets in a rolled-back transaction.")
@click.option("--allow-out-of-order", is_flag=True, help="Apply sets older than the head.")
def migrate_up(
    *,
    to: int | None,
    dry_run: bool,
    allow_out_of_order: bool,
    approved_by: str | None,
    yes: bool,
    **params: Any,
) -> None:
    """Apply pending change sets, oldest first (the platform: operational, then analytics)."""
    out = Output(params["output"])

    def action() -> int:
        def up(m: Migrator) -> RunReport:
            def run(allow_destructive: bool) -> RunReport:
                return m.up(
                    to=to,
                    dry_run=dry_run,
                    approved_by=approved_by,
                    allow_out_of_order=allow_out_of_order,
                    allow_destructive=allow_destructive,
                )

            try:
                return run(yes)
            except MigrationRefusedError as exc:
                if exc.code != "MIGRATION_DESTRUCTIVE_UNCONFIRMED":
                    raise
                confirm(False, f"{exc.message}. Apply them?")
                return run(True)

        return _run_each(out, _migrators(params, out), up)

    run_command(out, action)


@migrate.command("down")
@_migrate_options
@_approval_options
@click.option("--to", type=int, help="Keep versions up to this one applied (0: none).")
@click.option("--steps", type=click.IntRange(min=1), help="Roll back the newest N (default 1).")
@click.option("--all", "all_", is_flag=True, help="Roll back everything.")
@click.option("--dry-run", is_flag=True, help="Run the down scripts in a rolled-back transaction.")
def migrate_down(
    *,
    to: int | None,
    steps: int | None,
    all_: bool,
    dry_run: bool,
    approved_by: str | None,
    yes: bool,
    **params: Any,
) -> None:
    """Roll back applied change sets, newest first."""
    out = Output(params["output"])
    if sum(x is not None for x in (to, steps)) + all_ > 1:
        raise click.UsageError("use one of --to, --steps, --all")

    def action() -> int:
        migrators = list(reversed(_migrators(params, out)))
        if len(migrators) > 1 and not all_ and to is None:
            raise click.UsageError(
                "rolling back the platform needs --all or --to VERSION (each component keeps "
                "the versions up to it); for --steps name one --component"
            )
        target = 0 if all_ else to
        if not dry_run:
            what = (
                "everything"
                if all_
                else f"versions after {to}"
                if to is not None
                else f"the newest {steps or 1} version(s)"
            )
            names = " and ".join(m.component for m in migrators)
            confirm(yes, f"Roll back {what} of {names}?")
        return _run_each(
            out,
            migrators,
            lambda m: m.down(
                to=target,
                steps=steps,
                dry_run=dry_run,
                approved_by=approved_by,
                allow_destructive=True,
            ),
        )

    run_command(out, action)


@migrate.command("status")
@_migrate_options
@click.option(
    "--history",
    "history_limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many history entries to show.",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 4 when dirty or failed, 8 when sets are pending, 0 when up to date.",
)
def migrate_status(*, history_limit: int, exit_code: bool, **params: Any) -> None:
    """Current version, dirty/failed state, pending sets, history, last migration time."""
    out = Output(params["output"])

    def action() -> int:
        migrators = _migrators(params, out, write=False)
        statuses = [m.status(history_limit=history_limit) for m in migrators]
        if len(migrators) > 1 and out.json:
            _platform_document(out, True, [{**s.to_dict(), "health": s.health()} for s in statuses])
        else:
            for status in statuses:
                _render_status(out, status)
        if exit_code:
            if any(s.blocked for s in statuses):
                return EXIT_BLOCKED
            if any(s.pending for s in statuses):
                return EXIT_PENDING
        return EXIT_OK

    run_command(out, action)


@migrate.command("drill")
@_migrate_options
@click.option("--to", type=int, help="Drill pending sets up to and including this version.")
def migrate_drill(*, to: int | None, **params: Any) -> None:
    """Apply → roll back → reapply each pending set, comparing catalog fingerprints."""
    out = Output(params["output"])

    def action() -> None:
        migrators = _migrators(params, out)
        if len(migrators) == 1:
            _render_drill(out, migrators[0].drill(to=to))
            return
        reports = [m.drill(to=to) for m in migrators]
        if out.json:
            _platform_document(out, all(r.ok for r in reports), [r.to_dict() for r in reports])
        else:
            for report in reports:
                _render_drill(out, report)

    run_command(out, action)


@migrate.command("recover")
@_migrate_options
@_approval_options
@click.option(
    "--action",
    "recover_action",
    type=click.Choice(["mark-rolled-back", "mark-applied", "run-down"]),
    required=True,
    help="mark-rolled-back: not applied (retry later); mark-applied: done by hand; "
    "run-down: run its down script, then mark it rolled back.",
)
@click.option("--reason", required=True, help="Why (recorded in history and audit).")
@click.option("--version", "version", type=int, help="The failed/dirty version (a safety check).")
def migrate_recover(
    *,
    recover_action: str,
    reason: str,
    version: int | None,
    approved_by: str | None,
    yes: bool,
    **params: Any,
) -> None:
    """Resolve a failed or dirty head, explicitly and audited."""
    out = Output(params["output"])

    def action() -> None:
        m = _migrator(params, out)
        confirm(yes, f"Recover {m.component} with {recover_action}?")
        report = m.recover(
            recover_action,  # type: ignore[arg-type]
            reason=reason,
            version=version,
            approved_by=approved_by,
        )
        if out.json:
            out.document({"ok": True, **report.to_dict()})
        else:
            out.out.print(
                f"[green]✓[/] recovered {m.component} ({recover_action}); version "
                f"{_fmt_version(report.version_after)}"
            )

    run_command(out, action)


def _force_version(_ctx: click.Context, _param: click.Parameter, value: str) -> int | None:
    if value.strip().lower() in {"none", "nil", "-1"}:
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a version (use a number, or none)") from None
    return None if number < 0 else number


@migrate.command("force")
@click.argument("version", callback=_force_version, metavar="VERSION|none")
@_migrate_options
@_approval_options
@click.option("--reason", required=True, help="Why (recorded in history and audit).")
def migrate_force(
    *, version: int | None, reason: str, approved_by: str | None, yes: bool, **params: Any
) -> None:
    """Declare the database to be at VERSION (none: nothing applied) without running SQL.

    Like golang-migrate's force: nothing runs; versions up to VERSION count as applied.
    """
    out = Output(params["output"])

    def action() -> None:
        m = _migrator(params, out)
        confirm(
            yes, f"Force {m.component} to version {_fmt_version(version)} without running anything?"
        )
        report = m.force(version, reason=reason, approved_by=approved_by)
        if out.json:
            out.document({"ok": True, **report.to_dict()})
        else:
            out.out.print(
                f"[green]✓[/] {m.component} forced to {_fmt_version(report.version_after)}"
            )

    run_command(out, action)


@migrate.command("accept-checksum")
@click.argument("versions", type=int, nargs=-1, required=True)
@_migrate_options
@_approval_options
@click.option("--reason", required=True, help="Why the edit is acceptable (audited).")
def migrate_accept_checksum(
    *, versions: tuple[int, ...], reason: str, approved_by: str | None, yes: bool, **params: Any
) -> None:
    """Accept the edited content of applied change sets (tamper evidence override)."""
    out = Output(params["output"])

    def action() -> None:
        m = _migrator(params, out)
        confirm(yes, f"Accept the new content of {', '.join(map(str, versions))}?")
        report = m.accept_checksum(list(versions), reason=reason, approved_by=approved_by)
        if out.json:
            out.document({"ok": True, **report.to_dict()})
        else:
            out.out.print(f"[green]✓[/] accepted new checksums for {', '.join(map(str, versions))}")

    run_command(out, action)
