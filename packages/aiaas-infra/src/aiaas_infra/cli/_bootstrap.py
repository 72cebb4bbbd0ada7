"""``aiaas-infra bootstrap``: server-side apply the rendered platform to the cluster.

Exit codes: 0 done (or a dry run / no-op found nothing to change), 2 a ``--dry-run`` found
changes, 1 the cluster refused an operation (what was done before it is printed), 4 the spec
or the sealed store is invalid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aiaas_infra.cli._common import (
    ExitCode,
    _consoles,
    _emit_json,
    _Exit,
    _load,
    _output_option,
    _spec_option,
)

__all__: list[str] = []


def _print_report(report: Any, out: Any) -> None:
    from rich.table import Table  # noqa: PLC0415

    changed = [r for r in report.results if r.action != "unchanged"]
    if changed:
        table = Table(title="changes" + (" (dry run)" if report.dry_run else ""))
        for column in ("kind", "namespace", "name", "action"):
            table.add_column(column)
        for r in changed:
            table.add_row(r.kind, r.namespace or "-", r.name, r.action)
        out.print(table)
    summary = ", ".join(f"{n} {a}" for a, n in report.to_dict()["summary"].items()) or "nothing"
    out.print(f"{summary}; {report.api_calls} API calls", highlight=False)


@click.command("bootstrap")
@_spec_option()
@click.option(
    "--kubeconfig",
    "kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The cluster's kubeconfig (from `aiaas-infra apply`).",
)
@click.option(
    "--sealed",
    "sealed_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The sealed store [default: sealed-secrets.yaml beside the spec, if there].",
)
@click.option(
    "--prune/--no-prune",
    default=True,
    show_default=True,
    help="Delete objects aiaas applied before that the spec no longer renders.",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@_output_option("table", "json")
def bootstrap_cmd(
    *,
    spec_path: Path,
    kubeconfig: Path,
    sealed_path: Path | None,
    prune: bool,
    dry_run: bool,
    output: str,
) -> None:
    """Apply namespaces, RBAC, policies, sealed secrets and apps to the cluster, in order."""
    import asyncio  # noqa: PLC0415

    from aiaas_infra.cluster._apply import BootstrapError, bootstrap  # noqa: PLC0415
    from aiaas_infra.secrets._secrets import SealedStore  # noqa: PLC0415

    spec = _load(spec_path)
    store_path = sealed_path or spec_path.resolve().parent / "sealed-secrets.yaml"
    if sealed_path is not None and not sealed_path.exists():
        raise click.UsageError(f"--sealed {sealed_path}: no such file")
    sealed = SealedStore.load(store_path) if store_path.exists() else None
    out, err = _consoles()

    async def run(progress: Any = None, task: Any = None) -> Any:
        def step(done: int, total: int, label: str) -> None:
            if progress is not None:
                progress.update(task, completed=done, total=total, description=label)

        return await bootstrap(
            spec, kubeconfig, sealed=sealed, prune=prune, dry_run=dry_run, on_progress=step
        )

    try:
        if output == "json":
            report = asyncio.run(run())
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            ) as progress:
                task = progress.add_task("listing live objects", total=None)
                report = asyncio.run(run(progress, task))
    except BootstrapError as exc:
        err.print(f"{exc.code}: {exc.message}", markup=False, highlight=False)
        for cause in exc.causes:
            err.print(f"  - {cause}", markup=False, highlight=False)
        if exc.report is not None:
            if output == "json":
                _emit_json({"error": exc.code, "message": exc.message, **exc.report.to_dict()})
            else:
                _print_report(exc.report, err)
        raise _Exit(ExitCode.ERROR) from None
    if output == "json":
        _emit_json(report.to_dict())
    else:
        _print_report(report, out)
    raise _Exit(ExitCode.CHANGES if dry_run and report.changed else ExitCode.OK)
