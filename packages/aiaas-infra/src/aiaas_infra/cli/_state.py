"""``aiaas-infra state list|show|unlock``: inspect state snapshots and the lock."""

from __future__ import annotations

from pathlib import Path

import click

from aiaas_infra.cli._common import (
    _confirm,
    _consoles,
    _emit_json,
    _output_option,
    _spec_option,
    _state_option,
    _store,
)

__all__: list[str] = []


@click.group()
def state() -> None:
    """Inspect state snapshots and the lock."""


@state.command("list")
@_spec_option(required=False)
@_state_option
@_output_option("table", "json")
def state_list(spec_path: Path | None, state_location: str | None, output: str) -> None:
    """List the kept snapshots (newest last)."""
    import attrs  # noqa: PLC0415

    from aiaas_infra.cli._output import render_snapshots  # noqa: PLC0415

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
    from aiaas_infra.cli._output import render_snapshot  # noqa: PLC0415

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
