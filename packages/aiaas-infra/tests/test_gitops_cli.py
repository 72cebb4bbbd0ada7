"""``aiaas-infra render``: writes the tree, validates it, and fails cleanly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from gitops_support import sealed_store

from aiaas_infra import ExitCode, PlatformSpec, example_spec_path, render_platform
from aiaas_infra.cli._main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_writes_the_tree(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, crds: Path, spec: PlatformSpec
) -> None:
    out_dir = tmp_path / "gitops"
    spec_path = str(example_spec_path())
    code, out, err = run(
        capsys, "render", "--spec", spec_path, "--out", str(out_dir), "--crds", str(crds)
    )
    assert code == ExitCode.OK, err
    expected = render_platform(spec)
    assert f"wrote {len(expected.files)} files ({len(expected.objects)} objects:" in out
    assert len(expected.objects) >= 100  # the example platform: four environments and services
    assert "SealedSecrets were not rendered" in err
    for rel, text in expected.files.items():
        assert (out_dir / rel).read_text() == text


def test_render_json_with_a_sealed_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, crds: Path, spec: PlatformSpec
) -> None:
    store_path = tmp_path / "sealed-secrets.yaml"
    sealed_store(spec).save(store_path)
    code, out, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(tmp_path / "gitops"),
        "--sealed",
        str(store_path),
        "--crds",
        str(crds),
        "--output",
        "json",
    )
    assert code == ExitCode.OK, err
    report = json.loads(out)
    assert report["written"] is True
    assert report["validated"] is True
    assert report["sealed"] is True
    assert report["kinds"]["SealedSecret"] == 4
    assert report["problems"] == []
    assert "environments/production/baseline/sealed-secrets.yaml" in report["files"]
    assert (tmp_path / "gitops" / "environments/production/baseline/sealed-secrets.yaml").is_file()


def test_crds_from_the_environment_and_no_validate(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    crds: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIAAS_INFRA_CRDS", str(crds))
    code, out, _ = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(tmp_path / "a"),
        "-o",
        "json",
    )
    assert code == ExitCode.OK
    assert json.loads(out)["validated"] is True
    monkeypatch.delenv("AIAAS_INFRA_CRDS")
    code, out, _ = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(tmp_path / "b"),
        "--no-validate",
        "-o",
        "json",
    )
    assert code == ExitCode.OK
    assert json.loads(out)["validated"] is False


def test_render_validates_with_the_packaged_crds_by_default(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    spec: PlatformSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIAAS_INFRA_CRDS", raising=False)
    store_path = tmp_path / "sealed-secrets.yaml"
    store = sealed_store(spec)
    store.save(store_path)
    out_dir = tmp_path / "gitops"
    code, out, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(out_dir),
        "--sealed",
        str(store_path),
        "-o",
        "json",
    )
    assert code == ExitCode.OK, err
    report = json.loads(out)
    assert report["validated"] is True
    assert report["written"] is True
    assert report["problems"] == []
    # every ArgoCD and SealedSecret object was rendered and validated
    assert report["kinds"] == render_platform(spec, sealed=store).kinds()
    assert {"AppProject", "ApplicationSet", "SealedSecret"} <= set(report["kinds"])
    assert (out_dir / "environments/production/baseline/sealed-secrets.yaml").is_file()


def _stricter_crds(crds: Path, into: Path) -> Path:
    """A copy of ``crds`` whose AppProject schema no longer knows ``orphanedResources``."""
    into.mkdir()
    for path in crds.glob("*.yaml"):
        shutil.copy(path, into / path.name)
    project = into / "argocd-appproject-crd.yaml"
    doc = yaml.safe_load(project.read_text())
    for version in doc["spec"]["versions"]:
        spec_props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        del spec_props["orphanedResources"]
    project.write_text(yaml.safe_dump(doc))
    return into


def test_crds_option_overrides_the_packaged_crds(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    crds: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stricter = _stricter_crds(crds, tmp_path / "crds")
    out_dir = tmp_path / "gitops"
    code, _, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(out_dir),
        "--crds",
        str(stricter),
    )
    assert code == ExitCode.INVALID
    assert "invalid AppProject argocd/aiaas-production at spec:" in err
    assert "'orphanedResources' was unexpected" in err
    assert not out_dir.exists()
    # the environment variable overrides too; --crds wins over it
    monkeypatch.setenv("AIAAS_INFRA_CRDS", str(stricter))
    code, _, err = run(capsys, "render", "--spec", str(example_spec_path()), "--out", str(out_dir))
    assert code == ExitCode.INVALID
    assert "'orphanedResources' was unexpected" in err
    code, _, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(out_dir),
        "--crds",
        str(crds),
    )
    assert code == ExitCode.OK, err


def test_invalid_objects_are_not_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, crds: Path
) -> None:
    only_sealed = tmp_path / "crds"
    only_sealed.mkdir()
    shutil.copy(crds / "sealed-secrets-crd.yaml", only_sealed)
    out_dir = tmp_path / "gitops"
    code, out, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(out_dir),
        "--crds",
        str(only_sealed),
    )
    assert code == ExitCode.INVALID
    assert "no schema for argoproj.io/v1alpha1 AppProject" in err
    assert not out_dir.exists()
    code, out, _ = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(out_dir),
        "--crds",
        str(only_sealed),
        "-o",
        "json",
    )
    assert code == ExitCode.INVALID
    assert json.loads(out)["written"] is False


def test_invalid_spec_and_unsealed_items(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, crds: Path, spec: PlatformSpec
) -> None:
    bad = tmp_path / "platform.yaml"
    bad.write_text(
        example_spec_path().read_text().replace("retention_days: 30", "retention_days: 7")
    )
    code, _, err = run(
        capsys, "render", "--spec", str(bad), "--out", str(tmp_path / "x"), "--no-validate"
    )
    assert code == ExitCode.INVALID
    assert "observability.retention_days" in err
    store_path = tmp_path / "partial.yaml"
    sealed_store(spec, skip=("production", "database-url")).save(store_path)
    code, _, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(tmp_path / "y"),
        "--sealed",
        str(store_path),
        "--no-validate",
    )
    assert code == ExitCode.USAGE
    assert "production: not sealed yet: database-url" in err


def test_validation_that_cannot_run_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "crds"
    empty.mkdir()
    code, _, err = run(
        capsys,
        "render",
        "--spec",
        str(example_spec_path()),
        "--out",
        str(tmp_path / "o"),
        "--crds",
        str(empty),
    )
    assert code == ExitCode.USAGE
    assert "cannot validate: no CustomResourceDefinition with a schema found in" in err
    assert "--no-validate" in err
    assert not (tmp_path / "o").exists()
