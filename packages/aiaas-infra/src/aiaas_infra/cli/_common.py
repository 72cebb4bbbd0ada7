"""What every ``aiaas-infra`` command shares: exit codes, options, consoles, loading, output.

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
from collections.abc import Callable
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
    from aiaas_infra.provision._state import open_state  # noqa: PLC0415

    where = location or os.environ.get("AIAAS_INFRA_STATE")
    if not where:
        base = spec_path.resolve().parent if spec_path is not None else Path.cwd()
        where = str(base / ".aiaas-infra")
    return open_state(where)


def _load(spec_path: Path) -> Any:
    from aiaas_infra.spec._loader import load_spec  # noqa: PLC0415

    return load_spec(spec_path)


def _provider() -> Any:
    from aiaas_infra.provision._provider import LinodeProvider  # noqa: PLC0415

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
