"""The spec's Linode resources: the LKE cluster and its pools, the firewall and VPC, Object
Storage buckets and keys. Each value object checks itself (see :mod:`._rules`).
"""

from __future__ import annotations

import ipaddress

import attrs

from aiaas_infra.spec._rules import (
    _BUCKET_LABEL,
    _CLUSTER_LABEL,
    _DNS_SUBDOMAIN,
    _FIREWALL_LABEL,
    _K8S_VERSION,
    _KEY_LABEL,
    _LABEL_NAME,
    _LABEL_VALUE,
    _POOL_LABEL,
    _PORTS_PIECE,
    _REGION,
    _RFC1918,
    _RULE_ID,
    _TYPE_ID,
    _VPC_LABEL,
    MAX_FIREWALL_PORT_PIECES,
    MAX_FIREWALL_RULES,
    METRICS_RETENTION_MIN_DAYS,
    POOL_NODES_MAX,
    POOL_NODES_MIN,
    SUBNET_PREFIX_MAX,
    SUBNET_PREFIX_MIN,
    Action,
    Effect,
    Permission,
    Problems,
    Protocol,
    _check_k8s_labels,
    _cidr,
    _count,
    _label,
    _raise_if,
    is_gpu_type,
)

__all__ = [
    "AccessKey",
    "Addresses",
    "Autoscaler",
    "Bucket",
    "BucketGrant",
    "Cluster",
    "Firewall",
    "FirewallRule",
    "LifecycleRule",
    "NodePool",
    "ObjectStorage",
    "Subnet",
    "Taint",
    "Vpc",
]

# --------------------------------------------------------------------------------------------
# Cluster


@attrs.frozen
class Autoscaler:
    """LKE's autoscaler for one pool. When enabled it owns the pool's node count."""

    enabled: bool = False
    min: int | None = None
    max: int | None = None

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        if self.enabled and self.min is None:
            problems.append(("min", "is required when the autoscaler is enabled"))
        if self.enabled and self.max is None:
            problems.append(("max", "is required when the autoscaler is enabled"))
        if self.min is not None:
            _count(problems, "min", self.min, POOL_NODES_MIN, POOL_NODES_MAX)
        if self.max is not None:
            _count(problems, "max", self.max, POOL_NODES_MIN, POOL_NODES_MAX)
        if self.min is not None and self.max is not None and self.min > self.max:
            problems.append(("max", f"must be >= min ({self.min}), got {self.max}"))
        _raise_if(problems)


@attrs.frozen
class Taint:
    """A Kubernetes taint applied to every node of a pool."""

    key: str
    effect: Effect
    value: str = ""

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        prefix, _, name = self.key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(name):
            problems.append(("key", f"is not a valid taint key, got {self.key!r}"))
        if not _LABEL_VALUE.fullmatch(self.value):
            problems.append(("value", f"is not a valid taint value, got {self.value!r}"))
        _raise_if(problems)


@attrs.frozen
class NodePool:
    """A node pool, matched to the live pool by ``label`` (never by position)."""

    label: str
    type: str
    count: int
    autoscaler: Autoscaler = attrs.field(factory=Autoscaler)
    labels: dict[str, str] = attrs.field(factory=dict)
    taints: tuple[Taint, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "label", self.label, _POOL_LABEL, "must be 1-32 of a-z, 0-9 and -")
        _label(problems, "type", self.type, _TYPE_ID, "must be a Linode plan id like g6-standard-4")
        _count(problems, "count", self.count, POOL_NODES_MIN, POOL_NODES_MAX)
        low, high = self.autoscaler.min, self.autoscaler.max
        bounded = self.autoscaler.enabled and low is not None and high is not None
        if bounded and not low <= self.count <= high:  # type: ignore[operator]
            problems.append(
                ("count", f"must be within the autoscaler bounds {low}..{high}, got {self.count}")
            )
        _check_k8s_labels(problems, "labels", self.labels)
        seen: set[tuple[str, str]] = set()
        for i, taint in enumerate(self.taints):
            if (taint.key, taint.effect) in seen:
                problems.append((f"taints[{i}]", f"duplicate taint {taint.key}:{taint.effect}"))
            seen.add((taint.key, taint.effect))
        _raise_if(problems)

    @property
    def gpu(self) -> bool:
        return is_gpu_type(self.type)

    @property
    def min_nodes(self) -> int:
        """The fewest nodes this pool can have (the autoscaler's ``min`` when enabled)."""
        if self.autoscaler.enabled and self.autoscaler.min is not None:
            return self.autoscaler.min
        return self.count


@attrs.frozen
class Cluster:
    """The LKE cluster every environment shares."""

    label: str
    kubernetes_version: str
    pools: tuple[NodePool, ...]
    high_availability: bool = False
    tags: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems,
            "label",
            self.label,
            _CLUSTER_LABEL,
            "must be 1-32 letters, digits, - and _, starting and ending with a letter or digit",
        )
        _label(
            problems,
            "kubernetes_version",
            self.kubernetes_version,
            _K8S_VERSION,
            'must be MAJOR.MINOR like "1.31" (quote it in YAML)',
        )
        if not self.pools:
            problems.append(("pools", "at least one node pool is required"))
        seen: dict[str, int] = {}
        for i, pool in enumerate(self.pools):
            if pool.label in seen:
                problems.append(
                    (
                        f"pools[{i}].label",
                        f"duplicate pool label {pool.label!r} (pools[{seen[pool.label]}])",
                    )
                )
            seen.setdefault(pool.label, i)
        if self.pools and not any(p.min_nodes >= 3 for p in self.pools):
            problems.append(
                ("pools", "at least one pool must keep >= 3 nodes (count, or autoscaler min)")
            )
        for i, tag in enumerate(self.tags):
            if not 3 <= len(tag) <= 50:
                problems.append((f"tags[{i}]", f"tags are 3-50 characters, got {tag!r}"))
        _raise_if(problems)

    def pool(self, label: str) -> NodePool | None:
        return next((p for p in self.pools if p.label == label), None)


# --------------------------------------------------------------------------------------------
# Network


@attrs.frozen
class Addresses:
    """Source (inbound) or destination (outbound) networks of a firewall rule."""

    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        for i, cidr in enumerate(self.ipv4):
            if _cidr(cidr) is None:
                problems.append((f"ipv4[{i}]", f"is not an IPv4 address or CIDR, got {cidr!r}"))
        for i, cidr in enumerate(self.ipv6):
            if _cidr(cidr, v6=True) is None:
                problems.append((f"ipv6[{i}]", f"is not an IPv6 address or CIDR, got {cidr!r}"))
        if not self.ipv4 and not self.ipv6:
            problems.append(("", "at least one ipv4 or ipv6 address is required"))
        _raise_if(problems)


@attrs.frozen
class FirewallRule:
    label: str
    action: Action
    protocol: Protocol
    addresses: Addresses
    ports: str | None = None
    description: str = ""

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems,
            "label",
            self.label,
            _FIREWALL_LABEL,
            "must be 3-32 letters, digits, -, _ and .",
        )
        if self.ports is not None:
            if self.protocol in ("ICMP", "IPENCAP"):
                problems.append(("ports", f"{self.protocol} rules cannot have ports"))
            else:
                self._check_ports(problems, self.ports)
        if len(self.description) > 100:
            problems.append(("description", "is at most 100 characters"))
        _raise_if(problems)

    @staticmethod
    def _check_ports(problems: Problems, ports: str) -> None:
        pieces = [p.strip() for p in ports.split(",")]
        if len(pieces) > MAX_FIREWALL_PORT_PIECES:
            problems.append(
                ("ports", f"at most {MAX_FIREWALL_PORT_PIECES} ports or ranges per rule")
            )
        for piece in pieces:
            m = _PORTS_PIECE.fullmatch(piece)
            low, high = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
            if m is None or not 1 <= low <= high <= 65535:
                problems.append(
                    ("ports", f"{piece!r} is not a port (1-65535) or an ascending range")
                )


@attrs.frozen
class Firewall:
    """The Cloud Firewall attached to every node pool of the cluster."""

    label: str
    inbound_policy: Action = "DROP"
    outbound_policy: Action = "ACCEPT"
    inbound: tuple[FirewallRule, ...] = ()
    outbound: tuple[FirewallRule, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems,
            "label",
            self.label,
            _FIREWALL_LABEL,
            "must be 3-32 letters, digits, -, _ and .",
        )
        total = len(self.inbound) + len(self.outbound)
        if total > MAX_FIREWALL_RULES:
            problems.append(
                (
                    "",
                    f"a firewall holds at most {MAX_FIREWALL_RULES} rules, got {total} "
                    "(inbound + outbound)",
                )
            )
        for direction, rules in (("inbound", self.inbound), ("outbound", self.outbound)):
            seen: set[str] = set()
            for i, rule in enumerate(rules):
                if rule.label in seen:
                    problems.append(
                        (f"{direction}[{i}].label", f"duplicate rule label {rule.label!r}")
                    )
                seen.add(rule.label)
        _raise_if(problems)


@attrs.frozen
class Subnet:
    label: str
    ipv4: str

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "label", self.label, _VPC_LABEL, "must be 1-64 letters, digits and -")
        if "--" in self.label:
            problems.append(("label", "cannot contain two consecutive hyphens"))
        net = _cidr(self.ipv4)
        if not isinstance(net, ipaddress.IPv4Network) or "/" not in self.ipv4:
            problems.append(("ipv4", f"must be an IPv4 CIDR like 10.0.0.0/24, got {self.ipv4!r}"))
        else:
            if not any(net.subnet_of(r) for r in _RFC1918):
                problems.append(
                    (
                        "ipv4",
                        "must lie in an RFC 1918 range (10/8, 172.16/12, 192.168/16), "
                        f"got {self.ipv4}",
                    )
                )
            if not SUBNET_PREFIX_MIN <= net.prefixlen <= SUBNET_PREFIX_MAX:
                problems.append(("ipv4", f"prefix must be /1 to /29, got /{net.prefixlen}"))
        _raise_if(problems)


@attrs.frozen
class Vpc:
    label: str
    subnets: tuple[Subnet, ...] = ()
    description: str = ""

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "label", self.label, _VPC_LABEL, "must be 1-64 letters, digits and -")
        if "--" in self.label:
            problems.append(("label", "cannot contain two consecutive hyphens"))
        if len(self.description) > 255:
            problems.append(("description", "is at most 255 characters"))
        seen: set[str] = set()
        nets: list[tuple[int, ipaddress.IPv4Network]] = []
        for i, subnet in enumerate(self.subnets):
            if subnet.label in seen:
                problems.append((f"subnets[{i}].label", f"duplicate subnet label {subnet.label!r}"))
            seen.add(subnet.label)
            net = ipaddress.IPv4Network(subnet.ipv4, strict=False)
            problems.extend(
                (f"subnets[{i}].ipv4", f"overlaps subnets[{j}] ({other})")
                for j, other in nets
                if net.overlaps(other)
            )
            nets.append((i, net))
        _raise_if(problems)

    def subnet(self, label: str) -> Subnet | None:
        return next((s for s in self.subnets if s.label == label), None)


# --------------------------------------------------------------------------------------------
# Object Storage


@attrs.frozen
class LifecycleRule:
    """An S3 lifecycle rule (applied through the S3 API: Linode's API v4 has none)."""

    id: str
    prefix: str = ""
    enabled: bool = True
    expiration_days: int | None = None
    noncurrent_expiration_days: int | None = None
    abort_incomplete_multipart_days: int | None = None

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "id", self.id, _RULE_ID, "must be 1-255 letters, digits, -, _ and .")
        actions = (
            ("expiration_days", self.expiration_days),
            ("noncurrent_expiration_days", self.noncurrent_expiration_days),
            ("abort_incomplete_multipart_days", self.abort_incomplete_multipart_days),
        )
        for name, days in actions:
            if days is not None and not 1 <= days <= 36500:
                problems.append((name, f"must be between 1 and 36500 days, got {days}"))
        if all(days is None for _, days in actions):
            problems.append(
                (
                    "",
                    "needs an action: expiration_days, noncurrent_expiration_days or "
                    "abort_incomplete_multipart_days",
                )
            )
        _raise_if(problems)


@attrs.frozen
class Bucket:
    """An Object Storage bucket; ``region`` defaults to the platform's region."""

    label: str
    region: str | None = None
    purpose: str = ""
    lifecycle: tuple[LifecycleRule, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems,
            "label",
            self.label,
            _BUCKET_LABEL,
            "must be 3-63 lowercase letters, digits, - and ., starting and ending with a "
            "letter or digit",
        )
        if ".." in self.label:
            problems.append(("label", "cannot contain two consecutive dots"))
        if self.region is not None:
            _label(
                problems, "region", self.region, _REGION, "must be a Linode region id like us-ord"
            )
        seen: set[str] = set()
        for i, rule in enumerate(self.lifecycle):
            if rule.id in seen:
                problems.append((f"lifecycle[{i}].id", f"duplicate rule id {rule.id!r}"))
            seen.add(rule.id)
        if self.purpose == "metrics":
            if not self.lifecycle:
                problems.append(("lifecycle", "a metrics bucket needs lifecycle rules"))
            for i, rule in enumerate(self.lifecycle):
                days = rule.expiration_days
                if days is not None and days < METRICS_RETENTION_MIN_DAYS:
                    problems.append(
                        (
                            f"lifecycle[{i}].expiration_days",
                            f"metrics are kept at least {METRICS_RETENTION_MIN_DAYS} days, "
                            f"got {days}",
                        )
                    )
        _raise_if(problems)


@attrs.frozen
class BucketGrant:
    bucket: str
    permissions: Permission = "read_only"


@attrs.frozen
class AccessKey:
    """An Object Storage access key limited to the listed buckets.

    Its secret is returned by Linode once, at creation: apply hands it to the caller
    (``ApplyResult.secrets``) and state keeps only a fingerprint.
    """

    label: str
    buckets: tuple[BucketGrant, ...]

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems, "label", self.label, _KEY_LABEL, "must be 1-50 letters, digits, -, _ and ."
        )
        if not self.buckets:
            problems.append(("buckets", "grant at least one bucket (keys are always limited)"))
        seen: set[str] = set()
        for i, grant in enumerate(self.buckets):
            if grant.bucket in seen:
                problems.append((f"buckets[{i}].bucket", f"duplicate grant for {grant.bucket!r}"))
            seen.add(grant.bucket)
        _raise_if(problems)


@attrs.frozen
class ObjectStorage:
    buckets: tuple[Bucket, ...] = ()
    keys: tuple[AccessKey, ...] = ()
