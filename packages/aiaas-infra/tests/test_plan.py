"""Plans: create / update / replace / delete with field-level diffs, pools matched by label."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from infra_support import apply_spec

from aiaas_infra import (
    LinodeProvider,
    PlatformSpec,
    StateStore,
    plan,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.testing import LinodeEmulator


def edited(spec: PlatformSpec, edit: Any) -> PlatformSpec:
    data = copy.deepcopy(spec_to_dict(spec))
    edit(data)
    return spec_from_dict(data)


@pytest.fixture
def applied(spec: PlatformSpec, provider: LinodeProvider, store: StateStore) -> StateStore:
    apply_spec(spec, provider, store)
    return store


def test_first_plan_creates_everything(spec: PlatformSpec, provider: LinodeProvider) -> None:
    result = plan(spec, provider)
    assert result.summary() == {"create": 15, "update": 0, "replace": 0, "delete": 0}
    pools = [c for c in result.changes if c.kind == "pool"]
    assert {c.via for c in pools} == {"cluster.aiaas-main"}
    assert result.change("database.aiaas-production").environments == ("production",)
    assert result.change("pool.aiaas-main/gpu").environments == ("system",)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["has_changes"]
    assert doc["summary"]["create"] == 15


def test_after_apply_nothing_changes_and_reading_is_cheap(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    result = plan(spec, provider, applied.latest())
    assert not result.has_changes, result.changes
    managed = len(result.desired)
    assert result.api_calls <= managed  # one list per kind + one per cluster and VPC (+ pages)
    assert result.api_calls == 8


def test_resizing_a_pool_is_one_in_place_update(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    bigger = edited(spec, lambda d: d["cluster"]["pools"][2].update(count=2))
    result = plan(bigger, provider, applied.latest())
    assert len(result.changes) == 1
    change = result.changes[0]
    assert (change.action, change.address) == ("update", "pool.aiaas-main/gpu")
    assert [(d.field, d.before, d.after) for d in change.diffs] == [("count", 1, 2)]


def test_an_enabled_autoscaler_owns_count(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore, emulator: LinodeEmulator
) -> None:
    emulator.update_out_of_band("pools", "general", count=5)  # the autoscaler scaled up
    assert not plan(spec, provider, applied.latest()).has_changes
    new_count = edited(spec, lambda d: d["cluster"]["pools"][0].update(count=4))
    assert not plan(new_count, provider, applied.latest()).has_changes
    new_max = edited(spec, lambda d: d["cluster"]["pools"][0]["autoscaler"].update(max=8))
    change = plan(new_max, provider, applied.latest()).changes[0]
    assert [(d.field, d.before, d.after) for d in change.diffs] == [("autoscaler.max", 6, 8)]


def test_pools_are_matched_by_label_not_position(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    reordered = edited(spec, lambda d: d["cluster"]["pools"].reverse())
    assert not plan(reordered, provider, applied.latest()).has_changes


def test_changing_the_region_replaces(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    moved = edited(spec, lambda d: d.update(region="us-sea"))
    result = plan(moved, provider, applied.latest())
    actions = {c.address: (c.action, c.via) for c in result.changes}
    assert actions["cluster.aiaas-main"] == ("replace", None)
    assert actions["pool.aiaas-main/general"] == ("replace", "cluster.aiaas-main")
    assert actions["vpc.aiaas-vpc"] == ("replace", None)
    assert actions["subnet.aiaas-vpc/data"][0] == "replace"
    assert actions["bucket.aiaas-metrics"][0] == "replace"
    assert actions["database.aiaas-production"][0] == "replace"
    assert "firewall.aiaas-nodes" not in actions
    cluster = result.change("cluster.aiaas-main")
    assert [(d.field, d.forces_replacement) for d in cluster.diffs] == [("region", True)]
    assert "Linode cannot change region in place" in cluster.reason
    assert any("database.aiaas-production will be replaced" in w for w in result.warnings)


def test_changing_a_pool_type_replaces_only_that_pool(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    changed = edited(spec, lambda d: d["cluster"]["pools"][0].update(type="g6-standard-8"))
    result = plan(changed, provider, applied.latest())
    assert [(c.action, c.address, c.via) for c in result.changes] == [
        ("replace", "pool.aiaas-main/general", None)
    ]


def test_a_firewall_deleted_out_of_band_is_recreated(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore, emulator: LinodeEmulator
) -> None:
    emulator.delete_out_of_band("firewalls", "aiaas-nodes")
    result = plan(spec, provider, applied.latest())
    fw = result.change("firewall.aiaas-nodes")
    assert fw is not None
    assert fw.action == "create"
    assert fw.reason == "deleted outside aiaas-infra"
    pool_updates = [c for c in result.changes if c.kind == "pool"]
    assert {c.action for c in pool_updates} == {"update"}
    assert all(d.field == "firewall" for c in pool_updates for d in c.diffs)


def test_removed_resources_are_deleted(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    smaller = edited(
        spec,
        lambda d: (
            d["environments"]["development"].update(database=None),
            d["object_storage"]["keys"].pop(),
            d["cluster"]["pools"].pop(),
            d["environments"]["system"].update(pools=["general"], services=[]),
        ),
    )
    result = plan(smaller, provider, applied.latest())
    deleted = {c.address for c in result.by_action("delete")}
    assert deleted == {
        "database.aiaas-development",
        "object_key.aiaas-artifacts-reader",
        "pool.aiaas-main/gpu",
    }


def test_lifecycle_changes_are_planned_from_state(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    longer = edited(
        spec,
        lambda d: d["object_storage"]["buckets"][0]["lifecycle"][0].update(expiration_days=120),
    )
    change = plan(longer, provider, applied.latest()).changes[0]
    assert (change.action, change.address) == ("update", "bucket.aiaas-metrics")
    assert change.diffs[0].field == "lifecycle"


def test_duplicates_are_cleaned_up(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    provider.client.object_storage.keys_create(
        "aiaas-metrics-writer",
        bucket_access=[
            {"region": "us-ord", "bucket_name": "aiaas-metrics", "permissions": "read_write"}
        ],
    )
    result = plan(spec, provider, applied.latest())
    assert [c.action for c in result.changes] == ["delete"]
    assert result.changes[0].address.startswith("object_key.aiaas-metrics-writer#")
    assert "exists twice" in result.warnings[0]


def test_hand_made_pools_in_a_managed_cluster_are_deleted(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    cluster = applied.latest().resources["cluster.aiaas-main"]
    provider.client.post(
        f"/lke/clusters/{cluster.id}/pools",
        data={"type": "g6-standard-2", "count": 1, "label": "manual"},
    )
    result = plan(spec, provider, applied.latest())
    assert [(c.action, c.address) for c in result.changes] == [("delete", "pool.aiaas-main/manual")]


def test_destroy_plans_every_delete(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    result = plan(spec, provider, applied.latest(), destroy=True)
    assert result.destroy
    assert {c.action for c in result.changes} == {"delete"}
    pools = [c for c in result.changes if c.kind == "pool"]
    assert {c.via for c in pools} == {"cluster.aiaas-main"}
    assert result.summary()["delete"] == 15
