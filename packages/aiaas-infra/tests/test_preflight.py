"""Preflight: every reason a plan cannot be applied, found before anything is created."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from infra_support import apply_spec, live_ids

from aiaas_infra import (
    LinodeProvider,
    PlatformSpec,
    PreflightError,
    StateStore,
    apply,
    plan,
    preflight,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.testing import AccountLimits, LinodeEmulator, RegionConfig, emulator_provider


def edited(spec: PlatformSpec, edit: Any) -> PlatformSpec:
    data = copy.deepcopy(spec_to_dict(spec))
    edit(data)
    return spec_from_dict(data)


def codes(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore | None = None
) -> dict[str, str]:
    problems = preflight(plan(spec, provider, store.latest() if store else None), provider)
    return {p.code: f"{p.subject}: {p.message}" for p in problems}


def test_a_healthy_account_passes(spec: PlatformSpec, provider: LinodeProvider) -> None:
    assert codes(spec, provider) == {}


def test_every_problem_is_reported_at_once_and_nothing_is_created(spec: PlatformSpec) -> None:
    regions = (
        RegionConfig(
            "us-ord",
            capabilities=("Linodes", "Kubernetes", "Object Storage", "Managed Databases"),
            unavailable_plans=("g6-dedicated-4",),
            account_unavailable=("Managed Databases",),
        ),
    )
    with LinodeEmulator(
        regions=regions, object_storage_bucket_quota=1, limits=AccountLimits(keys=1)
    ) as em:
        provider = emulator_provider(em)
        found = codes(spec, provider)
        assert set(found) == {
            "REGION_CAPABILITY_MISSING",
            "ACCOUNT_CAPABILITY_UNAVAILABLE",
            "PLAN_UNAVAILABLE",
            "OBJ_BUCKET_QUOTA",
            "OBJ_KEY_QUOTA",
        }
        assert "does not offer" in found["REGION_CAPABILITY_MISSING"]
        assert "g6-dedicated-4 is sold out" in found["PLAN_UNAVAILABLE"]
        with pytest.raises(PreflightError) as info:
            apply(plan(spec, provider), provider)
        missing = [p for p in info.value.problems if p.code == "REGION_CAPABILITY_MISSING"]
        assert {m.message.split(" offer ")[1].split(",")[0] for m in missing} == {
            "Cloud Firewall",
            "VPCs",
            "GPU Linodes",
        }
        assert info.value.status == 422
        assert "nothing was created" in str(info.value)
        assert em.request_count("POST") == 0
        assert em.request_count("PUT") == 0
        assert all(ids == [] for ids in live_ids(em).values())


def test_catalogue_problems(spec: PlatformSpec, provider: LinodeProvider) -> None:
    bad = edited(
        spec,
        lambda d: (
            d["cluster"]["pools"][0].update(type="g9-imaginary-4"),
            d["cluster"].update(kubernetes_version="1.19"),
            d["environments"]["staging"]["database"].update(
                engine="postgresql/9", type="g6-standard-8"
            ),
        ),
    )
    found = codes(bad, provider)
    assert set(found) == {
        "PLAN_UNKNOWN",
        "K8S_VERSION_UNAVAILABLE",
        "DB_ENGINE_UNAVAILABLE",
        "DB_TYPE_UNKNOWN",
    }
    assert "1.32, 1.31, 1.30, not 1.19" in found["K8S_VERSION_UNAVAILABLE"]


def test_unknown_region(spec: PlatformSpec, provider: LinodeProvider) -> None:
    found = codes(edited(spec, lambda d: d.update(region="ap-mars")), provider)
    assert "REGION_UNKNOWN" in found


def test_changes_linode_refuses(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore, emulator: LinodeEmulator
) -> None:
    apply_spec(
        edited(spec, lambda d: d["cluster"].update(kubernetes_version="1.32")), provider, store
    )
    emulator.put_object("aiaas-artifacts", "report.csv")
    bad = edited(
        spec,
        lambda d: (
            d["object_storage"].update(
                buckets=d["object_storage"]["buckets"][:1], keys=d["object_storage"]["keys"][:1]
            ),
            d["environments"]["production"]["database"].update(cluster_size=1),
        ),
    )
    found = codes(bad, provider, store)
    assert set(found) == {"K8S_DOWNGRADE", "BUCKET_NOT_EMPTY", "DB_SHRINK"}
    assert "holds 1 objects" in found["BUCKET_NOT_EMPTY"]


def test_a_subnet_in_use_cannot_be_replaced(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore
) -> None:
    apply_spec(spec, provider, store)
    moved = edited(spec, lambda d: d["vpc"]["subnets"][1].update(ipv4="10.20.12.0/24"))
    found = codes(moved, provider, store)
    assert set(found) == {"SUBNET_IN_USE"}
    assert (
        "database.aiaas-production uses it" in found["SUBNET_IN_USE"]
        or "uses it" in found["SUBNET_IN_USE"]
    )


def test_labels_held_by_someone_else(spec: PlatformSpec, provider: LinodeProvider) -> None:
    provider.client.lke.cluster_create(
        "us-ord", "aiaas-main", "1.31", node_pools=[{"type": "g6-standard-2", "count": 3}]
    )
    provider.client.networking.firewall_create("aiaas-nodes", {"inbound": [], "outbound": []})
    found = codes(spec, provider)
    assert set(found) == {"LABEL_TAKEN"}


def test_gpu_plans_are_checked_against_the_catalogue(
    spec: PlatformSpec, provider: LinodeProvider
) -> None:
    # The spec only knows plan ids; the catalogue knows which have GPUs.
    sneaky = edited(
        spec,
        lambda d: (
            d["cluster"]["pools"].append(
                {
                    "label": "accel",
                    "type": "g1-gpu-rtx6000-1",
                    "count": 1,
                    "taints": [{"key": "gpu", "effect": "NoSchedule"}],
                }
            ),
            d["environments"]["system"]["pools"].append("accel"),
        ),
    )
    assert codes(sneaky, provider) == {}


def test_no_changes_means_no_checks(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore
) -> None:
    apply_spec(spec, provider, store)
    unchanged = plan(spec, provider, store.latest())
    before = provider.calls
    assert preflight(unchanged, provider) == []
    assert provider.calls == before
