"""``aiaas-db rollup``: usage rollups on PostgreSQL or DuckDB (run, backfill, reconcile, usage).

Exit codes (same scheme as the rest of ``aiaas-db``)::

    0  success (reconcile: every check passed)
    1  unexpected error
    2  usage error: bad option, granularity, window or target
    3  a rollup failed, or reconcile found mismatches
    4  the analytics change sets are not applied (run `aiaas-db migrate up --platform`)
    6  another rollup holds the lock (--lock-timeout)
    7  PostgreSQL or the DuckDB file unreachable, or the duckdb extra missing
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from aiaas_db.cli._common import EXIT_ERROR, Output, exit_code_for, resolve_dsn

if TYPE_CHECKING:
    from aiaas_db.analytics._models import (
        ReconciliationReport,
        RollupProgress,
        RollupReport,
        RollupTarget,
    )

__all__ = ["ROLLUP_EXIT_CODES", "rollup"]

#: Rollup error code -> exit status.
ROLLUP_EXIT_CODES: Final[dict[str, int]] = {
    "ROLLUP_WINDOW_INVALID": 2,
    "ROLLUP_TARGET_INVALID": 2,
    "ROLLUP_FAILED": 3,
    "ROLLUP_RECONCILIATION_MISMATCH": 3,
    "ROLLUP_SCHEMA_MISSING": 4,
    "ROLLUP_LOCKED": 6,
    "ROLLUP_UNAVAILABLE": 7,
    "DATABASE_UNAVAILABLE": 7,
    "POSTGRES_NOT_FOUND": 7,
    "POSTGRES_LOCAL_FAILED": 7,
}
_F = TypeVar("_F", bound=Callable[..., Any])
_DURATION: Final = re.compile(r"(?P<n>[1-9][0-9]*)(?P<unit>[mhd])")


class _When(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 time; without an offset it is read as UTC. A bare date is midnight UTC."""

    name = "ISO-TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an ISO time (e.g. 2026-01-01T00:00:00Z)", param, ctx)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Duration(click.ParamType):  # type: ignore[type-arg]
    """``90m``, ``6h``, ``1d``."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        m = _DURATION.fullmatch(str(value).strip())
        if m is None:
            self.fail(f"{value!r} is not a duration like 90m, 6h or 1d", param, ctx)
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group("unit")]
        return timedelta(**{unit: int(m.group("n"))})


WHEN: Final = _When()
DURATION: Final = _Duration()


def _target_options(func: _F) -> _F:
    options = [
        click.option(
            "--target",
            "-t",
            "target_name",
            help="Target name from the targets file (built-in: postgres, duckdb; default: the "
            "file's default).",
        ),
        click.option(
            "--targets",
            "targets_file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="AIAAS_ROLLUP_TARGETS",
            help="Targets file (env AIAAS_ROLLUP_TARGETS; default: the built-in one).",
        ),
        click.option(
            "--dsn",
            envvar="AIAAS_DB_URL",
            help="The operational PostgreSQL (env AIAAS_DB_URL). Without one, the local cluster "
            "of `aiaas-db local` is used.",
        ),
        click.option(
            "--duckdb-path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The DuckDB file of a duckdb target (created when missing).",
        ),
        click.option(
            "--lock-timeout",
            type=click.FloatRange(min=0),
            default=60.0,
            show_default=True,
            help="Seconds to wait while another rollup runs on the same database.",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help="text for people, json (one document on stdout) for machines.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _granularity_option(func: _F) -> _F:
    return click.option(
        "--granularity",
        "-g",
        type=click.Choice(["hour", "day"]),
        required=True,
        help="hour: from raw usage events; day: from hourly rollups.",
    )(func)


def _fail(out: Output, exc: BaseException) -> int:
    from aiaas_core import AiaasError  # noqa: PLC0415

    code = ROLLUP_EXIT_CODES.get(getattr(exc, "code", ""), None)
    if code is None:
        code = exit_code_for(exc) if not isinstance(exc, AiaasError) else EXIT_ERROR
    if out.json:
        from aiaas_core import error_body  # noqa: PLC0415

        details: dict[str, Any] = {}
        run_id = getattr(exc, "run_id", None)
        if run_id is not None:
            details["run_id"] = str(run_id)
        problems = getattr(exc, "problems", ())
        if problems:
            details["problems"] = [str(p) for p in problems]
        if not isinstance(exc, AiaasError):
            details["exception"] = type(exc).__name__
        out.document({"ok": False, "exit_code": code, "error": error_body(exc), "details": details})
        return code
    from rich.markup import escape  # noqa: PLC0415

    err_code = getattr(exc, "code", type(exc).__name__)
    message = getattr(exc, "message", str(exc))
    out.err.print(f"[bold red]error[/] [red]{err_code}[/]: {escape(message)}")
    return code


def _run(out: Output, action: Callable[[], int | None]) -> None:
    try:
        code = action()
    except (click.ClickException, click.exceptions.Exit):
        raise
    except Exception as exc:  # noqa: BLE001 -- every error becomes an exit code and a message
        raise SystemExit(_fail(out, exc)) from None
    raise SystemExit(code or 0)


def _target(params: dict[str, Any], out: Output) -> RollupTarget:
    import attrs  # noqa: PLC0415

    from aiaas_db.analytics._targets import rollup_target  # noqa: PLC0415

    target = rollup_target(
        params["target_name"],
        dsn=params["dsn"],
        duckdb_path=params["duckdb_path"],
        targets_file=params["targets_file"],
    )
    if target.dsn is None:
        target = attrs.evolve(target, dsn=resolve_dsn(None, out), dsn_origin="local cluster")
    return target


@contextmanager
def _progress(out: Output, label: str) -> Iterator[Callable[[RollupProgress], None] | None]:
    """A rich progress bar (windows committed) for people; nothing for --output json."""
    if out.json:
        yield None
        return
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[cyan]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[events]:,} events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out.err,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None, events=0)
        events = 0

        def update(p: RollupProgress) -> None:
            nonlocal events
            events += p.events
            bar.update(
                task,
                total=p.windows_total,
                completed=p.windows_done,
                events=events,
                description=f"{label} {p.window_start:%Y-%m-%d %H:%M}",
            )

        yield update


def _render_report(out: Output, report: RollupReport) -> None:
    if out.json:
        out.document({"ok": report.status == "succeeded", **report.to_dict()})
        return
    con = out.out
    if report.windows == 0:
        con.print(f"[green]✓[/] {report.granularity} rollup ({report.target}): nothing to do")
        return
    span = (
        f"{report.window_start:%Y-%m-%d %H:%M} → {report.window_end:%Y-%m-%d %H:%M} UTC"
        if report.window_start and report.window_end
        else ""
    )
    resumed = f" (resumed from {report.resumed_from:%Y-%m-%d %H:%M})" if report.resumed_from else ""
    con.print(
        f"[green]✓[/] {report.mode} {report.granularity} rollup on {report.target} "
        f"({report.dialect}): {span}{resumed}"
    )
    con.print(
        f"  {report.windows} window(s), {report.buckets} bucket(s), {report.events:,} events; "
        f"rows +{report.rows_inserted} ~{report.rows_updated} -{report.rows_deleted}; "
        f"{report.duration_s:.2f} s"
    )
    if report.watermark_after is not None:
        con.print(f"  watermark: {report.watermark_after.isoformat()}")


def _render_reconciliation(out: Output, report: ReconciliationReport) -> None:
    if out.json:
        out.document(report.to_dict())
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"reconciliation — {report.target} ({report.dialect})", title_justify="left"
    )
    for column in ("check", "granularity", "result", "mismatches"):
        table.add_column(column)
    for c in report.checks:
        table.add_row(
            c.name,
            c.granularity,
            "[green]ok[/]" if c.ok else "[red]mismatch[/]",
            str(c.mismatches),
        )
    out.out.print(table)
    for c in report.checks:
        for row in c.sample:
            out.out.print(f"  [red]{c.name}[/]: {row}")


@click.group()
def rollup() -> None:
    """Hourly and daily usage rollups on PostgreSQL (default) or DuckDB (embedded).

    Exit codes: 0 ok, 1 unexpected, 2 usage/window/target, 3 rollup failed or reconcile
    mismatch, 4 analytics schema missing, 6 another rollup running, 7 unreachable.
    """


@rollup.command("run")
@_granularity_option
@click.option("--from", "start", type=WHEN, help="Window start (ISO; UTC when no offset).")
@click.option("--to", "end", type=WHEN, help="Window end, exclusive.")
@click.option(
    "--overlap",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds of ingest time re-read before the watermark (late commits).",
)
@_target_options
def rollup_run(
    *, granularity: str, start: datetime | None, end: datetime | None, overlap: float, **params: Any
) -> None:
    """Roll up a window, or (without --from/--to) only what changed since the last run."""
    out = Output(params["output"])
    if (start is None) != (end is None):
        raise click.UsageError("give both --from and --to, or neither")

    def action() -> int:
        from aiaas_db.analytics._engine import RollupEngine  # noqa: PLC0415

        target = _target(params, out)
        with (
            RollupEngine(
                target, overlap=timedelta(seconds=overlap), lock_timeout=params["lock_timeout"]
            ) as engine,
            _progress(out, f"{granularity} rollup") as progress,
        ):
            report = engine.run(granularity, start, end, progress=progress)
        _render_report(out, report)
        return 0

    _run(out, action)


@rollup.command("backfill")
@_granularity_option
@click.option("--from", "start", type=WHEN, required=True, help="Range start (ISO).")
@click.option("--to", "end", type=WHEN, required=True, help="Range end, exclusive (ISO).")
@click.option(
    "--window",
    type=DURATION,
    help="Event time per transaction (default 1d for hour, 31d for day).",
)
@click.option(
    "--pause",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to sleep between windows (leave room for operational traffic).",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many events per second on average.",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and start over.")
@_target_options
def rollup_backfill(
    *,
    granularity: str,
    start: datetime,
    end: datetime,
    window: timedelta | None,
    pause: float,
    max_rate: float | None,
    restart: bool,
    **params: Any,
) -> None:
    """Roll up a long range window by window, throttled; resumes after an interruption."""
    out = Output(params["output"])

    def action() -> int:
        from aiaas_db.analytics._engine import RollupEngine  # noqa: PLC0415

        target = _target(params, out)
        with (
            RollupEngine(target, lock_timeout=params["lock_timeout"]) as engine,
            _progress(out, f"{granularity} backfill") as progress,
        ):
            report = engine.backfill(
                granularity,
                start,
                end,
                window=window,
                pause=pause,
                max_events_per_second=max_rate,
                restart=restart,
                progress=progress,
            )
        _render_report(out, report)
        return 0

    _run(out, action)


@rollup.command("reconcile")
@click.option("--from", "start", type=WHEN, help="Only this range (widened to whole days).")
@click.option("--to", "end", type=WHEN, help="Range end, exclusive.")
@click.option(
    "--checks",
    "checks_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checks file in the contract's format (analytics-reconciliation-checks.yml); its "
    "checks replace the built-in copies of the contract's checks.",
)
@_target_options
def rollup_reconcile(
    *, start: datetime | None, end: datetime | None, checks_file: Path | None, **params: Any
) -> None:
    """Prove rollups equal raw events (hourly and daily); exit 3 on any mismatch."""
    out = Output(params["output"])
    if (start is None) != (end is None):
        raise click.UsageError("give both --from and --to, or neither")

    def action() -> int:
        from aiaas_db.analytics._engine import RollupEngine  # noqa: PLC0415
        from aiaas_db.analytics._reconcile import builtin_checks, load_checks  # noqa: PLC0415

        checks = builtin_checks(load_checks(checks_file) if checks_file else None)
        target = _target(params, out)
        with RollupEngine(target, lock_timeout=params["lock_timeout"]) as engine:
            report = engine.reconcile(start=start, end=end, checks=checks)
        _render_reconciliation(out, report)
        return 0 if report.ok else ROLLUP_EXIT_CODES["ROLLUP_RECONCILIATION_MISMATCH"]

    _run(out, action)


@rollup.command("usage")
@click.option("--from", "start", type=WHEN, required=True, help="Range start (ISO).")
@click.option("--to", "end", type=WHEN, required=True, help="Range end, exclusive (ISO).")
@click.option(
    "--granularity", "-g", type=click.Choice(["hour", "day"]), default="day", show_default=True
)
@click.option(
    "--by", type=click.Choice(["organization", "model"]), default="organization", show_default=True
)
@click.option(
    "--organization",
    "organizations",
    type=click.UUID,
    multiple=True,
    help="Only these organisations (repeatable).",
)
@_target_options
def rollup_usage(
    *,
    start: datetime,
    end: datetime,
    granularity: str,
    by: str,
    organizations: tuple[uuid.UUID, ...],
    **params: Any,
) -> None:
    """Usage per bucket and organisation or model, from the rollups (dashboards)."""
    out = Output(params["output"])

    def action() -> int:
        from aiaas_db.analytics._engine import RollupEngine  # noqa: PLC0415

        target = _target(params, out)
        with RollupEngine(target, lock_timeout=params["lock_timeout"]) as engine:
            rows = engine.usage(
                start=start,
                end=end,
                granularity=granularity,
                by="model" if by == "model" else "organization",
                organization_ids=organizations,
                include_unattributed=by == "model",
            )
        if out.json:
            out.document({"ok": True, "by": by, "rows": [r.to_dict() for r in rows]})
            return 0
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"usage by {by} ({granularity})", title_justify="left")
        for column in ("bucket", by, "requests", "tokens", "errors", "rate limited", "cost usd"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                f"{r.bucket_start:%Y-%m-%d %H:%M}",
                str(r.key) if r.key else "—",
                f"{r.request_count:,}",
                f"{r.tokens_total:,}",
                f"{r.error_count:,}",
                f"{r.rate_limited_count:,}",
                str(r.cost_usd),
            )
        out.out.print(table)
        return 0

    _run(out, action)


@rollup.command("history")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_target_options
def rollup_history(*, limit: int, **params: Any) -> None:
    """The newest rollup runs (status, window, rows, watermark)."""
    out = Output(params["output"])

    def action() -> int:
        from aiaas_db.analytics._engine import RollupEngine  # noqa: PLC0415

        target = _target(params, out)
        with RollupEngine(target, lock_timeout=params["lock_timeout"]) as engine:
            runs = engine.history(limit=limit)
        if out.json:
            out.document({"ok": True, "runs": runs})
            return 0
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=f"rollup runs — {target.name}", title_justify="left")
        for column in ("started", "granularity", "mode", "status", "window", "events", "rows ±"):
            table.add_column(column)
        for r in runs:
            window = f"{r['window_start'] or '—'} → {r['window_end'] or '—'}"
            rows = f"+{r['rows_inserted']} ~{r['rows_updated']} -{r['rows_deleted']}"
            status = r["status"] if r["status"] != "failed" else f"[red]failed[/] {r['error_code']}"
            table.add_row(
                str(r["started_at"]),
                r["granularity"],
                r["mode"],
                status,
                window,
                f"{r['source_events']:,}",
                rows,
            )
        out.out.print(table)
        return 0

    _run(out, action)
