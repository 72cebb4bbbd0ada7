"""The emulator's in-memory account state (one lock), and the objects its S3 endpoint stores."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any, Protocol

import attrs

from aiaas_infra.testing._linode._model import (
    JSON,
    RegionConfig,
    _bad,
)

__all__: list[str] = []


class _Owner(Protocol):
    """What the store needs of its emulator: the plan catalog, regions and the ready delay."""

    ready_delay: float

    def plan(self, type_id: str) -> JSON | None: ...

    def region(self, region_id: str) -> RegionConfig | None: ...


@attrs.frozen
class S3Object:
    """One stored object."""

    data: bytes = attrs.field(repr=False)
    etag: str  # quoted MD5 hex, as S3 sends it
    last_modified: float  # epoch seconds
    content_type: str = "binary/octet-stream"

    @classmethod
    def of(
        cls, data: bytes, content_type: str = "binary/octet-stream", now: float | None = None
    ) -> S3Object:
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324 -- S3's ETag is the MD5
        return cls(data, f'"{md5}"', time.time() if now is None else now, content_type)


# --------------------------------------------------------------------------------------------
# The store


def _node(cluster_id: int, pool_id: int, instance_id: int, ready: bool) -> JSON:
    return {
        "id": f"{cluster_id}-{pool_id}-{secrets.token_hex(4)}",
        "instance_id": instance_id,
        "status": "ready" if ready else "not_ready",
    }


class _Store:
    """In-memory account state, guarded by one lock."""

    def __init__(self, emulator: _Owner) -> None:
        self.em = emulator
        self.lock = threading.RLock()
        self.next_id = 10_000
        self.clusters: dict[int, JSON] = {}
        self.pools: dict[int, JSON] = {}  # pool id -> pool (with a private _cluster)
        self.firewalls: dict[int, JSON] = {}
        self.vpcs: dict[int, JSON] = {}
        self.subnets: dict[int, JSON] = {}  # subnet id -> subnet (private _vpc)
        self.buckets: dict[str, JSON] = {}  # "region/label" -> bucket
        self.keys: dict[int, JSON] = {}
        self.databases: dict[int, JSON] = {}
        self.ready_at: dict[tuple[str, Any], float] = {}
        self.lifecycle: dict[str, str] = {}  # bucket label -> lifecycle XML
        self.objects: dict[str, dict[str, S3Object]] = {}  # bucket label -> key -> object
        self.secrets: dict[int, str] = {}  # key id -> secret

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- readiness ------------------------------------------------------------------------------

    def _ready(self, kind: str, ident: Any) -> bool:
        return time.monotonic() >= self.ready_at.get((kind, ident), 0.0)

    def refresh(self) -> None:
        """Advance provisioning resources whose delay has passed."""
        for cid, cluster in self.clusters.items():
            if cluster["status"] != "ready" and self._ready("cluster", cid):
                cluster["status"] = "ready"
        for pid, pool in self.pools.items():
            for node in pool["nodes"]:
                if node["status"] != "ready" and self._ready("node", node["id"]):
                    node["status"] = "ready"
            del pid
        for did, db in self.databases.items():
            if db["status"] == "provisioning" and self._ready("database", did):
                db["status"] = "active"

    def node_count(self) -> int:
        return sum(p["count"] for p in self.pools.values())

    # -- pools ----------------------------------------------------------------------------------

    def _validate_pool(self, body: JSON, region: str, *, field: str, creating: bool) -> None:
        if creating:
            ptype = body.get("type")
            if not isinstance(ptype, str) or self.em.plan(ptype) is None:
                raise _bad(f"Invalid Linode type: {ptype!r}", f"{field}.type")
            cfg = self.em.region(region)
            if cfg is not None and ptype in cfg.unavailable_plans:
                raise _bad(f"{ptype} is not available in {region}", f"{field}.type")
            plan = self.em.plan(ptype)
            if (
                plan is not None
                and plan["gpus"]
                and cfg is not None
                and ("GPU Linodes" not in cfg.capabilities)
            ):
                raise _bad(f"GPU plans are not available in {region}", f"{field}.type")
        if "count" in body:
            count = body["count"]
            if not isinstance(count, int) or not 1 <= count <= 100:
                raise _bad("Count must be between 1 and 100", f"{field}.count")
        scaler = body.get("autoscaler")
        if scaler is not None:
            if not isinstance(scaler, dict):
                raise _bad("Must be an object", f"{field}.autoscaler")
            lo, hi = scaler.get("min", 1), scaler.get("max", 1)
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 100):
                raise _bad(
                    "Autoscaler min and max must satisfy 1 <= min <= max <= 100",
                    f"{field}.autoscaler",
                )
        label = body.get("label")
        if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= 32):
            raise _bad("Label must be 1-32 characters", f"{field}.label")
        fw = body.get("firewall_id")
        if fw is not None and fw not in self.firewalls:
            raise _bad("Firewall not found", f"{field}.firewall_id")

    def make_pool(self, cluster_id: int, body: JSON) -> JSON:
        pid = self.new_id()
        count = body["count"]
        scaler = body.get("autoscaler") or {}
        pool: JSON = {
            "autoscaler": {
                "enabled": bool(scaler.get("enabled", False)),
                "max": scaler.get("max", count),
                "min": scaler.get("min", count),
            },
            "count": count,
            "disks": [],
            "id": pid,
            "nodes": [],
            "tags": list(body.get("tags", [])),
            "taints": [dict(t) for t in body.get("taints", [])],
            "labels": dict(body.get("labels", {})),
            "label": body.get("label") or f"pool-{pid}",
            "firewall_id": body.get("firewall_id"),
            "type": body["type"],
            "disk_encryption": "enabled",
            "_cluster": cluster_id,
        }
        self._resize(pool, count)
        self.pools[pid] = pool
        return pool

    def _resize(self, pool: JSON, count: int) -> None:
        nodes: list[JSON] = pool["nodes"]
        while len(nodes) > count:
            nodes.pop()
        while len(nodes) < count:
            node = _node(pool["_cluster"], pool["id"], self.new_id(), ready=False)
            self.ready_at[("node", node["id"])] = time.monotonic() + self.em.ready_delay
            nodes.append(node)
        pool["count"] = count

    # -- S3 -------------------------------------------------------------------------------------

    def bucket_by_label(self, label: str) -> JSON | None:
        return next((b for b in self.buckets.values() if b["label"] == label), None)
