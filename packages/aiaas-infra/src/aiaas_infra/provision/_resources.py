"""Resources: what the spec wants (:class:`Desired`) and what Linode has (:class:`LiveResource`).

Both sides speak one normalised vocabulary of attributes per kind, so a plan is a comparison of
two dictionaries. Addresses name resources stably: ``cluster.aiaas-main``,
``pool.aiaas-main/general`` (pools are matched by label, never by position),
``firewall.aiaas-nodes``, ``vpc.aiaas-vpc``, ``subnet.aiaas-vpc/data``, ``bucket.aiaas-metrics``,
``object_key.aiaas-metrics-writer`` and ``database.aiaas-production``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import attrs
from attrs import field

from aiaas_infra.spec._model import PlatformSpec

__all__ = ["KINDS", "Desired", "LiveResource", "desired_resources"]

ResourceKind = Literal[
    "firewall", "vpc", "subnet", "cluster", "pool", "bucket", "object_key", "database"
]
#: Kinds in dependency order: a kind only depends on kinds before it.
KINDS: Final[tuple[ResourceKind, ...]] = (
    "firewall",
    "vpc",
    "subnet",
    "cluster",
    "pool",
    "bucket",
    "object_key",
    "database",
)

#: Fields Linode cannot change in place: a difference there replaces the resource.
REPLACE_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "cluster": frozenset({"region"}),
    "pool": frozenset({"type"}),
    "firewall": frozenset(),
    "vpc": frozenset({"region"}),
    "subnet": frozenset({"ipv4"}),
    "bucket": frozenset({"region"}),
    "object_key": frozenset({"buckets"}),
    "database": frozenset({"region", "engine", "public_access"}),
}

#: Fields whose live value the planner reads from state, because API v4 cannot show them.
STATE_ONLY_FIELDS: Final[Mapping[str, frozenset[str]]] = {"bucket": frozenset({"lifecycle"})}


def address(kind: str, name: str) -> str:
    return f"{kind}.{name}"


def kind_of(addr: str) -> str:
    return addr.split(".", 1)[0]


def name_of(addr: str) -> str:
    return addr.split(".", 1)[1]


@attrs.frozen
class Desired:
    """One resource the spec declares, with its normalised attributes and dependencies.

    ``environments`` lists the environments that use it; empty means shared by all.
    """

    kind: ResourceKind
    name: str
    attrs: Mapping[str, Any]
    depends_on: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    label: str = ""

    @property
    def address(self) -> str:
        return address(self.kind, self.name)

    @property
    def parent(self) -> str | None:
        if self.kind == "pool":
            return address("cluster", self.name.split("/", 1)[0])
        if self.kind == "subnet":
            return address("vpc", self.name.split("/", 1)[0])
        return None


@attrs.frozen
class LiveResource:
    """One resource as Linode reports it: its id, normalised attributes and status.

    ``raw`` is the API's JSON (never stored; it may hold secrets such as a key's secret).
    """

    kind: ResourceKind
    name: str
    id: str
    attrs: Mapping[str, Any]
    status: str | None = None
    parent_id: str | None = None
    raw: Mapping[str, Any] = field(factory=dict, repr=False, eq=False)

    @property
    def address(self) -> str:
        return address(self.kind, self.name)


def _rule(rule: Any) -> dict[str, Any]:
    return {
        "label": rule.label,
        "action": rule.action,
        "protocol": rule.protocol,
        "ports": rule.ports,
        "addresses": {"ipv4": list(rule.addresses.ipv4), "ipv6": list(rule.addresses.ipv6)},
        "description": rule.description,
    }


def _lifecycle(rules: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "prefix": r.prefix,
            "enabled": r.enabled,
            "expiration_days": r.expiration_days,
            "noncurrent_expiration_days": r.noncurrent_expiration_days,
            "abort_incomplete_multipart_days": r.abort_incomplete_multipart_days,
        }
        for r in sorted(rules, key=lambda r: r.id)
    ]


def normalise_autoscaler(enabled: bool, low: int | None, high: int | None) -> dict[str, Any]:
    """Linode reports min/max even for a disabled autoscaler; only enabled bounds matter."""
    if not enabled:
        return {"enabled": False}
    return {"enabled": True, "min": low, "max": high}


def desired_resources(spec: PlatformSpec) -> dict[str, Desired]:
    """Every Linode resource ``spec`` declares, by address, in dependency order."""
    out: dict[str, Desired] = {}
    owner = spec.owner_tag
    users: dict[str, list[str]] = {}
    for env_name, env in spec.environments.items():
        for pool_label in env.pools:
            users.setdefault(pool_label, []).append(env_name)

    fw_addr: str | None = None
    if spec.firewall is not None:
        fw = spec.firewall
        d = Desired(
            "firewall",
            fw.label,
            {
                "inbound_policy": fw.inbound_policy,
                "outbound_policy": fw.outbound_policy,
                "inbound": [_rule(r) for r in fw.inbound],
                "outbound": [_rule(r) for r in fw.outbound],
                "tags": sorted({owner, "aiaas-infra"}),
            },
            label=fw.label,
        )
        out[d.address] = d
        fw_addr = d.address

    if spec.vpc is not None:
        vpc = spec.vpc
        d = Desired(
            "vpc",
            vpc.label,
            {"region": spec.region, "description": vpc.description},
            label=vpc.label,
        )
        out[d.address] = d
        for subnet in vpc.subnets:
            s = Desired(
                "subnet",
                f"{vpc.label}/{subnet.label}",
                {"ipv4": subnet.ipv4},
                depends_on=(d.address,),
                label=subnet.label,
            )
            out[s.address] = s

    cluster = spec.cluster
    cluster_addr = address("cluster", cluster.label)
    out[cluster_addr] = Desired(
        "cluster",
        cluster.label,
        {
            "region": spec.region,
            "k8s_version": cluster.kubernetes_version,
            "high_availability": cluster.high_availability,
            "tags": sorted({owner, "aiaas-infra", *cluster.tags}),
        },
        depends_on=(fw_addr,) if fw_addr else (),
        label=cluster.label,
    )
    for pool in cluster.pools:
        envs = tuple(users.get(pool.label, ()))
        env_tags = {f"aiaas-env:{e}" for e in envs}
        d = Desired(
            "pool",
            f"{cluster.label}/{pool.label}",
            {
                "type": pool.type,
                "count": pool.count,
                "autoscaler": normalise_autoscaler(
                    pool.autoscaler.enabled, pool.autoscaler.min, pool.autoscaler.max
                ),
                "labels": dict(sorted(pool.labels.items())),
                "taints": sorted(
                    ({"key": t.key, "value": t.value, "effect": t.effect} for t in pool.taints),
                    key=lambda t: (t["key"], t["effect"]),
                ),
                "tags": sorted({owner, "aiaas-infra", *env_tags}),
                "firewall": spec.firewall.label if spec.firewall is not None else None,
            },
            depends_on=(cluster_addr, *((fw_addr,) if fw_addr else ())),
            environments=envs,
            label=pool.label,
        )
        out[d.address] = d

    for bucket in spec.object_storage.buckets:
        d = Desired(
            "bucket",
            bucket.label,
            {"region": spec.bucket_region(bucket), "lifecycle": _lifecycle(bucket.lifecycle)},
            label=bucket.label,
        )
        out[d.address] = d

    buckets = {b.label: b for b in spec.object_storage.buckets}
    for key in spec.object_storage.keys:
        grants = sorted(
            (
                {
                    "bucket": g.bucket,
                    "region": spec.bucket_region(buckets[g.bucket]),
                    "permissions": g.permissions,
                }
                for g in key.buckets
            ),
            key=lambda g: g["bucket"],
        )
        d = Desired(
            "object_key",
            key.label,
            {"buckets": grants},
            depends_on=tuple(address("bucket", g["bucket"]) for g in grants),
            label=key.label,
        )
        out[d.address] = d

    for env_name, env in spec.environments.items():
        db = env.database
        label = spec.database_label(env_name)
        if db is None or label is None:
            continue
        subnet_name = f"{spec.vpc.label}/{db.subnet}" if db.subnet and spec.vpc else None
        d = Desired(
            "database",
            label,
            {
                "region": spec.region,
                "type": db.type,
                "engine": db.engine,
                "cluster_size": db.cluster_size,
                "allow_list": sorted(db.allow_list),
                "subnet": subnet_name,
                "public_access": db.public_access,
            },
            depends_on=(address("subnet", subnet_name),) if subnet_name else (),
            environments=(env_name,),
            label=label,
        )
        out[d.address] = d
    return out
