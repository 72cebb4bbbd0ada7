"""Reading the platform's Linode resources: live records from the API's answers, the inventory
of a scope, and lookups by ownership tag and label.
"""

# linode_api4, boto3 and botocore ship no type information.

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from aiaas_infra.provision._provider_api import (
    JSON,
    Inventory,
    Scope,
    _engine_major,
    _LinodeClient,
    _raw,
    _rule_attrs,
)
from aiaas_infra.provision._resources import Desired, LiveResource, normalise_autoscaler

__all__: list[str] = []


class _Reader(_LinodeClient):
    """Reading: live resources from Linode's answers, the inventory of a scope, lookups by
    ownership tag and label."""

    # -- reading --------------------------------------------------------------------------------

    def _cluster_live(self, raw: JSON) -> LiveResource:
        return LiveResource(
            "cluster",
            raw["label"],
            str(raw["id"]),
            {
                "region": raw["region"],
                "k8s_version": raw["k8s_version"],
                "high_availability": bool(
                    (raw.get("control_plane") or {}).get("high_availability")
                ),
                "tags": sorted(raw.get("tags") or []),
            },
            status=raw.get("status"),
            raw=raw,
        )

    def _pool_live(
        self, cluster_label: str, cluster_id: str, raw: JSON, firewalls: Mapping[str, str]
    ) -> LiveResource:
        scaler = raw.get("autoscaler") or {}
        fw_id = raw.get("firewall_id")
        nodes = raw.get("nodes") or []
        ready = all(
            (n.get("status") if isinstance(n, dict) else getattr(n, "status", None)) == "ready"
            for n in nodes
        )
        return LiveResource(
            "pool",
            f"{cluster_label}/{raw.get('label') or '#' + str(raw['id'])}",
            str(raw["id"]),
            {
                "type": raw["type"],
                "count": raw["count"],
                "autoscaler": normalise_autoscaler(
                    bool(scaler.get("enabled")), scaler.get("min"), scaler.get("max")
                ),
                "labels": dict(sorted((raw.get("labels") or {}).items())),
                "taints": sorted(
                    (
                        {"key": t["key"], "value": t.get("value") or "", "effect": t["effect"]}
                        for t in (raw.get("taints") or [])
                    ),
                    key=lambda t: (t["key"], t["effect"]),
                ),
                "tags": sorted(raw.get("tags") or []),
                "firewall": None if fw_id is None else firewalls.get(str(fw_id), f"#{fw_id}"),
            },
            status="ready" if ready and len(nodes) == raw["count"] else "provisioning",
            parent_id=cluster_id,
        )

    def _firewall_live(self, raw: JSON) -> LiveResource:
        rules = raw.get("rules") or {}
        return LiveResource(
            "firewall",
            raw["label"],
            str(raw["id"]),
            {
                "inbound_policy": rules.get("inbound_policy"),
                "outbound_policy": rules.get("outbound_policy"),
                "inbound": [_rule_attrs(r) for r in rules.get("inbound") or []],
                "outbound": [_rule_attrs(r) for r in rules.get("outbound") or []],
                "tags": sorted(raw.get("tags") or []),
            },
            status=raw.get("status"),
            raw=raw,
        )

    @staticmethod
    def _vpc_live(raw: JSON) -> LiveResource:
        return LiveResource(
            "vpc",
            raw["label"],
            str(raw["id"]),
            {"region": raw["region"], "description": raw.get("description") or ""},
            raw=raw,
        )

    @staticmethod
    def _subnet_live(vpc_label: str, vpc_id: str, raw: JSON) -> LiveResource:
        return LiveResource(
            "subnet",
            f"{vpc_label}/{raw['label']}",
            str(raw["id"]),
            {"ipv4": raw.get("ipv4")},
            parent_id=vpc_id,
            raw=raw,
        )

    @staticmethod
    def _bucket_live(raw: JSON) -> LiveResource:
        region = raw.get("region") or str(raw.get("cluster", "")).rsplit("-", 1)[0]
        return LiveResource(
            "bucket",
            raw["label"],
            f"{region}/{raw['label']}",
            {"region": region},
            raw=raw,
        )

    @staticmethod
    def _key_live(raw: JSON) -> LiveResource:
        grants = sorted(
            (
                {
                    "bucket": g.get("bucket_name"),
                    "region": g.get("region") or str(g.get("cluster", "")).rsplit("-", 1)[0],
                    "permissions": g.get("permissions"),
                }
                for g in raw.get("bucket_access") or []
            ),
            key=lambda g: str(g["bucket"]),
        )
        safe = {k: v for k, v in raw.items() if k != "secret_key"}
        return LiveResource(
            "object_key", raw["label"], str(raw["id"]), {"buckets": grants}, raw=safe
        )

    @staticmethod
    def _database_live(raw: JSON, subnets: Mapping[str, str]) -> LiveResource:
        network = raw.get("private_network") or {}
        subnet_id = network.get("subnet_id")
        status = raw.get("status")
        return LiveResource(
            "database",
            raw["label"],
            str(raw["id"]),
            {
                "region": raw["region"],
                "type": raw["type"],
                "engine": _engine_major(
                    raw.get("engine", "postgresql"), str(raw.get("version", ""))
                ),
                "cluster_size": raw.get("cluster_size", 1),
                "allow_list": sorted(raw.get("allow_list") or []),
                "subnet": None
                if subnet_id is None
                else subnets.get(str(subnet_id), f"#{subnet_id}"),
                "public_access": bool(network.get("public_access", False)) if network else False,
            },
            status="ready" if status == "active" else status,
            raw=raw,
        )

    def inventory(self, scope: Scope) -> Inventory:
        """Every live resource in ``scope``: one list call per kind, plus one per cluster
        (its pools) and per VPC (its subnets)."""

        c = self.client
        found: dict[str, LiveResource] = {}
        dupes: list[LiveResource] = []

        def keep(res: LiveResource) -> None:
            if res.address in found:
                dupes.append(res)
            else:
                found[res.address] = res

        firewall_labels: dict[str, str] = {}
        if scope.wants("firewall") or scope.wants("pool"):
            fws = self.list_all(
                "list firewalls",
                lambda: c.networking.firewalls(self.filter_by({"tags": scope.owner_tag})),
            )
            for fw in fws:
                raw = _raw(fw)
                firewall_labels[str(raw["id"])] = raw["label"]
                if scope.has("firewall", raw["label"]):
                    keep(self._firewall_live(raw))

        subnet_names: dict[str, str] = {}
        if scope.wants("vpc") or scope.wants("subnet"):
            vpc_labels = scope.labels.get("vpc", frozenset())
            for vpc in self.list_all("list VPCs", c.vpcs):
                raw = _raw(vpc)
                if raw["label"] not in vpc_labels:
                    continue
                live = self._vpc_live(raw)
                keep(live)
                subnets = self.list_all(
                    f"list subnets of VPC {raw['label']}",
                    functools.partial(_subnets_of, c, raw["id"]),
                )
                for subnet in subnets:
                    s = self._subnet_live(raw["label"], live.id, _raw(subnet))
                    subnet_names[s.id] = s.name
                    keep(s)

        if scope.wants("cluster"):
            clusters = self.list_all(
                "list LKE clusters",
                lambda: c.lke.clusters(self.filter_by({"tags": scope.owner_tag})),
            )
            for cluster in clusters:
                raw = _raw(cluster)
                if not scope.has("cluster", raw["label"]):
                    continue
                live = self._cluster_live(raw)
                keep(live)
                pools = self.list_all(
                    f"list pools of cluster {raw['label']}",
                    functools.partial(_pools_of, c, raw["id"]),
                )
                for pool in pools:
                    keep(self._pool_live(raw["label"], live.id, _pool_raw(pool), firewall_labels))

        if scope.wants("bucket"):
            for bucket in self.list_all("list buckets", c.object_storage.buckets):
                raw = _raw(bucket)
                if scope.has("bucket", raw["label"]):
                    keep(self._bucket_live(raw))

        if scope.wants("object_key"):
            for key in self.list_all("list object storage keys", c.object_storage.keys):
                raw = _raw(key)
                if scope.has("object_key", raw["label"]):
                    keep(self._key_live(raw))

        if scope.wants("database"):
            dbs = self.list_all("list PostgreSQL databases", c.database.postgresql_instances)
            for db in dbs:
                raw = _raw(db)
                if scope.has("database", raw["label"]):
                    keep(self._database_live(raw, subnet_names))
        return Inventory(found, tuple(dupes))

    def pools(self, cluster: LiveResource, refs: Mapping[str, LiveResource]) -> list[LiveResource]:
        """The live pools of ``cluster``; firewall ids are named from ``refs``."""
        from linode_api4 import LKECluster  # noqa: PLC0415

        c = self.client
        rows = self.list_all(
            f"list pools of {cluster.address}", lambda: LKECluster(c, int(cluster.id)).pools
        )
        names = _fw_names(refs)
        return [self._pool_live(cluster.name, cluster.id, _pool_raw(p), names) for p in rows]

    # -- finding a resource whose create answer was lost ----------------------------------------

    def find(self, desired: Desired, refs: Mapping[str, LiveResource]) -> LiveResource | None:
        """Look ``desired`` up by tag and label (after a create whose answer was lost)."""
        found = self.find_all(desired, refs)
        return found[-1] if found else None

    def find_all(self, desired: Desired, refs: Mapping[str, LiveResource]) -> list[LiveResource]:
        """Every live copy of ``desired`` (found by tag and label), oldest first."""
        from linode_api4 import VPC  # noqa: PLC0415

        c = self.client
        kind, label = desired.kind, desired.label
        flt = self.filter_by({"label": label})
        if kind == "cluster":
            owner = next(t for t in desired.attrs["tags"] if t.startswith("aiaas-owner:"))
            both = self.filter_by({"+and": [{"label": label}, {"tags": owner}]})
            rows = self.list_all("find cluster", lambda: c.lke.clusters(both))
            return [self._cluster_live(_raw(r)) for r in rows]
        if kind == "pool":
            parent = refs.get(desired.parent or "")
            if parent is None:
                return []
            return [p for p in self.pools(parent, refs) if p.name == desired.name]
        if kind == "firewall":
            rows = self.list_all("find firewall", lambda: c.networking.firewalls(flt))
            return [self._firewall_live(_raw(r)) for r in rows]
        if kind == "vpc":
            rows = self.list_all("find VPC", lambda: c.vpcs(flt))
            return [self._vpc_live(_raw(r)) for r in rows]
        if kind == "subnet":
            parent = refs.get(desired.parent or "")
            if parent is None:
                return []
            rows = self.list_all("find subnet", lambda: VPC(c, int(parent.id)).subnets)
            subnets = [self._subnet_live(parent.name, parent.id, _raw(r)) for r in rows]
            return [s for s in subnets if s.name == desired.name]
        if kind == "bucket":
            region = desired.attrs["region"]
            raw = self._call(
                "find bucket",
                lambda: c.get(f"/object-storage/buckets/{region}/{label}"),
                missing_ok=True,
            )
            return [self._bucket_live(raw)] if raw else []
        if kind == "object_key":
            rows = self.list_all("find object storage key", lambda: c.object_storage.keys(flt))
            return [self._key_live(_raw(r)) for r in rows]
        if kind == "database":
            rows = self.list_all("find database", lambda: c.database.postgresql_instances(flt))
            return [self._database_live(_raw(r), _subnet_names(refs)) for r in rows]
        raise ValueError(f"unknown kind {kind!r}")  # pragma: no cover - KINDS is closed

    # -- creating -------------------------------------------------------------------------------


def _subnets_of(client: Any, vpc_id: int) -> Any:
    from linode_api4 import VPC  # noqa: PLC0415

    return VPC(client, vpc_id).subnets


def _pools_of(client: Any, cluster_id: int) -> Any:
    from linode_api4 import LKECluster  # noqa: PLC0415

    return LKECluster(client, cluster_id).pools


def _pool_raw(pool: Any) -> JSON:
    raw = _raw(pool)
    if not raw and isinstance(pool, dict):
        raw = dict(pool)
    # The SDK turns nodes into objects in place; read them back as plain data.
    nodes = []
    for node in raw.get("nodes") or []:
        if isinstance(node, dict):
            nodes.append(node)
        else:
            nodes.append({"id": node.id, "instance_id": node.instance_id, "status": node.status})
    taints = []
    for taint in raw.get("taints") or []:
        if isinstance(taint, dict):
            taints.append(taint)
        else:
            taints.append({"key": taint.key, "value": taint.value, "effect": taint.effect})
    raw["nodes"] = nodes
    raw["taints"] = taints
    return raw


def _fw_names(refs: Mapping[str, LiveResource]) -> dict[str, str]:
    return {r.id: r.name for r in refs.values() if r.kind == "firewall"}


def _subnet_names(refs: Mapping[str, LiveResource]) -> dict[str, str]:
    return {r.id: r.name for r in refs.values() if r.kind == "subnet"}
