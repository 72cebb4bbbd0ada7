"""``aiaas-infra validate|plan|apply|rollback|destroy|drift``: the spec against the account.

Exit codes: ``plan`` 0 no changes, 2 changes; ``drift`` 0 none, 2 minor, 3 major; a failed apply
6 (rolled back) or 7 (partial); see :class:`~aiaas_infra.cli._common.ExitCode` for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aiaas_infra.cli._common import (
    ExitCode,
    F,
    _confirm,
    _consoles,
    _emit_json,
    _Exit,
    _load,
    _output_option,
    _provider,
    _spec_option,
    _state_option,
    _store,
)

__all__: list[str] = []


@click.command()
@_spec_option()
def validate(spec_path: Path) -> None:
    """Check a spec offline and list every problem."""
    spec = _load(spec_path)
    click.echo(f"{spec_path}: valid ({len(spec.environments)} environments)")


@click.command("plan")
@_spec_option()
@_state_option
@_output_option("table", "json")
def plan_cmd(spec_path: Path, state_location: str | None, output: str) -> None:
    """Show what apply would change. Exit 0: no changes, 2: changes."""
    from aiaas_infra.cli._output import render_plan  # noqa: PLC0415
    from aiaas_infra.provision._plan import plan  # noqa: PLC0415

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
    from aiaas_infra.cli._output import ProgressDisplay, render_apply, render_plan  # noqa: PLC0415
    from aiaas_infra.provision._apply import apply  # noqa: PLC0415

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


@click.command("apply")
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
    from aiaas_infra.provision._plan import plan  # noqa: PLC0415

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


@click.command()
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
    from aiaas_infra.provision._plan import rollback_plan  # noqa: PLC0415

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


@click.command()
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
    from aiaas_infra.provision._plan import plan  # noqa: PLC0415

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


@click.command()
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
    from aiaas_infra.cli._output import render_drift  # noqa: PLC0415
    from aiaas_infra.provision._drift import detect_drift  # noqa: PLC0415

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
