"""The Kubernetes objects rendered per environment: namespace, RBAC, quota and limits, network
policies, the secrets bundle, the inference services and the ArgoCD project and applications.

See :mod:`aiaas_infra.cluster._gitops` for the whole tree and what each object does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from aiaas_infra.secrets._secrets import SealedStore
    from aiaas_infra.spec._model import Environment, InferenceService, NetworkAllow, PlatformSpec

__all__ = [
    "ROLE_NAMES",
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
    from aiaas_infra.secrets._secrets import sealed_secret_manifest  # noqa: PLC0415

    manifest = sealed_secret_manifest(env_name, ns, sealed, env.secret_items)
    manifest["metadata"].setdefault("annotations", {})[SYNC_WAVE] = "0"
    manifest["metadata"]["labels"][ENV_LABEL] = env_name
    return manifest


# -- services -----------------------------------------------------------------------------------


def _service_objects(
    spec: PlatformSpec, env_name: str, ns: str, service: InferenceService
) -> list[dict[str, Any]]:
    from aiaas_infra.secrets._secrets import secret_name  # noqa: PLC0415

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
