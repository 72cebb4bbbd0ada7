"""The ``aiaas-db`` command group and its entry point :func:`main`.

Every command is a thin layer over the library, defined in the module of its group (``_local``,
``_migrate``, ``_partitions``, ``_seed``, ``_lint``, ``_serve``, ``_rollup``); what they share --
output, options, exit codes (:data:`~aiaas_db.cli._common.EXIT_CODES`), DSN resolution, the run
wrapper -- lives in :mod:`aiaas_db.cli._common`. Heavy libraries (sqlglot, duckdb, uvicorn) are
imported inside the commands, not at import time.
"""

from __future__ import annotations

import click

from aiaas_db.cli._common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from aiaas_db.cli._lint import docs_command, lint_command
from aiaas_db.cli._local import local
from aiaas_db.cli._migrate import migrate
from aiaas_db.cli._partitions import partitions
from aiaas_db.cli._rollup import rollup
from aiaas_db.cli._seed import purge_command, seed_command
from aiaas_db.cli._serve import serve

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aiaas-db", prog_name="aiaas-db")
def cli() -> None:
    """aiaas database tooling: guarded PostgreSQL migrations and a local PostgreSQL.

    Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 a change set/check/dry run/drill failed,
    4 dirty or failed head (recover first), 5 refused by a guardrail, 6 lock timeout,
    7 database unreachable or no PostgreSQL binaries, 8 pending sets (status --exit-code).
    """


for _command in (
    local,
    migrate,
    partitions,
    seed_command,
    purge_command,
    lint_command,
    docs_command,
    serve,
    rollup,
):
    cli.add_command(_command)


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
