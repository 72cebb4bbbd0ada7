"""Strict validation: core kinds with kubernetes-validate's schemas, ArgoCD and SealedSecret
objects with the CRDs packaged with aiaas-infra (or another directory), PrometheusRules, metadata
and references."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from gitops_support import gpu_spec, sealed_store

from aiaas_infra import (
    ManifestProblem,
    ManifestValidator,
    PlatformSpec,
    packaged_crds_dir,
    render_platform,
    validate_objects,
)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def validator(crds: Path) -> ManifestValidator:
    return ManifestValidator(crds_dir=crds, kubernetes_version="1.31")


@pytest.fixture(scope="module")
def objects(spec: PlatformSpec) -> tuple[Obj, ...]:
    full = gpu_spec(spec)
    return render_platform(full, sealed=sealed_store(full)).objects


def pick(objects: tuple[Obj, ...], kind: str, ns: str | None = "env-production") -> Obj:
    for obj in objects:
        if obj["kind"] == kind and (ns is None or obj["metadata"].get("namespace") == ns):
            return copy.deepcopy(obj)
    raise AssertionError(kind)


def messages(problems: list[ManifestProblem]) -> list[str]:
    return [str(p) for p in problems]


def test_the_validator_knows_the_fixture_crds(validator: ManifestValidator) -> None:
    assert validator.custom_kinds == (
        ("argoproj.io/v1alpha1", "AppProject"),
        ("argoproj.io/v1alpha1", "Application"),
        ("argoproj.io/v1alpha1", "ApplicationSet"),
        ("bitnami.com/v1alpha1", "SealedSecret"),
    )


def test_a_rendered_set_is_valid(validator: ManifestValidator, objects: tuple[Obj, ...]) -> None:
    assert validator.validate_all(objects) == []


def test_unknown_fields_in_core_kinds_are_errors(
    validator: ManifestValidator, objects: tuple[Obj, ...]
) -> None:
    deploy = pick(objects, "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    deploy["spec"]["replicas"] = "two"
    found = validator.validate(deploy)
    assert [(p.path, p.object) for p in found] == [
        ("spec.replicas", "Deployment env-production/embeddings"),
        ("spec.template.spec.containers[0]", "Deployment env-production/embeddings"),
    ]
    assert "'imagePullPolicyy' was unexpected" in found[1].message
    assert str(found[0]).startswith("Deployment env-production/embeddings at spec.replicas: ")


def test_wrong_types_in_network_policies(
    validator: ManifestValidator, objects: tuple[Obj, ...]
) -> None:
    netpol = pick(objects, "NetworkPolicy")
    netpol["spec"]["policyTypes"] = "Ingress"
    assert [p.path for p in validator.validate(netpol)] == ["spec.policyTypes"]


def test_custom_resources_are_checked_strictly_against_their_crds(
    validator: ManifestValidator, objects: tuple[Obj, ...]
) -> None:
    appset = pick(objects, "ApplicationSet", "argocd")
    appset["spec"]["template"]["spec"]["syncPolicy"]["automatedd"] = {}
    project = pick(objects, "AppProject", "argocd")
    project["spec"]["destinations"] = "everywhere"
    sealed = pick(objects, "SealedSecret")
    sealed["spec"]["encryptedData"]["api-token"] = 42
    del sealed["metadata"]["name"]
    found = validator.validate_all([appset, project, sealed])
    paths = {(p.object.split()[0], p.path) for p in found}
    assert ("ApplicationSet", "spec.template.spec.syncPolicy") in paths
    assert ("AppProject", "spec.destinations") in paths
    assert ("SealedSecret", "spec.encryptedData.api-token") in paths
    assert ("SealedSecret", "metadata") in paths  # name is required


def test_api_version_and_kind_must_match_the_crd(validator: ManifestValidator) -> None:
    obj = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "x"}}
    found = messages(validator.validate(obj))
    assert any("'spec' is a required property" in m for m in found)
    assert messages(validator.validate({"kind": "Pod"})) == [
        "Pod ?: apiVersion and kind are required strings"
    ]


def test_prometheus_rules_have_a_schema(
    validator: ManifestValidator, objects: tuple[Obj, ...]
) -> None:
    rule = pick(objects, "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "soon"
    rule["spec"]["groups"][1]["rules"].append({"expr": "up == 0"})  # neither alert nor record
    found = validator.validate(rule)
    assert {p.path for p in found} == {"spec.groups[1].rules[0].for", "spec.groups[1].rules[4]"}


def test_unknown_kinds_and_missing_crds_are_reported(objects: tuple[Obj, ...]) -> None:
    bare = ManifestValidator(crds_dir=None)
    assert bare.custom_kinds == ()
    found = bare.validate(pick(objects, "AppProject", "argocd"))
    assert [p.message for p in found] == [
        "no schema for argoproj.io/v1alpha1 AppProject: pass the directory of its "
        "CustomResourceDefinition (--crds)"
    ]
    core_unknown = {"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}
    assert "no schema for v1 Gizmo" in str(bare.validate(core_unknown)[0])


def test_metadata_is_checked(validator: ManifestValidator, objects: tuple[Obj, ...]) -> None:
    svc = pick(objects, "Service")
    svc["metadata"]["name"] = "Not_A_Label"
    svc["metadata"]["namespace"] = "Bad"
    svc["metadata"]["labels"]["bad key!"] = "x"
    svc["metadata"]["labels"]["ok"] = "not ok value"
    svc["metadata"]["annotations"] = {"-bad": "x"}
    found = {(p.path, p.message) for p in validator.validate(svc)}
    assert ("metadata.name", "'Not_A_Label' is not a valid name") in found
    assert ("metadata.namespace", "'Bad' is not a DNS label") in found
    assert ("metadata.labels", "'bad key!' is not a valid key") in found
    assert ("metadata.labels.ok", "'not ok value' is not a valid label value") in found
    assert ("metadata.annotations", "'-bad' is not a valid key") in found


def test_references_inside_the_set(validator: ManifestValidator, objects: tuple[Obj, ...]) -> None:
    binding = pick(objects, "RoleBinding")
    binding["roleRef"]["name"] = "missing"
    hpa = pick(objects, "HorizontalPodAutoscaler")
    hpa["spec"]["scaleTargetRef"]["name"] = "gone"
    deploy = pick(objects, "Deployment")
    deploy["spec"]["selector"]["matchLabels"]["extra"] = "x"
    svc = pick(objects, "Service")
    svc["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}
    pdb = pick(objects, "PodDisruptionBudget")
    pdb["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "nothing"}
    found = messages(validator.validate_all([binding, hpa, deploy, svc, pdb]))
    assert (
        "RoleBinding env-production/platform-engineer at roleRef.name: no Role 'missing' in "
        "env-production"
    ) in found
    assert (
        "HorizontalPodAutoscaler env-production/embeddings at spec.scaleTargetRef: no "
        "Deployment 'gone' in env-production"
    ) in found
    assert (
        "Deployment env-production/embeddings at spec.selector: does not match the pod "
        "template's labels"
    ) in found
    assert (
        "Service env-production/embeddings at spec.selector: selects no pods rendered in the set"
    ) in found
    assert (
        "PodDisruptionBudget env-production/embeddings at spec.selector: selects no pods "
        "rendered in the set"
    ) in found


def test_kubernetes_version_selection(objects: tuple[Obj, ...], crds: Path) -> None:
    deploy = pick(objects, "Deployment")
    # a version newer than any shipped uses the newest schemas kubernetes-validate has
    assert validate_objects([deploy], crds_dir=crds, kubernetes_version="9.99") == []
    with pytest.raises(ValueError, match=r"kubernetes-validate ships schemas for 1\.\d+ to"):
        validate_objects([deploy], kubernetes_version="1.2")


def test_a_crds_dir_without_crds_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.yaml").write_text("kind: ConfigMap\n")
    with pytest.raises(ValueError, match="no CustomResourceDefinition"):
        ManifestValidator(crds_dir=tmp_path)


def test_crds_are_read_from_any_directory(crds: Path, tmp_path: Path) -> None:
    shutil.copy(crds / "sealed-secrets-crd.yaml", tmp_path / "sealed.yml")
    only_sealed = ManifestValidator(crds_dir=tmp_path)
    assert only_sealed.custom_kinds == (("bitnami.com/v1alpha1", "SealedSecret"),)


def test_the_packaged_crds_are_the_default(objects: tuple[Obj, ...]) -> None:
    crds = packaged_crds_dir()
    assert sorted(p.name for p in crds.glob("*.yaml")) == [
        "argocd-application-crd.yaml",
        "argocd-applicationset-crd.yaml",
        "argocd-appproject-crd.yaml",
        "sealed-secrets-crd.yaml",
    ]
    # attribution and licence travel with them
    assert "37ee0097cf851bc2dd7665fc081bbce61a7e836e" in (crds / "README.md").read_text()
    assert "Apache License" in (crds / "LICENSE").read_text()
    default = ManifestValidator()
    assert default.custom_kinds == ManifestValidator(crds_dir=crds).custom_kinds
    assert ("argoproj.io/v1alpha1", "Application") in default.custom_kinds
    assert validate_objects(objects) == []


def test_default_validation_catches_an_invalid_argocd_object(objects: tuple[Obj, ...]) -> None:
    project = pick(objects, "AppProject", "argocd")
    project["spec"]["destinations"][0]["serverr"] = "typo"  # pruned by the API server: refused
    project["spec"]["orphanedResources"]["warn"] = "yes"
    appset = pick(objects, "ApplicationSet", "argocd")
    appset["spec"]["goTemplate"] = "true"
    found = {(p.object, p.path, p.message) for p in validate_objects([project, appset])}
    project_name = f"AppProject argocd/{project['metadata']['name']}"
    appset_name = f"ApplicationSet argocd/{appset['metadata']['name']}"
    assert len(found) == 3, found
    assert (
        project_name,
        "spec.destinations[0]",
        "Additional properties are not allowed ('serverr' was unexpected)",
    ) in found
    assert (
        project_name,
        "spec.orphanedResources.warn",
        "'yes' is not of type 'boolean'",
    ) in found
    assert (
        appset_name,
        "spec.goTemplate",
        "'true' is not of type 'boolean'",
    ) in found


def test_a_sealed_secret_is_checked_against_the_packaged_crd(objects: tuple[Obj, ...]) -> None:
    sealed = pick(objects, "SealedSecret")
    assert validate_objects([sealed]) == []
    sealed["spec"]["encryptedData"] = ["not", "a", "map"]
    found = validate_objects([sealed])
    assert [p.path for p in found] == ["spec.encryptedData"]
