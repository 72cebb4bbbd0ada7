"""Property: any valid edit of the example spec, once applied, re-plans to no changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from infra_support import apply_spec, assert_no_orphans

from aiaas_infra import (
    LocalStateBackend,
    PlatformSpec,
    SpecError,
    StateStore,
    plan,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.testing import LinodeEmulator, emulator_provider

LABEL = st.from_regex(r"[a-z][a-z0-9]{2,8}", fullmatch=True)


@st.composite
def edits(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    pools = data["cluster"]["pools"]
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(
            st.sampled_from(
                [
                    "gpu_count",
                    "autoscaler",
                    "pool_labels",
                    "taint",
                    "new_pool",
                    "drop_pool",
                    "pool_type",
                    "firewall_rule",
                    "policy",
                    "subnet",
                    "lifecycle",
                    "db_type",
                    "allow_list",
                    "new_env",
                    "drop_env_db",
                    "k8s",
                    "key",
                    "region",
                ]
            )
        )
        if choice == "gpu_count":
            pools[2]["count"] = draw(st.integers(1, 4))
        elif choice == "autoscaler":
            low = draw(st.integers(3, 5))
            high = draw(st.integers(low, 10))
            pools[0]["autoscaler"] = {"enabled": True, "min": low, "max": high}
            pools[0]["count"] = low
        elif choice == "pool_labels":
            pools[1]["labels"][f"aiaas.dev/{draw(LABEL)}"] = draw(LABEL)
        elif choice == "taint":
            pools[0]["taints"] = [
                {
                    "key": f"aiaas.dev/{draw(LABEL)}",
                    "value": "x",
                    "effect": draw(st.sampled_from(["NoSchedule", "NoExecute"])),
                }
            ]
        elif choice == "new_pool":
            pools.append(
                {"label": draw(LABEL), "type": "g6-standard-2", "count": draw(st.integers(1, 3))}
            )
        elif choice == "drop_pool" and len(pools) > 3:
            pools.pop()
        elif choice == "pool_type":
            pools[0]["type"] = draw(
                st.sampled_from(["g6-standard-4", "g6-standard-8", "g6-dedicated-8"])
            )
        elif choice == "firewall_rule":
            data["firewall"]["inbound"].append(
                {
                    "label": f"allow-{draw(LABEL)}",
                    "action": "ACCEPT",
                    "protocol": "TCP",
                    "ports": str(draw(st.integers(1, 65535))),
                    "addresses": {"ipv4": ["10.0.0.0/8"]},
                }
            )
        elif choice == "policy":
            data["firewall"]["outbound_policy"] = draw(st.sampled_from(["ACCEPT", "DROP"]))
        elif choice == "subnet":
            data["vpc"]["subnets"].append(
                {"label": draw(LABEL), "ipv4": f"10.20.{draw(st.integers(16, 60)) * 4}.0/24"}
            )
        elif choice == "lifecycle":
            data["object_storage"]["buckets"][0]["lifecycle"][0]["expiration_days"] = draw(
                st.integers(30, 400)
            )
        elif choice == "db_type":
            data["environments"]["staging"]["database"]["type"] = draw(
                st.sampled_from(["g6-standard-1", "g6-standard-2", "g6-dedicated-2"])
            )
        elif choice == "allow_list":
            data["environments"]["production"]["database"]["allow_list"] = [
                f"203.0.113.{draw(st.integers(1, 254))}/32"
            ]
        elif choice == "new_env":
            data["environments"][f"qa{draw(st.integers(1, 9))}"] = {
                "pools": ["general"],
                "database": {"type": "g6-nanode-1"},
            }
        elif choice == "drop_env_db":
            data["environments"]["development"]["database"] = None
        elif choice == "k8s":
            data["cluster"]["kubernetes_version"] = "1.32"
        elif choice == "key":
            data["object_storage"]["keys"].append(
                {
                    "label": f"key-{draw(LABEL)}",
                    "buckets": [{"bucket": "aiaas-artifacts", "permissions": "read_write"}],
                }
            )
        elif choice == "region":
            data["region"] = "us-sea"
    return data


@pytest.fixture(scope="module")
def base(spec: PlatformSpec) -> dict[str, Any]:
    return spec_to_dict(spec)


@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_applied_edits_replan_to_nothing(
    spec: PlatformSpec,
    base: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
) -> None:
    edited = data.draw(edits(base))
    try:
        target = spec_from_dict(edited)
    except SpecError:
        assume(False)
        raise
    store = StateStore(LocalStateBackend(Path(tmp_path_factory.mktemp("state"))))
    with LinodeEmulator(ready_delay=0, kubeconfig_delay=0, database_delay=0) as em:
        provider = emulator_provider(em)
        apply_spec(spec, provider, store)
        result = apply_spec(target, provider, store)
        assert result.outcome in ("applied", "no_changes")
        again = plan(target, provider, store.latest())
        assert not again.has_changes, [c.to_dict() for c in again.changes]
        assert_no_orphans(em, store)
