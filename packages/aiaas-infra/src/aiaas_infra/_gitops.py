"""Render a platform spec into a GitOps tree: the Kubernetes objects ArgoCD syncs.

Pure and deterministic: the same spec (and sealed store) renders byte-identical files — no
timestamps, no random names, sorted keys, a fixed object order. Per environment ``<env>``
(namespace ``env-<env>`` unless the spec names one):

=============================  ===============================================================
objects                        what they do
=============================  ===============================================================
Namespace                      labels ``aiaas.dev/environment``, the spec's labels, and Pod
                               Security ``restricted`` (enforced)
ServiceAccount, Role,          one each for ``platform-engineer`` (namespace admin),
RoleBinding                    ``app-team`` (workloads; no RBAC, quotas or Secrets), ``read-only``
                               (get/list/watch; no Secrets) and ``break-glass`` (namespace admin,
                               held only during an incident: its own RoleBinding has no subjects;
                               ``issue_access(..., role="break-glass", incident=...)`` binds a
                               short-lived ServiceAccount to the Role; ArgoCD ignores the rendered
                               binding's subjects so an emergency binding is not reverted)
ResourceQuota, LimitRange      the spec's quota (GPUs default to 0) and container limits
NetworkPolicy                  default deny (ingress and egress); allow DNS to kube-system; allow
                               scraping from the ``monitoring`` namespace's Prometheus; allow
                               traffic inside the namespace; each reviewed ``network.allow``
SealedSecret                   the secrets bundle ``<env>-secrets`` (needs a sealed store)
AppProject, ApplicationSet     ArgoCD: the project may deploy only to the namespace; one
                               Application per component (baseline wave 0, observability wave 1,
                               services wave 2); baseline and observability self-heal and prune,
                               services self-heal; ``sync: manual`` (production's default) turns
                               automated sync off
Deployment, Service, HPA, PDB  per inference service; GPU services request ``nvidia.com/gpu``,
                               tolerate their pool's taints, select its nodes and spread over
                               hosts, so the HPA scales replicas out across machines
PrometheusRule                 the environment's alerts (restarts, quota, HPA at max, secrets)
=============================  ===============================================================

Platform-wide (label ``aiaas.dev/scope: platform``): the kube-prometheus-stack values overlay
(environment labels, retention, alert routes) and its ArgoCD Application and AppProject, the
Grafana dashboards (ConfigMaps for the Grafana sidecar: the platform dashboard — CPU, memory,
pod restarts, ingress latency, secret freshness — and aiaas-telemetry's service dashboard) and a
PrometheusRule with aiaas-telemetry's service alerts.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_infra._errors import SpecError, SpecProblem

if TYPE_CHECKING:
    from aiaas_infra._secrets import SealedStore
    from aiaas_infra._spec import Environment, InferenceService, NetworkAllow, PlatformSpec

__all__ = [
    "ROLE_NAMES",
    "RenderedSet",
    "render_environment",
    "render_platform",
]

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "aiaas"}
ENV_LABEL: Final = "aiaas.dev/environment"
SCOPE_LABEL: Final = "aiaas.dev/scope"
ARGOCD_NAMESPACE: Final = "argocd"
MONITORING_NAMESPACE: Final = "monitoring"
IN_CLUSTER: Final = "https://kubernetes.default.svc"
#: The kube-prometheus-stack chart the platform's monitoring Application installs.
KUBE_PROMETHEUS_STACK: Final = ("https://prometheus-community.github.io/helm-charts", "65.1.1")
#: Roles rendered in every environment (ServiceAccount, Role and RoleBinding share the name).
ROLE_NAMES: Final = ("platform-engineer", "app-team", "read-only", "break-glass")
SYNC_WAVE: Final = "argocd.argoproj.io/sync-wave"

# Apply order: stage of each kind (namespaces → RBAC → policies → secrets → apps).
_STAGES: Final = {
    "Namespace": 0,
    "ServiceAccount": 1,
    "Role": 1,
    "RoleBinding": 1,
    "ResourceQuota": 2,
    "LimitRange": 2,
    "NetworkPolicy": 2,
    "SealedSecret": 3,
}
_APP_STAGE: Final = 4

# -- RBAC ---------------------------------------------------------------------------------------

_READ: Final = ["get", "list", "watch"]
_WRITE: Final = ["create", "update", "patch", "delete", "deletecollection"]
_READABLE: Final = (
    (
        "",
        [
            "configmaps",
            "endpoints",
            "events",
            "limitranges",
            "persistentvolumeclaims",
            "pods",
            "pods/log",
            "resourcequotas",
            "serviceaccounts",
            "services",
        ],
    ),
    ("apps", ["daemonsets", "deployments", "replicasets", "statefulsets"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("batch", ["cronjobs", "jobs"]),
    ("bitnami.com", ["sealedsecrets"]),
    ("discovery.k8s.io", ["endpointslices"]),
    ("events.k8s.io", ["events"]),
    ("monitoring.coreos.com", ["podmonitors", "prometheusrules", "servicemonitors"]),
    ("networking.k8s.io", ["ingresses", "networkpolicies"]),
    ("policy", ["poddisruptionbudgets"]),
)
_APP_MANAGED: Final = (
    ("", ["configmaps", "persistentvolumeclaims", "pods", "services"]),
    ("apps", ["deployments", "statefulsets"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("batch", ["cronjobs", "jobs"]),
    ("monitoring.coreos.com", ["podmonitors", "prometheusrules", "servicemonitors"]),
    ("networking.k8s.io", ["ingresses"]),
    ("policy", ["poddisruptionbudgets"]),
)
_ADMIN: Final = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]


def _rules(groups: Iterable[tuple[str, list[str]]], verbs: list[str]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}
        for group, resources in groups
    ]


def _role_rules(role: str) -> list[dict[str, Any]]:
    if role in ("platform-engineer", "break-glass"):
        return copy.deepcopy(_ADMIN)
    rules = _rules(_READABLE, _READ)
    if role == "app-team":
        rules += _rules(_APP_MANAGED, _WRITE)
        rules.append({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]})
    return rules


_ROLE_DESCRIPTIONS: Final = {
    "platform-engineer": "administers the namespace",
    "app-team": "deploys and operates workloads; cannot change RBAC, quotas or read Secrets",
    "read-only": "reads workloads and their status; cannot read Secrets",
    "break-glass": "namespace admin during an open incident only (the binding has no subjects "
    "otherwise)",
}

# -- helpers ------------------------------------------------------------------------------------


def _meta(
    name: str,
    *,
    env: str | None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    wave: int | None = None,
) -> dict[str, Any]:
    all_labels = dict(MANAGED_BY)
    if env is None:
        all_labels[SCOPE_LABEL] = "platform"
    else:
        all_labels[ENV_LABEL] = env
    all_labels.update(labels or {})
    meta: dict[str, Any] = {"name": name, "labels": all_labels}
    if namespace is not None:
        meta["namespace"] = namespace
    notes = dict(annotations or {})
    if wave is not None:
        notes[SYNC_WAVE] = str(wave)
    if notes:
        meta["annotations"] = notes
    return meta


def _obj(api_version: str, kind: str, metadata: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def _sorted(value: Any) -> Any:
    """``value`` with every mapping's keys sorted (for byte-stable JSON inside ConfigMaps)."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


# A small, deterministic YAML emitter for JSON-like data (dicts with string keys, lists,
# strings, ints, floats, bools, None). Its output does not depend on whether PyYAML has libyaml,
# and it is several times faster than PyYAML's pure-Python emitter. Strings are written plain
# only when no YAML 1.1 or 1.2 parser (PyYAML, Go's yaml.v2 behind kubectl and ArgoCD) can read
# them as anything else; multi-line strings as literal blocks; everything else double-quoted
# (JSON escapes are valid YAML escapes).
_PLAIN = re.compile(r"[A-Za-z_/](?:[A-Za-z0-9_./ -]*[A-Za-z0-9_./-])?")
_RESERVED = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"})
_MAX_KEY = 1000  # YAML implicit keys are limited to 1024 characters


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return _quote(value)
    raise TypeError(f"cannot write a {type(value).__name__} as YAML")


_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def _quote(value: str) -> str:
    """A double-quoted YAML scalar: ASCII only, non-ASCII as ``\\u``/``\\U`` escapes."""
    parts = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _ESCAPES:
            parts.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            parts.append(ch)
        elif code <= 0xFFFF:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


def _block(value: str) -> str | None:
    """The literal block header for a multi-line string, or None when it must be quoted."""
    if "\n" not in value.rstrip("\n") or value.startswith((" ", "\n")) or "\r" in value:
        return None
    if not all(ch.isprintable() or ch in "\t\n" for ch in value):
        return None
    if not value.endswith("\n"):
        return "|-"
    return "|" if not value.endswith("\n\n") else "|+"


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {type(key).__name__}")
    text = _scalar(key)
    if len(text) > _MAX_KEY:
        raise ValueError(f"a mapping key is longer than {_MAX_KEY} characters")
    return text


def _emit(value: Any, indent: int, out: list[str], prefix: str) -> None:
    """Append ``value`` to ``out``; ``prefix`` is what precedes it on its first line."""
    pad = " " * indent
    if isinstance(value, Mapping) and value:
        first = True
        for key in sorted(value):
            head = (prefix if first else pad) + _key(key) + ":"
            first = False
            _emit_child(value[key], indent, out, head)
    elif isinstance(value, list) and value:
        first = True
        for item in value:
            head = (prefix if first else pad) + "-"
            first = False
            if isinstance(item, Mapping) and item:
                _emit(item, indent + 2, out, head + " ")
            elif isinstance(item, list) and item:
                out.append(head)
                _emit(item, indent + 2, out, " " * (indent + 2))
            else:
                _emit_child(item, indent, out, head)
    else:
        out.append(prefix + _inline(value))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def _emit_child(value: Any, indent: int, out: list[str], head: str) -> None:
    """``head`` (``key:`` or ``-``) followed by ``value`` at ``indent``."""
    if isinstance(value, Mapping) and value:
        out.append(head)
        _emit(value, indent + 2, out, " " * (indent + 2))
    elif isinstance(value, list) and value:
        out.append(head)
        _emit(value, indent, out, " " * indent)
    elif isinstance(value, str) and (header := _block(value)) is not None:
        out.append(f"{head} {header}")
        body = value[:-1] if value.endswith("\n") else value
        content = " " * (indent + 2)
        out.extend(content + line if line else "" for line in body.split("\n"))
    else:
        out.append(f"{head} {_inline(value)}")


def dump_yaml(value: Any) -> str:
    """``value`` (JSON-like data) as one YAML document; keys sorted, output deterministic."""
    out: list[str] = []
    _emit(value, 0, out, "")
    return "\n".join(out) + "\n"


def _dump_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    return "---\n" + "---\n".join(dump_yaml(dict(o)) for o in objects)


# -- per environment ----------------------------------------------------------------------------


def _namespace(spec: PlatformSpec, env_name: str, env: Environment) -> dict[str, Any]:
    ns = spec.namespace(env_name)
    labels = {
        **env.labels,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    meta = _meta(ns, env=env_name, labels=labels, wave=-3)
    meta["labels"]["kubernetes.io/metadata.name"] = ns
    return _obj("v1", "Namespace", meta)


def _rbac(env_name: str, ns: str) -> list[dict[str, Any]]:
    accounts, roles, bindings = [], [], []
    for role in ROLE_NAMES:
        notes = {"aiaas.dev/role": _ROLE_DESCRIPTIONS[role]}
        accounts.append(
            _obj(
                "v1",
                "ServiceAccount",
                _meta(role, env=env_name, namespace=ns, annotations=notes, wave=-2),
                automountServiceAccountToken=False,
            )
        )
        roles.append(
            _obj(
                "rbac.authorization.k8s.io/v1",
                "Role",
                _meta(role, env=env_name, namespace=ns, annotations=notes, wave=-2),
                rules=_role_rules(role),
            )
        )
        subjects: list[dict[str, str]] = [{"kind": "ServiceAccount", "name": role, "namespace": ns}]
        binding_notes = dict(notes)
        if role == "break-glass":
            subjects = []
            binding_notes["aiaas.dev/bound-when"] = "incident-open"
        bindings.append(
            _obj(
                "rbac.authorization.k8s.io/v1",
                "RoleBinding",
                _meta(role, env=env_name, namespace=ns, annotations=binding_notes, wave=-2),
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                subjects=subjects,
            )
        )
    return [*accounts, *roles, *bindings]


def _quota(env_name: str, ns: str, env: Environment) -> dict[str, Any]:
    hard: dict[str, Any] = {"requests.nvidia.com/gpu": str(env.quota.gpus or 0)}
    if env.quota.cpu is not None:
        hard["requests.cpu"] = env.quota.cpu
    if env.quota.memory is not None:
        hard["requests.memory"] = env.quota.memory
    if env.quota.pods is not None:
        hard["pods"] = str(env.quota.pods)
    return _obj(
        "v1",
        "ResourceQuota",
        _meta("environment-quota", env=env_name, namespace=ns, wave=-1),
        spec={"hard": hard},
    )


def _limit_range(env_name: str, ns: str, env: Environment) -> dict[str, Any]:
    limits = env.limits
    item: dict[str, Any] = {
        "type": "Container",
        "default": {"cpu": limits.default_cpu, "memory": limits.default_memory},
        "defaultRequest": {"cpu": limits.default_cpu, "memory": limits.default_memory},
    }
    maxima = {
        k: v for k, v in (("cpu", limits.max_cpu), ("memory", limits.max_memory)) if v is not None
    }
    if maxima:
        item["max"] = maxima
    return _obj(
        "v1",
        "LimitRange",
        _meta("container-limits", env=env_name, namespace=ns, wave=-1),
        spec={"limits": [item]},
    )


def _ns_selector(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _netpol(
    env_name: str, ns: str, name: str, spec: dict[str, Any], **notes: str
) -> dict[str, Any]:
    return _obj(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        _meta(name, env=env_name, namespace=ns, annotations=notes or None, wave=-1),
        spec=spec,
    )


def _extra_allow(env_name: str, ns: str, rule: NetworkAllow) -> dict[str, Any]:
    peer: dict[str, Any]
    if rule.namespace is not None:
        peer = {"namespaceSelector": _ns_selector(rule.namespace)}
        if rule.pod_labels:
            peer["podSelector"] = {"matchLabels": dict(rule.pod_labels)}
    else:
        peer = {"ipBlock": {"cidr": rule.cidr}}
    body: dict[str, Any] = {"from" if rule.direction == "ingress" else "to": [peer]}
    if rule.ports:
        body["ports"] = [{"port": p.port, "protocol": p.protocol} for p in rule.ports]
    direction = "Ingress" if rule.direction == "ingress" else "Egress"
    return _netpol(
        env_name,
        ns,
        f"allow-{rule.name}",
        {"podSelector": {}, "policyTypes": [direction], rule.direction: [body]},
        **{"aiaas.dev/reviewed-by": rule.reviewed_by, "aiaas.dev/reason": rule.reason},
    )


def _network_policies(env_name: str, ns: str, env: Environment) -> list[dict[str, Any]]:
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    policies = [
        _netpol(
            env_name,
            ns,
            "default-deny",
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            **{"aiaas.dev/reason": "deny all traffic not allowed by another policy"},
        ),
        _netpol(
            env_name,
            ns,
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": _ns_selector("kube-system"),
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": dns_ports,
                    }
                ],
            },
            **{"aiaas.dev/reason": "name resolution through kube-dns"},
        ),
        _netpol(
            env_name,
            ns,
            "allow-metrics-scraping",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": _ns_selector(MONITORING_NAMESPACE),
                                "podSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "prometheus"}
                                },
                            }
                        ]
                    }
                ],
            },
            **{"aiaas.dev/reason": "Prometheus in the monitoring namespace scrapes metrics"},
        ),
        _netpol(
            env_name,
            ns,
            "allow-same-namespace",
            {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
            **{"aiaas.dev/reason": "pods of the environment talk to each other"},
        ),
    ]
    policies += [_extra_allow(env_name, ns, rule) for rule in env.network.allow]
    return policies


def _sealed_secret(env_name: str, ns: str, env: Environment, sealed: SealedStore) -> dict[str, Any]:
    from aiaas_infra._secrets import sealed_secret_manifest  # noqa: PLC0415

    manifest = sealed_secret_manifest(env_name, ns, sealed, env.secret_items)
    manifest["metadata"].setdefault("annotations", {})[SYNC_WAVE] = "0"
    manifest["metadata"]["labels"][ENV_LABEL] = env_name
    return manifest


# -- services -----------------------------------------------------------------------------------


def _service_objects(
    spec: PlatformSpec, env_name: str, ns: str, service: InferenceService
) -> list[dict[str, Any]]:
    from aiaas_infra._secrets import secret_name  # noqa: PLC0415

    pool = spec.cluster.pool(service.pool)
    assert pool is not None
    selector = {"app.kubernetes.io/name": service.name, "app.kubernetes.io/instance": env_name}
    labels = {**selector, "app.kubernetes.io/component": "inference"}
    limits: dict[str, str] = {"cpu": service.cpu, "memory": service.memory}
    if service.gpus:
        limits["nvidia.com/gpu"] = str(service.gpus)
    probe = {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 10}
    container: dict[str, Any] = {
        "name": service.name,
        "image": service.image,
        "ports": [{"name": "http", "containerPort": service.port, "protocol": "TCP"}],
        "env": [
            {"name": "AIAAS_ENVIRONMENT", "value": env_name},
            {"name": "AIAAS_SECRETS_DIR", "value": "/var/run/secrets/aiaas"},
        ],
        "resources": {"requests": {"cpu": service.cpu, "memory": service.memory}, "limits": limits},
        "readinessProbe": probe,
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "startupProbe": {**probe, "failureThreshold": 60},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": [
            {"name": "secrets", "mountPath": "/var/run/secrets/aiaas", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 -- an emptyDir, not the host's
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(selector)},
            }
        ],
        "volumes": [
            {"name": "secrets", "secret": {"secretName": secret_name(env_name), "optional": True}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if pool.labels:
        pod_spec["nodeSelector"] = dict(pool.labels)
    tolerations = [
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
        if t.value
        else {"key": t.key, "operator": "Exists", "effect": t.effect}
        for t in pool.taints
    ]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    notes = {"aiaas.dev/pool": pool.label}
    deployment = _obj(
        "apps/v1",
        "Deployment",
        _meta(service.name, env=env_name, namespace=ns, labels=labels, annotations=notes, wave=2),
        spec={
            # no replicas: the HorizontalPodAutoscaler owns the count
            "selector": {"matchLabels": dict(selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": {"labels": {**labels, ENV_LABEL: env_name}}, "spec": pod_spec},
        },
    )
    svc = _obj(
        "v1",
        "Service",
        _meta(service.name, env=env_name, namespace=ns, labels=labels, wave=2),
        spec={
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "http", "port": service.port, "targetPort": "http"}],
        },
    )
    hpa = _obj(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        _meta(service.name, env=env_name, namespace=ns, labels=labels, wave=2),
        spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
            "minReplicas": service.replicas.min,
            "maxReplicas": service.replicas.max,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": service.target_cpu_utilization,
                        },
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    )
    pdb = _obj(
        "policy/v1",
        "PodDisruptionBudget",
        _meta(service.name, env=env_name, namespace=ns, labels=labels, wave=2),
        spec={
            "maxUnavailable": 1,
            "selector": {"matchLabels": dict(selector)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    )
    return [deployment, svc, hpa, pdb]


# -- ArgoCD -------------------------------------------------------------------------------------

# component, sync wave, prune when automated
_COMPONENTS: Final = (("baseline", 0, True), ("observability", 1, True), ("services", 2, False))


def _project_name(env_name: str) -> str:
    return f"aiaas-{env_name}"


def _argocd(spec: PlatformSpec, env_name: str, ns: str) -> list[dict[str, Any]]:
    assert spec.gitops is not None
    gitops = spec.gitops
    project = _obj(
        "argoproj.io/v1alpha1",
        "AppProject",
        _meta(_project_name(env_name), env=env_name, namespace=ARGOCD_NAMESPACE, wave=-1),
        spec={
            "description": f"aiaas environment {env_name}: deploys only to namespace {ns}",
            "sourceRepos": [gitops.repo_url],
            "destinations": [{"server": IN_CLUSTER, "namespace": ns}],
            "clusterResourceWhitelist": [{"group": "", "kind": "Namespace"}],
            "namespaceResourceBlacklist": [
                {"group": "", "kind": "Secret"},
                {"group": "rbac.authorization.k8s.io", "kind": "ClusterRole"},
                {"group": "rbac.authorization.k8s.io", "kind": "ClusterRoleBinding"},
            ],
            "orphanedResources": {"warn": True},
        },
    )
    mode = spec.sync_mode(env_name)
    env = spec.environments[env_name]
    elements = [
        {
            "component": component,
            "wave": str(wave),
            "sync": mode,
            "prune": "true" if prune else "false",
        }
        for component, wave, prune in _COMPONENTS
        if component != "services" or env.services  # no empty folders for ArgoCD to sync
    ]
    patch = (
        '{{- if eq .sync "auto" }}\n'
        "spec:\n"
        "  syncPolicy:\n"
        "    automated:\n"
        "      prune: {{ .prune }}\n"
        "      selfHeal: true\n"
        "{{- end }}\n"
    )
    template = {
        "metadata": {
            "name": f"{env_name}-{{{{ .component }}}}",
            "labels": {
                **MANAGED_BY,
                ENV_LABEL: env_name,
                "aiaas.dev/component": "{{ .component }}",
            },
            "annotations": {SYNC_WAVE: "{{ .wave }}"},
        },
        "spec": {
            "project": _project_name(env_name),
            "source": {
                "repoURL": gitops.repo_url,
                "targetRevision": gitops.revision,
                "path": f"{gitops.path}/{env_name}/{{{{ .component }}}}",
            },
            "destination": {"server": IN_CLUSTER, "namespace": ns},
            "ignoreDifferences": [
                {
                    "group": "rbac.authorization.k8s.io",
                    "kind": "RoleBinding",
                    "name": "break-glass",
                    "namespace": ns,
                    "jsonPointers": ["/subjects"],
                }
            ],
            "syncPolicy": {
                "syncOptions": ["RespectIgnoreDifferences=true", "ServerSideApply=true"],
                "retry": {
                    "limit": 5,
                    "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"},
                },
            },
        },
    }
    appset = _obj(
        "argoproj.io/v1alpha1",
        "ApplicationSet",
        _meta(
            env_name,
            env=env_name,
            namespace=ARGOCD_NAMESPACE,
            annotations={"aiaas.dev/sync": mode},
        ),
        spec={
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [{"list": {"elements": elements}}],
            "template": template,
            "templatePatch": patch,
            "syncPolicy": {"preserveResourcesOnDeletion": True},
        },
    )
    return [project, appset]


# -- observability ------------------------------------------------------------------------------


def _rule(alert: str, expr: str, *, severity: str, summary: str, env: str, for_: str) -> Any:
    return {
        "alert": alert,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "environment": env},
        "annotations": {"summary": summary},
    }


def _env_rules(env_name: str, ns: str, env: Environment) -> dict[str, Any]:
    sel = f'namespace="{ns}"'
    rules = [
        _rule(
            "AiaasPodRestarting",
            f"increase(kube_pod_container_status_restarts_total{{{sel}}}[15m]) > 3",
            severity="warning",
            summary=f"a pod in {env_name} restarted more than 3 times in 15 minutes",
            env=env_name,
            for_="5m",
        ),
        _rule(
            "AiaasQuotaNearlyUsed",
            f'kube_resourcequota{{{sel}, type="used"}} / ignoring(type) '
            f'kube_resourcequota{{{sel}, type="hard"}} > 0.9',
            severity="warning",
            summary=f"{env_name} uses more than 90% of a quota",
            env=env_name,
            for_="15m",
        ),
        _rule(
            "AiaasSecretRotationOverdue",
            f"aiaas:secret_age_seconds{{{sel}}} > on(namespace, item) "
            f"aiaas:secret_rotation_period_seconds{{{sel}}}",
            severity="critical" if env_name == "production" else "warning",
            summary=f"a secret of {env_name} is past its rotation period",
            env=env_name,
            for_="1h",
        ),
    ]
    if env.services:
        rules.append(
            _rule(
                "AiaasAutoscalerAtMax",
                f"kube_horizontalpodautoscaler_status_current_replicas{{{sel}}} >= "
                f"kube_horizontalpodautoscaler_spec_max_replicas{{{sel}}}",
                severity="warning",
                summary=f"an inference service of {env_name} runs at its maximum replicas",
                env=env_name,
                for_="30m",
            )
        )
    recording: list[dict[str, Any]] = [
        {
            "record": "aiaas:secret_age_seconds",
            "expr": f"time() - kube_customresource_aiaas_secret_rotated_timestamp_seconds{{{sel}}}",
        }
    ]
    recording += [
        {
            "record": "aiaas:secret_rotation_period_seconds",
            "expr": f"vector({item.rotation_days * 86400})",
            "labels": {"namespace": ns, "item": item.name, "environment": env_name},
        }
        for item in sorted(env.secret_items, key=lambda i: i.name)
    ]
    return _obj(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        _meta("environment-alerts", env=env_name, namespace=ns, wave=1),
        spec={
            "groups": [
                {"name": f"aiaas-secrets.{env_name}", "interval": "5m", "rules": recording},
                {"name": f"aiaas-environment.{env_name}", "rules": rules},
            ]
        },
    )


def _platform_dashboard() -> dict[str, Any]:
    def panel(pid: int, title: str, expr: str, *, unit: str, y: int, x: int) -> dict[str, Any]:
        return {
            "id": pid,
            "title": title,
            "type": "timeseries",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"expr": expr, "refId": "A", "legendFormat": "{{namespace}} {{pod}}"}],
        }

    ns = 'namespace=~"$namespace"'
    panels = [
        panel(
            1,
            "CPU",
            "sum by (namespace, pod) "
            f'(rate(container_cpu_usage_seconds_total{{{ns}, container!=""}}[5m]))',
            unit="cores",
            y=0,
            x=0,
        ),
        panel(
            2,
            "Memory",
            f'sum by (namespace, pod) (container_memory_working_set_bytes{{{ns}, container!=""}})',
            unit="bytes",
            y=0,
            x=12,
        ),
        panel(
            3,
            "Pod restarts",
            "sum by (namespace, pod) "
            f"(increase(kube_pod_container_status_restarts_total{{{ns}}}[1h]))",
            unit="short",
            y=8,
            x=0,
        ),
        panel(
            4,
            "Ingress latency (p95)",
            "histogram_quantile(0.95, sum by (exported_namespace, le) (rate("
            'nginx_ingress_controller_request_duration_seconds_bucket{exported_namespace=~"$namespace"}[5m])))',
            unit="s",
            y=8,
            x=12,
        ),
        panel(
            5,
            "Secret freshness (age / rotation period)",
            f"aiaas:secret_age_seconds{{{ns}}} / on(namespace, item) "
            f"aiaas:secret_rotation_period_seconds{{{ns}}}",
            unit="percentunit",
            y=16,
            x=0,
        ),
    ]
    return {
        "uid": "aiaas-platform",
        "title": "aiaas platform",
        "tags": ["aiaas"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "Environment",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": "label_values(kube_namespace_labels"
                        '{label_aiaas_dev_environment!=""}, namespace)',
                        "refId": "namespace",
                    },
                    "includeAll": True,
                    "multi": True,
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def _dashboard_configmap(name: str, filename: str, dashboard: Mapping[str, Any]) -> dict[str, Any]:
    text = json.dumps(_sorted(dashboard), indent=2, sort_keys=True) + "\n"
    return _obj(
        "v1",
        "ConfigMap",
        _meta(
            name,
            env=None,
            namespace=MONITORING_NAMESPACE,
            labels={"grafana_dashboard": "1"},
            annotations={"grafana_folder": "aiaas"},
        ),
        data={filename: text},
    )


def monitoring_values(spec: PlatformSpec) -> dict[str, Any]:
    """The kube-prometheus-stack values overlay for ``spec`` (plain data)."""
    obs = spec.observability
    routes = [
        {"receiver": r.receiver, "matchers": [f'severity="{r.severity}"'], "continue": False}
        for r in obs.alert_routes
    ]
    receivers = sorted({"default", *(r.receiver for r in obs.alert_routes)})
    items = sorted({i.name for env in spec.environments.values() for i in env.secret_items})
    ksm_metrics = [
        {
            "name": "secret_rotated_timestamp_seconds",
            "help": "When an item of a sealed secrets bundle was last rotated (unix seconds).",
            "commonLabels": {"item": name},
            "each": {
                "type": "Gauge",
                "gauge": {
                    "path": ["metadata", "annotations", f"secrets.aiaas.dev/{name}.rotated-at"],
                },
            },
        }
        for name in items
    ]
    prometheus_spec: dict[str, Any] = {
        "retention": f"{obs.retention_days}d",
        "externalLabels": {
            "platform": spec.name,
            "cluster": spec.cluster.label,
            "region": spec.region,
        },
        "ruleSelectorNilUsesHelmValues": False,
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleNamespaceSelector": {},
        "serviceMonitorNamespaceSelector": {},
    }
    if obs.prometheus_url is not None:
        prometheus_spec["externalUrl"] = obs.prometheus_url
    alertmanager: dict[str, Any] = {
        "config": {
            "route": {
                "receiver": "default",
                "group_by": ["alertname", "environment", "namespace"],
                "routes": routes,
            },
            "receivers": [{"name": r} for r in receivers],
        }
    }
    if obs.alertmanager_url is not None:
        alertmanager["alertmanagerSpec"] = {"externalUrl": obs.alertmanager_url}
    grafana: dict[str, Any] = {
        "sidecar": {
            "dashboards": {
                "enabled": True,
                "label": "grafana_dashboard",
                "labelValue": "1",
                "searchNamespace": "ALL",
                "folderAnnotation": "grafana_folder",
                "provider": {"foldersFromFilesStructure": True},
            }
        }
    }
    if obs.grafana_url is not None:
        grafana["grafana.ini"] = {"server": {"root_url": obs.grafana_url}}
    return {
        "commonLabels": {"aiaas.dev/platform": spec.name},
        "prometheus": {"prometheusSpec": prometheus_spec},
        "alertmanager": alertmanager,
        "grafana": grafana,
        "kube-state-metrics": {
            # environment labels: kube_namespace_labels{label_aiaas_dev_environment=...}
            "metricLabelsAllowlist": [f"namespaces=[{ENV_LABEL}]"],
            "rbac": {
                "extraRules": [
                    {
                        "apiGroups": ["bitnami.com"],
                        "resources": ["sealedsecrets"],
                        "verbs": ["list", "watch"],
                    }
                ]
            },
            "customResourceState": {
                "enabled": True,
                "config": {
                    "kind": "CustomResourceStateMetrics",
                    "spec": {
                        "resources": [
                            {
                                "groupVersionKind": {
                                    "group": "bitnami.com",
                                    "version": "v1alpha1",
                                    "kind": "SealedSecret",
                                },
                                "metricNamePrefix": "kube_customresource_aiaas",
                                "labelsFromPath": {
                                    "namespace": ["metadata", "namespace"],
                                    "secret": ["metadata", "name"],
                                    "environment": ["metadata", "labels", ENV_LABEL],
                                },
                                "metrics": ksm_metrics,
                            }
                        ]
                    },
                },
            },
        },
    }


def _platform_objects(spec: PlatformSpec) -> list[dict[str, Any]]:
    from aiaas_telemetry import load_grafana_dashboard, load_prometheus_rules  # noqa: PLC0415

    assert spec.gitops is not None
    repo, chart_version = KUBE_PROMETHEUS_STACK
    project = _obj(
        "argoproj.io/v1alpha1",
        "AppProject",
        _meta("aiaas-platform", env=None, namespace=ARGOCD_NAMESPACE, wave=-1),
        spec={
            "description": "aiaas platform services: monitoring (kube-prometheus-stack)",
            "sourceRepos": [repo, spec.gitops.repo_url],
            "destinations": [
                {"server": IN_CLUSTER, "namespace": MONITORING_NAMESPACE},
                {"server": IN_CLUSTER, "namespace": "kube-system"},
            ],
            # the chart installs CRDs, ClusterRoles and webhooks
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    )
    monitoring_app = _obj(
        "argoproj.io/v1alpha1",
        "Application",
        _meta("kube-prometheus-stack", env=None, namespace=ARGOCD_NAMESPACE, wave=0),
        spec={
            "project": "aiaas-platform",
            "source": {
                "repoURL": repo,
                "chart": "kube-prometheus-stack",
                "targetRevision": chart_version,
                "helm": {
                    "releaseName": "kube-prometheus-stack",
                    "valuesObject": monitoring_values(spec),
                },
            },
            "destination": {"server": IN_CLUSTER, "namespace": MONITORING_NAMESPACE},
            "syncPolicy": {
                "automated": {"prune": True, "selfHeal": True},
                "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
            },
        },
    )
    dashboards = [
        _dashboard_configmap(
            "aiaas-platform-dashboard", "aiaas-platform.json", _platform_dashboard()
        ),
        _dashboard_configmap(
            "aiaas-service-dashboard", "aiaas-service.json", load_grafana_dashboard()
        ),
    ]
    service_rules = load_prometheus_rules()
    groups = copy.deepcopy(service_rules["groups"])
    rules = _obj(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        _meta(
            "aiaas-service-alerts",
            env=None,
            namespace=MONITORING_NAMESPACE,
            annotations={"aiaas.dev/source": "aiaas-telemetry prometheus-rules.yaml"},
            wave=1,
        ),
        spec={"groups": groups},
    )
    return [project, monitoring_app, *dashboards, rules]


# -- the set ------------------------------------------------------------------------------------


def _stage(obj: Mapping[str, Any]) -> int:
    return _STAGES.get(str(obj["kind"]), _APP_STAGE)


def _component(obj: Mapping[str, Any]) -> str:
    kind = obj["kind"]
    if kind in ("AppProject", "ApplicationSet", "Application"):
        return "argocd"
    if kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        return "services"
    if kind in ("PrometheusRule", "ConfigMap"):
        return "observability"
    return "baseline"


def _require_gitops(spec: PlatformSpec) -> None:
    if spec.gitops is None:
        raise SpecError(
            [SpecProblem("gitops", "rendering needs gitops.repo_url (the repository ArgoCD syncs)")]
        )


def render_environment(
    spec: PlatformSpec, env_name: str, *, sealed: SealedStore | None = None
) -> tuple[dict[str, Any], ...]:
    """The objects of one environment, in apply order.

    Without ``sealed`` no SealedSecret is rendered; with it, every item of the environment's
    bundle must be sealed (:class:`~aiaas_infra.SecretNotSealedError` lists the missing ones).
    """
    _require_gitops(spec)
    if env_name not in spec.environments:
        known = ", ".join(spec.environments)
        raise SpecError(
            [SpecProblem("environments", f"no environment {env_name!r} (known: {known})")]
        )
    env = spec.environments[env_name]
    ns = spec.namespace(env_name)
    objects: list[dict[str, Any]] = [_namespace(spec, env_name, env), *_rbac(env_name, ns)]
    objects += [_quota(env_name, ns, env), _limit_range(env_name, ns, env)]
    objects += _network_policies(env_name, ns, env)
    if sealed is not None:
        objects.append(_sealed_secret(env_name, ns, env, sealed))
    objects += _argocd(spec, env_name, ns)
    for service in sorted(env.services, key=lambda s: s.name):
        objects += _service_objects(spec, env_name, ns, service)
    objects.append(_env_rules(env_name, ns, env))
    return tuple(objects)


@attrs.frozen
class RenderedSet:
    """A rendered platform: ``objects`` in apply order and ``files`` (path → YAML text)."""

    objects: tuple[dict[str, Any], ...] = attrs.field(repr=False)
    files: dict[str, str] = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"RenderedSet({len(self.objects)} objects, {len(self.files)} files)"

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write the tree under ``out_dir``; files no longer rendered are removed from the
        directories the set owns. Returns the paths written."""
        root = Path(out_dir)
        written: list[Path] = []
        owned_dirs = {Path(p).parts[0] for p in self.files}
        for top in owned_dirs:
            for stale in sorted((root / top).rglob("*.yaml")) if (root / top).is_dir() else []:
                if stale.relative_to(root).as_posix() not in self.files:
                    stale.unlink()
        for rel, text in sorted(self.files.items()):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            written.append(path)
        return written

    def kinds(self) -> dict[str, int]:
        """How many objects of each kind."""
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
        return dict(sorted(counts.items()))


_FILE_OF_KIND: Final = {
    "Namespace": "namespace.yaml",
    "ServiceAccount": "rbac.yaml",
    "Role": "rbac.yaml",
    "RoleBinding": "rbac.yaml",
    "ResourceQuota": "policies.yaml",
    "LimitRange": "policies.yaml",
    "NetworkPolicy": "network-policies.yaml",
    "SealedSecret": "sealed-secrets.yaml",
    "PrometheusRule": "prometheus-rules.yaml",
    "AppProject": "appproject.yaml",
    "ApplicationSet": "applicationset.yaml",
}


def _path_of(spec: PlatformSpec, obj: Mapping[str, Any]) -> str:
    assert spec.gitops is not None
    labels = obj["metadata"]["labels"]
    env = labels.get(ENV_LABEL)
    kind = obj["kind"]
    if env is None:
        name = obj["metadata"]["name"]
        folder = "argocd" if kind in ("AppProject", "Application") else "monitoring"
        return f"platform/{folder}/{kind.lower()}-{name}.yaml"
    component = _component(obj)
    if component == "argocd":
        return f"argocd/{env}/{_FILE_OF_KIND[kind]}"
    if component == "services":
        return f"{spec.gitops.path}/{env}/services/{obj['metadata']['name']}.yaml"
    return f"{spec.gitops.path}/{env}/{component}/{_FILE_OF_KIND[kind]}"


def render_platform(spec: PlatformSpec, *, sealed: SealedStore | None = None) -> RenderedSet:
    """Render every environment and the platform-wide monitoring into a :class:`RenderedSet`.

    ``objects`` are in apply order (all namespaces, then RBAC, policies, secrets, then the
    apps); ``files`` groups them by environment and component, plus
    ``platform/monitoring/kube-prometheus-stack-values.yaml`` (the values overlay).
    """
    _require_gitops(spec)
    per_env = [render_environment(spec, name, sealed=sealed) for name in spec.environments]
    env_objects = [o for objs in per_env for o in objs]
    ordered = sorted(enumerate(env_objects), key=lambda io: (_stage(io[1]), io[0]))
    objects = [o for _, o in ordered] + _platform_objects(spec)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        grouped.setdefault(_path_of(spec, obj), []).append(obj)
    files = {path: _dump_yaml(objs) for path, objs in sorted(grouped.items())}
    files["platform/monitoring/kube-prometheus-stack-values.yaml"] = (
        "# kube-prometheus-stack values overlay rendered by aiaas-infra (do not edit by hand)\n"
        + dump_yaml(monitoring_values(spec))
    )
    return RenderedSet(objects=tuple(objects), files=dict(sorted(files.items())))
