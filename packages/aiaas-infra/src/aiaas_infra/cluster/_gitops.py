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

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_infra._errors import SpecError, SpecProblem
from aiaas_infra.cluster._monitoring import _env_rules, _platform_objects, monitoring_values
from aiaas_infra.cluster._objects import (
    _APP_STAGE,
    _STAGES,
    ENV_LABEL,
    _argocd,
    _limit_range,
    _namespace,
    _network_policies,
    _quota,
    _rbac,
    _sealed_secret,
    _service_objects,
)
from aiaas_infra.cluster._yaml import _dump_yaml, dump_yaml

if TYPE_CHECKING:
    from aiaas_infra.secrets._secrets import SealedStore
    from aiaas_infra.spec._model import PlatformSpec

__all__ = [
    "RenderedSet",
    "render_environment",
    "render_platform",
]

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
