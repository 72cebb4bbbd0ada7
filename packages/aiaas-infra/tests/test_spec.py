"""The platform spec: loading, validation with exact paths, and round trips."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from aiaas_infra import (
    Autoscaler,
    NodePool,
    PlatformSpec,
    SpecError,
    example_spec_path,
    is_gpu_type,
    load_spec,
    spec_fingerprint,
    spec_from_dict,
    spec_to_dict,
)


@pytest.fixture
def data(spec: PlatformSpec) -> dict[str, Any]:
    return copy.deepcopy(spec_to_dict(spec))


def problems(data: object) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    assert info.value.code == "SPEC_INVALID"
    assert info.value.status == 422
    return {p.path: p.message for p in info.value.problems}


def test_example_declares_the_four_environments(spec: PlatformSpec) -> None:
    assert set(spec.environments) == {"development", "staging", "production", "system"}
    assert spec.namespace("production") == "env-production"
    assert spec.database_label("staging") == "aiaas-staging"
    assert spec.database_label("system") is None
    gpu = spec.cluster.pool("gpu")
    assert gpu is not None
    assert gpu.gpu
    assert spec.cluster.pool("missing") is None
    metrics = next(b for b in spec.object_storage.buckets if b.purpose == "metrics")
    assert metrics.lifecycle
    assert spec.bucket_region(metrics) == spec.region
    assert spec.owner_tag == "aiaas-owner:aiaas"


def test_round_trip_and_fingerprint(spec: PlatformSpec) -> None:
    again = spec_from_dict(spec_to_dict(spec))
    assert again == spec
    assert spec_fingerprint(again) == spec_fingerprint(spec)
    changed = spec_to_dict(spec)
    changed["cluster"]["pools"][0]["count"] = 4
    assert spec_fingerprint(spec_from_dict(changed)) != spec_fingerprint(spec)


def test_load_yaml_text_and_path(tmp_path: Path) -> None:
    text = example_spec_path().read_text()
    assert load_spec(text) == load_spec(example_spec_path())
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    assert load_spec(str(path)).name == "aiaas"


def test_errors_name_the_exact_path(data: dict[str, Any]) -> None:
    data["cluster"]["pools"][1]["autoscaler"] = {"enabled": True, "min": 3, "max": 250}
    data["cluster"]["pools"][0]["count"] = "3"
    data["cluster"]["pools"][2]["bogus"] = 1
    data["firewall"]["inbound_policy"] = "MAYBE"
    found = problems(data)
    assert "cluster.pools[1].autoscaler.max" in found
    assert "between 1 and 100, got 250" in found["cluster.pools[1].autoscaler.max"]
    assert found["cluster.pools[0].count"] == "expected an integer, got a string '3'"
    assert found["cluster.pools[2].bogus"].startswith("unknown key (allowed here: autoscaler")
    assert "'ACCEPT', 'DROP'" in found["firewall.inbound_policy"]


def test_every_problem_is_reported_at_once(data: dict[str, Any]) -> None:
    data["region"] = "Chicago"
    data["environments"]["development"]["pools"] = ["general", "nope"]
    data["environments"]["staging"]["quota"]["memory"] = "lots"
    data["object_storage"]["keys"][0]["buckets"][0]["bucket"] = "unknown-bucket"
    data["vpc"]["subnets"][1]["ipv4"] = "10.20.0.0/24"  # overlaps nodes
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    paths = {p.path for p in info.value.problems}
    # Nested objects fail on their own; the platform-level checks need a valid tree first.
    assert {"region", "environments.staging.quota.memory", "vpc.subnets[1].ipv4"} <= paths or {
        "environments.staging.quota.memory",
        "vpc.subnets[1].ipv4",
    } <= paths
    assert len(info.value.problems) >= 2
    assert "invalid platform spec" in str(info.value)


def test_cross_references_are_checked(data: dict[str, Any]) -> None:
    data["region"] = "Chicago"
    data["environments"]["development"]["pools"] = ["general", "nope"]
    data["environments"]["staging"]["pools"] = ["gpu"]
    data["environments"]["staging"]["quota"]["gpus"] = 1
    data["object_storage"]["keys"][0]["buckets"][0]["bucket"] = "unknown-bucket"
    data["environments"]["production"]["database"]["subnet"] = "nowhere"
    found = problems(data)
    assert found["region"].startswith("must be a Linode region id")
    assert found["environments.development.pools[1]"] == "no cluster pool is labelled 'nope'"
    assert "may only be used by the system environment" in found["environments.staging.pools[0]"]
    assert (
        found["environments.staging.quota.gpus"] == "only the system environment may request GPUs"
    )
    assert (
        found["object_storage.keys[0].buckets[0].bucket"]
        == "no bucket 'unknown-bucket' is declared"
    )
    assert found["environments.production.database.subnet"] == "the vpc has no subnet 'nowhere'"


def test_unquoted_version_is_explained(data: dict[str, Any]) -> None:
    data["cluster"]["kubernetes_version"] = 1.3
    found = problems(data)
    assert "quote it in YAML" in found["cluster.kubernetes_version"]


def test_documented_limits(data: dict[str, Any]) -> None:
    rule = data["firewall"]["inbound"][0]
    data["firewall"]["inbound"] = [dict(rule, label=f"rule-{i}") for i in range(26)]
    data["cluster"]["label"] = "x" * 33
    data["cluster"]["pools"][2]["count"] = 101
    data["vpc"]["subnets"][0]["ipv4"] = "8.8.8.0/24"
    data["vpc"]["subnets"][1]["ipv4"] = "10.30.0.0/30"
    found = problems(data)
    assert "at most 25 rules, got 26" in found["firewall"]
    # An object is checked once its children are valid: the pool's problem comes first.
    assert "cluster.label" not in found
    assert found["cluster.pools[2].count"].startswith("must be between 1 and 100, got 101")
    assert "RFC 1918" in found["vpc.subnets[0].ipv4"]
    assert found["vpc.subnets[1].ipv4"] == "prefix must be /1 to /29, got /30"
    data["cluster"]["pools"][2]["count"] = 1
    assert "1-32" in problems(data)["cluster.label"]


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (lambda d: d["cluster"].update(pools=[]), "cluster.pools", "at least one node pool"),
        (
            lambda d: [
                p.update(count=1, autoscaler={"enabled": False}) for p in d["cluster"]["pools"]
            ],
            "cluster.pools",
            ">= 3 nodes",
        ),
        (
            lambda d: d["cluster"]["pools"][1].update(label=d["cluster"]["pools"][0]["label"]),
            "cluster.pools[1].label",
            "duplicate pool label",
        ),
        (
            lambda d: d["cluster"]["pools"][0].update(count=9),
            "cluster.pools[0].count",
            "within the autoscaler bounds 3..6",
        ),
        (
            lambda d: d["cluster"]["pools"][0].update(autoscaler={"enabled": True}),
            "cluster.pools[0].autoscaler.min",
            "required when the autoscaler is enabled",
        ),
        (
            lambda d: d["cluster"]["pools"][0].update(
                autoscaler={"enabled": True, "min": 5, "max": 4}
            ),
            "cluster.pools[0].autoscaler.max",
            "must be >= min (5)",
        ),
        (
            lambda d: d["cluster"]["pools"][2].update(taints=[]),
            "cluster.pools[2].taints",
            "GPU pool needs a NoSchedule taint",
        ),
        (
            lambda d: d["cluster"]["pools"][0]["labels"].update({"bad key!": "x"}),
            "cluster.pools[0].labels.bad key!",
            "not a valid Kubernetes label key",
        ),
        (
            lambda d: d["cluster"]["pools"][0].update(taints=[{"key": "a", "effect": "Sometimes"}]),
            "cluster.pools[0].taints[0].effect",
            "must be one of",
        ),
        (
            lambda d: d["firewall"]["inbound"][0].update(ports="80-20"),
            "firewall.inbound[0].ports",
            "ascending range",
        ),
        (
            lambda d: d["firewall"]["inbound"][0].update(protocol="ICMP"),
            "firewall.inbound[0].ports",
            "ICMP rules cannot have ports",
        ),
        (
            lambda d: d["firewall"]["inbound"][0]["addresses"].update(ipv4=["300.1.1.1/8"]),
            "firewall.inbound[0].addresses.ipv4[0]",
            "not an IPv4 address",
        ),
        (
            lambda d: d["firewall"]["inbound"][0].update(addresses={}),
            "firewall.inbound[0].addresses",
            "at least one ipv4 or ipv6",
        ),
        (
            lambda d: d["object_storage"]["buckets"][0].update(lifecycle=[]),
            "object_storage.buckets[0].lifecycle",
            "metrics bucket needs lifecycle rules",
        ),
        (
            lambda d: d["object_storage"]["buckets"][0]["lifecycle"][0].update(expiration_days=7),
            "object_storage.buckets[0].lifecycle[0].expiration_days",
            "at least 30 days",
        ),
        (
            lambda d: d["object_storage"]["buckets"][0]["lifecycle"][1].update(
                abort_incomplete_multipart_days=None
            ),
            "object_storage.buckets[0].lifecycle[1]",
            "needs an action",
        ),
        (
            lambda d: d["object_storage"]["buckets"][1].update(label="Bad_Bucket"),
            "object_storage.buckets[1].label",
            "3-63 lowercase",
        ),
        (
            lambda d: d["object_storage"]["keys"][0].update(buckets=[]),
            "object_storage.keys[0].buckets",
            "grant at least one bucket",
        ),
        (
            lambda d: d["environments"]["production"]["database"].update(cluster_size=5),
            "environments.production.database.cluster_size",
            "must be 1, 2 or 3",
        ),
        (
            lambda d: d["environments"]["production"]["database"].update(engine="mysql/8"),
            "environments.production.database.engine",
            "postgresql/<version>",
        ),
        (
            lambda d: d["environments"]["staging"].update(namespace="env-development"),
            "environments.staging.namespace",
            "also used by development",
        ),
        (
            lambda d: d["environments"].update(QA={"pools": ["general"]}),
            "environments.QA",
            "environment names are",
        ),
        (lambda d: d.update(version=2), "version", "reads spec version 1"),
        (lambda d: d.pop("cluster"), "cluster", "required key 'cluster' is missing"),
        (lambda d: d.update(cluster=[1, 2]), "cluster", "expected a mapping, got a list"),
        (lambda d: d["cluster"].update(pools="general"), "cluster.pools", "expected a list"),
        (
            lambda d: d["cluster"].update(high_availability="yes"),
            "cluster.high_availability",
            "true or false",
        ),
        (lambda d: d.update(environments={}), "environments", "at least one environment"),
    ],
)
def test_invalid_specs(data: dict[str, Any], mutate: Any, path: str, text: str) -> None:
    mutate(data)
    found = problems(data)
    assert path in found, found
    assert text in found[path]


def test_default_database_label_too_long(data: dict[str, Any]) -> None:
    data["name"] = "a-very-long-platform-nam"
    data["environments"]["development"]["database"]["label"] = None
    found = problems(data)
    assert "set one" in found["environments.development.database.label"]


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    assert problems(["a"]) == {"": "the spec must be a mapping, got a list"}
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec("name: [unclosed\nregion: x\n")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_duplicate_yaml_keys_are_refused() -> None:
    text = example_spec_path().read_text() + "\nregion: us-east\n"
    with pytest.raises(SpecError) as info:
        load_spec(text)
    assert "duplicate key 'region'" in str(info.value)


def test_value_objects_validate_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="max"):
        Autoscaler(enabled=True, min=3, max=2)
    with pytest.raises(ValueError, match="count"):
        NodePool(label="p", type="g6-standard-2", count=0)
    assert NodePool(label="p", type="g6-standard-2", count=3).min_nodes == 3
    assert is_gpu_type("g2-gpu-rtx4000a1-s")
    assert not is_gpu_type("g6-standard-2")
