"""The spec sections rendering reads: limits, network allows, secrets, services, sync, GitOps,
observability and access. Every problem is located by its exact path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from gitops_support import with_gpu_service

from aiaas_infra import PlatformSpec, SpecError, spec_from_dict, spec_to_dict


@pytest.fixture
def data(spec: PlatformSpec) -> dict[str, Any]:
    return with_gpu_service(spec_to_dict(spec))


def problems(data: object) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    return {p.path: p.message for p in info.value.problems}


def test_example_declares_the_rendering_sections(spec: PlatformSpec) -> None:
    prod = spec.environments["production"]
    assert [a.name for a in prod.network.allow] == ["from-ingress", "to-postgres"]
    assert prod.network.allow[1].ports[0].protocol == "TCP"
    assert [s.name for s in prod.secret_items] == [
        "api-token",
        "metrics-credentials",
        "database-url",
    ]
    assert prod.limits.max_memory == "8Gi"
    assert spec.environments["production"].services[0].replicas.min == 2
    assert spec.gitops is not None
    assert spec.gitops.revision == "main"
    assert spec.observability.retention_days == 30
    assert [r.receiver for r in spec.observability.alert_routes] == ["pagerduty", "slack"]
    assert spec.access is not None
    assert spec.access.api_server.startswith("https://")


def test_defaults_secrets_bundle_sync_and_limits(spec: PlatformSpec) -> None:
    dev = spec.environments["development"]
    assert dev.secrets is None
    assert [(s.name, s.rotation_days) for s in dev.secret_items] == [
        ("api-token", 30),
        ("metrics-credentials", 90),
    ]
    assert dev.limits.default_cpu == "250m"
    assert dev.limits.max_cpu is None
    assert dev.maintenance.locked is False
    assert spec.sync_mode("production") == "manual"
    assert spec.sync_mode("development") == "auto"


def test_explicit_sync_overrides_the_default(data: dict[str, Any]) -> None:
    data["environments"]["production"]["sync"] = "auto"
    data["environments"]["staging"]["sync"] = "manual"
    spec = spec_from_dict(data)
    assert spec.sync_mode("production") == "auto"
    assert spec.sync_mode("staging") == "manual"


def test_sections_are_optional(data: dict[str, Any]) -> None:
    for key in ("gitops", "observability", "access"):
        del data[key]
    for env in data["environments"].values():
        for key in ("limits", "network", "secrets", "services", "sync", "maintenance"):
            env.pop(key, None)
    data["environments"]["system"]["quota"]["gpus"] = 0
    spec = spec_from_dict(data)
    assert spec.gitops is None
    assert spec.access is None
    assert spec.observability.alert_routes == ()
    assert spec.environments["system"].services == ()


def test_network_allow_problems_are_located(data: dict[str, Any]) -> None:
    allow = data["environments"]["production"]["network"]["allow"]
    allow[0]["reviewed_by"] = " "
    allow[0]["reason"] = ""
    allow[1]["namespace"] = "ingress-nginx"  # both namespace and cidr
    allow.append(copy.deepcopy(allow[0]) | {"reviewed_by": "carol", "reason": "dup"})
    allow.append(
        {
            "name": "Bad_Name",
            "direction": "sideways",
            "reviewed_by": "x",
            "reason": "y",
            "cidr": "10.0.0.0/33",
            "pod_labels": {"app": "x"},
            "ports": [
                {"port": 0},
                {"port": 53, "protocol": "UDP"},
                {"port": 53, "protocol": "UDP"},
            ],
        }
    )
    found = problems(data)
    base = "environments.production.network.allow"
    assert found[f"{base}[0].reviewed_by"] == "every extra allow needs a reviewer"
    assert found[f"{base}[0].reason"] == "every extra allow needs a reason"
    assert found[f"{base}[1]"] == "set exactly one of namespace or cidr"
    assert "must be one of" in found[f"{base}[3].direction"]
    assert found[f"{base}[3].ports[0].port"] == "must be between 1 and 65535, got 0"


def test_network_allow_cross_field_problems(data: dict[str, Any]) -> None:
    allow = data["environments"]["production"]["network"]["allow"]
    allow.append(copy.deepcopy(allow[0]))
    allow.append(
        {
            "name": "bad",
            "direction": "egress",
            "reviewed_by": "x",
            "reason": "y",
            "cidr": "10.0.0.0/33",
            "pod_labels": {"app": "x"},
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "UDP"}],
        }
    )
    allow.append({"name": "none", "direction": "egress", "reviewed_by": "x", "reason": "y"})
    found = problems(data)
    base = "environments.production.network.allow"
    assert found[f"{base}[3].cidr"] == "is not an address or CIDR, got '10.0.0.0/33'"
    assert found[f"{base}[3].pod_labels"] == "only applies with namespace, not with cidr"
    assert found[f"{base}[3].ports[1]"] == "duplicate port 53/UDP"
    assert found[f"{base}[4]"] == "set exactly one of namespace or cidr"
    # the duplicate name is reported once the allows themselves are valid
    del allow[3:]
    assert problems(data) == {f"{base}[2].name": "duplicate allow 'from-ingress'"}


def test_secrets_bundle_must_hold_the_required_items(data: dict[str, Any]) -> None:
    secrets = data["environments"]["production"]["secrets"]
    secrets[0]["name"] = "other"
    secrets.append(copy.deepcopy(secrets[1]))
    found = problems(data)
    base = "environments.production.secrets"
    assert found[f"{base}[3].name"] == "duplicate secret 'metrics-credentials'"
    assert found[base] == "the bundle must include api-token (or omit secrets)"


def test_secret_item_problems(data: dict[str, Any]) -> None:
    secrets = data["environments"]["production"]["secrets"]
    secrets[0].update(rotation_days=0, purpose="", owner="two words")
    secrets[1]["name"] = "UPPER"
    found = problems(data)
    base = "environments.production.secrets"
    assert found[f"{base}[0].rotation_days"] == "must be between 1 and 365, got 0"
    assert found[f"{base}[0].purpose"] == "say what the secret is for"
    assert "team name" in found[f"{base}[0].owner"]
    assert "must be 1-40 of a-z" in found[f"{base}[1].name"]


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("ghcr.io/example/inference", "pin the image"),
        ("ghcr.io/example/inference:latest", "pin the image"),
        ("ghcr.io/example/inference@sha256:abc", "is not an image reference"),
        ("ghcr.io/example/inference:bad tag", "is not an image reference"),
        ("ghcr.io/example/:1.0", "is not an image reference"),
    ],
)
def test_service_images_are_pinned(data: dict[str, Any], image: str, fragment: str) -> None:
    data["environments"]["system"]["services"][0]["image"] = image
    found = problems(data)
    assert fragment in found["environments.system.services[0].image"]


def test_service_images_accept_digests_and_registry_ports(data: dict[str, Any]) -> None:
    digest = "sha256:" + "a" * 64
    data["environments"]["system"]["services"][0]["image"] = f"registry:5000/x/inference@{digest}"
    data["environments"]["staging"]["services"][0]["image"] = "registry:5000/embeddings:2.1"
    spec = spec_from_dict(data)
    assert spec.environments["system"].services[0].image.endswith(digest)


def test_service_field_problems(data: dict[str, Any]) -> None:
    service = data["environments"]["system"]["services"][0]
    service.update(
        port=70000, gpus=-1, cpu="two", memory="8 GB", target_cpu_utilization=0, name="In"
    )
    found = problems(data)
    base = "environments.system.services[0]"
    assert found[f"{base}.port"] == "must be between 1 and 65535, got 70000"
    assert found[f"{base}.gpus"] == "must be >= 0, got -1"
    assert "CPU quantity" in found[f"{base}.cpu"]
    assert "memory quantity" in found[f"{base}.memory"]
    assert found[f"{base}.target_cpu_utilization"] == "must be between 1 and 100, got 0"
    assert "must be 1-40" in found[f"{base}.name"]
    service["replicas"] = {"min": 3, "max": 2}
    assert problems(data) == {f"{base}.replicas.max": "must be >= min (3), got 2"}


def test_services_must_fit_their_pools_and_gpu_quota(data: dict[str, Any]) -> None:
    staging = data["environments"]["staging"]["services"]
    staging[0]["pool"] = "production"  # not one of staging's pools
    staging.append(copy.deepcopy(staging[0]))
    system = data["environments"]["system"]
    system["services"].append({"name": "cpu-only", "image": "x/y:1", "pool": "general", "gpus": 1})
    found = problems(data)
    assert found["environments.staging.services[1].name"] == "duplicate service 'embeddings'"
    staging.pop()
    found = problems(data)
    assert found["environments.staging.services[0].pool"] == (
        "must be one of the environment's pools (general), got 'production'"
    )
    assert found["environments.system.services[1].gpus"] == (
        "pool 'general' (g6-standard-4) has no GPUs"
    )
    assert found["environments.system.quota.gpus"] == (
        "the services need up to 5 GPUs at max replicas, the quota allows 4"
    )


def test_maintenance_lock_needs_a_reason(data: dict[str, Any]) -> None:
    data["environments"]["production"]["maintenance"] = {"locked": True, "reason": ""}
    assert problems(data) == {
        "environments.production.maintenance.reason": "say why the environment is locked"
    }
    data["environments"]["production"]["maintenance"]["reason"] = "database upgrade"
    assert spec_from_dict(data).environments["production"].maintenance.locked


def test_limits_problems(data: dict[str, Any]) -> None:
    data["environments"]["production"]["limits"] = {
        "default_cpu": "lots",
        "default_memory": "1 GB",
        "max_cpu": "4",
        "max_memory": "x",
    }
    found = problems(data)
    base = "environments.production.limits"
    assert set(found) == {f"{base}.default_cpu", f"{base}.default_memory", f"{base}.max_memory"}


def test_gitops_observability_and_access_problems(data: dict[str, Any]) -> None:
    data["gitops"] = {"repo_url": "ftp://x", "revision": "", "path": "../up"}
    data["observability"].update(
        grafana_url="http://grafana.example.net",
        retention_days=7,
        alert_routes=[
            {"severity": "critical", "receiver": "pagerduty"},
            {"severity": "critical", "receiver": "bad receiver"},
        ],
    )
    data["access"] = {"api_server": "cluster.local"}
    found = problems(data)
    assert "https://, ssh:// or git@" in found["gitops.repo_url"]
    assert "branch, tag or commit" in found["gitops.revision"]
    assert "relative path" in found["gitops.path"]
    assert "letters, digits" in found["observability.alert_routes[1].receiver"]
    assert found["access.api_server"] == "must be an https:// URL, got 'cluster.local'"
    # the observability object's own checks run once its routes are valid
    data["observability"]["alert_routes"][1]["receiver"] = "ops"
    found = problems(data)
    assert found["observability.grafana_url"] == (
        "must be an https:// URL, got 'http://grafana.example.net'"
    )
    assert found["observability.retention_days"] == "metrics are kept 30 to 3650 days, got 7"
    assert found["observability.alert_routes[1].severity"] == "critical is routed twice"


def test_ssh_gitops_urls_are_accepted(data: dict[str, Any]) -> None:
    data["gitops"]["repo_url"] = "git@github.com:example/platform-gitops.git"
    spec = spec_from_dict(data)
    assert spec.gitops is not None
    assert spec.gitops.repo_url.startswith("git@")


def test_round_trip_keeps_the_new_sections(spec: PlatformSpec) -> None:
    assert spec_from_dict(spec_to_dict(spec)) == spec
