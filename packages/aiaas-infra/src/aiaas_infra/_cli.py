"""``aiaas-infra``: plan, apply, drift, rollback, destroy and inspect state from a shell.

Exit codes (:class:`ExitCode`) are stable, for scripts and CI::

    0  OK: done; plan found no changes; drift none
    1  ERROR: an unexpected or Linode API error; ``emulator`` cannot listen on its port
    2  CHANGES: plan found changes; drift found minor drift
    3  DRIFT_MAJOR: drift found major drift
    4  INVALID: the spec is invalid (every problem is listed)
    5  PREFLIGHT: preflight failed; nothing was created
    6  ROLLED_BACK: apply failed and was rolled back cleanly
    7  PARTIAL: apply failed and the rollback could not undo everything
    8  LOCKED: the state is locked by another run, or changed since the plan
    9  ABORTED: not confirmed (use --yes for automation)
    64 USAGE: bad command-line usage
    78 VERSION_SKEW: the installed aiaas packages are outside each other's declared version
       ranges (checked before any command runs)

The Linode token comes from ``LINODE_TOKEN``; ``LINODE_API_URL`` points elsewhere (the
emulator, whose root then also serves the S3 calls). State lives in ``--state`` (a directory or
``s3://bucket/prefix``), by default ``AIAAS_INFRA_STATE`` or ``.aiaas-infra/`` beside the spec.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["ExitCode"]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    CHANGES = 2
    DRIFT_MAJOR = 3
    INVALID = 4
    PREFLIGHT = 5
    ROLLED_BACK = 6
    PARTIAL = 7
    LOCKED = 8
    ABORTED = 9
    USAGE = 64
    VERSION_SKEW = 78  # aiaas_telemetry.EXIT_VERSION_SKEW: sysexits' EX_CONFIG


class _Exit(Exception):  # noqa: N818 -- control flow, carries an exit code
    def __init__(self, code: ExitCode) -> None:
        self.code = code


def _consoles() -> tuple[Any, Any]:
    from rich.console import Console  # noqa: PLC0415

    out, err = Console(), Console(stderr=True)
    for console in (out, err):
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = 160  # logs and pipes: do not wrap addresses at 80 columns
    return out, err


def _spec_option(required: bool = True) -> Callable[[F], F]:
    return click.option(
        "--spec",
        "spec_path",
        type=click.Path(dir_okay=False, path_type=Path),
        required=required,
        help="The platform spec (platform.yaml).",
    )


def _state_option(func: F) -> F:
    return click.option(
        "--state",
        "state_location",
        default=None,
        help="State directory or s3://bucket/prefix [default: AIAAS_INFRA_STATE or .aiaas-infra/ "
        "beside the spec].",
    )(func)


def _output_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="How to print the result (json is for machines).",
    )


def _store(location: str | None, spec_path: Path | None) -> Any:
    from aiaas_infra._state import open_state  # noqa: PLC0415

    where = location or os.environ.get("AIAAS_INFRA_STATE")
    if not where:
        base = spec_path.resolve().parent if spec_path is not None else Path.cwd()
        where = str(base / ".aiaas-infra")
    return open_state(where)


def _load(spec_path: Path) -> Any:
    from aiaas_infra._spec import load_spec  # noqa: PLC0415

    return load_spec(spec_path)


def _provider() -> Any:
    from aiaas_infra._provider import LinodeProvider  # noqa: PLC0415

    return LinodeProvider.from_env()


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _confirm(yes: bool, question: str, err: Any) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        err.print("[red]refusing to change anything without confirmation:[/] pass --yes")
        raise _Exit(ExitCode.ABORTED)
    if not click.confirm(question, default=False, err=True):
        err.print("aborted; nothing was changed")
        raise _Exit(ExitCode.ABORTED)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aiaas-infra")
def cli() -> None:
    """Declare a platform's environments in one file; plan, apply, detect drift and roll back
    on Akamai Linode."""


@cli.command()
@_spec_option()
def validate(spec_path: Path) -> None:
    """Check a spec offline and list every problem."""
    spec = _load(spec_path)
    click.echo(f"{spec_path}: valid ({len(spec.environments)} environments)")


@cli.command("plan")
@_spec_option()
@_state_option
@_output_option("table", "json")
def plan_cmd(spec_path: Path, state_location: str | None, output: str) -> None:
    """Show what apply would change. Exit 0: no changes, 2: changes."""
    from aiaas_infra._plan import plan  # noqa: PLC0415
    from aiaas_infra._render import render_plan  # noqa: PLC0415

    out, _err = _consoles()
    spec = _load(spec_path)
    store = _store(state_location, spec_path)
    result = plan(spec, _provider(), store.latest())
    if output == "json":
        _emit_json(result.to_dict())
    else:
        render_plan(result, out)
    raise _Exit(ExitCode.CHANGES if result.has_changes else ExitCode.OK)


def _run_apply(
    plan_obj: Any,
    store: Any,
    *,
    yes: bool,
    output: str,
    concurrency: int,
    preflight: bool,
    timeout: float | None,
) -> None:
    from aiaas_infra._apply import apply  # noqa: PLC0415
    from aiaas_infra._render import ProgressDisplay, render_apply, render_plan  # noqa: PLC0415

    out, err = _consoles()
    provider = _provider()
    if output != "json":
        render_plan(plan_obj, out)
    if not plan_obj.has_changes:
        result = apply(plan_obj, provider, store=store, run_preflight=False)
        if output == "json":
            _emit_json(result.to_dict())
        raise _Exit(ExitCode.OK)
    _confirm(yes, "Apply these changes?", err)
    with ProgressDisplay(err, sum(1 for c in plan_obj.changes if c.via is None)) as progress:
        result = apply(
            plan_obj,
            provider,
            store=store,
            concurrency=concurrency,
            run_preflight=preflight,
            readiness_timeout=timeout,
            on_event=progress,
        )
    if output == "json":
        _emit_json(result.to_dict())
    else:
        render_apply(result, out)


def _apply_options(func: F) -> F:
    for option in (
        click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (automation)."),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 32),
            default=4,
            show_default=True,
            help="Steps run at once.",
        ),
        click.option(
            "--no-preflight", is_flag=True, help="Skip the preflight checks (not recommended)."
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(1),
            default=None,
            help="Readiness timeout per resource, seconds [default: 1800].",
        ),
    ):
        func = option(func)
    return func


@cli.command("apply")
@_spec_option()
@_state_option
@_apply_options
@_output_option("table", "json")
def apply_cmd(
    *,
    spec_path: Path,
    state_location: str | None,
    yes: bool,
    concurrency: int,
    no_preflight: bool,
    timeout: float | None,
    output: str,
) -> None:
    """Plan, confirm, then apply. A failed run is rolled back."""
    from aiaas_infra._plan import plan  # noqa: PLC0415

    spec = _load(spec_path)
    store = _store(state_location, spec_path)
    result = plan(spec, _provider(), store.latest())
    _run_apply(
        result,
        store,
        yes=yes,
        output=output,
        concurrency=concurrency,
        preflight=not no_preflight,
        timeout=timeout,
    )


@cli.command()
@_spec_option(required=False)
@_state_option
@click.option("--to", "to", required=True, help="The snapshot to return to (see `state list`).")
@_apply_options
@_output_option("table", "json")
def rollback(
    *,
    spec_path: Path | None,
    state_location: str | None,
    to: str,
    yes: bool,
    concurrency: int,
    no_preflight: bool,
    timeout: float | None,
    output: str,
) -> None:
    """Plan back to a known-good snapshot and apply it."""
    from aiaas_infra._plan import rollback_plan  # noqa: PLC0415

    store = _store(state_location, spec_path)
    result = rollback_plan(store, _provider(), to)
    _run_apply(
        result,
        store,
        yes=yes,
        output=output,
        concurrency=concurrency,
        preflight=not no_preflight,
        timeout=timeout,
    )


@cli.command()
@_spec_option()
@_state_option
@_apply_options
@_output_option("table", "json")
def destroy(
    *,
    spec_path: Path,
    state_location: str | None,
    yes: bool,
    concurrency: int,
    no_preflight: bool,
    timeout: float | None,
    output: str,
) -> None:
    """Delete every resource the platform manages."""
    from aiaas_infra._plan import plan  # noqa: PLC0415

    spec = _load(spec_path)
    store = _store(state_location, spec_path)
    result = plan(spec, _provider(), store.latest(), destroy=True)
    _run_apply(
        result,
        store,
        yes=yes,
        output=output,
        concurrency=concurrency,
        preflight=not no_preflight,
        timeout=timeout,
    )


@cli.command()
@_spec_option()
@_state_option
@_output_option("table", "json", "markdown")
@click.option("--check-lifecycle", is_flag=True, help="Also read bucket lifecycle rules over S3.")
@click.option(
    "--no-record", is_flag=True, help="Do not store the report or move environment statuses."
)
def drift(
    spec_path: Path, state_location: str | None, output: str, check_lifecycle: bool, no_record: bool
) -> None:
    """Compare live resources with the last apply. Exit 0: none, 2: minor, 3: major."""
    from aiaas_infra._drift import detect_drift  # noqa: PLC0415
    from aiaas_infra._render import render_drift  # noqa: PLC0415

    out, _err = _consoles()
    spec = _load(spec_path)
    store = _store(state_location, spec_path)
    report = detect_drift(
        spec, _provider(), store=store, check_lifecycle=check_lifecycle, record=not no_record
    )
    if output == "json":
        click.echo(report.to_json())
    elif output == "markdown":
        click.echo(report.to_markdown(), nl=False)
    else:
        render_drift(report, out)
    raise _Exit(
        {"none": ExitCode.OK, "minor": ExitCode.CHANGES, "major": ExitCode.DRIFT_MAJOR}[
            report.level
        ]
    )


@cli.group()
def state() -> None:
    """Inspect state snapshots and the lock."""


@state.command("list")
@_spec_option(required=False)
@_state_option
@_output_option("table", "json")
def state_list(spec_path: Path | None, state_location: str | None, output: str) -> None:
    """List the kept snapshots (newest last)."""
    import attrs  # noqa: PLC0415

    from aiaas_infra._render import render_snapshots  # noqa: PLC0415

    out, _err = _consoles()
    infos = _store(state_location, spec_path).list()
    if output == "json":
        _emit_json([attrs.asdict(i) for i in infos])
    else:
        render_snapshots(infos, out)


@state.command("show")
@click.argument("snapshot", default="latest")
@_spec_option(required=False)
@_state_option
@_output_option("table", "json")
def state_show(
    snapshot: str, spec_path: Path | None, state_location: str | None, output: str
) -> None:
    """Show one snapshot (default: the latest). Secrets appear only as fingerprints."""
    from aiaas_infra._render import render_snapshot  # noqa: PLC0415

    out, _err = _consoles()
    snap = _store(state_location, spec_path).get(snapshot)
    if output == "json":
        click.echo(snap.to_json().decode())
    else:
        render_snapshot(snap, out)


@state.command("unlock")
@_spec_option(required=False)
@_state_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def state_unlock(spec_path: Path | None, state_location: str | None, yes: bool) -> None:
    """Remove a lock left by a run that died."""
    _out, err = _consoles()
    store = _store(state_location, spec_path)
    info = store.lock_info()
    if info is None:
        err.print("the state is not locked")
        return
    _confirm(
        yes,
        f"Remove the lock held by {info.holder} (run {info.run_id}) since {info.acquired_at}?",
        err,
    )
    store.force_unlock()
    err.print("unlocked")


@cli.command()
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
    from aiaas_infra._emulator import LinodeEmulator  # noqa: PLC0415

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


# --- command groups defined in their own modules ------------------------------------------------
# They import this module's helpers, so they are registered from a function: the import cycle is
# then resolved at run time, and type checkers see the commands' types. Heavy imports
# (kubernetes_asyncio, uvicorn, cryptography) stay inside the commands.


def _register_commands() -> None:
    from aiaas_infra._access_cli import access_group, handoff_group  # noqa: PLC0415
    from aiaas_infra._bootstrap_cli import bootstrap_cmd  # noqa: PLC0415
    from aiaas_infra._cli_render import render_cmd  # noqa: PLC0415
    from aiaas_infra._secrets_cli import secrets_group  # noqa: PLC0415

    for command in (render_cmd, secrets_group, bootstrap_cmd, access_group, handoff_group):
        cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see :class:`ExitCode`)."""
    from aiaas_core import AiaasError, ConflictError, NotFoundError  # noqa: PLC0415
    from aiaas_infra._errors import (  # noqa: PLC0415
        ApplyError,
        PreflightError,
        SpecError,
        StateLockedError,
    )
    from aiaas_infra._render import render_apply, render_problems  # noqa: PLC0415
    from aiaas_telemetry import check_cli_compatibility  # noqa: PLC0415

    if check_cli_compatibility("aiaas-infra") is not None:
        return int(ExitCode.VERSION_SKEW)
    _out, err = _consoles()
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="aiaas-infra",
            standalone_mode=False,
        )
    except _Exit as done:
        return int(done.code)
    except click.exceptions.Exit as done:  # --help, --version
        return int(done.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        return int(ExitCode.ABORTED)
    except click.UsageError as exc:
        exc.show()
        return int(ExitCode.USAGE)
    except SpecError as exc:
        err.print(exc.message, markup=False, highlight=False)
        return int(ExitCode.INVALID)
    except PreflightError as exc:
        render_problems(exc.problems, err)
        return int(ExitCode.PREFLIGHT)
    except ApplyError as exc:
        render_apply(exc.result, err)
        return int(
            ExitCode.ROLLED_BACK if exc.result.outcome == "rolled_back" else ExitCode.PARTIAL
        )
    except (StateLockedError, ConflictError) as exc:
        err.print(exc.message, markup=False, highlight=False)
        return int(ExitCode.LOCKED)
    except NotFoundError as exc:
        err.print(exc.message, markup=False, highlight=False)
        return int(ExitCode.USAGE)
    except AiaasError as exc:
        err.print(f"{exc.code}: {exc.message}", markup=False, highlight=False)
        return int(ExitCode.ERROR)
    return int(ExitCode.OK)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
