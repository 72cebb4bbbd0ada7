"""The platform spec (``platform.yaml``): the environments and :class:`PlatformSpec`.

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

The full schema is documented field by field on the classes here and in :mod:`._linode`, and in
the package README; loading lives in :mod:`._loader`;
``examples/platform.yaml`` (package data, see :func:`example_spec_path`) is a complete example.
"""

from __future__ import annotations

from typing import Final

import attrs

from aiaas_infra.spec._linode import Bucket, Cluster, Firewall, ObjectStorage, Vpc
from aiaas_infra.spec._rules import (
    _CPU,
    _DB_LABEL,
    _ENGINE,
    _ENV_NAME,
    _GIT_PATH,
    _GIT_URL,
    _HTTPS_URL,
    _IMAGE_DIGEST,
    _IMAGE_NAME,
    _IMAGE_TAG,
    _LABEL_VALUE,
    _MEMORY,
    _NAMESPACE,
    _OBJECT_NAME,
    _PLATFORM_NAME,
    _RECEIVER,
    _REGION,
    _REVISION,
    _TYPE_ID,
    METRICS_RETENTION_MIN_DAYS,
    REQUIRED_SECRETS,
    SECRET_ROTATION_MAX_DAYS,
    SPEC_VERSION,
    Direction,
    PortProtocol,
    Problems,
    Severity,
    SyncMode,
    _check_k8s_labels,
    _cidr,
    _count,
    _InvalidError,
    _label,
    _raise_if,
)

__all__ = [
    "Access",
    "AlertRoute",
    "Database",
    "Environment",
    "GitOps",
    "InferenceService",
    "Limits",
    "Maintenance",
    "NetworkAllow",
    "NetworkPolicySpec",
    "Observability",
    "PlatformSpec",
    "PortSpec",
    "Quota",
    "Replicas",
    "SecretItem",
]

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
