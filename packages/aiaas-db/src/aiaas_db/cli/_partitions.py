"""``aiaas-db partitions``: daily partitions of ``usage_events`` (ensure ahead, retain).

Exit codes (as for every aiaas-db command): 0 success, 1 unexpected error, 2 usage (bad
duration, missing or invalid PII keys for the audit entry), 5 refused (schema not applied, a
partition overlapping the daily layout), 6 table locks not acquired within --lock-timeout,
7 PostgreSQL unreachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from aiaas_db.cli._common import Output, dsn_option, output_option, resolve_dsn, run_command

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.platform._partitions import EnsureReport, RetainReport

__all__: list[str] = []


class _Days(click.ParamType):  # type: ignore[type-arg]
    """``7d`` / ``730d`` / ``7``: a whole number of days."""

    name = "days"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from aiaas_db.platform._partitions import parse_days  # noqa: PLC0415 -- keeps --help fast

        try:
            return parse_days(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            dsn_option,
            click.option(
                "--lock-timeout",
                type=click.FloatRange(min=0),
                default=10.0,
                show_default=True,
                help="Seconds to wait for table locks (inserts into the DEFAULT partition wait "
                "while its rows move).",
            ),
            click.option(
                "--author",
                envvar="AIAAS_DB_ACTOR",
                help="Who runs this (recorded, protected, in the audit log).",
            ),
            output_option,
        ]
    ):
        func = option(func)
    return func


def _connect(dsn: str) -> psycopg.Connection[Any]:
    import psycopg  # noqa: PLC0415 -- keeps --help fast

    from aiaas_db._errors import DatabaseUnavailableError  # noqa: PLC0415

    try:
        return psycopg.connect(dsn, autocommit=True, application_name="aiaas-db partitions")
    except psycopg.Error:
        raise DatabaseUnavailableError(
            "cannot connect to PostgreSQL; check that the server runs and the DSN "
            "(--dsn / AIAAS_DB_URL) is right"
        ) from None


#: ``aiaas-db partitions`` (registered in :mod:`aiaas_db.cli._main`).
partitions: click.Group = click.Group(
    "partitions",
    help="Daily partitions of usage_events: create them ahead, drop them past retention.",
)


def _render_ensure(out: Output, report: EnsureReport) -> None:
    if out.json:
        out.document({"ok": True, **report.to_dict()})
        return
    from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

    if not report.created:
        out.out.print(
            f"[green]✓[/] {report.table}: every day from {report.first_day} to "
            f"{report.last_day} already has a partition ({len(report.existing)})"
        )
        return
    table = Table(title=f"partitions ensure — {report.table}", title_justify="left")
    table.add_column("partition")
    table.add_column("rows moved from default", justify="right")
    for name in report.created:
        table.add_row(name, str(report.moved_rows.get(name, 0)))
    out.out.print(table)
    out.out.print(
        f"[green]✓[/] created {len(report.created)}, already there {len(report.existing)} "
        f"({report.first_day} … {report.last_day})"
    )


def _render_retain(out: Output, report: RetainReport) -> None:
    if out.json:
        out.document({"ok": True, **report.to_dict()})
        return
    from rich.table import Table  # noqa: PLC0415 -- keeps --help fast

    verb = "would drop" if report.dry_run else "dropped"
    if report.dropped:
        table = Table(
            title=f"partitions retain — {report.table}{' (dry run)' if report.dry_run else ''}",
            title_justify="left",
        )
        for column in ("partition", "from", "to", "≈ rows"):
            table.add_column(column)
        for p in report.dropped:
            table.add_row(
                p.name,
                p.lower.isoformat() if p.lower else "MINVALUE",
                p.upper.isoformat() if p.upper else "MAXVALUE",
                str(p.estimated_rows),
            )
        out.out.print(table)
    default_verb = "would delete" if report.dry_run else "deleted"
    out.out.print(
        f"[green]✓[/] {verb} {len(report.dropped)} partition(s) older than "
        f"{report.cutoff:%Y-%m-%d} ({report.older_than_days} days), kept {report.kept}; "
        f"{default_verb} {report.default_rows_deleted} old row(s) of the default partition"
    )


@partitions.command("ensure")
@click.option(
    "--ahead",
    type=_Days(),
    default="7d",
    show_default=True,
    help="Create partitions up to today + this many days.",
)
@click.option(
    "--behind",
    type=_Days(),
    default="0d",
    show_default=True,
    help="Also create partitions for this many past days (moves their rows out of the default "
    "partition).",
)
@_common
def partitions_ensure(
    *,
    ahead: int,
    behind: int,
    dsn: str | None,
    lock_timeout: float,
    author: str | None,
    output: str,
) -> None:
    """Create the daily partitions from today - behind to today + ahead (idempotent)."""
    out = Output(output)

    def action() -> None:
        from aiaas_db.platform._partitions import ensure_partitions  # noqa: PLC0415 -- keeps --help fast

        with _connect(resolve_dsn(dsn, out)) as conn:
            report = ensure_partitions(
                conn, ahead=ahead, behind=behind, actor=author, lock_timeout=lock_timeout
            )
        _render_ensure(out, report)

    run_command(out, action)


@partitions.command("retain")
@click.option(
    "--older-than",
    type=_Days(),
    default="730d",
    show_default=True,
    help="Drop partitions wholly older than this (usage events are kept 730 days).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be dropped; change nothing.")
@_common
def partitions_retain(
    *,
    older_than: int,
    dry_run: bool,
    dsn: str | None,
    lock_timeout: float,
    author: str | None,
    output: str,
) -> None:
    """Drop the partitions past retention, and old rows of the default partition (idempotent)."""
    out = Output(output)

    def action() -> None:
        from aiaas_db.platform._partitions import retain_partitions  # noqa: PLC0415 -- keeps --help fast

        with _connect(resolve_dsn(dsn, out)) as conn:
            report = retain_partitions(
                conn,
                older_than=older_than,
                dry_run=dry_run,
                actor=author,
                lock_timeout=lock_timeout,
            )
        _render_retain(out, report)

    run_command(out, action)
