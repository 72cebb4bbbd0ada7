"""Contract: every resource kind the emulator serves has the shape of Linode's real responses.

The reference is the linode_api4 project's own recorded fixtures (``tests/fixtures/linode-api4``):
the same keys, the same JSON types and the same nesting. ``null`` matches any type (Linode's
nullable fields), numbers match numbers, and list items are compared when both lists have one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from aiaas_infra.testing import LinodeEmulator


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


#: Free-form maps (keys are data, not schema): only their values' types are compared.
MAPS = ("labels",)


def mismatches(ours: Any, real: Any, path: str = "$") -> list[str]:
    if ours is None or real is None:
        return []
    if _type(ours) != _type(real):
        return [f"{path}: {_type(ours)} here, {_type(real)} in Linode's response"]
    if isinstance(real, dict) and path.rsplit(".", 1)[-1] in MAPS:
        kinds = {_type(v) for v in real.values()}
        return [
            f"{path}.{k}: unexpected {_type(v)}"
            for k, v in ours.items()
            if kinds and _type(v) not in kinds
        ]
    if isinstance(real, dict):
        out = []
        missing = sorted(set(real) - set(ours))
        extra = sorted(set(ours) - set(real))
        if missing:
            out.append(f"{path}: missing keys {missing}")
        if extra:
            out.append(f"{path}: extra keys {extra}")
        for key in sorted(set(real) & set(ours)):
            out += mismatches(ours[key], real[key], f"{path}.{key}")
        return out
    if isinstance(real, list) and real and ours:
        return mismatches(ours[0], real[0], f"{path}[0]")
    return []


@pytest.fixture(scope="module")
def world() -> Any:
    """One emulator with one of everything, read through plain HTTP."""
    with LinodeEmulator(ready_delay=0.0, kubeconfig_delay=0.0, database_delay=0.0) as em:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer token"

        def call(method: str, path: str, body: Any = None) -> Any:
            response = session.request(method, em.url + path, json=body, timeout=5)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        fw = call(
            "POST",
            "/networking/firewalls",
            {
                "label": "fw-one",
                "rules": {
                    "inbound": [
                        {
                            "label": "https",
                            "action": "ACCEPT",
                            "protocol": "TCP",
                            "ports": "443",
                            "addresses": {"ipv4": ["0.0.0.0/0"]},
                        }
                    ],
                    "outbound": [],
                    "inbound_policy": "DROP",
                    "outbound_policy": "ACCEPT",
                },
                "tags": ["aiaas-owner:x"],
            },
        )
        cluster = call(
            "POST",
            "/lke/clusters",
            {
                "label": "one",
                "region": "us-ord",
                "k8s_version": "1.31",
                "node_pools": [
                    {
                        "type": "g6-standard-2",
                        "count": 3,
                        "label": "general",
                        "firewall_id": fw["id"],
                        "taints": [{"key": "a", "value": "b", "effect": "NoSchedule"}],
                        "labels": {"a": "b"},
                        "autoscaler": {"enabled": True, "min": 3, "max": 5},
                        "tags": ["aiaas-owner:x"],
                    }
                ],
                "control_plane": {"high_availability": True},
                "tags": ["aiaas-owner:x"],
            },
        )
        vpc = call("POST", "/vpcs", {"label": "vpc-one", "region": "us-ord", "description": "d"})
        subnet = call(
            "POST", f"/vpcs/{vpc['id']}/subnets", {"label": "data", "ipv4": "10.0.0.0/24"}
        )
        call("POST", "/object-storage/buckets", {"label": "bucket-one", "region": "us-ord"})
        limited = call(
            "POST",
            "/object-storage/keys",
            {
                "label": "k1",
                "bucket_access": [
                    {"region": "us-ord", "bucket_name": "bucket-one", "permissions": "read_only"}
                ],
            },
        )
        unlimited = call("POST", "/object-storage/keys", {"label": "k2"})
        db = call(
            "POST",
            "/databases/postgresql/instances",
            {
                "label": "db-one",
                "region": "us-ord",
                "type": "g6-nanode-1",
                "engine": "postgresql/16",
                "private_network": {"vpc_id": vpc["id"], "subnet_id": subnet["id"]},
            },
        )
        yield {
            "call": call,
            "cluster": cluster,
            "fw": fw,
            "vpc": vpc,
            "subnet": subnet,
            "limited": limited,
            "unlimited": unlimited,
            "db": db,
        }


def fixture(linode_fixtures: Path, name: str, item: int | None = None) -> Any:
    data = json.loads((linode_fixtures / name).read_text())
    return data["data"][item] if item is not None else data


CASES: list[tuple[str, str, str, int | None, int | None]] = [
    # (what, our path template, fixture file, fixture item, our item)
    ("region list", "/regions", "regions.json", 6, 0),
    ("region", "/regions/us-ord", "regions.json", 6, None),
    (
        "region availability",
        "/regions/us-ord/availability",
        "regions_us-east_availability.json",
        None,
        None,
    ),
    ("regions availability list", "/regions/availability", "regions_availability.json", None, None),
    (
        "account availability",
        "/account/availability/us-ord",
        "account_availability_us-east.json",
        None,
        None,
    ),
    ("account availability list", "/account/availability", "account_availability.json", None, None),
    ("LKE versions", "/lke/versions", "lke_versions.json", None, None),
    ("Linode type", "/linode/types/g6-standard-2", "linode_types.json", 0, None),
    ("Linode type list", "/linode/types", "linode_types.json", None, None),
    ("LKE cluster", "/lke/clusters/{cluster}", "lke_clusters_18881.json", None, None),
    ("LKE cluster list", "/lke/clusters", "lke_clusters_18881.json", None, 0),
    (
        "node pool list",
        "/lke/clusters/{cluster}/pools",
        "lke_clusters_18881_pools_456.json",
        None,
        0,
    ),
    ("firewall", "/networking/firewalls/{fw}", "networking_firewalls_123.json", None, None),
    ("firewall list", "/networking/firewalls", "networking_firewalls.json", None, None),
    (
        "firewall rules",
        "/networking/firewalls/{fw}/rules",
        "networking_firewalls_123_rules.json",
        None,
        None,
    ),
    ("VPC", "/vpcs/{vpc}", "vpcs_123456.json", None, None),
    ("VPC list", "/vpcs", "vpcs.json", None, None),
    ("subnet", "/vpcs/{vpc}/subnets/{subnet}", "vpcs_123456_subnets_789.json", None, None),
    ("subnet list", "/vpcs/{vpc}/subnets", "vpcs_123456_subnets.json", None, None),
    (
        "bucket",
        "/object-storage/buckets/us-ord/bucket-one",
        "object-storage_buckets_us-east-1_example-bucket.json",
        None,
        None,
    ),
    (
        "bucket in list",
        "/object-storage/buckets",
        "object-storage_buckets_us-east-1_example-bucket.json",
        None,
        0,
    ),
    ("limited key", "/object-storage/keys/{limited}", "object-storage_keys.json", 1, None),
    ("unlimited key", "/object-storage/keys/{unlimited}", "object-storage_keys.json", 0, None),
    ("key list", "/object-storage/keys", "object-storage_keys.json", 1, 0),
    ("quota list", "/object-storage/quotas", "object-storage_quotas.json", None, None),
    (
        "quota",
        "/object-storage/quotas/obj-buckets-us-ord-1",
        "object-storage_quotas_obj-objects-us-ord-1.json",
        None,
        None,
    ),
    (
        "quota usage",
        "/object-storage/quotas/obj-buckets-us-ord-1/usage",
        "object-storage_quotas_obj-objects-us-ord-1_usage.json",
        None,
        None,
    ),
    (
        "global quotas",
        "/object-storage/global-quotas",
        "object-storage_global-quotas.json",
        None,
        None,
    ),
    (
        "global quota usage",
        "/object-storage/global-quotas/obj-access-keys-per-account/usage",
        "object-storage_global-quotas_obj-access-keys-per-account_usage.json",
        None,
        None,
    ),
    (
        "PostgreSQL instance",
        "/databases/postgresql/instances/{db}",
        "databases_postgresql_instances.json",
        0,
        None,
    ),
    (
        "PostgreSQL list",
        "/databases/postgresql/instances",
        "databases_postgresql_instances.json",
        None,
        None,
    ),
    (
        "database credentials",
        "/databases/postgresql/instances/{db}/credentials",
        "databases_postgresql_instances_123_credentials.json",
        None,
        None,
    ),
    ("all databases", "/databases/instances", "databases_instances.json", None, None),
    ("database engines", "/databases/engines", "databases_engines.json", None, None),
    ("database types", "/databases/types", "databases_types.json", None, None),
]


@pytest.mark.parametrize(
    ("what", "path", "name", "real_item", "our_item"), CASES, ids=[c[0] for c in CASES]
)
def test_shape_matches_linode(  # noqa: PLR0917
    world: Any,
    linode_fixtures: Path,
    what: str,
    path: str,
    name: str,
    real_item: int | None,
    our_item: int | None,
) -> None:
    ids = {
        k: world[k]["id"] for k in ("cluster", "fw", "vpc", "subnet", "limited", "unlimited", "db")
    }
    ours = world["call"]("GET", path.format(**ids))
    if our_item is not None:
        ours = ours["data"][our_item]
    real = fixture(linode_fixtures, name, real_item)
    assert mismatches(ours, real) == [], what


def test_every_kind_is_covered() -> None:
    """Each resource kind the provider uses appears in the contract."""
    covered = " ".join(c[1] for c in CASES)
    for kind in (
        "/lke/clusters",
        "/pools",
        "/networking/firewalls",
        "/vpcs",
        "/subnets",
        "/object-storage/buckets",
        "/object-storage/keys",
        "/databases/postgresql/instances",
        "/regions",
        "/linode/types",
        "/object-storage/quotas",
    ):
        assert kind in covered, kind


def test_create_answers_have_the_object_shape(world: Any, linode_fixtures: Path) -> None:
    assert mismatches(world["cluster"], fixture(linode_fixtures, "lke_clusters_18881.json")) == []
    assert mismatches(world["fw"], fixture(linode_fixtures, "networking_firewalls_123.json")) == []
    assert (
        mismatches(world["db"], fixture(linode_fixtures, "databases_postgresql_instances.json", 0))
        == []
    )
    real_key = fixture(linode_fixtures, "object-storage_keys.json", 1)
    assert mismatches(world["limited"], real_key) == []
    assert world["limited"]["secret_key"] != "[REDACTED]"


def test_node_shape(world: Any, linode_fixtures: Path) -> None:
    pools = world["call"]("GET", f"/lke/clusters/{world['cluster']['id']}/pools")
    node = pools["data"][0]["nodes"][0]
    assert mismatches(node, fixture(linode_fixtures, "lke_clusters_18881_nodes_123456.json")) == []


def test_the_comparison_catches_differences() -> None:
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) == ["$: missing keys ['b']"]
    assert mismatches({"a": "1"}, {"a": 1}) == ["$.a: string here, number in Linode's response"]
    assert mismatches({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]}) == [
        "$.a[0]: missing keys ['y']"
    ]
    assert mismatches({"a": None}, {"a": 1}) == []
    assert mismatches({"labels": {"k": "v"}}, {"labels": {"x": "y"}}) == []
    assert mismatches({"labels": {"k": 1}}, {"labels": {"x": "y"}}) == [
        "$.labels.k: unexpected number"
    ]
