"""The platform spec (``platform.yaml``): value objects, loading and validation.

One file declares a platform: the region, one LKE cluster and its node pools, a Cloud Firewall
for the nodes, a VPC with subnets, Object Storage buckets and keys, and the environments
(``development``, ``staging``, ``production``, ``system``, or any other names) that share the
cluster. Each environment names its Kubernetes namespace, quota, the pools its workloads may run
on, and optionally a Managed PostgreSQL database (the data store handed to its services).

Loading is strict: unknown keys, wrong types (``count: "3"``, an unquoted ``1.30`` version that
YAML reads as the float ``1.3``), duplicate YAML keys and values outside Linode's documented
limits are all problems, reported with the exact path, e.g.
``cluster.pools[1].autoscaler.max: must be between 1 and 100, got 250``. Every problem of the
tree is reported at once; an object's own cross-field checks (such as "at least one pool keeps
3 nodes") run once its children are valid.

The full schema is documented field by field on the classes below and in the package README;
``examples/platform.yaml`` (package data, see :func:`example_spec_path`) is a complete example.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

import attrs

from aiaas_infra._errors import SpecError, SpecProblem

__all__ = [
    "SPEC_VERSION",
    "Access",
    "AccessKey",
    "Addresses",
    "AlertRoute",
    "Autoscaler",
    "Bucket",
    "BucketGrant",
    "Cluster",
    "Database",
    "Environment",
    "Firewall",
    "FirewallRule",
    "GitOps",
    "InferenceService",
    "LifecycleRule",
    "Limits",
    "Maintenance",
    "NetworkAllow",
    "NetworkPolicySpec",
    "NodePool",
    "ObjectStorage",
    "Observability",
    "PlatformSpec",
    "PortSpec",
    "Quota",
    "Replicas",
    "SecretItem",
    "Subnet",
    "Taint",
    "Vpc",
    "example_spec_path",
    "is_gpu_type",
    "load_spec",
    "spec_fingerprint",
    "spec_from_dict",
    "spec_to_dict",
]

SPEC_VERSION: Final = 1

# Documented Linode limits (API v4 reference) the spec enforces before anything is sent.
POOL_NODES_MIN: Final = 1
POOL_NODES_MAX: Final = 100
MAX_FIREWALL_RULES: Final = 25
MAX_FIREWALL_PORT_PIECES: Final = 15
SUBNET_PREFIX_MIN: Final = 1
SUBNET_PREFIX_MAX: Final = 29
METRICS_RETENTION_MIN_DAYS: Final = 30
SECRET_ROTATION_MAX_DAYS: Final = 365
#: The secrets every environment's bundle must hold (the default bundle is exactly these).
REQUIRED_SECRETS: Final = ("api-token", "metrics-credentials")

_CLUSTER_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,30}[A-Za-z0-9])?")
_POOL_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_FIREWALL_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,30}[A-Za-z0-9]")
_VPC_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")
_BUCKET_LABEL = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,49}")
_DB_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{1,30}[A-Za-z0-9]")
_PLATFORM_NAME = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_ENV_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REGION = re.compile(r"[a-z]{2}-[a-z]+(?:-\d+)?")
_K8S_VERSION = re.compile(r"\d+\.\d+")
_TYPE_ID = re.compile(r"[a-z0-9][a-z0-9-]*(?:\.\d+)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_CPU = re.compile(r"\d+(?:\.\d+)?m?")
_MEMORY = re.compile(r"\d+(?:Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?")
_PORTS_PIECE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ENGINE = re.compile(r"postgresql/\d+(?:\.\d+)?")
_OBJECT_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_IMAGE_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[^\s]*)?")
_GIT_URL = re.compile(r"(?:https://[^\s]+|ssh://[^\s]+|git@[A-Za-z0-9.-]+:[^\s]+)")
_GIT_PATH = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_REVISION = re.compile(r"[A-Za-z0-9_./-]{1,128}")
_RECEIVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)

Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
Action = Literal["ACCEPT", "DROP"]
Protocol = Literal["TCP", "UDP", "ICMP", "IPENCAP"]
Permission = Literal["read_only", "read_write"]
Direction = Literal["ingress", "egress"]
PortProtocol = Literal["TCP", "UDP", "SCTP"]
SyncMode = Literal["auto", "manual"]
Severity = Literal["critical", "warning", "info"]

# --------------------------------------------------------------------------------------------
# Problems collected by each class's checks: (relative path, message)

Problems = list[tuple[str, str]]


class _InvalidError(ValueError):
    """Raised by a value object's ``__attrs_post_init__`` with every problem it found."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


def _raise_if(problems: Problems) -> None:
    if problems:
        raise _InvalidError(problems)


def _label(problems: Problems, field: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(value):
        problems.append((field, f"{rule}, got {value!r}"))


def _count(problems: Problems, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        problems.append((field, f"must be between {low} and {high}, got {value}"))


def _cidr(value: str, *, v6: bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    if (net.version == 6) != v6:
        return None
    return net


def _check_k8s_labels(problems: Problems, field: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        bad_prefix = bool(prefix) and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
        if bad_prefix or not _LABEL_NAME.fullmatch(name):
            problems.append((f"{field}.{key}", "is not a valid Kubernetes label key"))
        if not _LABEL_VALUE.fullmatch(value):
            problems.append(
                (f"{field}.{key}", f"is not a valid Kubernetes label value, got {value!r}")
            )


def is_gpu_type(type_id: str) -> bool:
    """Whether a Linode plan id is a GPU plan (every Linode GPU plan id contains ``gpu``)."""
    return "gpu" in type_id


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


# --------------------------------------------------------------------------------------------
# Environments


@attrs.frozen
class Quota:
    """The namespace's ResourceQuota (rendered by cluster bootstrap)."""

    cpu: str | None = None
    memory: str | None = None
    pods: int | None = None
    gpus: int | None = None

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        if self.cpu is not None and not _CPU.fullmatch(self.cpu):
            problems.append(("cpu", f'must be a CPU quantity like "8" or "500m", got {self.cpu!r}'))
        if self.memory is not None and not _MEMORY.fullmatch(self.memory):
            problems.append(
                ("memory", f'must be a memory quantity like "16Gi", got {self.memory!r}')
            )
        if self.pods is not None and self.pods < 1:
            problems.append(("pods", f"must be >= 1, got {self.pods}"))
        if self.gpus is not None and self.gpus < 0:
            problems.append(("gpus", f"must be >= 0, got {self.gpus}"))
        _raise_if(problems)


@attrs.frozen
class Database:
    """An environment's Managed PostgreSQL database."""

    type: str
    label: str | None = None
    engine: str = "postgresql/16"
    cluster_size: int = 1
    allow_list: tuple[str, ...] = ()
    subnet: str | None = None
    public_access: bool = False

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "type", self.type, _TYPE_ID, "must be a Linode plan id like g6-nanode-1")
        if self.label is not None:
            _label(
                problems,
                "label",
                self.label,
                _DB_LABEL,
                "must be 3-32 letters, digits, - and _, starting with a letter",
            )
        _label(problems, "engine", self.engine, _ENGINE, 'must be "postgresql/<version>"')
        if self.cluster_size not in (1, 2, 3):
            problems.append(("cluster_size", f"must be 1, 2 or 3, got {self.cluster_size}"))
        for i, cidr in enumerate(self.allow_list):
            if _cidr(cidr) is None and _cidr(cidr, v6=True) is None:
                problems.append((f"allow_list[{i}]", f"is not an address or CIDR, got {cidr!r}"))
        _raise_if(problems)


def _https_url(problems: Problems, field: str, value: str) -> None:
    if not _HTTPS_URL.fullmatch(value):
        problems.append((field, f"must be an https:// URL, got {value!r}"))


@attrs.frozen
class Limits:
    """The namespace's LimitRange: per-container defaults (requests = limits) and maxima."""

    default_cpu: str = "250m"
    default_memory: str = "256Mi"
    max_cpu: str | None = None
    max_memory: str | None = None

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        for name in ("default_cpu", "max_cpu"):
            value = getattr(self, name)
            if value is not None and not _CPU.fullmatch(value):
                problems.append((name, f'must be a CPU quantity like "2" or "500m", got {value!r}'))
        for name in ("default_memory", "max_memory"):
            value = getattr(self, name)
            if value is not None and not _MEMORY.fullmatch(value):
                problems.append((name, f'must be a memory quantity like "8Gi", got {value!r}'))
        _raise_if(problems)


@attrs.frozen
class PortSpec:
    """A port of a reviewed network allow."""

    port: int
    protocol: PortProtocol = "TCP"

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _count(problems, "port", self.port, 1, 65535)
        _raise_if(problems)


@attrs.frozen
class NetworkAllow:
    """A reviewed extra allow on top of the default-deny NetworkPolicies.

    ``direction: ingress`` admits traffic from ``namespace`` (optionally only its pods matching
    ``pod_labels``) or from ``cidr``; ``egress`` lets the environment's pods reach them. Each allow
    must say who reviewed it and why (``reviewed_by``, ``reason``); both become annotations.
    """

    name: str
    direction: Direction
    reviewed_by: str
    reason: str
    namespace: str | None = None
    cidr: str | None = None
    pod_labels: dict[str, str] = attrs.field(factory=dict)
    ports: tuple[PortSpec, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "name", self.name, _OBJECT_NAME, "must be 1-40 of a-z, 0-9 and -")
        if not self.reviewed_by.strip():
            problems.append(("reviewed_by", "every extra allow needs a reviewer"))
        if not self.reason.strip():
            problems.append(("reason", "every extra allow needs a reason"))
        if (self.namespace is None) == (self.cidr is None):
            problems.append(("", "set exactly one of namespace or cidr"))
        if self.namespace is not None:
            _label(
                problems,
                "namespace",
                self.namespace,
                _NAMESPACE,
                "must be a DNS label (1-63 of a-z, 0-9 and -)",
            )
        if self.cidr is not None:
            if _cidr(self.cidr) is None and _cidr(self.cidr, v6=True) is None:
                problems.append(("cidr", f"is not an address or CIDR, got {self.cidr!r}"))
            if self.pod_labels:
                problems.append(("pod_labels", "only applies with namespace, not with cidr"))
        _check_k8s_labels(problems, "pod_labels", self.pod_labels)
        seen: set[tuple[int, str]] = set()
        for i, port in enumerate(self.ports):
            if (port.port, port.protocol) in seen:
                problems.append((f"ports[{i}]", f"duplicate port {port.port}/{port.protocol}"))
            seen.add((port.port, port.protocol))
        _raise_if(problems)


@attrs.frozen
class NetworkPolicySpec:
    """An environment's network: default deny, plus the reviewed ``allow`` list."""

    allow: tuple[NetworkAllow, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        seen: set[str] = set()
        for i, rule in enumerate(self.allow):
            if rule.name in seen:
                problems.append((f"allow[{i}].name", f"duplicate allow {rule.name!r}"))
            seen.add(rule.name)
        _raise_if(problems)


@attrs.frozen
class SecretItem:
    """One item of an environment's secrets bundle. Values never live in the spec."""

    name: str
    purpose: str
    owner: str
    rotation_days: int

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "name", self.name, _OBJECT_NAME, "must be 1-40 of a-z, 0-9 and -")
        if not self.purpose.strip():
            problems.append(("purpose", "say what the secret is for"))
        if not _LABEL_VALUE.fullmatch(self.owner) or not self.owner:
            problems.append(
                ("owner", f"must be a team name (letters, digits, -, _ and .), got {self.owner!r}")
            )
        _count(problems, "rotation_days", self.rotation_days, 1, SECRET_ROTATION_MAX_DAYS)
        _raise_if(problems)


#: The bundle an environment gets when its spec has no ``secrets``.
DEFAULT_SECRETS: Final = (
    SecretItem("api-token", "service API token", "platform-team", 30),
    SecretItem("metrics-credentials", "metrics remote-write credentials", "observability", 90),
)


@attrs.frozen
class Replicas:
    """Replica bounds of an inference service (the HorizontalPodAutoscaler's min and max)."""

    min: int = 1
    max: int = 1

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _count(problems, "min", self.min, 1, 1000)
        _count(problems, "max", self.max, 1, 1000)
        if self.min > self.max:
            problems.append(("max", f"must be >= min ({self.min}), got {self.max}"))
        _raise_if(problems)


@attrs.frozen
class InferenceService:
    """An inference service: rendered as Deployment, Service, HPA and PodDisruptionBudget.

    ``pool`` is one of the environment's pools; ``gpus`` > 0 requires a GPU pool (its taints
    become tolerations, its labels the node selector). The image must be pinned (tag or digest,
    never ``latest``).
    """

    name: str
    image: str
    pool: str
    port: int = 8080
    gpus: int = 0
    cpu: str = "1"
    memory: str = "2Gi"
    replicas: Replicas = attrs.field(factory=Replicas)
    target_cpu_utilization: int = 70

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(problems, "name", self.name, _OBJECT_NAME, "must be 1-40 of a-z, 0-9 and -")
        self._check_image(problems)
        _count(problems, "port", self.port, 1, 65535)
        if self.gpus < 0:
            problems.append(("gpus", f"must be >= 0, got {self.gpus}"))
        if not _CPU.fullmatch(self.cpu):
            problems.append(("cpu", f'must be a CPU quantity like "2" or "500m", got {self.cpu!r}'))
        if not _MEMORY.fullmatch(self.memory):
            problems.append(
                ("memory", f'must be a memory quantity like "8Gi", got {self.memory!r}')
            )
        _count(problems, "target_cpu_utilization", self.target_cpu_utilization, 1, 100)
        _raise_if(problems)

    def _check_image(self, problems: Problems) -> None:
        name, at, digest = self.image.partition("@")
        last = name.rsplit("/", 1)[-1]
        repo, colon, tag = last.partition(":")
        bad = (
            not _IMAGE_NAME.fullmatch(name)
            or (at and not _IMAGE_DIGEST.fullmatch(digest))
            or (colon and not _IMAGE_TAG.fullmatch(tag))
            or not repo
        )
        if bad:
            problems.append(("image", f"is not an image reference, got {self.image!r}"))
        elif not at and (not tag or tag == "latest"):
            problems.append(
                ("image", f"pin the image to a tag or digest (not latest), got {self.image!r}")
            )


@attrs.frozen
class Maintenance:
    """A maintenance lock: while ``locked``, the handoff API answers 423 for the environment."""

    locked: bool = False
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if self.locked and not self.reason.strip():
            raise _InvalidError([("reason", "say why the environment is locked")])


@attrs.frozen
class GitOps:
    """The Git repository ArgoCD syncs the rendered tree from."""

    repo_url: str
    revision: str = "main"
    path: str = "environments"

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        if not _GIT_URL.fullmatch(self.repo_url):
            problems.append(
                ("repo_url", f"must be an https://, ssh:// or git@ URL, got {self.repo_url!r}")
            )
        _label(problems, "revision", self.revision, _REVISION, "must be a branch, tag or commit")
        if not _GIT_PATH.fullmatch(self.path) or ".." in self.path.split("/"):
            problems.append(
                ("path", f"must be a relative path like environments, got {self.path!r}")
            )
        _raise_if(problems)


@attrs.frozen
class AlertRoute:
    """Alertmanager: alerts of ``severity`` go to ``receiver``."""

    severity: Severity
    receiver: str

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _label(
            problems,
            "receiver",
            self.receiver,
            _RECEIVER,
            "must be 1-63 letters, digits, -, _ and .",
        )
        _raise_if(problems)


@attrs.frozen
class Observability:
    """Where metrics, dashboards and alerts live; retention of at least 30 days."""

    grafana_url: str | None = None
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    retention_days: int = METRICS_RETENTION_MIN_DAYS
    alert_routes: tuple[AlertRoute, ...] = ()

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        for name in ("grafana_url", "prometheus_url", "alertmanager_url"):
            value = getattr(self, name)
            if value is not None:
                _https_url(problems, name, value)
        if not METRICS_RETENTION_MIN_DAYS <= self.retention_days <= 3650:
            problems.append(
                (
                    "retention_days",
                    f"metrics are kept {METRICS_RETENTION_MIN_DAYS} to 3650 days, "
                    f"got {self.retention_days}",
                )
            )
        seen: set[str] = set()
        for i, route in enumerate(self.alert_routes):
            if route.severity in seen:
                problems.append(
                    (f"alert_routes[{i}].severity", f"{route.severity} is routed twice")
                )
            seen.add(route.severity)
        _raise_if(problems)


@attrs.frozen
class Access:
    """Access packages: the API server address their kubeconfigs point at."""

    api_server: str

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        _https_url(problems, "api_server", self.api_server)
        _raise_if(problems)


@attrs.frozen
class Environment:
    """One environment: a namespace on the shared cluster, with its quota and pools."""

    pools: tuple[str, ...]
    namespace: str | None = None
    labels: dict[str, str] = attrs.field(factory=dict)
    quota: Quota = attrs.field(factory=Quota)
    database: Database | None = None
    limits: Limits = attrs.field(factory=Limits)
    network: NetworkPolicySpec = attrs.field(factory=NetworkPolicySpec)
    secrets: tuple[SecretItem, ...] | None = None
    services: tuple[InferenceService, ...] = ()
    sync: SyncMode | None = None
    maintenance: Maintenance = attrs.field(factory=Maintenance)

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        self._check_secrets(problems)
        seen: set[str] = set()
        for i, service in enumerate(self.services):
            if service.name in seen:
                problems.append((f"services[{i}].name", f"duplicate service {service.name!r}"))
            seen.add(service.name)
        if self.namespace is not None:
            _label(
                problems,
                "namespace",
                self.namespace,
                _NAMESPACE,
                "must be a DNS label (1-63 of a-z, 0-9 and -)",
            )
        if not self.pools:
            problems.append(("pools", "name at least one cluster pool"))
        if len(set(self.pools)) != len(self.pools):
            problems.append(("pools", "lists a pool twice"))
        _check_k8s_labels(problems, "labels", self.labels)
        _raise_if(problems)

    def _check_secrets(self, problems: Problems) -> None:
        if self.secrets is None:
            return
        seen: set[str] = set()
        for i, item in enumerate(self.secrets):
            if item.name in seen:
                problems.append((f"secrets[{i}].name", f"duplicate secret {item.name!r}"))
            seen.add(item.name)
        missing = [name for name in REQUIRED_SECRETS if name not in seen]
        if missing:
            problems.append(
                ("secrets", f"the bundle must include {', '.join(missing)} (or omit secrets)")
            )

    @property
    def secret_items(self) -> tuple[SecretItem, ...]:
        """The secrets bundle: ``secrets``, or :data:`DEFAULT_SECRETS` when it is absent."""
        return self.secrets if self.secrets is not None else DEFAULT_SECRETS


# --------------------------------------------------------------------------------------------
# The platform


@attrs.frozen
class PlatformSpec:
    """A whole platform: what ``plan`` compares with Linode and ``apply`` converges to."""

    name: str
    region: str
    cluster: Cluster
    environments: dict[str, Environment]
    version: int = SPEC_VERSION
    firewall: Firewall | None = None
    vpc: Vpc | None = None
    object_storage: ObjectStorage = attrs.field(factory=ObjectStorage)
    gitops: GitOps | None = None
    observability: Observability = attrs.field(factory=Observability)
    access: Access | None = None

    def __attrs_post_init__(self) -> None:
        problems: Problems = []
        if self.version != SPEC_VERSION:
            problems.append(
                (
                    "version",
                    f"this aiaas-infra reads spec version {SPEC_VERSION}, got {self.version}",
                )
            )
        _label(
            problems,
            "name",
            self.name,
            _PLATFORM_NAME,
            "must be 3-24 of a-z, 0-9 and -, starting with a letter",
        )
        _label(problems, "region", self.region, _REGION, "must be a Linode region id like us-ord")
        if not self.environments:
            problems.append(("environments", "declare at least one environment"))
        self._check_environments(problems)
        self._check_object_storage(problems)
        _raise_if(problems)

    def _check_environments(self, problems: Problems) -> None:
        namespaces: dict[str, str] = {}
        db_labels: dict[str, str] = {}
        for env_name, env in self.environments.items():
            where = f"environments.{env_name}"
            if not _ENV_NAME.fullmatch(env_name):
                problems.append(
                    (where, "environment names are 1-20 of a-z, 0-9 and -, starting with a letter")
                )
            ns = self.namespace(env_name)
            if ns in namespaces:
                problems.append(
                    (f"{where}.namespace", f"namespace {ns!r} is also used by {namespaces[ns]}")
                )
            namespaces.setdefault(ns, env_name)
            for i, pool_label in enumerate(env.pools):
                pool = self.cluster.pool(pool_label)
                if pool is None:
                    problems.append(
                        (f"{where}.pools[{i}]", f"no cluster pool is labelled {pool_label!r}")
                    )
                elif pool.gpu and env_name != "system":
                    problems.append(
                        (
                            f"{where}.pools[{i}]",
                            f"GPU pool {pool_label!r} ({pool.type}) may only be used by the "
                            "system environment",
                        )
                    )
            if env.quota.gpus and env_name != "system":
                problems.append(
                    (f"{where}.quota.gpus", "only the system environment may request GPUs")
                )
            if env.database is not None:
                self._check_database(problems, env_name, env.database, db_labels)
            self._check_services(problems, env_name, env)
        for i, pool in enumerate(self.cluster.pools):
            if pool.gpu and not pool.taints:
                problems.append(
                    (
                        f"cluster.pools[{i}].taints",
                        "a GPU pool needs a NoSchedule taint so only GPU workloads land there",
                    )
                )

    def _check_services(self, problems: Problems, env_name: str, env: Environment) -> None:
        gpus_needed = 0
        for i, service in enumerate(env.services):
            where = f"environments.{env_name}.services[{i}]"
            pool = self.cluster.pool(service.pool)
            if service.pool not in env.pools or pool is None:
                problems.append(
                    (
                        f"{where}.pool",
                        f"must be one of the environment's pools ({', '.join(env.pools)}), "
                        f"got {service.pool!r}",
                    )
                )
            elif service.gpus and not pool.gpu:
                problems.append(
                    (f"{where}.gpus", f"pool {service.pool!r} ({pool.type}) has no GPUs")
                )
            gpus_needed += service.gpus * service.replicas.max
        quota = env.quota.gpus or 0
        if gpus_needed > quota:
            problems.append(
                (
                    f"environments.{env_name}.quota.gpus",
                    f"the services need up to {gpus_needed} GPUs at max replicas, "
                    f"the quota allows {quota}",
                )
            )

    def _check_database(
        self, problems: Problems, env_name: str, db: Database, db_labels: dict[str, str]
    ) -> None:
        where = f"environments.{env_name}.database"
        label = self.database_label(env_name)
        if label is None or not _DB_LABEL.fullmatch(label):
            problems.append(
                (
                    f"{where}.label",
                    f"the default label {self.name}-{env_name} is not a valid database "
                    "label (3-32 characters): set one",
                )
            )
        elif label in db_labels:
            problems.append(
                (f"{where}.label", f"database label {label!r} is also used by {db_labels[label]}")
            )
        else:
            db_labels[label] = env_name
        if db.subnet is not None:
            if self.vpc is None:
                problems.append((f"{where}.subnet", "names a subnet but no vpc is declared"))
            elif self.vpc.subnet(db.subnet) is None:
                problems.append((f"{where}.subnet", f"the vpc has no subnet {db.subnet!r}"))

    def _check_object_storage(self, problems: Problems) -> None:
        bucket_labels: set[str] = set()
        for i, bucket in enumerate(self.object_storage.buckets):
            if bucket.label in bucket_labels:
                problems.append(
                    (f"object_storage.buckets[{i}].label", f"duplicate bucket {bucket.label!r}")
                )
            bucket_labels.add(bucket.label)
        key_labels: set[str] = set()
        for i, key in enumerate(self.object_storage.keys):
            if key.label in key_labels:
                problems.append((f"object_storage.keys[{i}].label", f"duplicate key {key.label!r}"))
            key_labels.add(key.label)
            problems.extend(
                (
                    f"object_storage.keys[{i}].buckets[{j}].bucket",
                    f"no bucket {grant.bucket!r} is declared",
                )
                for j, grant in enumerate(key.buckets)
                if grant.bucket not in bucket_labels
            )

    # -- derived names ------------------------------------------------------------------------

    def namespace(self, env_name: str) -> str:
        env = self.environments[env_name]
        return env.namespace if env.namespace is not None else f"env-{env_name}"

    def database_label(self, env_name: str) -> str | None:
        env = self.environments[env_name]
        if env.database is None:
            return None
        return env.database.label if env.database.label is not None else f"{self.name}-{env_name}"

    def sync_mode(self, env_name: str) -> SyncMode:
        """ArgoCD sync for an environment: its ``sync``, else manual for production, else auto."""
        env = self.environments[env_name]
        if env.sync is not None:
            return env.sync
        return "manual" if env_name == "production" else "auto"

    def bucket_region(self, bucket: Bucket) -> str:
        return bucket.region if bucket.region is not None else self.region

    @property
    def owner_tag(self) -> str:
        """The tag every taggable resource of this platform carries."""
        return f"aiaas-owner:{self.name}"


# --------------------------------------------------------------------------------------------
# Loading


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(value), f"a {type(value).__name__}")


class _MismatchError(TypeError):
    """A value of the wrong JSON type."""


def _strict_str(value: object, _tp: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        raise _MismatchError(
            f"expected a string, got the number {value!r}: quote it in YAML (an unquoted "
            "1.30 is read as the number 1.3)"
        )
    raise _MismatchError(f"expected a string, got {_kind(value)}")


def _strict_int(value: object, _tp: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _MismatchError(f"expected an integer, got {_kind(value)} {value!r}")


def _strict_bool(value: object, _tp: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _MismatchError(f"expected true or false, got {_kind(value)} {value!r}")


def _is_tuple(tp: Any) -> bool:
    return get_origin(tp) is tuple


def _is_dict(tp: Any) -> bool:
    return get_origin(tp) is dict


def _converter() -> Any:
    import cattrs  # noqa: PLC0415 -- heavy; only loading needs it
    from cattrs.errors import (  # noqa: PLC0415
        IterableValidationError,
        IterableValidationNote,
    )
    from cattrs.gen import make_dict_structure_fn  # noqa: PLC0415

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(bool, _strict_bool)

    def fail(errors: list[Exception], tp: Any) -> None:
        if errors:
            raise IterableValidationError(f"While structuring {tp!r}", errors, tp)

    def structure_tuple(value: object, tp: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise _MismatchError(f"expected a list, got {_kind(value)}")
        arg = get_args(tp)[0]
        items: list[Any] = []
        errors: list[Exception] = []
        for i, item in enumerate(value):
            try:
                items.append(conv.structure(item, arg))
            except Exception as exc:  # noqa: BLE001 -- collected and re-raised with its index
                exc.add_note(IterableValidationNote(f"@ index {i}", i, arg))
                errors.append(exc)
        fail(errors, tp)
        return tuple(items)

    def structure_dict(value: object, tp: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _MismatchError(f"expected a mapping, got {_kind(value)}")
        val_tp = get_args(tp)[1]
        out: dict[str, Any] = {}
        errors: list[Exception] = []
        for key, item in value.items():
            try:
                if not isinstance(key, str):
                    raise _MismatchError(f"keys must be strings, got {_kind(key)} {key!r}")
                out[key] = conv.structure(item, val_tp)
            except Exception as exc:  # noqa: BLE001 -- collected and re-raised with its key
                exc.add_note(IterableValidationNote(f"@ key {key!r}", key, val_tp))
                errors.append(exc)
        fail(errors, tp)
        return out

    conv.register_structure_hook_func(_is_tuple, structure_tuple)
    conv.register_structure_hook_func(_is_dict, structure_dict)

    def attrs_hook_factory(tp: Any) -> Callable[[object, Any], Any]:
        generated = make_dict_structure_fn(
            tp, conv, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True
        )

        def hook(value: object, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _MismatchError(f"expected a mapping, got {_kind(value)}")
            return generated(value, t)

        return hook

    conv.register_structure_hook_factory(attrs.has, attrs_hook_factory)
    return conv


def _walk_errors(exc: BaseException, path: str, out: list[SpecProblem]) -> None:
    """Flatten a cattrs error tree into problems with exact dotted paths."""
    from cattrs.errors import (  # noqa: PLC0415
        AttributeValidationNote,
        ClassValidationError,
        ForbiddenExtraKeysError,
        IterableValidationError,
        IterableValidationNote,
    )

    def child_path(child: BaseException) -> str:
        for note in getattr(child, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                return f"{path}.{note.name}" if path else note.name
            if isinstance(note, IterableValidationNote):
                if isinstance(note.index, int):
                    return f"{path}[{note.index}]"
                return f"{path}.{note.index}" if path else str(note.index)
        return path

    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for child in exc.exceptions:
            _walk_errors(child, child_path(child), out)
    elif isinstance(exc, ForbiddenExtraKeysError):
        allowed = sorted(a.name for a in attrs.fields(exc.cl)) if attrs.has(exc.cl) else []
        for key in sorted(exc.extra_fields):
            where = f"{path}.{key}" if path else key
            out.append(SpecProblem(where, f"unknown key (allowed here: {', '.join(allowed)})"))
    elif isinstance(exc, _InvalidError):
        for rel, message in exc.problems:
            if not rel:
                where = path
            elif rel.startswith("["):
                where = f"{path}{rel}"
            else:
                where = f"{path}.{rel}" if path else rel
            out.append(SpecProblem(where, message))
    elif isinstance(exc, KeyError):
        out.append(SpecProblem(path, f"required key {exc.args[0]!r} is missing"))
    elif isinstance(exc, _MismatchError):
        out.append(SpecProblem(path, str(exc)))
    else:  # a Literal choice cattrs refused
        text = str(exc) or type(exc).__name__
        choices = re.search(r"not in literal .*Literal\[(.*)\]", text)
        if choices:
            text = f"must be one of {choices.group(1)}, got {text.split(' not in literal')[0]}"
        out.append(SpecProblem(path, text))


def spec_from_dict(data: object, *, source: str | None = None) -> PlatformSpec:
    """Build a :class:`PlatformSpec` from plain data (as parsed from YAML or JSON).

    Raises :class:`~aiaas_infra.SpecError` listing every problem found.
    """
    if not isinstance(data, Mapping):
        problem = SpecProblem("", f"the spec must be a mapping, got {_kind(data)}")
        raise SpecError([problem], source=source)
    conv = _converter()
    try:
        spec: PlatformSpec = conv.structure(dict(data), PlatformSpec)
    except Exception as exc:  # noqa: BLE001 -- every structuring failure becomes a problem
        problems: list[SpecProblem] = []
        _walk_errors(exc, "", problems)
        raise SpecError(list(dict.fromkeys(problems)), source=source) from None
    return spec


def _yaml_loader() -> Any:
    import yaml  # noqa: PLC0415

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return dict(loader.construct_pairs(node, deep=deep))

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def load_spec(source: str | Path) -> PlatformSpec:
    """Load and validate a ``platform.yaml`` (a path, or YAML text when it contains a newline)."""
    import yaml  # noqa: PLC0415

    if isinstance(source, Path) or "\n" not in source:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problem = SpecProblem("", f"cannot read {path}: {exc.strerror}")
            raise SpecError([problem], source=str(path)) from None
        shown: str | None = str(path)
    else:
        text, shown = source, None
    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecProblem(where, f"not valid YAML: {reason}")], source=shown) from None
    return spec_from_dict(data, source=shown)


def spec_to_dict(spec: PlatformSpec) -> dict[str, Any]:
    """Plain data for ``spec`` (the inverse of :func:`spec_from_dict`); defaults are included."""
    out: dict[str, Any] = _converter().unstructure(spec)
    return out


def spec_fingerprint(spec: PlatformSpec) -> str:
    """A stable digest of the spec's content: equal specs, equal fingerprints."""
    canonical = json.dumps(spec_to_dict(spec), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def example_spec_path() -> Path:
    """The complete example spec shipped with the package (four environments)."""
    ref = resources.files("aiaas_infra") / "examples" / "platform.yaml"
    return Path(str(ref))
