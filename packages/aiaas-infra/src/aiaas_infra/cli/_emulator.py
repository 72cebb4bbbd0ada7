"""``aiaas-infra emulator``: run the Linode API v4 emulator (and its S3 endpoint) from a shell."""

from __future__ import annotations

import sys

import click

__all__: list[str] = []


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--ready-delay",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds until clusters, nodes and databases are ready.",
)
@click.option(
    "--kubeconfig-delay",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds until a new cluster's kubeconfig is available.",
)
@click.option("--token", default=None, help="Accept only this token [default: any].")
def emulator(
    port: int, host: str, ready_delay: float, kubeconfig_delay: float, token: str | None
) -> None:
    """Run the Linode API v4 emulator, and its S3 endpoint, until interrupted.

    Point the CLI at it with the two lines it prints first (LINODE_TOKEN, LINODE_API_URL): S3
    calls follow LINODE_API_URL to the emulator. SIGINT (Ctrl-C) or SIGTERM stops it, at any
    moment, with exit 0; a port it cannot listen on exits 1 with one line
    (EMULATOR_PORT_IN_USE, EMULATOR_LISTEN_FAILED)."""
    import errno  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    from aiaas_core import AiaasError  # noqa: PLC0415
    from aiaas_infra.testing._linode._emulator import LinodeEmulator  # noqa: PLC0415

    # A flag, not an exception: a signal during start, the banner or stop cannot abort them.
    # SIGINT stays ignored where the caller ignores it (a background job of a shell).
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    previous = {
        sig: signal.signal(sig, request_stop)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        em = LinodeEmulator(
            port=port,
            host=host,
            token=token,
            ready_delay=ready_delay,
            kubeconfig_delay=kubeconfig_delay,
            database_delay=ready_delay,
        )
        try:
            em.start()
        except OSError as exc:
            where = f"{host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise AiaasError(
                    f"cannot listen on {where}: the port is in use; stop what holds it or pick "
                    "another with --port (--port 0 picks a free one)",
                    code="EMULATOR_PORT_IN_USE",
                ) from None
            raise AiaasError(
                f"cannot listen on {where}: {exc.strerror or exc}; check --host and --port",
                code="EMULATOR_LISTEN_FAILED",
            ) from None
        try:
            click.echo(
                f"Linode API emulator on {em.url} (S3 on {em.root}); Ctrl-C stops it", err=True
            )
            for key, value in em.env().items():
                click.echo(f"export {key}={value}")
            sys.stdout.flush()
            while not stop_requested:
                time.sleep(0.1)
        finally:
            em.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
