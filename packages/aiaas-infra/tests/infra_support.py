"""Helpers the tests share: what the emulator holds, and applying a spec with state."""

from __future__ import annotations

from aiaas_infra import LinodeProvider, PlatformSpec, StateStore
from aiaas_infra.testing import LinodeEmulator

KIND_TABLES = {
    "cluster": "clusters",
    "pool": "pools",
    "firewall": "firewalls",
    "vpc": "vpcs",
    "subnet": "subnets",
    "bucket": "buckets",
    "object_key": "keys",
    "database": "databases",
}


def live_ids(emulator: LinodeEmulator) -> dict[str, list[str]]:
    """Every resource the emulator holds, by kind: ids (buckets: region/label)."""
    out: dict[str, list[str]] = {}
    for kind, table in KIND_TABLES.items():
        rows = emulator.resources(table)
        if kind == "bucket":
            out[kind] = sorted(f"{r['region']}/{r['label']}" for r in rows)
        else:
            out[kind] = sorted(str(r["id"]) for r in rows)
    return out


def assert_no_orphans(emulator: LinodeEmulator, store: StateStore) -> None:
    """Linode holds exactly what the latest state records: no duplicate, no orphan."""
    snapshot = store.latest()
    recorded: dict[str, list[str]] = {k: [] for k in KIND_TABLES}
    if snapshot is not None:
        for rec in snapshot.resources.values():
            recorded[rec.kind].append(rec.id)
    assert live_ids(emulator) == {k: sorted(v) for k, v in recorded.items()}
    labels = [r["label"] for r in emulator.resources("keys")]
    assert len(labels) == len(set(labels)), f"duplicate keys: {labels}"


def apply_spec(spec: PlatformSpec, provider: LinodeProvider, store: StateStore, **kwargs: object):
    from aiaas_infra import apply, plan

    return apply(
        plan(spec, provider, store.latest()), provider, store=store, actor="tester", **kwargs
    )  # type: ignore[arg-type]
