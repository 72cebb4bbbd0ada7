"""`aiaas-infra bootstrap`: server-side apply of the rendered platform against the fake API
server: order, idempotence, drift, conflicts, pruning, dry runs, errors, and API-call counts."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiaas_infra import PlatformSpec
from aiaas_infra.cli._main import main
from aiaas_infra.cluster._apply import (
    RESOURCES,
    BootstrapError,
    BootstrapReport,
    apply_objects,
    bootstrap,
    resource_for,
)
from aiaas_infra.cluster._gitops import render_platform
from aiaas_infra.secrets._sealing import SealingCertificate
from aiaas_infra.secrets._secrets import SealedStore, seal_secret
from aiaas_infra.testing import SYSTEM_NAMESPACES, FakeKubeApiServer, sealing_keypair

#: Kinds bootstrap lists to learn what is live (every kind it manages but Secret).
LISTED_KINDS = len([r for r in RESOURCES if r.kind != "Secret"])
#: What Argo CD and kube-prometheus-stack bring to the cluster before bootstrap.
PREINSTALLED = (*SYSTEM_NAMESPACES, "argocd", "monitoring")


@pytest.fixture(scope="module")
def sealed(spec: PlatformSpec) -> SealedStore:
    cert = SealingCertificate.from_pem(sealing_keypair().cert_pem)
    store = SealedStore()
    for env, environment in spec.environments.items():
        for item in environment.secret_items:
            store = seal_secret(store, cert, spec, env, item.name, f"{env}/{item.name}".encode())
    return store


@pytest.fixture(scope="module")
def objects(spec: PlatformSpec, sealed: SealedStore) -> tuple[dict[str, Any], ...]:
    return render_platform(spec, sealed=sealed).objects


@pytest.fixture
def kube(crds: Path) -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer(crds=crds, namespaces=PREINSTALLED) as k:
        yield k


def live_versions(kube: FakeKubeApiServer) -> dict[tuple[str, str, str], str]:
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"][
            "resourceVersion"
        ]
        for o in kube.objects()
    }


def aiaas_objects(kube: FakeKubeApiServer) -> list[dict[str, Any]]:
    return [
        o
        for o in kube.objects()
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "aiaas"
    ]


# -- the figures -----------------------------------------------------------------------------


async def test_bootstrap_then_noop_rebootstrap(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    first = await apply_objects(objects, kube.kubeconfig())
    assert first.count("created") == len(objects)
    assert first.changed
    assert dict(first.calls_by_verb) == {"list": LISTED_KINDS, "apply": len(objects)}
    assert first.api_calls == LISTED_KINDS + len(objects)
    assert kube.call_counts() == {"list": LISTED_KINDS, "apply": len(objects)}
    assert len(aiaas_objects(kube)) == len(objects)
    for obj in aiaas_objects(kube):
        (entry,) = [m for m in obj["metadata"]["managedFields"] if m["manager"] == "aiaas"]
        assert entry["operation"] == "Apply"
    before = live_versions(kube)

    kube.reset_calls()
    again = await apply_objects(objects, kube.kubeconfig())
    assert not again.changed
    assert again.count("unchanged") == len(objects)
    assert dict(again.calls_by_verb) == {"list": LISTED_KINDS}  # no write at all
    assert kube.call_counts() == {"list": LISTED_KINDS}
    assert live_versions(kube) == before
    print(  # the measure issue 8 asks for (pytest -s shows it)
        f"\nbootstrap of {len(objects)} objects: {first.api_calls} API calls "
        f"{dict(first.calls_by_verb)}; no-op re-bootstrap: {again.api_calls} API calls "
        f"{dict(again.calls_by_verb)}"
    )


async def test_applied_in_order(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    shuffled = list(objects)
    random.Random(8).shuffle(shuffled)  # noqa: S311 -- a fixed shuffle, not crypto
    await apply_objects(shuffled, kube.kubeconfig())
    applied = [c.path for c in kube.calls if c.verb == "apply"]
    plural_rank = {r.plural: i for i, r in enumerate(RESOURCES)}

    def rank(path: str) -> int:
        parts = path.split("/")
        return plural_rank[parts[-2]]

    ranks = [rank(p) for p in applied]
    assert ranks == sorted(ranks)
    assert applied[0].startswith("/api/v1/namespaces/")
    stages = ["Namespace", "RoleBinding", "NetworkPolicy", "SealedSecret", "Deployment"]
    firsts = [
        min(
            i
            for i, p in enumerate(applied)
            if resource_for(
                *{
                    "Namespace": ("v1", "Namespace"),
                    "RoleBinding": ("rbac.authorization.k8s.io/v1", "RoleBinding"),
                    "NetworkPolicy": ("networking.k8s.io/v1", "NetworkPolicy"),
                    "SealedSecret": ("bitnami.com/v1alpha1", "SealedSecret"),
                    "Deployment": ("apps/v1", "Deployment"),
                }[k]
            ).plural
            == p.split("/")[-2]
        )
        for k in stages
    ]
    assert firsts == sorted(firsts)  # namespaces, RBAC, policies, secrets, apps


async def test_bootstrap_renders_the_spec(
    kube: FakeKubeApiServer,
    spec: PlatformSpec,
    sealed: SealedStore,
    objects: tuple[dict[str, Any], ...],
) -> None:
    progress: list[tuple[int, int, str]] = []
    report = await bootstrap(
        spec,
        kube.kubeconfig(),
        sealed=sealed,
        on_progress=lambda d, t, label: progress.append((d, t, label)),
    )
    assert report.count("created") == len(objects)
    assert progress[-1][:2] == (len(objects), len(objects))
    assert progress[0][2].startswith("Namespace ")
    assert {o["metadata"]["name"] for o in kube.objects("SealedSecret")} == {
        f"{env}-secrets" for env in spec.environments
    }


# -- drift and conflicts ---------------------------------------------------------------------


def _drift_one(kube: FakeKubeApiServer) -> dict[str, Any]:
    quota = kube.objects("ResourceQuota")[0]
    edited = copy.deepcopy(quota)
    edited["spec"]["hard"] = {**edited["spec"]["hard"], "pods": "999"}
    for server_field in ("managedFields", "uid", "creationTimestamp", "generation"):
        edited["metadata"].pop(server_field, None)
    kube.put_object(edited, manager="kubectl-edit")
    return quota


async def test_drift_is_reapplied_with_one_call(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    await apply_objects(objects, kube.kubeconfig())
    quota = _drift_one(kube)
    kube.reset_calls()
    report = await apply_objects(objects, kube.kubeconfig())
    assert [str(r) for r in report.results if r.action != "unchanged"] == [
        f"ResourceQuota {quota['metadata']['namespace']}/{quota['metadata']['name']}: configured"
    ]
    assert dict(report.calls_by_verb) == {"list": LISTED_KINDS, "apply": 1}
    fixed = kube.get_object(
        "ResourceQuota", quota["metadata"]["name"], quota["metadata"]["namespace"]
    )
    assert fixed is not None
    assert fixed["spec"]["hard"] == quota["spec"]["hard"]


async def test_conflict_without_force_fails_with_the_report(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    await apply_objects(objects, kube.kubeconfig())
    _drift_one(kube)
    with pytest.raises(BootstrapError) as info:
        await apply_objects(objects, kube.kubeconfig(), force=False)
    err = info.value
    assert err.api_status == 409
    assert 'conflict with "kubectl-edit"' in err.message
    assert err.causes
    assert err.report is not None
    assert err.report.count("unchanged") > 0


# -- pruning ---------------------------------------------------------------------------------


async def test_prune_removes_what_left_the_spec(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    await apply_objects(objects, kube.kubeconfig())
    # someone else's object in an aiaas namespace, and an Application an ApplicationSet made
    namespaces = sorted(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    gone_ns, kept_ns = namespaces[0], namespaces[1]
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "theirs",
                "namespace": kept_ns,
                "labels": {"app.kubernetes.io/managed-by": "aiaas"},
            },
        }
    )
    smaller = [
        o
        for o in objects
        if o["metadata"].get("namespace") != gone_ns
        and o["metadata"]["name"] != gone_ns
        and o["kind"] != "Deployment"
    ]
    deployments = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"].get("namespace") != gone_ns
    ]
    kube.reset_calls()
    report = await apply_objects(smaller, kube.kubeconfig())
    pruned = {(r.kind, r.namespace, r.name) for r in report.results if r.action == "pruned"}
    in_gone = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("namespace") == gone_ns
    }
    assert ("Namespace", None, gone_ns) in pruned
    assert in_gone <= pruned
    assert {
        ("Deployment", d["metadata"]["namespace"], d["metadata"]["name"]) for d in deployments
    } <= pruned
    # what sat in the pruned namespace went with it: one delete for the namespace
    assert kube.call_counts()["delete"] == 1 + len(deployments)
    assert kube.objects(namespace=gone_ns) == []
    assert kube.get_object("ConfigMap", "theirs", kept_ns) is not None  # not aiaas's
    assert report.count("unchanged") == len(smaller)
    # a second run has nothing left to prune
    again = await apply_objects(smaller, kube.kubeconfig())
    assert not again.changed


async def test_no_prune_keeps_everything(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    await apply_objects(objects, kube.kubeconfig())
    report = await apply_objects(objects[:1], kube.kubeconfig(), prune=False)
    assert report.count("pruned") == 0
    assert "delete" not in report.calls_by_verb
    assert len(aiaas_objects(kube)) == len(objects)


# -- dry runs --------------------------------------------------------------------------------


async def test_dry_run_writes_nothing(
    kube: FakeKubeApiServer, objects: tuple[dict[str, Any], ...]
) -> None:
    plan = await apply_objects(objects, kube.kubeconfig(), dry_run=True)
    assert plan.dry_run
    assert plan.count("would-create") == len(objects)
    assert aiaas_objects(kube) == []
    assert kube.call_counts() == {"list": LISTED_KINDS}
    await apply_objects(objects, kube.kubeconfig())
    _drift_one(kube)
    plan = await apply_objects(objects[1:], kube.kubeconfig(), dry_run=True)
    assert plan.count("would-configure") == 1
    assert plan.count("would-prune") >= 1
    assert plan.to_dict()["summary"]["would-configure"] == 1


# -- refusals and errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
            "not a kind aiaas applies",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            "no metadata.namespace",
        ),
        (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}},
            "cluster-scoped, but has a namespace",
        ),
        ({"apiVersion": "v1", "kind": "Namespace"}, "no metadata.name"),
        ("not an object", "not a mapping"),
    ],
)
async def test_bad_object_sets_fail_before_any_call(
    kube: FakeKubeApiServer, bad: Any, match: str
) -> None:
    with pytest.raises(BootstrapError, match=match):
        await apply_objects([bad], kube.kubeconfig())
    assert kube.calls == []


async def test_duplicates_refused(kube: FakeKubeApiServer) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}
    with pytest.raises(BootstrapError, match="listed twice"):
        await apply_objects([ns, ns], kube.kubeconfig())


async def test_invalid_object_refused_by_the_server(kube: FakeKubeApiServer) -> None:
    good = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ok"}}
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ok"},
        "data": {"n": 1},
    }
    with pytest.raises(BootstrapError) as info:
        await apply_objects([bad, good], kube.kubeconfig())
    assert info.value.api_status == 422
    assert "applying ConfigMap ok/c failed (HTTP 422)" in info.value.message
    assert any(c.startswith("data.n:") for c in info.value.causes)
    assert info.value.report is not None
    assert [r.action for r in info.value.report.results] == ["created"]


async def test_missing_crd_is_a_clear_error(objects: tuple[dict[str, Any], ...]) -> None:
    with (
        FakeKubeApiServer(namespaces=PREINSTALLED) as bare,
        pytest.raises(BootstrapError, match=r"does not serve bitnami\.com/v1alpha1 Seal"),
    ):
        await apply_objects(objects, bare.kubeconfig())


async def test_an_api_client_can_be_passed_in(kube: FakeKubeApiServer) -> None:
    from kubernetes_asyncio import config

    api = await config.new_client_from_config_dict(config_dict=kube.kubeconfig())
    try:
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "mine", "labels": {"app.kubernetes.io/managed-by": "aiaas"}},
        }
        report = await apply_objects([ns], api)
        assert report.count("created") == 1
        assert (await apply_objects([ns], api)).count("unchanged") == 1  # api still open
    finally:
        await api.close()


async def test_unauthorised_listing_fails(kube: FakeKubeApiServer) -> None:
    with pytest.raises(BootstrapError, match="listing namespaces failed \\(HTTP 401\\)") as info:
        await apply_objects([], kube.kubeconfig(token="wrong"))
    assert info.value.api_status == 401


def test_report_to_dict() -> None:
    report = BootstrapReport((), 3, {"list": 3})
    assert report.to_dict() == {
        "dry_run": False,
        "changed": False,
        "api_calls": 3,
        "calls_by_verb": {"list": 3},
        "summary": {},
        "objects": [],
    }


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_files(tmp_path: Path, kube: FakeKubeApiServer, sealed: SealedStore) -> dict[str, Path]:
    from aiaas_infra import example_spec_path

    spec_path = tmp_path / "platform.yaml"
    spec_path.write_text(example_spec_path().read_text())
    sealed.save(tmp_path / "sealed-secrets.yaml")
    return {"spec": spec_path, "kubeconfig": kube.write_kubeconfig(tmp_path / "kubeconfig")}


def test_cli_bootstrap(
    cli_files: dict[str, Path],
    kube: FakeKubeApiServer,
    capsys: pytest.CaptureFixture[str],
    objects: tuple[dict[str, Any], ...],
) -> None:
    args = [
        "bootstrap",
        "--spec",
        str(cli_files["spec"]),
        "--kubeconfig",
        str(cli_files["kubeconfig"]),
    ]
    assert main([*args, "--dry-run", "-o", "json"]) == 2  # changes pending
    assert json.loads(capsys.readouterr().out)["summary"] == {"would-create": len(objects)}
    assert main([*args, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == {"created": len(objects)}
    assert doc["api_calls"] == LISTED_KINDS + len(objects)
    assert main(args) == 0  # table output, a no-op
    out = capsys.readouterr().out
    assert f"{len(objects)} unchanged; {LISTED_KINDS} API calls" in out
    assert main([*args, "--dry-run"]) == 0  # nothing pending
    capsys.readouterr()
    _drift_one(kube)
    assert main([*args, "--no-prune"]) == 0
    assert "configured" in capsys.readouterr().out


def test_cli_bootstrap_errors(
    cli_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kube: FakeKubeApiServer,
) -> None:
    args = [
        "bootstrap",
        "--spec",
        str(cli_files["spec"]),
        "--kubeconfig",
        str(cli_files["kubeconfig"]),
    ]
    assert main([*args, "--sealed", str(tmp_path / "absent.yaml")]) == 64
    capsys.readouterr()
    bad_kubeconfig = kube.write_kubeconfig(tmp_path / "bad-kubeconfig", token="wrong")
    bad = ["bootstrap", "--spec", str(cli_files["spec"]), "--kubeconfig", str(bad_kubeconfig)]
    assert main(bad) == 1
    assert "BOOTSTRAP_FAILED" in capsys.readouterr().err
    assert main([*bad, "-o", "json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"] == "BOOTSTRAP_FAILED"


# -- the in-sync test and ownership ---------------------------------------------------------


DESIRED: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "c",
        "namespace": "n",
        "labels": {"app.kubernetes.io/managed-by": "aiaas"},
    },
    "data": {"a": "1"},
}


def _live(obj: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """``obj`` as a real API server would return it after aiaas applied it."""
    live = copy.deepcopy(obj)
    live["metadata"].update(
        {
            "resourceVersion": "7",
            "uid": "u",
            "managedFields": [
                {
                    "manager": "aiaas",
                    "operation": "Apply",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {".": {}}},
                }
            ],
            **meta,
        }
    )
    live["data"] = {**live.get("data", {})}
    live["status"] = {"defaulted": True}
    return live


def test_in_sync_needs_the_same_config_and_no_drift() -> None:
    from aiaas_infra.cluster._apply import APPLIED_ANNOTATION, _in_sync, _owned_by_aiaas, _with_hash

    desired = _with_hash(DESIRED)
    assert desired["metadata"]["annotations"][APPLIED_ANNOTATION].startswith("sha256:")
    assert DESIRED["metadata"].get("annotations") is None  # the input is not changed
    live = _live(desired)
    assert _in_sync(desired, live)
    # another config (say aiaas stopped applying a field): a different digest, so apply
    other = _with_hash({**DESIRED, "data": {"a": "1", "b": "2"}})
    assert not _in_sync(other, live)
    assert not _in_sync(_with_hash({**DESIRED, "data": {}}), live)
    # drift: someone changed or removed a field aiaas applied
    drifted = _live(desired)
    drifted["data"]["a"] = "edited"
    assert not _in_sync(desired, drifted)
    del drifted["data"]["a"]
    assert not _in_sync(desired, drifted)
    # applied by something else (no digest)
    assert not _in_sync(desired, _live(DESIRED))
    assert _owned_by_aiaas(live)
    assert not _owned_by_aiaas(_live(desired, ownerReferences=[{"kind": "ApplicationSet"}]))
    assert not _owned_by_aiaas({**live, "metadata": {"labels": {}}})
    assert not _owned_by_aiaas(_live(desired, managedFields=[{"manager": "helm"}]))


async def test_prune_races(kube: FakeKubeApiServer) -> None:
    """An object changed between the list and its delete is not deleted (409 precondition);
    one already gone is fine."""
    labels = {"app.kubernetes.io/managed-by": "aiaas"}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "race", "labels": labels}}

    def cm(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "race", "labels": labels},
            "data": {"k": "v"},
        }

    await apply_objects([ns, cm("changed"), cm("vanished")], kube.kubeconfig())

    def meddle(done: int, total: int, label: str) -> None:  # runs after the lists
        kube.put_object({**cm("changed"), "data": {"k": "edited"}})

    with pytest.raises(BootstrapError, match="pruning ConfigMap race/changed failed") as info:
        await apply_objects([ns], kube.kubeconfig(), on_progress=meddle)
    assert info.value.api_status == 409
    assert kube.get_object("ConfigMap", "changed", "race") is not None

    def vanish(done: int, total: int, label: str) -> None:
        import httpx

        for name in ("changed", "vanished"):
            httpx.delete(
                f"{kube.url}/api/v1/namespaces/race/configmaps/{name}",
                headers={"Authorization": f"Bearer {kube.admin_token}"},
            )

    await apply_objects([ns, cm("vanished")], kube.kubeconfig())
    report = await apply_objects([ns], kube.kubeconfig(), on_progress=vanish)
    assert report.count("pruned") == 1
