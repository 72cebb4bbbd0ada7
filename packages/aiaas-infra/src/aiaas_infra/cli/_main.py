"""``aiaas-infra``: plan, apply, drift, rollback, destroy and inspect state from a shell.

Exit codes (:class:`~aiaas_infra.cli._common.ExitCode`, stable for scripts and CI), the
environment it reads and the options every command shares live in :mod:`aiaas_infra.cli._common`;
each command group has its own module (``_provision``, ``_state``, ``_emulator``, ``_render``,
``_secrets``, ``_bootstrap``, ``_access``). This module only assembles the group and runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from aiaas_infra.cli._access import access_group, handoff_group
from aiaas_infra.cli._bootstrap import bootstrap_cmd
from aiaas_infra.cli._common import ExitCode, _consoles, _Exit
from aiaas_infra.cli._emulator import emulator
from aiaas_infra.cli._provision import apply_cmd, destroy, drift, plan_cmd, rollback, validate
from aiaas_infra.cli._render import render_cmd
from aiaas_infra.cli._secrets import secrets_group
from aiaas_infra.cli._state import state

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="aiaas-infra")
def cli() -> None:
    """Declare a platform's environments in one file; plan, apply, detect drift and roll back
    on Akamai Linode."""


# Heavy imports (kubernetes_asyncio, uvicorn, cryptography) stay inside the commands.
for _command in (
    validate,
    plan_cmd,
    apply_cmd,
    rollback,
    destroy,
    drift,
    state,
    emulator,
    render_cmd,
    secrets_group,
    bootstrap_cmd,
    access_group,
    handoff_group,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see :class:`ExitCode`)."""
    from aiaas_core import AiaasError, ConflictError, NotFoundError  # noqa: PLC0415
    from aiaas_infra._errors import PreflightError, SpecError, StateLockedError  # noqa: PLC0415
    from aiaas_infra.cli._output import render_apply, render_problems  # noqa: PLC0415
    from aiaas_infra.provision._apply import ApplyError  # noqa: PLC0415
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
