"""The emulator behaves as linode_api4 needs: pagination, filters, errors, readiness, faults."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import httpx
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from linode_api4 import ApiError, LinodeClient
from linode_api4.objects.filtering import Filter

from aiaas_infra.testing import AccountLimits, Fault, LinodeEmulator, RegionConfig, RemoteEmulator

RULES = {"inbound": [], "outbound": [], "inbound_policy": "DROP", "outbound_policy": "ACCEPT"}


@pytest.fixture
def client(emulator: LinodeEmulator) -> LinodeClient:
    return LinodeClient("token", base_url=emulator.url, retry=False)


def raw(
    emulator: LinodeEmulator, method: str, path: str, body: Any = None, **kw: Any
) -> requests.Response:
    headers = {"Authorization": "Bearer token", **kw.pop("headers", {})}
    return requests.request(
        method, emulator.url + path, json=body, headers=headers, timeout=5, **kw
    )


def test_pagination_is_what_the_sdk_expects() -> None:
    emulator = LinodeEmulator(limits=AccountLimits(firewalls=200)).start()
    client = LinodeClient("token", base_url=emulator.url, retry=False)
    for i in range(130):
        client.networking.firewall_create(f"fw-{i:03d}", RULES)
    listing = client.networking.firewalls()
    assert len(listing) == 130
    labels = [fw.label for fw in listing]  # iterating loads page 2 with page_size=100
    assert labels == [f"fw-{i:03d}" for i in range(130)]
    page2 = raw(emulator, "GET", "/networking/firewalls?page=2&page_size=100").json()
    assert (page2["page"], page2["pages"], page2["results"], len(page2["data"])) == (2, 2, 130, 30)
    assert raw(emulator, "GET", "/networking/firewalls?page_size=10").status_code == 400
    assert raw(emulator, "GET", "/networking/firewalls?page=x").status_code == 400
    emulator.stop()


def test_x_filter_operators(emulator: LinodeEmulator, client: LinodeClient) -> None:
    for i, tags in enumerate((["a-tag"], ["b-tag"], ["a-tag", "c-tag"])):
        client.networking.firewall_create(f"fw-{i}", RULES, tags=tags)
    assert [f.label for f in client.networking.firewalls(Filter({"tags": "a-tag"}))] == [
        "fw-0",
        "fw-2",
    ]
    assert (
        len(client.networking.firewalls(Filter({"+or": [{"label": "fw-0"}, {"label": "fw-1"}]})))
        == 2
    )
    assert (
        len(client.networking.firewalls(Filter({"+and": [{"tags": "a-tag"}, {"label": "fw-2"}]})))
        == 1
    )
    assert len(client.networking.firewalls(Filter({"label": {"+contains": "fw-"}}))) == 3
    assert len(client.networking.firewalls(Filter({"label": {"+neq": "fw-1"}}))) == 2
    assert len(client.networking.firewalls(Filter({"id": {"+gt": 0, "+lte": 10**9}}))) == 3
    ordered = raw(
        emulator,
        "GET",
        "/networking/firewalls",
        headers={"X-Filter": json.dumps({"+order_by": "label", "+order": "desc"})},
    ).json()
    assert [f["label"] for f in ordered["data"]] == ["fw-2", "fw-1", "fw-0"]
    bad = raw(
        emulator, "GET", "/networking/firewalls", headers={"X-Filter": json.dumps({"nope": 1})}
    )
    assert bad.status_code == 400
    assert bad.json() == {"errors": [{"reason": "Cannot filter on nope", "field": "X-Filter"}]}
    assert (
        raw(emulator, "GET", "/networking/firewalls", headers={"X-Filter": "{"}).status_code == 400
    )


def test_delete_answers_200_with_an_empty_object(
    emulator: LinodeEmulator, client: LinodeClient
) -> None:
    fw = client.networking.firewall_create("fw-del", RULES)
    response = raw(emulator, "DELETE", f"/networking/firewalls/{fw.id}")
    assert (response.status_code, response.json()) == (200, {})
    again = raw(emulator, "DELETE", f"/networking/firewalls/{fw.id}")
    assert again.status_code == 404
    assert again.json() == {"errors": [{"reason": "Not found"}]}


def test_errors_and_headers(emulator: LinodeEmulator) -> None:
    response = raw(emulator, "POST", "/lke/clusters", {"label": "x", "region": "us-ord"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"reason": "k8s_version is required", "field": "k8s_version"}]
    }
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert header in response.headers
    unauthenticated = requests.get(emulator.url + "/regions", timeout=5)
    assert unauthenticated.status_code == 401
    assert raw(emulator, "PATCH", "/regions").status_code == 405  # Linode API v4 has no PATCH
    assert raw(emulator, "PUT", "/regions").status_code == 405
    assert raw(emulator, "GET", "/nothing/here").status_code == 501  # not emulated
    bad_json = requests.post(
        emulator.url + "/vpcs", data="{", headers={"Authorization": "Bearer t"}, timeout=5
    )
    assert bad_json.status_code == 400


def test_labels_are_unique_and_unknown_ids_are_404(emulator: LinodeEmulator) -> None:
    def refused(response: requests.Response, reason: str) -> None:
        assert response.status_code == 400
        assert response.json() == {"errors": [{"reason": reason, "field": "label"}]}

    firewalls = "Label must be unique among your firewalls"
    a = raw(emulator, "POST", "/networking/firewalls", {"label": "fw-a", "rules": RULES}).json()
    b = raw(emulator, "POST", "/networking/firewalls", {"label": "fw-b", "rules": RULES}).json()
    refused(
        raw(emulator, "POST", "/networking/firewalls", {"label": "fw-a", "rules": RULES}), firewalls
    )
    refused(raw(emulator, "PUT", f"/networking/firewalls/{b['id']}", {"label": "fw-a"}), firewalls)
    kept = raw(emulator, "PUT", f"/networking/firewalls/{a['id']}", {"label": "fw-a"})
    assert (kept.status_code, kept.json()["label"]) == (200, "fw-a")  # its own label is no clash
    renamed = raw(emulator, "PUT", f"/networking/firewalls/{b['id']}", {"label": "fw-c"})
    assert (renamed.status_code, renamed.json()["label"]) == (200, "fw-c")
    vpc = raw(emulator, "POST", "/vpcs", {"label": "net", "region": "us-ord"}).json()
    refused(
        raw(emulator, "POST", "/vpcs", {"label": "net", "region": "us-ord"}),
        "Label must be unique among your VPCs",
    )
    subnets = f"/vpcs/{vpc['id']}/subnets"
    assert raw(emulator, "POST", subnets, {"label": "a", "ipv4": "10.0.0.0/24"}).status_code == 200
    refused(
        raw(emulator, "POST", subnets, {"label": "a", "ipv4": "10.0.1.0/24"}),
        "Label must be unique in the VPC",
    )
    for path in (
        "/networking/firewalls/999",
        "/vpcs/999",
        "/lke/clusters/999",
        "/databases/postgresql/instances/999",
        "/object-storage/keys/999",
    ):
        missing = raw(emulator, "GET", path)
        assert (path, missing.status_code) == (path, 404)
        assert missing.json() == {"errors": [{"reason": "Not found"}]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/linode/instances"),
        ("POST", "/linode/instances"),
        ("GET", "/tags"),
        ("GET", "/lke/clusters/123/dashboard"),
        ("PATCH", "/regions/us-ord/../../account"),
    ],
)
def test_endpoints_it_does_not_emulate_say_so(
    emulator: LinodeEmulator, client: LinodeClient, method: str, path: str
) -> None:
    response = raw(emulator, method, path)
    assert response.status_code == 501
    (error,) = response.json()["errors"]
    assert error["reason"].startswith(f"{method} /v4")
    assert "is not emulated by aiaas-infra's Linode emulator" in error["reason"]
    assert "LKE clusters" in error["reason"]  # what it does emulate
    assert response.headers["Content-Type"] == "application/json"


def test_linode_api4_sees_not_emulated_apart_from_not_found(
    emulator: LinodeEmulator, client: LinodeClient
) -> None:
    with pytest.raises(ApiError) as missing:
        client.get("/networking/firewalls/999999")
    assert (missing.value.status, missing.value.errors) == (404, ["Not found"])
    for call in (client.linode.instances, client.tags):
        with pytest.raises(ApiError) as unknown:
            call()
        assert unknown.value.status == 501
        (reason,) = unknown.value.errors
        assert "is not emulated by aiaas-infra's Linode emulator" in reason
    with pytest.raises(ApiError, match="POST /v4/tags is not emulated"):
        client.post("/tags", data={"label": "team-a"})
    long_path = "/x" * 500
    reason = raw(emulator, "GET", long_path).json()["errors"][0]["reason"]
    assert len(reason) < 700  # a hostile path is not echoed in full


def test_admin_paths_it_does_not_know_say_so(emulator: LinodeEmulator) -> None:
    response = requests.get(emulator.root + "/_emulator/nope", timeout=5)
    assert response.status_code == 404
    assert "is not an admin endpoint" in response.json()["errors"][0]["reason"]


def test_token_is_checked_when_configured() -> None:
    with LinodeEmulator(token="right") as em:
        assert (
            requests.get(
                em.url + "/regions", headers={"Authorization": "Bearer wrong"}, timeout=5
            ).status_code
            == 401
        )
        assert (
            requests.get(
                em.url + "/regions", headers={"Authorization": "Bearer right"}, timeout=5
            ).status_code
            == 200
        )
        assert em.env()["LINODE_TOKEN"] == "right"


def test_clusters_pools_and_kubeconfig_become_ready() -> None:
    # Long delays hold everything in provisioning while the test looks; ready_now() ends them
    # (no assumption on how fast this machine is).
    emulator = LinodeEmulator(ready_delay=3600, kubeconfig_delay=3600).start()
    client = LinodeClient("token", base_url=emulator.url, retry=False)
    cluster = client.lke.cluster_create(
        "us-ord", "c1", "1.31", node_pools=[{"type": "g6-standard-2", "count": 3, "label": "p"}]
    )
    assert cluster._raw_json["status"] == "not_ready"
    with pytest.raises(ApiError) as info:
        client.get(f"/lke/clusters/{cluster.id}/kubeconfig")
    assert info.value.status == 503
    assert info.value.response.headers["Retry-After"] == "1"
    assert "not yet available" in str(info.value)
    pools = client.get(f"/lke/clusters/{cluster.id}/pools")["data"]
    assert {n["status"] for n in pools[0]["nodes"]} == {"not_ready"}
    emulator.ready_now()
    assert client.get(f"/lke/clusters/{cluster.id}")["status"] == "ready"
    pools = client.get(f"/lke/clusters/{cluster.id}/pools")["data"]
    assert all(n["status"] == "ready" for n in pools[0]["nodes"])
    assert len(pools[0]["nodes"]) == 3
    assert "kubeconfig" in client.get(f"/lke/clusters/{cluster.id}/kubeconfig")
    emulator.stop()


def test_provisioning_ends_once_its_delay_has_passed(
    client: LinodeClient, emulator: LinodeEmulator
) -> None:
    """The delays themselves: waited for as a condition, with a generous deadline."""
    cluster = client.lke.cluster_create(
        "us-ord", "c2", "1.31", node_pools=[{"type": "g6-standard-2", "count": 1, "label": "p"}]
    )
    db = client.database.postgresql_create("db-two", "us-ord", "postgresql/16", "g6-nanode-1")
    kubeconfig = raw(emulator, "GET", f"/lke/clusters/{cluster.id}/kubeconfig")
    deadline = time.monotonic() + 30
    while True:
        states = (
            client.get(f"/lke/clusters/{cluster.id}")["status"],
            client.get(f"/databases/postgresql/instances/{db.id}")["status"],
            kubeconfig.status_code,
        )
        if states == ("ready", "active", 200):
            break
        assert kubeconfig.status_code in (200, 503), kubeconfig.text
        assert time.monotonic() < deadline, states
        time.sleep(0.01)
        kubeconfig = raw(emulator, "GET", f"/lke/clusters/{cluster.id}/kubeconfig")
    assert "kubeconfig" in kubeconfig.json()


def test_lke_rules(client: LinodeClient, emulator: LinodeEmulator) -> None:
    cluster = client.lke.cluster_create(
        "us-ord",
        "c1",
        "1.31",
        node_pools=[{"type": "g6-standard-2", "count": 3}],
        control_plane={"high_availability": True},
    )
    cid = cluster.id
    pool_id = client.get(f"/lke/clusters/{cid}/pools")["data"][0]["id"]
    with pytest.raises(ApiError, match="unique"):
        client.lke.cluster_create(
            "us-ord", "c1", "1.31", node_pools=[{"type": "g6-standard-2", "count": 3}]
        )
    with pytest.raises(ApiError, match="cannot be changed"):
        client.put(f"/lke/clusters/{cid}/pools/{pool_id}", data={"type": "g6-standard-4"})
    with pytest.raises(ApiError, match="downgraded"):
        client.put(f"/lke/clusters/{cid}", data={"k8s_version": "1.30"})
    with pytest.raises(ApiError, match="cannot be disabled"):
        client.put(f"/lke/clusters/{cid}", data={"control_plane": {"high_availability": False}})
    with pytest.raises(ApiError, match="at least one node pool"):
        client.delete(f"/lke/clusters/{cid}/pools/{pool_id}")
    with pytest.raises(ApiError, match="Kubernetes is not available"):
        client.lke.cluster_create(
            "eu-west", "c2", "1.31", node_pools=[{"type": "g6-standard-2", "count": 3}]
        )
    with pytest.raises(ApiError, match="GPU plans are not available"):
        client.lke.cluster_create(
            "us-east", "c3", "1.31", node_pools=[{"type": "g2-gpu-rtx4000a1-s", "count": 1}]
        )
    updated = client.put(
        f"/lke/clusters/{cid}/pools/{pool_id}",
        data={"count": 5, "autoscaler": {"enabled": True, "min": 3, "max": 6}},
    )
    assert updated["count"] == 5
    assert len(updated["nodes"]) == 5


def test_account_limits() -> None:
    with LinodeEmulator(limits=AccountLimits(nodes=4, firewalls=1)) as em:
        client = LinodeClient("t", base_url=em.url, retry=False)
        client.networking.firewall_create("only-one", RULES)
        with pytest.raises(ApiError, match="Account Limit reached"):
            client.networking.firewall_create("two", RULES)
        with pytest.raises(ApiError, match="Account Limit reached") as info:
            client.lke.cluster_create(
                "us-ord", "big", "1.31", node_pools=[{"type": "g6-standard-2", "count": 5}]
            )
        assert info.value.status == 400
        assert em.resources("clusters") == []


def test_region_configuration(emulator: LinodeEmulator, client: LinodeClient) -> None:
    emulator.set_region(
        RegionConfig(
            "us-ord",
            unavailable_plans=("g6-standard-4",),
            account_unavailable=("Managed Databases",),
        )
    )
    availability = client.get("/regions/us-ord/availability")
    assert {"region": "us-ord", "plan": "g6-standard-4", "available": False} in availability
    assert client.get("/account/availability/us-ord")["unavailable"] == ["Managed Databases"]
    with pytest.raises(ApiError, match="not available in us-ord"):
        client.lke.cluster_create(
            "us-ord", "c", "1.31", node_pools=[{"type": "g6-standard-4", "count": 3}]
        )
    assert raw(emulator, "GET", "/regions/mars-1").status_code == 404


def test_status_faults_and_retry_after(emulator: LinodeEmulator, client: LinodeClient) -> None:
    emulator.inject_status(429, path=r"^/regions$", times=2, retry_after=3)
    first = raw(emulator, "GET", "/regions")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "3"
    assert first.json() == {"errors": [{"reason": "Too many requests"}]}
    assert raw(emulator, "GET", "/regions").status_code == 429
    assert raw(emulator, "GET", "/regions").status_code == 200
    emulator.inject(Fault("status", path="/vpcs", method="POST", status=500, times=None))
    assert raw(emulator, "POST", "/vpcs", {"label": "v", "region": "us-ord"}).status_code == 500
    assert raw(emulator, "GET", "/vpcs").status_code == 200
    emulator.clear_faults()
    assert raw(emulator, "POST", "/vpcs", {"label": "v", "region": "us-ord"}).status_code == 200
    statuses = [r.status for r in emulator.requests]
    assert statuses[:3] == [429, 429, 200]
    assert emulator.request_count("POST", "/vpcs") == 2


def test_lost_response_still_creates(emulator: LinodeEmulator, client: LinodeClient) -> None:
    emulator.lose_response(path="/networking/firewalls$")
    with pytest.raises(requests.ConnectionError):
        client.networking.firewall_create("fw-lost", RULES)
    assert [f["label"] for f in emulator.resources("firewalls")] == ["fw-lost"]
    assert emulator.requests[-1].fault == "drop"


def test_timeout_fault_holds_the_answer(emulator: LinodeEmulator) -> None:
    emulator.inject_timeout(0.3, path="/vpcs$", method="POST")
    with pytest.raises(requests.Timeout):
        requests.post(
            emulator.url + "/vpcs",
            json={"label": "v", "region": "us-ord"},
            headers={"Authorization": "Bearer t"},
            timeout=0.1,
        )
    assert len(emulator.resources("vpcs")) == 1


def test_latency_and_rate_limit() -> None:
    with LinodeEmulator(rate_limit=2, rate_window=60) as em:
        em.inject_latency(0.05, path="/regions")
        started = time.monotonic()
        assert raw(em, "GET", "/regions").status_code == 200
        assert time.monotonic() - started >= 0.05
        assert raw(em, "GET", "/regions").headers["X-RateLimit-Remaining"] == "0"
        limited = raw(em, "GET", "/regions")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1


def test_buckets_keys_and_s3_lifecycle(emulator: LinodeEmulator, client: LinodeClient) -> None:
    first = client.object_storage.bucket_create("us-ord", "logs-bucket")
    again = client.object_storage.bucket_create("us-ord", "logs-bucket")  # Linode: 200, same bucket
    assert first._raw_json == again._raw_json
    with pytest.raises(ApiError, match="already exists"):
        client.object_storage.bucket_create("us-sea", "logs-bucket")
    reader = client.object_storage.keys_create(
        "reader",
        bucket_access=[
            {"region": "us-ord", "bucket_name": "logs-bucket", "permissions": "read_only"}
        ],
    )
    writer = client.object_storage.keys_create(
        "writer",
        bucket_access=[
            {"region": "us-ord", "bucket_name": "logs-bucket", "permissions": "read_write"}
        ],
    )
    assert client.get(f"/object-storage/keys/{writer.id}")["secret_key"] == "[REDACTED]"

    def s3(key: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=emulator.root,
            aws_access_key_id=key.access_key,
            aws_secret_access_key=key._raw_json["secret_key"],
            region_name="us-ord",
            config=Config(s3={"addressing_style": "path"}),
        )

    rules = {
        "Rules": [
            {
                "ID": "r1",
                "Filter": {"Prefix": "a/"},
                "Status": "Enabled",
                "Expiration": {"Days": 30},
            }
        ]
    }
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(reader).put_bucket_lifecycle_configuration(
            Bucket="logs-bucket", LifecycleConfiguration=rules
        )
    with pytest.raises(ClientError, match="NoSuchLifecycleConfiguration"):
        s3(reader).get_bucket_lifecycle_configuration(Bucket="logs-bucket")
    s3(writer).put_bucket_lifecycle_configuration(
        Bucket="logs-bucket", LifecycleConfiguration=rules
    )
    got = s3(reader).get_bucket_lifecycle_configuration(Bucket="logs-bucket")
    assert got["Rules"][0]["ID"] == "r1"
    assert got["Rules"][0]["Expiration"] == {"Days": 30}
    s3(writer).delete_bucket_lifecycle(Bucket="logs-bucket")
    assert emulator.lifecycle_xml("logs-bucket") is None
    with pytest.raises(ClientError, match="NoSuchBucket"):
        s3(writer).get_bucket_lifecycle_configuration(Bucket="nope-bucket")
    s3(writer).put_object(Bucket="logs-bucket", Key="x", Body=b"data")
    with pytest.raises(ApiError, match="not empty"):
        client.delete("/object-storage/buckets/us-ord/logs-bucket")
    usage = client.get("/object-storage/quotas/obj-buckets-us-ord-1/usage")
    assert usage == {"quota_limit": 50, "usage": 1}
    assert (
        client.get("/object-storage/global-quotas/obj-access-keys-per-account/usage")["usage"] == 2
    )


def test_vpcs_subnets_and_databases() -> None:
    emulator = LinodeEmulator(database_delay=3600).start()  # provisioning until ready_now()
    client = LinodeClient("token", base_url=emulator.url, retry=False)
    vpc = client.vpcs.create("net", "us-ord")
    subnet = vpc.subnet_create("a", ipv4="10.0.0.0/24")
    for bad in ("8.8.8.0/24", "10.0.0.128/25", "10.1.0.0/30"):
        with pytest.raises(ApiError):
            vpc.subnet_create(f"b{bad[-2:]}", ipv4=bad)
    db = client.database.postgresql_create(
        "db-one",
        "us-ord",
        "postgresql/16",
        "g6-nanode-1",
        private_network={"vpc_id": vpc.id, "subnet_id": subnet.id},
    )
    assert db._raw_json["status"] == "provisioning"
    with pytest.raises(ApiError, match="in use"):
        client.delete(f"/vpcs/{vpc.id}/subnets/{subnet.id}")
    with pytest.raises(ApiError, match="not active yet"):
        client.put(f"/databases/postgresql/instances/{db.id}", data={"type": "g6-standard-1"})
    assert client.get(f"/databases/postgresql/instances/{db.id}")["status"] == "provisioning"
    emulator.ready_now()
    assert client.get(f"/databases/postgresql/instances/{db.id}")["status"] == "active"
    with pytest.raises(ApiError, match="cannot be decreased"):
        client.put(f"/databases/postgresql/instances/{db.id}", data={"cluster_size": 0})
    assert (
        client.get(f"/databases/postgresql/instances/{db.id}/credentials")["username"] == "akmadmin"
    )
    emulator.stop()


def test_out_of_band_helpers_and_remote_control(
    emulator: LinodeEmulator, client: LinodeClient
) -> None:
    client.networking.firewall_create("fw-a", RULES)
    with RemoteEmulator(emulator.root) as remote:
        assert [f["label"] for f in remote.resources("firewalls")] == ["fw-a"]
        remote.inject(Fault("status", path="/vpcs", status=503, retry_after=2))
        assert raw(emulator, "GET", "/vpcs").status_code == 503
        remote.clear_faults()
        assert any(r.status == 503 for r in remote.requests())
        remote.reset_requests()
        assert remote.requests() == []
        remote.delete_out_of_band("firewalls", "fw-a")
        assert remote.resources("firewalls") == []
        with pytest.raises(httpx.HTTPStatusError):
            remote.delete_out_of_band("firewalls", "fw-a")
    with pytest.raises(KeyError):
        emulator.update_out_of_band("pools", "nope", count=3)
    with pytest.raises(RuntimeError, match="not running"):
        LinodeEmulator().port  # noqa: B018


def test_a_vpc_deleted_out_of_band_takes_its_subnets(
    emulator: LinodeEmulator, client: LinodeClient
) -> None:
    """As on Linode, and as the API's own delete does: no subnet is left under a gone VPC (the
    fault campaign saw them as orphans and as duplicates once the VPC was recreated)."""
    kept = client.vpcs.create("vpc-kept", "us-ord")
    kept.subnet_create("a", ipv4="10.1.0.0/24")
    gone = client.vpcs.create("vpc-gone", "us-ord")
    gone.subnet_create("a", ipv4="10.2.0.0/24")
    gone.subnet_create("b", ipv4="10.2.1.0/24")
    emulator.delete_out_of_band("vpcs", "vpc-gone")
    assert [v["label"] for v in emulator.resources("vpcs")] == ["vpc-kept"]
    assert [(s["label"], s["_vpc"]) for s in emulator.resources("subnets")] == [("a", kept.id)]
    again = client.vpcs.create("vpc-gone", "us-ord")
    again.subnet_create("a", ipv4="10.2.0.0/24")
    assert sorted(s["_vpc"] for s in emulator.resources("subnets")) == sorted([kept.id, again.id])
