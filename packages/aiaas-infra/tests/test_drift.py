"""Drift: none / minor / major by the documented rules, reports kept, environments degraded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from infra_support import apply_spec

from aiaas_infra import (
    LinodeProvider,
    PlatformSpec,
    StateStore,
    detect_drift,
    plan,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.provision._drift import RULES
from aiaas_infra.testing import LinodeEmulator


@pytest.fixture
def applied(spec: PlatformSpec, provider: LinodeProvider, store: StateStore) -> StateStore:
    apply_spec(spec, provider, store)
    return store


def test_no_drift_after_apply(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    report = detect_drift(spec, provider, store=applied)
    assert report.level == "none"
    assert report.findings == ()
    assert set(report.environments.values()) == {"none"}
    assert "No drift" in report.to_markdown()
    assert report.api_calls == 8


def test_a_deleted_firewall_is_major_and_apply_recreates_it(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore, emulator: LinodeEmulator
) -> None:
    emulator.delete_out_of_band("firewalls", "aiaas-nodes")
    report = detect_drift(spec, provider, store=applied)
    assert report.level == "major"
    categories = {(f.address, f.category) for f in report.findings}
    assert ("firewall.aiaas-nodes", "missing") in categories
    assert ("pool.aiaas-main/general", "security") in categories  # its nodes lost the firewall
    assert set(report.environments.values()) == {"major"}  # the firewall is shared
    statuses = applied.environments()
    assert {r.status for r in statuses.values()} == {"degraded"}
    assert statuses["production"].history[-1].reason == "major drift"

    result = apply_spec(spec, provider, applied)
    assert ("firewall.aiaas-nodes", "create") in {(s.address, s.action) for s in result.steps}
    firewalls = emulator.resources("firewalls")
    assert len(firewalls) == 1
    assert {p["firewall_id"] for p in emulator.resources("pools")} == {firewalls[0]["id"]}
    assert detect_drift(spec, provider, store=applied).level == "none"
    history = [t.to_status for t in applied.environments()["staging"].history]
    assert history == ["provisioning", "ready", "degraded", "recovering", "ready"]


def test_minor_and_security_rules(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore, emulator: LinodeEmulator
) -> None:
    emulator.update_out_of_band("pools", "gpu", count=2)  # no autoscaler on this pool
    emulator.update_out_of_band("pools", "general", count=5)  # autoscaler-owned, within bounds
    emulator.update_out_of_band("vpcs", "aiaas-vpc", description="edited by hand")
    report = detect_drift(spec, provider, store=applied, record=False)
    assert report.level == "minor"
    found = {(f.address, f.field): f for f in report.findings}
    assert set(found) == {("pool.aiaas-main/gpu", "count"), ("vpc.aiaas-vpc", "description")}
    assert found[("pool.aiaas-main/gpu", "count")].environments == ("system",)
    assert report.environments["system"] == "minor"
    assert {r.status for r in applied.environments().values()} == {"ready"}  # not recorded

    db = applied.latest().resources["database.aiaas-production"]
    provider.client.put(
        f"/databases/postgresql/instances/{db.id}", data={"allow_list": ["0.0.0.0/0"]}
    )
    report = detect_drift(spec, provider, store=applied)
    assert report.level == "major"
    assert report.environments == {
        "development": "minor",
        "staging": "minor",
        "production": "major",
        "system": "minor",
    }
    statuses = {n: r.status for n, r in applied.environments().items()}
    assert statuses == {
        "development": "ready",
        "staging": "ready",
        "production": "degraded",
        "system": "ready",
    }


def test_firewall_rule_edits_are_major(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    fw = applied.latest().resources["firewall.aiaas-nodes"]
    provider.client.put(
        f"/networking/firewalls/{fw.id}/rules",
        data={
            "inbound": [],
            "outbound": [],
            "inbound_policy": "ACCEPT",
            "outbound_policy": "ACCEPT",
        },
    )
    report = detect_drift(spec, provider, store=applied, record=False)
    assert report.level == "major"
    assert {f.category for f in report.findings} == {"security"}


def test_unmanaged_extras_are_minor(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    cluster = applied.latest().resources["cluster.aiaas-main"]
    provider.client.post(
        f"/lke/clusters/{cluster.id}/pools",
        data={"type": "g6-standard-2", "count": 1, "label": "manual"},
    )
    report = detect_drift(spec, provider, store=applied, record=False)
    assert report.level == "minor"
    assert [(f.address, f.category) for f in report.findings] == [
        ("pool.aiaas-main/manual", "unmanaged")
    ]


def test_pending_spec_edits_are_not_drift(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    data = spec_to_dict(spec)
    data["cluster"]["pools"][2]["count"] = 2
    report = detect_drift(spec_from_dict(data), provider, store=applied, record=False)
    assert report.level == "none"
    assert report.pending == ("pool.aiaas-main/gpu",)
    assert "Pending spec changes" in report.to_markdown()


def test_lifecycle_drift_needs_s3(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore, emulator: LinodeEmulator
) -> None:
    assert (
        detect_drift(spec, provider, store=applied, check_lifecycle=True, record=False).level
        == "none"
    )
    emulator.store.lifecycle.pop("aiaas-metrics")
    report = detect_drift(spec, provider, store=applied, check_lifecycle=True, record=False)
    assert report.level == "minor"
    assert report.findings[0].field == "lifecycle"
    assert emulator.resources("keys") != []  # the temporary key was removed again
    assert {k["label"] for k in emulator.resources("keys")} == {
        "aiaas-metrics-writer",
        "aiaas-artifacts-reader",
    }


def test_reports_are_json_and_markdown_and_kept_90_days(
    spec: PlatformSpec, provider: LinodeProvider, applied: StateStore
) -> None:
    old = datetime.now(UTC) - timedelta(days=91)
    first = detect_drift(spec, provider, store=applied, now=old)
    assert len(first.stored_as) == 2
    report = detect_drift(spec, provider, store=applied)
    kept = applied.reports("drift")
    assert sorted(k.rsplit(".", 1)[1] for k in kept) == ["json", "md"]
    assert not set(first.stored_as) & set(kept)
    doc = json.loads(applied.backend.get(next(k for k in kept if k.endswith(".json"))))
    assert doc["level"] == report.level
    assert doc["rules"] == dict(RULES)
    markdown = applied.backend.get(next(k for k in kept if k.endswith(".md"))).decode()
    assert markdown.startswith("# Drift report: aiaas")


def test_drift_without_state_compares_with_the_spec(
    spec: PlatformSpec, provider: LinodeProvider
) -> None:
    from aiaas_infra import apply

    apply(plan(spec, provider), provider)
    report = detect_drift(spec, provider)
    assert report.level == "none"
    assert report.state_serial is None
