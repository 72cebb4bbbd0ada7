"""The fake Kubernetes API server: verbs, server-side apply, errors, validation, tokens.

Driven over real HTTP (httpx) and through kubernetes-asyncio's typed client, the way the
bootstrap and access code drive it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_infra.testing import FakeKubeApiServer

APPLY = {"Content-Type": "application/apply-patch+yaml"}
CM_PATH = "/api/v1/namespaces/team/configmaps"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def kube(crds: Path, clock: Clock) -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer(crds=crds, clock=clock) as server:
        yield server


@pytest.fixture(scope="module")
def http(kube: FakeKubeApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=kube.url, headers={"Authorization": f"Bearer {kube.admin_token}"}
    ) as client:
        client.post("/api/v1/namespaces", json=namespace("team"))
        yield client


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
    }


def configmap(
    name: str, data: dict[str, Any], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def apply(
    http: httpx.Client,
    obj: dict[str, Any],
    manager: str = "aiaas",
    *,
    force: bool = False,
    path: str = CM_PATH,
) -> httpx.Response:
    return http.patch(
        f"{path}/{obj['metadata']['name']}",
        params={"fieldManager": manager, "force": str(force).lower()},
        content=json.dumps(obj),
        headers=APPLY,
    )


def status_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == response.status_code
    return body


# -- basics ----------------------------------------------------------------------------------


def test_needs_a_token(kube: FakeKubeApiServer) -> None:
    response = httpx.get(f"{kube.url}/api/v1/namespaces")
    assert response.status_code == 401
    assert status_of(response)["reason"] == "Unauthorized"
    bad = httpx.get(f"{kube.url}/api/v1/namespaces", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    assert httpx.get(f"{kube.url}/version").json()["major"] == "1"


def test_a_new_cluster_has_system_namespaces(kube: FakeKubeApiServer) -> None:
    names = {o["metadata"]["name"] for o in kube.objects("Namespace")}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_create_get_and_errors(http: httpx.Client) -> None:
    created = http.post("/api/v1/namespaces", json=namespace("basics", {"a": "b"}))
    assert created.status_code == 201
    meta = created.json()["metadata"]
    assert meta["uid"]
    assert meta["resourceVersion"]
    assert meta["creationTimestamp"]
    assert meta["managedFields"][0]["operation"] == "Update"
    again = http.post("/api/v1/namespaces", json=namespace("basics"))
    assert again.status_code == 409
    assert status_of(again)["reason"] == "AlreadyExists"
    missing = http.get("/api/v1/namespaces/nope")
    assert missing.status_code == 404
    body = status_of(missing)
    assert body["reason"] == "NotFound"
    assert body["details"] == {"name": "nope", "kind": "namespaces"}
    assert http.get("/api/v1/namespaces/basics").json()["metadata"]["labels"] == {"a": "b"}
    no_ns = http.post("/api/v1/namespaces/ghost/configmaps", json=configmap("c", {}))
    assert no_ns.status_code == 404
    assert 'namespaces "ghost" not found' in status_of(no_ns)["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "reason"),
    [
        ("GET", "/apis/example.com/v1/widgets", None, 404, "NotFound"),
        ("GET", "/nonsense", None, 404, "NotFound"),
        ("GET", "/api/v1/configmaps/x", None, 404, "NotFound"),  # namespaced, no namespace
        ("GET", "/api/v1/namespaces/team/namespaces", None, 404, "NotFound"),
        ("GET", "/api/v1/namespaces/team/configmaps/x/status", None, 404, "NotFound"),
        ("POST", "/api/v1/namespaces/team/configmaps", b"{not json", 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/team/configmaps", b"[1]", 400, "BadRequest"),
        (
            "POST",
            "/api/v1/namespaces/team/configmaps",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/team/configmaps",
            {**configmap("m", {}), "metadata": {"name": "m", "namespace": "other"}},
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/team/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
            422,
            "Invalid",
        ),
        ("POST", "/api/v1/namespaces/team/configmaps/x", {}, 405, "MethodNotAllowed"),
        ("PUT", "/api/v1/namespaces/team/configmaps", {}, 405, "MethodNotAllowed"),
        ("PUT", "/api/v1/namespaces/team/configmaps/x", configmap("y", {}), 400, "BadRequest"),
        (
            "PUT",
            "/api/v1/namespaces/team/configmaps/absent",
            configmap("absent", {}),
            404,
            "NotFound",
        ),
        ("DELETE", "/api/v1/namespaces/team/configmaps/absent", None, 404, "NotFound"),
        ("GET", "/apis/authentication.k8s.io/v1/tokenreviews", None, 405, "MethodNotAllowed"),
    ],
)
def test_error_statuses(  # noqa: PLR0917
    http: httpx.Client, method: str, path: str, body: Any, code: int, reason: str
) -> None:
    if isinstance(body, bytes):
        response = http.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = http.request(method, path, json=body)
    assert response.status_code == code, response.text
    assert status_of(response)["reason"] == reason


# -- validation ------------------------------------------------------------------------------


def test_core_kinds_validated_strictly(http: httpx.Client) -> None:
    bad = http.post(f"{CM_PATH}", json=configmap("ints", {"a": 1}))
    assert bad.status_code == 422
    body = status_of(bad)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "data.a"
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "replicas": 1,
            "bogus": True,
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    unknown = http.post("/apis/apps/v1/namespaces/team/deployments", json=deployment)
    assert unknown.status_code == 422
    assert "bogus" in status_of(unknown)["message"]
    del deployment["spec"]["bogus"]
    assert (
        http.post("/apis/apps/v1/namespaces/team/deployments", json=deployment).status_code == 201
    )
    bad_name = http.post(f"{CM_PATH}", json=configmap("Not_A_Name", {}))
    assert bad_name.status_code == 422
    assert status_of(bad_name)["details"]["causes"][0]["field"] == "metadata.name"


def test_custom_resources_validated_against_their_crd(http: httpx.Client) -> None:
    path = "/apis/bitnami.com/v1alpha1/namespaces/team/sealedsecrets"
    sealed = {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": "s"},
        "spec": {"encryptedData": {"k": "AAAA"}},
    }
    assert http.post(path, json=sealed).status_code == 201
    no_data = {**sealed, "metadata": {"name": "s2"}, "spec": {}}
    response = http.post(path, json=no_data)
    assert response.status_code == 422
    assert "encryptedData" in status_of(response)["message"]
    extra = {**sealed, "metadata": {"name": "s3"}, "spec": {"encryptedData": {}, "extra": 1}}
    assert http.post(path, json=extra).status_code == 422
    listed = http.get(path).json()
    assert listed["kind"] == "SealedSecretList"
    assert listed["items"][0]["kind"] == "SealedSecret"  # custom resources carry their kind


def test_custom_kind_without_crd_is_not_served() -> None:
    with FakeKubeApiServer() as bare:
        response = httpx.get(
            f"{bare.url}/apis/bitnami.com/v1alpha1/sealedsecrets",
            headers={"Authorization": f"Bearer {bare.admin_token}"},
        )
        assert response.status_code == 404
        prometheus = httpx.get(
            f"{bare.url}/apis/monitoring.coreos.com/v1/prometheusrules",
            headers={"Authorization": f"Bearer {bare.admin_token}"},
        )
        assert prometheus.status_code == 200  # the fake knows PrometheusRule's schema


# -- server-side apply -----------------------------------------------------------------------


def test_apply_creates_then_is_idempotent(http: httpx.Client, kube: FakeKubeApiServer) -> None:
    first = apply(http, configmap("ssa", {"a": "1"}, {"app": "x"}))
    assert first.status_code == 201
    rv = first.json()["metadata"]["resourceVersion"]
    (entry,) = first.json()["metadata"]["managedFields"]
    assert entry["manager"] == "aiaas"
    assert entry["operation"] == "Apply"
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
    second = apply(http, configmap("ssa", {"a": "1"}, {"app": "x"}))
    assert second.status_code == 200
    assert second.json()["metadata"]["resourceVersion"] == rv  # a no-op changes nothing
    third = apply(http, configmap("ssa", {"b": "2"}, {"app": "x"}))
    assert third.json()["data"] == {"b": "2"}  # a field no longer applied is removed
    assert third.json()["metadata"]["resourceVersion"] != rv
    stored = kube.get_object("ConfigMap", "ssa", "team")
    assert stored is not None
    assert stored["data"] == {"b": "2"}


def test_apply_conflicts_and_force(http: httpx.Client) -> None:
    apply(http, configmap("owned", {"a": "1", "shared": "s"}))
    same = apply(http, configmap("owned", {"shared": "s"}), "other")  # equal value: shared
    assert same.status_code == 200
    conflict = apply(http, configmap("owned", {"a": "2"}), "other")
    assert conflict.status_code == 409
    body = status_of(conflict)
    assert body["reason"] == "Conflict"
    assert body["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "aiaas"', "field": ".data.a"}
    ]
    forced = apply(http, configmap("owned", {"a": "2", "shared": "s"}), "other", force=True)
    assert forced.status_code == 200
    managers = {m["manager"]: m["fieldsV1"] for m in forced.json()["metadata"]["managedFields"]}
    assert managers["aiaas"] == {"f:data": {"f:shared": {}}}  # lost .data.a to the force
    assert forced.json()["data"] == {"a": "2", "shared": "s"}
    # aiaas stops applying "shared": other still owns it, so it stays
    kept = apply(http, configmap("owned", {"z": "1"}))
    assert kept.json()["data"] == {"a": "2", "shared": "s", "z": "1"}


@pytest.mark.parametrize(
    ("headers", "params", "obj", "code"),
    [
        (
            {"Content-Type": "application/merge-patch+json"},
            {"fieldManager": "m"},
            configmap("p", {}),
            415,
        ),
        (APPLY, {}, configmap("p", {}), 400),
        (APPLY, {"fieldManager": "m"}, configmap("other-name", {}), 400),
        (APPLY, {"fieldManager": "m"}, {**configmap("p", {}), "kind": "Secret"}, 400),
        (
            APPLY,
            {"fieldManager": "m"},
            {**configmap("p", {}), "metadata": {"name": "p", "namespace": "elsewhere"}},
            400,
        ),
        (
            APPLY,
            {"fieldManager": "m"},
            {**configmap("p", {}), "metadata": {"name": "p", "managedFields": []}},
            400,
        ),
        (APPLY, {"fieldManager": "m"}, configmap("p", {"n": 5}), 422),
    ],
)
def test_apply_refusals(
    http: httpx.Client,
    headers: dict[str, str],
    params: dict[str, str],
    obj: dict[str, Any],
    code: int,
) -> None:
    response = http.patch(f"{CM_PATH}/p", params=params, content=json.dumps(obj), headers=headers)
    assert response.status_code == code, response.text
    status_of(response)


def test_apply_into_missing_namespace(http: httpx.Client) -> None:
    response = apply(http, configmap("x", {}), path="/api/v1/namespaces/ghost/configmaps")
    assert response.status_code == 404


@settings(max_examples=20)
@given(
    first=st.dictionaries(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.text(max_size=5), max_size=4
    ),
    second=st.dictionaries(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.text(max_size=5), max_size=4
    ),
)
def test_apply_converges_to_the_last_config(
    http: httpx.Client, first: dict[str, str], second: dict[str, str]
) -> None:
    http.delete(f"{CM_PATH}/prop")
    apply(http, configmap("prop", first))
    result = apply(http, configmap("prop", second)).json()
    assert result.get("data", {}) == second
    again = apply(http, configmap("prop", second)).json()
    assert again["metadata"]["resourceVersion"] == result["metadata"]["resourceVersion"]


# -- update and delete -----------------------------------------------------------------------


def test_update_with_resource_version(http: httpx.Client) -> None:
    created = http.post(CM_PATH, json=configmap("upd", {"a": "1"})).json()
    body = configmap("upd", {"a": "2"})
    no_rv = http.put(f"{CM_PATH}/upd", json=body)
    assert no_rv.status_code == 422
    body["metadata"]["resourceVersion"] = "999999"
    stale = http.put(f"{CM_PATH}/upd", json=body)
    assert stale.status_code == 409
    assert "has been modified" in status_of(stale)["message"]
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    ok = http.put(f"{CM_PATH}/upd", json=body, params={"fieldManager": "editor"})
    assert ok.status_code == 200
    assert ok.json()["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    # the update took .data.a: an apply that changes it now conflicts
    assert apply(http, configmap("upd", {"a": "3"})).status_code == 409


def test_delete_preconditions_and_namespace_cascade(
    http: httpx.Client, kube: FakeKubeApiServer
) -> None:
    http.post("/api/v1/namespaces", json=namespace("doomed"))
    cm = http.post("/api/v1/namespaces/doomed/configmaps", json=configmap("c", {})).json()
    stale = http.request(
        "DELETE",
        "/api/v1/namespaces/doomed/configmaps/c",
        json={"preconditions": {"resourceVersion": "1"}},
    )
    assert stale.status_code == 409
    wrong_uid = http.request(
        "DELETE", "/api/v1/namespaces/doomed/configmaps/c", json={"preconditions": {"uid": "nope"}}
    )
    assert wrong_uid.status_code == 409
    ok = http.request(
        "DELETE",
        "/api/v1/namespaces/doomed/configmaps/c",
        json={"preconditions": {"resourceVersion": cm["metadata"]["resourceVersion"]}},
    )
    assert ok.status_code == 200
    assert ok.json()["status"] == "Success"
    http.post("/api/v1/namespaces/doomed/configmaps", json=configmap("d", {}))
    assert http.delete("/api/v1/namespaces/doomed").status_code == 200
    assert kube.objects(namespace="doomed") == []


def test_list_and_label_selectors(http: httpx.Client) -> None:
    http.post("/api/v1/namespaces", json=namespace("sel"))
    path = "/api/v1/namespaces/sel/configmaps"
    http.post(path, json=configmap("one", {}, {"tier": "a", "managed": "yes"}))
    http.post(path, json=configmap("two", {}, {"tier": "b"}))
    http.post(path, json=configmap("three", {}))

    def names(selector: str | None) -> list[str]:
        params = {"labelSelector": selector} if selector is not None else {}
        body = http.get(path, params=params).json()
        assert body["kind"] == "ConfigMapList"
        assert all("kind" not in i for i in body["items"])  # built-ins: no kind in items
        return sorted(i["metadata"]["name"] for i in body["items"])

    assert names(None) == ["one", "three", "two"]
    assert names("tier=a") == ["one"]
    assert names("tier==b") == ["two"]
    assert names("tier!=a") == ["three", "two"]
    assert names("managed") == ["one"]
    assert names("!tier") == ["three"]
    assert names("tier=a,managed=yes") == ["one"]
    everywhere = http.get("/api/v1/configmaps", params={"labelSelector": "tier=b"}).json()
    assert [i["metadata"]["namespace"] for i in everywhere["items"]] == ["sel"]


# -- tokens ----------------------------------------------------------------------------------


def test_token_request_review_and_revocation(
    http: httpx.Client, kube: FakeKubeApiServer, clock: Clock
) -> None:
    sa_path = "/api/v1/namespaces/team/serviceaccounts"
    assert http.post(f"{sa_path}/robot/token", json={}).status_code == 404
    http.post(
        sa_path, json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}
    )
    short = http.post(f"{sa_path}/robot/token", json={"spec": {"expirationSeconds": 60}})
    assert short.status_code == 422
    issued = http.post(
        f"{sa_path}/robot/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    assert issued.status_code == 201
    status = issued.json()["status"]
    token = status["token"]
    assert status["expirationTimestamp"] == "2026-06-01T01:00:00Z"
    as_robot = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{kube.url}/api/v1/namespaces/team", headers=as_robot).status_code == 200

    def review(t: str) -> dict[str, Any]:
        response = http.post(
            "/apis/authentication.k8s.io/v1/tokenreviews", json={"spec": {"token": t}}
        )
        assert response.status_code == 201
        result: dict[str, Any] = response.json()["status"]
        return result

    assert review(token) == {
        "authenticated": True,
        "user": {"username": "system:serviceaccount:team:robot"},
    }
    assert review("garbage")["authenticated"] is False
    listed = http.get("/aiaas-test/tokens").json()["items"]
    assert {
        "namespace": "team",
        "serviceaccount": "robot",
        "expirationTimestamp": "2026-06-01T01:00:00Z",
        "valid": True,
    } in listed
    assert token not in json.dumps(listed)
    # expiry
    clock.now += dt.timedelta(hours=2)
    try:
        assert kube.review_token(token) is None
    finally:
        clock.now -= dt.timedelta(hours=2)
    assert kube.review_token(token) == "system:serviceaccount:team:robot"
    # tampering
    head, body, sig = token.split(".")
    assert kube.review_token(f"{head}.{body}.{sig[::-1]}") is None
    # revocation through the test endpoint
    revoked = http.delete(
        "/aiaas-test/tokens", params={"namespace": "team", "serviceaccount": "robot"}
    )
    assert revoked.json() == {"revoked": 1}
    assert httpx.get(f"{kube.url}/api/v1/namespaces/team", headers=as_robot).status_code == 401
    # deleting and recreating the ServiceAccount invalidates its tokens
    second = http.post(f"{sa_path}/robot/token", json={}).json()["status"]["token"]
    assert kube.review_token(second) is not None
    http.delete(f"{sa_path}/robot")
    http.post(
        sa_path, json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}
    )
    assert kube.review_token(second) is None
    assert http.get("/aiaas-test/nothing").status_code == 404


# -- counting, helpers, the typed client -----------------------------------------------------


def test_call_counting(http: httpx.Client, kube: FakeKubeApiServer) -> None:
    kube.reset_calls()
    http.get("/api/v1/namespaces")
    http.get("/api/v1/namespaces/team")
    http.get("/api/v1/namespaces/team/configmaps")
    http.get("/apis/apps/v1/namespaces/team/deployments/d")
    apply(http, configmap("counted", {"a": "1"}))
    http.delete(f"{CM_PATH}/counted")
    http.get("/aiaas-test/tokens")  # test endpoints are not API calls
    assert kube.call_counts() == {"list": 2, "get": 2, "apply": 1, "delete": 1}
    assert [c.status for c in kube.calls] == [200, 200, 200, 200, 201, 200]


def test_put_object_stands_for_another_client(kube: FakeKubeApiServer) -> None:
    kube.put_object(
        configmap("edited", {"a": "1"}) | {"metadata": {"name": "edited", "namespace": "team"}}
    )
    obj = kube.put_object(
        {**configmap("edited", {"a": "2"}), "metadata": {"name": "edited", "namespace": "team"}}
    )
    assert obj["data"] == {"a": "2"}
    assert obj["metadata"]["managedFields"][0]["manager"] == "kubectl-edit"
    with pytest.raises(RuntimeError, match="not running"):
        _ = FakeKubeApiServer().url


async def test_kubernetes_asyncio_typed_client(kube: FakeKubeApiServer) -> None:
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.client.exceptions import ApiException

    api = await config.new_client_from_config_dict(config_dict=kube.kubeconfig())
    try:
        core = client.CoreV1Api(api)
        created = await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="typed", labels={"t": "1"}))
        )
        assert created.metadata.uid
        read = await core.read_namespace("typed")
        assert read.metadata.labels == {"t": "1"}
        listed = await core.list_namespace(label_selector="t=1")
        assert [n.metadata.name for n in listed.items] == ["typed"]
        await core.create_namespaced_service_account(
            "typed", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot"))
        )
        token = await core.create_namespaced_service_account_token(
            "bot",
            "typed",
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=["aiaas"], expiration_seconds=900)
            ),
        )
        assert token.status.token
        with pytest.raises(ApiException) as info:
            await core.read_namespace("absent")
        assert info.value.status == 404
        await core.delete_namespace("typed")
        with pytest.raises(ApiException):
            await core.read_namespace("typed")
    finally:
        await api.close()
