"""Apply: dependency order, readiness, state snapshots, events, statuses and rollback."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
from infra_support import apply_spec, assert_no_orphans, live_ids

from aiaas_core import ConflictError
from aiaas_infra import (
    ApplyError,
    EnvironmentStatus,
    LinodeProvider,
    PlatformSpec,
    PreflightError,
    StateLockedError,
    StateStore,
    apply,
    plan,
    rollback_plan,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.testing import AccountLimits, LinodeEmulator


def edited(spec: PlatformSpec, edit: Any) -> PlatformSpec:
    data = copy.deepcopy(spec_to_dict(spec))
    edit(data)
    return spec_from_dict(data)


def test_apply_the_four_environments(  # noqa: PLR0917
    spec: PlatformSpec,
    provider: LinodeProvider,
    store: StateStore,
    emulator: LinodeEmulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[dict[str, Any]] = []
    with caplog.at_level(logging.INFO, logger="aiaas.infra"):
        result = apply_spec(spec, provider, store, on_event=events.append)
    assert result.ok
    assert result.outcome == "applied"
    assert all(s.outcome == "done" for s in result.steps)
    assert result.snapshot is not None
    assert result.snapshot.id == "000001"
    assert_no_orphans(emulator, store)
    assert not plan(spec, provider, store.latest()).has_changes

    # Dependencies came first.
    order = [s.address for s in result.steps]
    assert order.index("firewall.aiaas-nodes") < order.index("cluster.aiaas-main")
    assert order.index("subnet.aiaas-vpc/data") < order.index("database.aiaas-production")
    assert order.index("bucket.aiaas-metrics") < order.index("object_key.aiaas-metrics-writer")
    # The cluster was waited for: ready, nodes ready, kubeconfig handed over.
    pools = emulator.resources("pools")
    assert all(n["status"] == "ready" for p in pools for n in p["nodes"])
    assert set(result.secrets) == {
        "cluster.aiaas-main",
        "object_key.aiaas-metrics-writer",
        "object_key.aiaas-artifacts-reader",
        "database.aiaas-development",
        "database.aiaas-staging",
        "database.aiaas-production",
    }
    assert emulator.lifecycle_xml("aiaas-metrics") is not None

    # No secret reaches state or the logs: fingerprints only.
    state_text = "".join(p.read_text() for p in (tmp_path / "state").rglob("*.json"))
    log_text = caplog.text + repr(events)
    for secrets in result.secrets.values():
        for name, secret in secrets.items():
            assert secret.get_secret_value() not in state_text
            assert secret.get_secret_value() not in log_text
            assert repr(secret) == "Secret('**********')"
            del name
    record = store.latest().resources["object_key.aiaas-metrics-writer"]
    assert record.secret_fingerprints["secret_key"].startswith("sha256:")
    assert store.latest().resources["cluster.aiaas-main"].secret_fingerprints["kubeconfig"]

    # Structured events: start, finish, per-step, transitions (audited).
    names = [e["event"] for e in events]
    assert names[0] == "infra.apply.start"
    assert names[-1] == "infra.apply.finish"
    finish = events[-1]
    assert finish["outcome"] == "applied"
    assert finish["actor"] == "tester"
    assert finish["counts"]["create"] == 15
    assert finish["duration_s"] > 0
    transitions = [e for e in events if e["event"] == "infra.environment.transition"]
    assert all(e["audit"] for e in transitions)
    assert {(e["environment"], e["to_status"]) for e in transitions} >= {
        ("production", "provisioning"),
        ("production", "ready"),
    }
    logged = [r for r in caplog.records if getattr(r, "event", None) == "infra.apply.finish"]
    assert logged
    assert logged[0].run_id == result.run_id
    statuses = store.environments()
    assert {n: r.status for n, r in statuses.items()} == dict.fromkeys(spec.environments, "ready")
    assert [t.to_status for t in statuses["staging"].history] == ["provisioning", "ready"]
    assert result.to_dict()["secrets"]["cluster.aiaas-main"] == ["kubeconfig"]


def test_a_no_op_apply_writes_no_snapshot(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore
) -> None:
    apply_spec(spec, provider, store)
    again = apply_spec(spec, provider, store)
    assert again.outcome == "no_changes"
    assert again.snapshot is None
    assert [i.id for i in store.list()] == ["000001"]


def test_resize_then_rollback_to_a_snapshot(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore, emulator: LinodeEmulator
) -> None:
    apply_spec(spec, provider, store)
    bigger = edited(spec, lambda d: d["cluster"]["pools"][2].update(count=2))
    emulator.reset_requests()
    result = apply_spec(bigger, provider, store)
    assert [(s.address, s.action) for s in result.steps] == [("pool.aiaas-main/gpu", "update")]
    assert emulator.request_count("PUT") == 1
    assert {p["label"]: p["count"] for p in emulator.resources("pools")}["gpu"] == 2
    back = rollback_plan(store, provider, "000001")
    assert [(c.action, c.address) for c in back.changes] == [("update", "pool.aiaas-main/gpu")]
    apply(back, provider, store=store)
    assert {p["label"]: p["count"] for p in emulator.resources("pools")}["gpu"] == 1
    assert [i.serial for i in store.list()] == [1, 2, 3]


def test_region_change_replaces_without_leftovers(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore, emulator: LinodeEmulator
) -> None:
    apply_spec(spec, provider, store)
    old_cluster = store.latest().resources["cluster.aiaas-main"].id
    moved = edited(spec, lambda d: d.update(region="us-sea"))
    result = apply_spec(moved, provider, store)
    assert result.outcome == "applied"
    assert {c["region"] for c in emulator.resources("clusters")} == {"us-sea"}
    assert store.latest().resources["cluster.aiaas-main"].id != old_cluster
    assert {b["region"] for b in emulator.resources("buckets")} == {"us-sea"}
    assert_no_orphans(emulator, store)
    assert not plan(moved, provider, store.latest()).has_changes


def test_quota_exhaustion_creates_nothing(spec: PlatformSpec, store: StateStore) -> None:
    with LinodeEmulator(
        ready_delay=0, kubeconfig_delay=0, database_delay=0, object_storage_bucket_quota=1
    ) as em:
        from aiaas_infra.testing import emulator_provider

        provider = emulator_provider(em)
        with pytest.raises(PreflightError) as info:
            apply_spec(spec, provider, store)
        codes = {p.code for p in info.value.problems}
        assert codes == {"OBJ_BUCKET_QUOTA"}
        assert "need 2 of a 1-bucket quota" in str(info.value)
        assert all(ids == [] for ids in live_ids(em).values())
        assert em.request_count("POST") == 0
        assert store.latest() is None


def test_an_account_limit_mid_run_rolls_everything_back(
    spec: PlatformSpec, store: StateStore
) -> None:
    from aiaas_infra.testing import emulator_provider

    with LinodeEmulator(
        ready_delay=0, kubeconfig_delay=0, database_delay=0, limits=AccountLimits(databases=2)
    ) as em:
        provider = emulator_provider(em)
        events: list[dict[str, Any]] = []
        with pytest.raises(ApplyError) as info:
            apply_spec(spec, provider, store, on_event=events.append)
        result = info.value.result
        assert result.outcome == "rolled_back"
        assert info.value.code == "APPLY_FAILED"
        assert "Account Limit reached" in (result.error or "")
        assert all(ids == [] for ids in live_ids(em).values()), live_ids(em)
        assert {r.outcome for r in result.rollback} == {"done"}
        assert result.unrestorable == []
        assert any(s.outcome == "failed" for s in result.steps)
        statuses = store.environments()
        assert {r.status for r in statuses.values()} == {"retired"}
        assert [t.to_status for t in statuses["production"].history] == ["provisioning", "retired"]
        snapshot = store.latest()
        assert snapshot is not None
        assert snapshot.outcome == "rolled_back"
        assert snapshot.resources == {}
        failure = events[-1]
        assert failure["event"] == "infra.apply.failure"
        assert failure["outcome"] == "rolled_back"
        assert failure["failed_step"].startswith("create:database.")


def test_a_failed_update_run_restores_what_it_changed(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore, emulator: LinodeEmulator
) -> None:
    apply_spec(spec, provider, store)
    before = {p["label"]: p["labels"] for p in emulator.resources("pools")}
    lifecycle = emulator.lifecycle_xml("aiaas-metrics")
    emulator.set_limits(AccountLimits(databases=3))

    def edit(d: dict[str, Any]) -> None:
        d["cluster"]["pools"][0]["labels"]["team"] = "platform"
        d["object_storage"]["buckets"][0]["lifecycle"][0]["expiration_days"] = 365
        d["environments"]["system"]["database"] = {"type": "g6-nanode-1"}

    with pytest.raises(ApplyError) as info:
        apply_spec(edited(spec, edit), provider, store)
    assert info.value.result.outcome == "rolled_back"
    assert {p["label"]: p["labels"] for p in emulator.resources("pools")} == before
    assert emulator.lifecycle_xml("aiaas-metrics") == lifecycle
    assert [
        r.action for r in info.value.result.rollback if r.address == "pool.aiaas-main/general"
    ] == ["restore"]
    assert_no_orphans(emulator, store)
    assert not plan(spec, provider, store.latest()).has_changes
    assert {r.status for r in store.environments().values()} == {"ready"}


def test_a_stale_plan_is_refused(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore
) -> None:
    stale = plan(spec, provider, store.latest())
    apply_spec(spec, provider, store)
    with pytest.raises(ConflictError, match="plan again"):
        apply(stale, provider, store=store)


def test_a_locked_state_is_refused(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore
) -> None:
    with store.lock(holder="someone else"):
        with pytest.raises(StateLockedError) as info:
            apply_spec(spec, provider, store)
        assert info.value.holder["holder"] == "someone else"
        assert info.value.status == 423
    assert store.lock_info() is None


def test_destroy_removes_everything_and_retires(
    spec: PlatformSpec, provider: LinodeProvider, store: StateStore, emulator: LinodeEmulator
) -> None:
    apply_spec(spec, provider, store)
    result = apply(plan(spec, provider, store.latest(), destroy=True), provider, store=store)
    assert result.outcome == "applied"
    assert all(ids == [] for ids in live_ids(emulator).values())
    assert {r.status for r in store.environments().values()} == {EnvironmentStatus.RETIRED.value}
    assert store.latest().resources == {}


def test_without_a_store_nothing_is_recorded(spec: PlatformSpec, provider: LinodeProvider) -> None:
    result = apply(plan(spec, provider), provider, actor="ci", concurrency=1)
    assert result.outcome == "applied"
    assert result.snapshot is None
    assert [t.to_status for t in result.transitions].count("ready") == 4
