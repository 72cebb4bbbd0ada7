"""The fake Kubernetes API server: verbs, server-side apply, errors, validation, tokens.

Driven over real HTTP (httpx) and through kubernetes-asyncio's typed client, the way the
bootstrap and access code drive it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
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


# -- transport: body framing -----------------------------------------------------------------


def _raw(
    kube: FakeKubeApiServer, data: bytes, responses: int
) -> tuple[list[tuple[int, dict[str, str], bytes]], bytes | None]:
    """Send ``data`` as it is on one connection and read ``responses`` responses; then, when
    the last one says ``Connection: close``, whatever else the server sends before closing
    (``b""``: nothing), else ``None``."""
    from urllib.parse import urlsplit

    parts = urlsplit(kube.url)
    out: list[tuple[int, dict[str, str], bytes]] = []
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        for _ in range(responses):
            status = int(reader.readline().split()[1])
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            out.append((status, headers, reader.read(int(headers.get("content-length", 0)))))
        rest = reader.read() if out[-1][1].get("connection") == "close" else None
    return out, rest


def _request(method: str, path: str, token: str, headers: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer {token}\r\n{headers}\r\n"
    ).encode() + body


def test_a_chunked_body_is_read_whole_and_the_next_request_follows(
    kube: FakeKubeApiServer, http: httpx.Client
) -> None:
    payload = json.dumps(configmap("chunked", {"text": "x" * 5000})).encode()
    chunks = [payload[:7], payload[7:4100], payload[4100:]]
    body = b"".join(
        f"{len(c):x}{';ext=1' if i == 1 else ''}\r\n".encode() + c + b"\r\n"
        for i, c in enumerate(chunks)
    )
    body += b"0\r\nX-Trailer: yes\r\n\r\n"
    data = _request(
        "POST",
        CM_PATH,
        kube.admin_token,
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        body,
    ) + _request("GET", f"{CM_PATH}/chunked", kube.admin_token, "")
    ((created, c_headers, created_body), (got, _h, got_body)), _rest = _raw(kube, data, 2)
    assert created == 201, created_body
    assert "close" not in c_headers.get("connection", "")
    assert json.loads(created_body)["data"]["text"] == "x" * 5000
    assert got == 200
    assert json.loads(got_body)["metadata"]["name"] == "chunked"
    assert http.get(f"{CM_PATH}/chunked").json()["data"] == {"text": "x" * 5000}


@pytest.mark.parametrize(
    ("headers", "body", "code", "reason", "message"),
    [
        ("Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n", 400, "BadRequest", "chunk"),
        ("Transfer-Encoding: chunked\r\n", b"2\r\n{}}\r\n0\r\n\r\n", 400, "BadRequest", "chunk"),
        (
            "Transfer-Encoding: chunked\r\n",
            b"1" * 5000 + b"\r\n",
            400,
            "BadRequest",
            "chunk-size line",
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 9\r\n",
            b"2\r\n{}\r\n0\r\n\r\n",
            400,
            "BadRequest",
            "both Transfer-Encoding and Content-Length",
        ),
        (
            "Transfer-Encoding: chunked\r\n",
            b"2\r\n{}\r\n0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n",
            400,
            "BadRequest",
            "too many trailer fields",
        ),
        ("Transfer-Encoding: gzip, chunked\r\n", b"", 501, "NotImplemented", "'gzip, chunked'"),
        ("Content-Length: -1\r\n", b"", 400, "BadRequest", "Content-Length"),
        ("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}", 400, "BadRequest", "Length"),
        ("Content-Length: 4194304\r\n", b"", 413, "RequestEntityTooLarge", "3145728 bytes"),
        (
            "Transfer-Encoding: chunked\r\n",
            b"300001\r\n",
            413,
            "RequestEntityTooLarge",
            "3145728 bytes",
        ),
    ],
)
def test_bad_framing_is_refused_and_the_connection_closed(  # noqa: PLR0917
    kube: FakeKubeApiServer, headers: str, body: bytes, code: int, reason: str, message: str
) -> None:
    data = _request("POST", CM_PATH, kube.admin_token, headers, body)
    # whatever follows must not be read as a request: the connection is closed
    data += _request("GET", "/api/v1/namespaces", kube.admin_token, "")
    [(status, response_headers, raw)], rest = _raw(kube, data, 1)
    assert status == code
    assert response_headers["connection"] == "close"
    assert rest == b""  # closed, the rest never read as a request
    answer = json.loads(raw)
    assert (answer["kind"], answer["reason"], answer["code"]) == ("Status", reason, code)
    assert message in answer["message"]


def test_a_body_cut_short_gets_no_answer(kube: FakeKubeApiServer) -> None:
    for headers, body in (
        ("Content-Length: 100\r\n", b"{}"),
        ("Transfer-Encoding: chunked\r\n", b"10\r\n{}"),
        ("Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\nX-Trailer: 1\r\n"),
    ):
        from urllib.parse import urlsplit

        parts = urlsplit(kube.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(_request("POST", CM_PATH, kube.admin_token, headers, body))
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(1024) == b""  # closed without a response
    assert kube.get_object("ConfigMap", "cut", "team") is None


# -- discovery and OpenAPI -------------------------------------------------------------------


def test_discovery_lists_what_is_served(http: httpx.Client, kube: FakeKubeApiServer) -> None:
    api = http.get("/api").json()
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]
    groups = http.get("/apis").json()
    assert groups["kind"] == "APIGroupList"
    names = {g["name"]: g for g in groups["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "argoproj.io", "bitnami.com"} <= set(names)
    assert names["autoscaling"]["preferredVersion"] == {
        "groupVersion": "autoscaling/v2",
        "version": "v2",
    }
    assert http.get("/apis/argoproj.io").json()["versions"][0]["groupVersion"] == (
        "argoproj.io/v1alpha1"
    )
    core = http.get("/api/v1").json()
    assert core["kind"] == "APIResourceList"
    assert core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["configmaps"] == {
        "name": "configmaps",
        "singularName": "configmap",
        "namespaced": True,
        "kind": "ConfigMap",
        "verbs": ["create", "delete", "get", "list", "patch", "update"],
        "shortNames": ["cm"],
    }
    assert by_name["namespaces"]["namespaced"] is False
    assert by_name["serviceaccounts/token"]["kind"] == "TokenRequest"
    rbac = http.get("/apis/rbac.authorization.k8s.io/v1").json()
    assert {r["kind"] for r in rbac["resources"]} == {
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for missing in ("/apis/example.com", "/apis/example.com/v1", "/api/v2", "/apis/apps/v9"):
        assert http.get(missing).status_code == 404
    assert httpx.get(f"{kube.url}/api").status_code == 401  # discovery needs a token too
    assert kube.calls[-1].verb == "discovery"


def test_aggregated_discovery_when_asked_for(http: httpx.Client) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    for path, expect_core in (("/api", True), ("/apis", False)):
        response = http.get(path, headers={"Accept": accept})
        assert response.headers["content-type"] == (
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )
        doc = response.json()
        assert doc["kind"] == "APIGroupDiscoveryList"
        names = [item["metadata"].get("name", "") for item in doc["items"]]
        assert ("" in names) is expect_core
        assert (len(names) > 1) is not expect_core
    core = http.get("/api", headers={"Accept": accept}).json()["items"][0]["versions"][0]
    sa = next(r for r in core["resources"] if r["resource"] == "serviceaccounts")
    assert sa["scope"] == "Namespaced"
    assert sa["shortNames"] == ["sa"]
    assert sa["subresources"][0]["subresource"] == "token"
    # a client that does not ask gets the legacy document
    older = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    assert http.get("/api", headers={"Accept": older}).json()["kind"] == "APIVersions"


def test_a_custom_kind_is_discovered_only_with_its_crd() -> None:
    with FakeKubeApiServer() as bare:
        headers = {"Authorization": f"Bearer {bare.admin_token}"}
        groups = httpx.get(f"{bare.url}/apis", headers=headers).json()["groups"]
        assert "argoproj.io" not in {g["name"] for g in groups}
        assert "monitoring.coreos.com" in {g["name"] for g in groups}
        index = httpx.get(f"{bare.url}/openapi/v3", headers=headers).json()["paths"]
        assert "apis/argoproj.io/v1alpha1" not in index


def test_openapi_v3_tells_kubectl_to_validate_on_the_server(http: httpx.Client) -> None:
    index = http.get("/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/argoproj.io/v1alpha1"} <= set(index)
    url = index["api/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/api/v1?hash=")
    doc = http.get(url).json()
    assert doc["openapi"] == "3.0.0"
    item = doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "",
        "version": "v1",
        "kind": "ConfigMap",
    }
    assert {"fieldValidation", "fieldManager", "force"} <= {p["name"] for p in patch["parameters"]}
    assert "post" in doc["paths"]["/api/v1/namespaces"]
    rbac = http.get(index["apis/rbac.authorization.k8s.io/v1"]["serverRelativeURL"]).json()
    assert "/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}" in rbac["paths"]
    assert http.get("/openapi/v3/apis/example.com/v1").status_code == 404
    assert http.get("/openapi/v4").status_code == 404


def test_openapi_v2_as_json_and_protobuf(http: httpx.Client) -> None:
    doc = http.get("/openapi/v2").json()
    assert (doc["swagger"], doc["definitions"]) == ("2.0", {})
    pb = http.get(
        "/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    assert pb.headers["content-type"] == (
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    )
    title, version = b"Kubernetes (aiaas fake)", b"v1.31.0"
    info = bytes([0x0A, len(title)]) + title + bytes([0x12, len(version)]) + version
    assert pb.content == b"\x0a\x032.0" + bytes([0x12, len(info)]) + info


def test_field_selectors(http: httpx.Client) -> None:
    for name in ("fs-a", "fs-b"):
        assert http.post(CM_PATH, json=configmap(name, {})).status_code == 201
    listed = http.get(CM_PATH, params={"fieldSelector": "metadata.name=fs-a"}).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["fs-a"]
    others = http.get(
        CM_PATH, params={"fieldSelector": "metadata.name!=fs-a,metadata.namespace==team"}
    ).json()
    assert "fs-b" in [i["metadata"]["name"] for i in others["items"]]
    assert "fs-a" not in [i["metadata"]["name"] for i in others["items"]]
    everywhere = http.get(
        "/api/v1/configmaps", params={"fieldSelector": "metadata.namespace=nowhere"}
    )
    assert everywhere.json()["items"] == []
    for bad in ("spec.nodeName=x", "metadata.name"):
        refused = http.get(CM_PATH, params={"fieldSelector": bad})
        assert refused.status_code == 400
        assert "field label not supported" in status_of(refused)["message"]


# -- TLS -------------------------------------------------------------------------------------


def test_tls_with_its_own_ca(tmp_path: Path) -> None:
    import ssl

    from cryptography import x509

    with FakeKubeApiServer(tls=True) as secure:
        assert secure.url.startswith("https://127.0.0.1:")
        ca = secure.ca_pem
        cert = x509.load_pem_x509_certificate(ca)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        trusted = ssl.create_default_context(cadata=ca.decode())
        headers = {"Authorization": f"Bearer {secure.admin_token}"}
        ok = httpx.get(f"{secure.url}/api/v1/namespaces", headers=headers, verify=trusted)
        assert ok.status_code == 200
        local = secure.url.replace("127.0.0.1", "localhost")
        assert httpx.get(f"{local}/version", verify=trusted).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{secure.url}/version")  # not trusted without its CA
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(secure.url.replace("https", "http") + "/version")
        # a client that never completes the handshake holds up nobody
        with socket.create_connection(("127.0.0.1", int(secure.url.rsplit(":", 1)[1]))):
            assert httpx.get(f"{secure.url}/version", verify=trusted).status_code == 200
        doc = secure.kubeconfig(namespace="team")
        cluster = doc["clusters"][0]["cluster"]
        assert cluster["server"] == secure.url
        assert base64.b64decode(cluster["certificate-authority-data"]) == ca
        assert doc["contexts"][0]["context"]["namespace"] == "team"
        path = secure.write_kubeconfig(tmp_path / "kubeconfig")
        assert path.stat().st_mode & 0o777 == 0o600
    with FakeKubeApiServer() as plain:
        assert plain.url.startswith("http://")
        assert "certificate-authority-data" not in plain.kubeconfig()["clusters"][0]["cluster"]
        with pytest.raises(RuntimeError, match="tls=True"):
            _ = plain.ca_pem


async def test_kubernetes_asyncio_over_tls(tmp_path: Path) -> None:
    from kubernetes_asyncio import client, config

    with FakeKubeApiServer(tls=True) as secure:
        path = secure.write_kubeconfig(tmp_path / "kubeconfig")
        cfg = client.Configuration()
        await config.load_kube_config(
            config_file=str(path), client_configuration=cfg, persist_config=False
        )
        async with client.ApiClient(cfg) as api:
            names = {n.metadata.name for n in (await client.CoreV1Api(api).list_namespace()).items}
        assert "kube-system" in names
