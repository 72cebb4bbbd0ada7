"""The emulator's LKE API: clusters, node pools and kubeconfigs."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from aiaas_infra.testing._linode._base import _ApiBase
from aiaas_infra.testing._linode._model import (
    JSON,
    KUBERNETES_VERSIONS,
    _ApiError,
    _bad,
    _limit,
    _not_found,
    _now,
    _public,
)

__all__: list[str] = []


class _LkeApi(_ApiBase):
    """The emulator's LKE API: clusters, node pools and kubeconfigs."""

    # -- LKE ------------------------------------------------------------------------------------

    def _cluster(self, cid: str | int) -> JSON:
        return self._find(self.store.clusters, cid)

    def _list_clusters(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([_public(c) for c in self.store.clusters.values()], query, headers)

    def _create_cluster(self, *, body: Any, **_: Any) -> JSON:
        body = self._require(body, "label", "region", "k8s_version")
        label = body["label"]
        if not isinstance(label, str) or not 1 <= len(label) <= 32:
            raise _bad("Label must be 1-32 characters", "label")
        self._unique_label(
            self.store.clusters.values(), label, "Label must be unique among your LKE clusters"
        )
        self._check_region(body["region"], "Kubernetes")
        if body["k8s_version"] not in KUBERNETES_VERSIONS:
            raise _bad(f"Kubernetes version {body['k8s_version']} is not supported", "k8s_version")
        pools = body.get("node_pools")
        if not isinstance(pools, list) or not pools:
            raise _bad("At least one node pool is required", "node_pools")
        for i, pool in enumerate(pools):
            if not isinstance(pool, dict):
                raise _bad("Must be an object", f"node_pools[{i}]")
            self.store._validate_pool(pool, body["region"], field=f"node_pools[{i}]", creating=True)
        tags = self._tags(body)
        if len(self.store.clusters) >= self.limits.clusters:
            raise _limit("LKE cluster")
        new_nodes = sum(p["count"] for p in pools)
        if self.store.node_count() + new_nodes > self.limits.nodes:
            raise _limit("Linode")
        cid = self.store.new_id()
        now = _now()
        control = body.get("control_plane") or {}
        cluster: JSON = {
            "id": cid,
            "status": "not_ready",
            "created": now,
            "updated": now,
            "label": label,
            "region": body["region"],
            "k8s_version": body["k8s_version"],
            "tier": "standard",
            "tags": tags,
            "control_plane": {"high_availability": bool(control.get("high_availability", False))},
            "apl_enabled": False,
        }
        self.store.clusters[cid] = cluster
        self.store.ready_at[("cluster", cid)] = time.monotonic() + self.ready_delay
        self.store.ready_at[("kubeconfig", cid)] = time.monotonic() + self.kubeconfig_delay
        for pool in pools:
            self.store.make_pool(cid, pool)
        return _public(cluster)

    def _get_cluster(self, *, cid: str, **_: Any) -> JSON:
        return _public(self._cluster(cid))

    def _update_cluster(self, *, cid: str, body: Any, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        body = self._require(body)
        if "label" in body:
            label = body["label"]
            self._unique_label(
                self.store.clusters.values(),
                label,
                "Label must be unique among your LKE clusters",
                own=cluster,
            )
            cluster["label"] = label
        if "tags" in body:
            cluster["tags"] = self._tags(body)
        if "k8s_version" in body:
            new = body["k8s_version"]
            if new not in KUBERNETES_VERSIONS:
                raise _bad(f"Kubernetes version {new} is not supported", "k8s_version")
            if tuple(map(int, new.split("."))) < tuple(map(int, cluster["k8s_version"].split("."))):
                raise _bad("Kubernetes version cannot be downgraded", "k8s_version")
            cluster["k8s_version"] = new
        if "control_plane" in body:
            ha = bool((body["control_plane"] or {}).get("high_availability", False))
            if cluster["control_plane"]["high_availability"] and not ha:
                raise _bad(
                    "High availability cannot be disabled", "control_plane.high_availability"
                )
            cluster["control_plane"]["high_availability"] = ha
        if "region" in body and body["region"] != cluster["region"]:
            raise _bad("region cannot be changed", "region")
        cluster["updated"] = _now()
        return _public(cluster)

    def _delete_cluster(self, cid: int) -> None:
        self.store.clusters.pop(cid, None)
        for pid in [p for p, pool in self.store.pools.items() if pool["_cluster"] == cid]:
            del self.store.pools[pid]

    def _delete_cluster_route(self, *, cid: str, **_: Any) -> JSON:
        self._cluster(cid)
        self._delete_cluster(int(cid))
        return {}

    def _pool(self, cid: str, pid: str) -> JSON:
        self._cluster(cid)
        pool = self.store.pools.get(int(pid))
        if pool is None or pool["_cluster"] != int(cid):
            raise _not_found()
        return pool

    def _list_pools(self, *, cid: str, query: Any, headers: Any, **_: Any) -> JSON:
        self._cluster(cid)
        pools = [_public(p) for p in self.store.pools.values() if p["_cluster"] == int(cid)]
        return self._page(pools, query, headers)

    def _create_pool(self, *, cid: str, body: Any, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        body = self._require(body, "type", "count")
        self.store._validate_pool(body, cluster["region"], field="", creating=True)
        self._tags(body)
        if self.store.node_count() + body["count"] > self.limits.nodes:
            raise _limit("Linode")
        return _public(self.store.make_pool(int(cid), body))

    def _get_pool(self, *, cid: str, pid: str, **_: Any) -> JSON:
        return _public(self._pool(cid, pid))

    def _update_pool(self, *, cid: str, pid: str, body: Any, **_: Any) -> JSON:
        pool = self._pool(cid, pid)
        body = self._require(body)
        if "type" in body and body["type"] != pool["type"]:
            raise _bad("type cannot be changed; create a new pool", "type")
        self.store._validate_pool(body, self._cluster(cid)["region"], field="", creating=False)
        if "count" in body:
            growth = body["count"] - pool["count"]
            if growth > 0 and self.store.node_count() + growth > self.limits.nodes:
                raise _limit("Linode")
            self.store._resize(pool, body["count"])
        if "autoscaler" in body:
            scaler = body["autoscaler"]
            pool["autoscaler"] = {
                "enabled": bool(scaler.get("enabled", False)),
                "max": scaler.get("max", pool["autoscaler"]["max"]),
                "min": scaler.get("min", pool["autoscaler"]["min"]),
            }
        for field in ("labels", "taints", "label", "firewall_id"):
            if field in body:
                pool[field] = body[field]
        if "tags" in body:
            pool["tags"] = self._tags(body)
        return _public(pool)

    def _delete_pool(self, *, cid: str, pid: str, **_: Any) -> JSON:
        self._pool(cid, pid)
        siblings = [p for p in self.store.pools.values() if p["_cluster"] == int(cid)]
        if len(siblings) <= 1:
            raise _bad("A cluster must keep at least one node pool")
        del self.store.pools[int(pid)]
        return {}

    def _kubeconfig(self, *, cid: str, **_: Any) -> JSON:
        cluster = self._cluster(cid)
        if not self.store._ready("kubeconfig", cluster["id"]):
            raise _ApiError(
                503,
                "Cluster kubeconfig is not yet available. Please try again later.",
                headers={"Retry-After": str(self.kubeconfig_retry_after)},
            )
        config = (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: lke{cluster['id']}\n  cluster:\n"
            f"    server: https://{cluster['id']}.{cluster['region']}.linodelke.net:443\n"
            f"users:\n- name: lke{cluster['id']}-admin\n  user:\n"
            f"    token: {secrets.token_urlsafe(32)}\n"
            f"contexts:\n- name: lke{cluster['id']}-ctx\n  context:\n"
            f"    cluster: lke{cluster['id']}\n    user: lke{cluster['id']}-admin\n"
            f"current-context: lke{cluster['id']}-ctx\n"
        )
        return {"kubeconfig": base64.b64encode(config.encode()).decode()}
