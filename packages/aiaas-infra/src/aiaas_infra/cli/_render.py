"""``aiaas-infra render``: write the GitOps tree for a spec, validated strictly.

Validation is on by default: core kinds against kubernetes-validate's schemas (the ``validate``
extra), ArgoCD and SealedSecret objects against the CRDs packaged with aiaas-infra, or those in
``--crds DIR`` / ``AIAAS_INFRA_CRDS``.

Exit codes: 0 written; 4 (INVALID) the spec is invalid or a rendered object fails validation
(nothing is written then); 64 (USAGE) bad usage, e.g. validation without kubernetes-validate
installed; a bundle item not sealed yet in ``--sealed`` is reported with the command that seals
it.
"""

from __future__ import annotations

import os
from pathlib import Path

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

CRDS_ENV = "AIAAS_INFRA_CRDS"


@click.command("render")
@_spec_option()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write the GitOps tree into (files no longer rendered are removed).",
)
@click.option(
    "--sealed",
    "sealed_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The sealed store; without it no SealedSecret is rendered.",
)
@click.option(
    "--crds",
    "crds_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Directory of the ArgoCD and SealedSecret CRDs to validate with "
    f"[default: {CRDS_ENV}, else the CRDs packaged with aiaas-infra].",
)
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="Validate every object strictly before writing.",
)
@_output_option("table", "json")
def render_cmd(
    *,
    spec_path: Path,
    out_dir: Path,
    sealed_path: Path | None,
    crds_dir: Path | None,
    validate: bool,
    output: str,
) -> None:
    """Render the GitOps tree (namespaces, RBAC, policies, secrets, ArgoCD, services,
    monitoring) for every environment."""
    from aiaas_infra.cluster._gitops import render_platform  # noqa: PLC0415

    out, err = _consoles()
    if crds_dir is None and os.environ.get(CRDS_ENV):
        crds_dir = Path(os.environ[CRDS_ENV])
    spec = _load(spec_path)
    sealed = None
    if sealed_path is not None:
        from aiaas_infra.secrets._secrets import SealedStore  # noqa: PLC0415

        sealed = SealedStore.load(sealed_path)
    rendered = render_platform(spec, sealed=sealed)
    problems: list[str] = []
    if validate:
        from aiaas_infra.cluster._validate import packaged_crds_dir, validate_objects  # noqa: PLC0415

        try:
            found = validate_objects(
                rendered.objects,
                crds_dir=crds_dir if crds_dir is not None else packaged_crds_dir(),
                kubernetes_version=spec.cluster.kubernetes_version,
            )
        except (ImportError, ValueError) as exc:  # no kubernetes-validate; no CRDs; old version
            raise click.UsageError(f"cannot validate: {exc} (or pass --no-validate)") from None
        problems = [str(p) for p in found]
    if not problems:
        rendered.write(out_dir)
    if output == "json":
        _emit_json(
            {
                "out": str(out_dir),
                "written": not problems,
                "validated": validate,
                "sealed": sealed is not None,
                "objects": len(rendered.objects),
                "kinds": rendered.kinds(),
                "files": sorted(rendered.files),
                "problems": problems,
            }
        )
    else:
        for problem in problems:
            err.print(f"[red]invalid[/] {problem}", markup=True, highlight=False)
        if not problems:
            kinds = ", ".join(f"{n} {k}" for k, n in rendered.kinds().items())
            out.print(
                f"wrote {len(rendered.files)} files ({len(rendered.objects)} objects: {kinds}) "
                f"to {out_dir}",
                markup=False,
                highlight=False,
            )
        if sealed is None:
            err.print("no --sealed store: SealedSecrets were not rendered", markup=False)
    if problems:
        raise _Exit(ExitCode.INVALID)
