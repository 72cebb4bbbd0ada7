"""Rendering the GitOps tree: what each environment gets, in which order, and that the same
spec always renders the same bytes. Every rendered set here also validates strictly."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_support import gpu_spec, sealed_store, with_gpu_service

from aiaas_infra import (
    PlatformSpec,
    RenderedSet,
    SpecError,
    render_environment,
    render_platform,
    spec_from_dict,
    spec_to_dict,
    validate_objects,
)
from aiaas_infra.cluster._monitoring import monitoring_values
from aiaas_infra.cluster._objects import ROLE_NAMES
from aiaas_infra.secrets._secrets import SealedStore, SecretNotSealedError
from aiaas_telemetry import load_prometheus_rules

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def full(spec: PlatformSpec) -> PlatformSpec:
    return gpu_spec(spec)


@pytest.fixture(scope="module")
def store(full: PlatformSpec) -> SealedStore:
    return sealed_store(full)


@pytest.fixture(scope="module")
def rendered(full: PlatformSpec, store: SealedStore) -> RenderedSet:
    return render_platform(full, sealed=store)


def canonical(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


def find(objects: tuple[Obj, ...] | list[Obj], kind: str, name: str, ns: str | None = None) -> Obj:
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == ns:
            return obj
    raise AssertionError(f"no {kind} {ns}/{name}")


def of_kind(objects: tuple[Obj, ...], kind: str, ns: str | None = None) -> list[Obj]:
    return [
        o
        for o in objects
        if o["kind"] == kind and (ns is None or o["metadata"].get("namespace") == ns)
    ]


def test_the_rendered_set_validates_strictly(rendered: RenderedSet, crds: Path) -> None:
    assert validate_objects(rendered.objects, crds_dir=crds, kubernetes_version="1.31") == []
    kinds = rendered.kinds()
    assert kinds["Namespace"] == 4
    assert kinds["SealedSecret"] == 4
    assert kinds["Deployment"] == 3  # staging and production embeddings, system inference
    assert kinds["ServiceAccount"] == kinds["Role"] == kinds["RoleBinding"] == 16
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds
    assert repr(rendered) == f"RenderedSet({len(rendered.objects)} objects, 41 files)"


def test_every_object_is_labelled(rendered: RenderedSet) -> None:
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "aiaas"
        assert ("aiaas.dev/environment" in labels) != ("aiaas.dev/scope" in labels)
        env = labels.get("aiaas.dev/environment")
        ns = obj["metadata"].get("namespace")
        if env is not None and ns not in (None, "argocd"):
            assert ns == f"env-{env}"


def test_objects_come_in_apply_order(rendered: RenderedSet) -> None:
    stages = {
        "Namespace": 0,
        "ServiceAccount": 1,
        "Role": 1,
        "RoleBinding": 1,
        "ResourceQuota": 2,
        "LimitRange": 2,
        "NetworkPolicy": 2,
        "SealedSecret": 3,
    }
    order = [stages.get(o["kind"], 4) for o in rendered.objects]
    assert order == sorted(order)
    assert rendered.objects[0]["kind"] == "Namespace"
    assert [o["metadata"]["name"] for o in of_kind(rendered.objects, "Namespace")] == [
        "env-development",
        "env-staging",
        "env-production",
        "env-system",
    ]


def test_render_is_byte_identical(
    full: PlatformSpec, store: SealedStore, rendered: RenderedSet
) -> None:
    again = render_platform(spec_from_dict(spec_to_dict(full)), sealed=store)
    assert again.files == rendered.files
    assert again.objects == rendered.objects
    for text in rendered.files.values():
        assert "creationTimestamp" not in text


def test_write_is_idempotent_and_removes_stale_files(rendered: RenderedSet, tmp_path: Path) -> None:
    stale = tmp_path / "environments" / "old-env" / "baseline" / "namespace.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("---\n")
    unrelated = tmp_path / "README.md"
    unrelated.write_text("kept\n")
    written = rendered.write(tmp_path)
    assert len(written) == len(rendered.files)
    assert not stale.exists()
    assert unrelated.read_text() == "kept\n"
    before = {p: p.read_bytes() for p in written}
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    rendered.write(tmp_path)
    assert {p: p.read_bytes() for p in written} == before
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes  # unchanged files not rewritten
    loaded = [
        doc
        for rel in rendered.files
        if not rel.endswith("values.yaml")
        for doc in yaml.safe_load_all((tmp_path / rel).read_text())
    ]
    assert canonical(loaded) == canonical(rendered.objects)


def test_tree_layout(rendered: RenderedSet) -> None:
    files = set(rendered.files)
    for env in ("development", "staging", "production", "system"):
        for name in ("namespace", "rbac", "policies", "network-policies", "sealed-secrets"):
            assert f"environments/{env}/baseline/{name}.yaml" in files
        assert f"environments/{env}/observability/prometheus-rules.yaml" in files
        assert f"argocd/{env}/appproject.yaml" in files
        assert f"argocd/{env}/applicationset.yaml" in files
    assert "environments/system/services/inference.yaml" in files
    assert "environments/development/services/embeddings.yaml" not in files
    assert "platform/monitoring/kube-prometheus-stack-values.yaml" in files


def test_namespace_labels(rendered: RenderedSet) -> None:
    ns = find(rendered.objects, "Namespace", "env-production")
    labels = ns["metadata"]["labels"]
    assert labels["aiaas.dev/tier"] == "production"  # from the spec
    assert labels["aiaas.dev/environment"] == "production"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["kubernetes.io/metadata.name"] == "env-production"


def test_namespace_override_is_used(spec: PlatformSpec) -> None:
    data = spec_to_dict(spec)
    data["environments"]["staging"]["namespace"] = "stage"
    objects = render_environment(spec_from_dict(data), "staging")
    assert {o["metadata"].get("namespace") for o in objects} == {None, "stage", "argocd"}
    assert find(objects, "RoleBinding", "read-only", "stage")["subjects"] == [
        {"kind": "ServiceAccount", "name": "read-only", "namespace": "stage"}
    ]


# -- RBAC ---------------------------------------------------------------------------------------


def rules_of(objects: tuple[Obj, ...], role: str) -> list[Obj]:
    rules: list[Obj] = find(objects, "Role", role, "env-staging")["rules"]
    return rules


def granted(rules: list[Obj], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if (group in rule["apiGroups"] or "*" in rule["apiGroups"]) and (
            resource in rule["resources"] or "*" in rule["resources"]
        ):
            verbs |= set(rule["verbs"])
    return verbs


def test_read_only_reads_and_never_sees_secrets(rendered: RenderedSet) -> None:
    rules = rules_of(rendered.objects, "read-only")
    for rule in rules:
        assert rule["verbs"] == ["get", "list", "watch"]
        assert "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
    assert granted(rules, "apps", "deployments") == {"get", "list", "watch"}
    assert granted(rules, "", "secrets") == set()


def test_app_team_manages_workloads_but_not_rbac_quotas_or_secrets(rendered: RenderedSet) -> None:
    rules = rules_of(rendered.objects, "app-team")
    assert {"create", "update", "patch", "delete"} <= granted(rules, "apps", "deployments")
    assert "patch" in granted(rules, "autoscaling", "horizontalpodautoscalers")
    assert granted(rules, "", "secrets") == set()
    assert granted(rules, "rbac.authorization.k8s.io", "roles") == set()
    assert granted(rules, "rbac.authorization.k8s.io", "rolebindings") == set()
    assert granted(rules, "", "resourcequotas") == {"get", "list", "watch"}
    assert granted(rules, "", "limitranges") == {"get", "list", "watch"}
    assert granted(rules, "networking.k8s.io", "networkpolicies") == {"get", "list", "watch"}
    assert granted(rules, "bitnami.com", "sealedsecrets") == {"get", "list", "watch"}


def test_admins_are_namespace_scoped_and_break_glass_is_unbound(rendered: RenderedSet) -> None:
    for role in ("platform-engineer", "break-glass"):
        assert granted(rules_of(rendered.objects, role), "", "secrets") == {"*"}
    for role in ROLE_NAMES:
        account = find(rendered.objects, "ServiceAccount", role, "env-staging")
        assert account["automountServiceAccountToken"] is False
        binding = find(rendered.objects, "RoleBinding", role, "env-staging")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role,
        }
    glass = find(rendered.objects, "RoleBinding", "break-glass", "env-staging")
    assert glass["subjects"] == []
    assert glass["metadata"]["annotations"]["aiaas.dev/bound-when"] == "incident-open"
    appset = find(rendered.objects, "ApplicationSet", "staging", "argocd")
    ignored = appset["spec"]["template"]["spec"]["ignoreDifferences"]
    assert ignored == [
        {
            "group": "rbac.authorization.k8s.io",
            "kind": "RoleBinding",
            "name": "break-glass",
            "namespace": "env-staging",
            "jsonPointers": ["/subjects"],
        }
    ]


# -- policies -----------------------------------------------------------------------------------


def test_quota_and_limits(rendered: RenderedSet) -> None:
    quota = find(rendered.objects, "ResourceQuota", "environment-quota", "env-production")
    assert quota["spec"]["hard"] == {
        "requests.cpu": "32",
        "requests.memory": "64Gi",
        "pods": "300",
        "requests.nvidia.com/gpu": "0",
    }
    system = find(rendered.objects, "ResourceQuota", "environment-quota", "env-system")
    assert system["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"
    limits = find(rendered.objects, "LimitRange", "container-limits", "env-production")
    assert limits["spec"]["limits"] == [
        {
            "type": "Container",
            "default": {"cpu": "250m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
            "max": {"cpu": "4", "memory": "8Gi"},
        }
    ]
    dev = find(rendered.objects, "LimitRange", "container-limits", "env-development")
    assert "max" not in dev["spec"]["limits"][0]


def test_network_policies(rendered: RenderedSet) -> None:
    names = [
        o["metadata"]["name"] for o in of_kind(rendered.objects, "NetworkPolicy", "env-production")
    ]
    assert names == [
        "default-deny",
        "allow-dns",
        "allow-metrics-scraping",
        "allow-same-namespace",
        "allow-from-ingress",
        "allow-to-postgres",
    ]
    deny = find(rendered.objects, "NetworkPolicy", "default-deny", "env-production")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    extra = find(rendered.objects, "NetworkPolicy", "allow-from-ingress", "env-production")
    assert extra["metadata"]["annotations"]["aiaas.dev/reviewed-by"] == "alice"
    assert extra["metadata"]["annotations"]["aiaas.dev/reason"] == "public API"
    assert extra["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                }
            ],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }
    ]
    egress = find(rendered.objects, "NetworkPolicy", "allow-to-postgres", "env-production")
    assert egress["spec"]["policyTypes"] == ["Egress"]
    assert egress["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.20.8.0/24"}}]


def test_pod_labels_narrow_an_allow(spec: PlatformSpec) -> None:
    data = spec_to_dict(spec)
    data["environments"]["production"]["network"]["allow"][0]["pod_labels"] = {
        "app.kubernetes.io/name": "ingress-nginx"
    }
    objects = render_environment(spec_from_dict(data), "production")
    extra = find(objects, "NetworkPolicy", "allow-from-ingress", "env-production")
    assert extra["spec"]["ingress"][0]["from"][0]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}
    }


# -- secrets ------------------------------------------------------------------------------------


def test_sealed_secrets_carry_owner_purpose_and_rotation(rendered: RenderedSet) -> None:
    sealed = find(rendered.objects, "SealedSecret", "production-secrets", "env-production")
    notes = sealed["metadata"]["annotations"]
    assert notes["secrets.aiaas.dev/api-token.owner"] == "platform-team"
    assert notes["secrets.aiaas.dev/api-token.purpose"] == "service API token"
    assert notes["secrets.aiaas.dev/api-token.rotation-days"] == "30"
    assert notes["secrets.aiaas.dev/metrics-credentials.rotation-days"] == "90"
    assert notes["argocd.argoproj.io/sync-wave"] == "0"
    assert sorted(sealed["spec"]["encryptedData"]) == [
        "api-token",
        "database-url",
        "metrics-credentials",
    ]
    assert sealed["metadata"]["labels"]["aiaas.dev/environment"] == "production"


def test_without_a_store_no_sealed_secret_is_rendered(spec: PlatformSpec) -> None:
    assert "SealedSecret" not in render_platform(spec).kinds()


def test_an_unsealed_item_is_an_error(spec: PlatformSpec) -> None:
    store = sealed_store(spec, skip=("staging", "metrics-credentials"))
    with pytest.raises(SecretNotSealedError, match="metrics-credentials"):
        render_platform(spec, sealed=store)


# -- ArgoCD -------------------------------------------------------------------------------------


def elements(appset: Mapping[str, Any]) -> list[Obj]:
    found: list[Obj] = appset["spec"]["generators"][0]["list"]["elements"]
    return found


def test_production_syncs_manually_others_automatically(rendered: RenderedSet) -> None:
    prod = find(rendered.objects, "ApplicationSet", "production", "argocd")
    assert {e["sync"] for e in elements(prod)} == {"manual"}
    assert prod["metadata"]["annotations"]["aiaas.dev/sync"] == "manual"
    dev = find(rendered.objects, "ApplicationSet", "development", "argocd")
    assert {e["sync"] for e in elements(dev)} == {"auto"}
    patch = dev["spec"]["templatePatch"]
    assert 'if eq .sync "auto"' in patch
    assert "selfHeal: true" in patch
    assert "prune: {{ .prune }}" in patch
    assert dev["spec"]["goTemplate"] is True


def test_components_have_waves_and_baseline_prunes(rendered: RenderedSet) -> None:
    system = find(rendered.objects, "ApplicationSet", "system", "argocd")
    assert [(e["component"], e["wave"], e["prune"]) for e in elements(system)] == [
        ("baseline", "0", "true"),
        ("observability", "1", "true"),
        ("services", "2", "false"),
    ]
    dev = find(rendered.objects, "ApplicationSet", "development", "argocd")
    assert [e["component"] for e in elements(dev)] == ["baseline", "observability"]
    template = system["spec"]["template"]
    assert template["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "{{ .wave }}"}
    assert template["spec"]["source"]["path"] == "environments/system/{{ .component }}"
    assert template["spec"]["project"] == "aiaas-system"
    waves = {
        o["kind"]: o["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        for o in rendered.objects
        if o["metadata"].get("namespace") == "env-system"
    }
    namespace = find(rendered.objects, "Namespace", "env-system")
    assert namespace["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-3"
    assert waves["ServiceAccount"] == waves["RoleBinding"] == "-2"
    assert waves["NetworkPolicy"] == "-1"
    assert waves["SealedSecret"] == "0"
    assert waves["Deployment"] == "2"


def test_app_project_confines_the_environment(rendered: RenderedSet) -> None:
    project = find(rendered.objects, "AppProject", "aiaas-staging", "argocd")
    spec = project["spec"]
    assert spec["destinations"] == [
        {"server": "https://kubernetes.default.svc", "namespace": "env-staging"}
    ]
    assert spec["sourceRepos"] == ["https://github.com/example/platform-gitops"]
    assert spec["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    blocked = {(b["group"], b["kind"]) for b in spec["namespaceResourceBlacklist"]}
    assert ("", "Secret") in blocked


# -- services -----------------------------------------------------------------------------------


def test_gpu_service_objects(rendered: RenderedSet) -> None:
    deploy = find(rendered.objects, "Deployment", "inference", "env-system")
    assert "replicas" not in deploy["spec"]  # the autoscaler owns it
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "ghcr.io/example/inference:1.0.0"
    assert pod["nodeSelector"] == {"aiaas.dev/pool": "gpu", "nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    hpa = find(rendered.objects, "HorizontalPodAutoscaler", "inference", "env-system")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "inference"
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    assert target == {"type": "Utilization", "averageUtilization": 70}
    pdb = find(rendered.objects, "PodDisruptionBudget", "inference", "env-system")
    assert pdb["spec"]["maxUnavailable"] == 1
    svc = find(rendered.objects, "Service", "inference", "env-system")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    assert svc["spec"]["selector"] == pdb["spec"]["selector"]["matchLabels"]


def test_cpu_service_tolerates_its_pool(rendered: RenderedSet) -> None:
    deploy = find(rendered.objects, "Deployment", "embeddings", "env-production")
    pod = deploy["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert pod["tolerations"] == [
        {
            "key": "aiaas.dev/production",
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }
    ]
    staging = find(rendered.objects, "Deployment", "embeddings", "env-staging")
    assert "tolerations" not in staging["spec"]["template"]["spec"]


def test_a_taint_without_value_is_tolerated_with_exists(spec: PlatformSpec) -> None:
    data = with_gpu_service(spec_to_dict(spec))
    data["cluster"]["pools"][2]["taints"] = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    data["cluster"]["pools"][2]["labels"] = {}
    objects = render_environment(spec_from_dict(data), "system")
    pod = find(objects, "Deployment", "inference", "env-system")["spec"]["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert "nodeSelector" not in pod


# -- observability ------------------------------------------------------------------------------


def test_monitoring_values_overlay(full: PlatformSpec, rendered: RenderedSet) -> None:
    values = yaml.safe_load(rendered.files["platform/monitoring/kube-prometheus-stack-values.yaml"])
    assert values == monitoring_values(full)
    prom = values["prometheus"]["prometheusSpec"]
    assert prom["retention"] == "30d"
    assert prom["externalLabels"] == {
        "platform": "aiaas",
        "cluster": "aiaas-main",
        "region": "us-ord",
    }
    route = values["alertmanager"]["config"]["route"]
    assert route["receiver"] == "default"
    assert route["routes"] == [
        {"receiver": "pagerduty", "matchers": ['severity="critical"'], "continue": False},
        {"receiver": "slack", "matchers": ['severity="warning"'], "continue": False},
    ]
    assert {r["name"] for r in values["alertmanager"]["config"]["receivers"]} == {
        "default",
        "pagerduty",
        "slack",
    }
    assert values["kube-state-metrics"]["metricLabelsAllowlist"] == [
        "namespaces=[aiaas.dev/environment]"
    ]
    app = find(rendered.objects, "Application", "kube-prometheus-stack", "argocd")
    assert app["spec"]["source"]["helm"]["valuesObject"] == values


def test_retention_follows_the_spec(spec: PlatformSpec) -> None:
    data = spec_to_dict(spec)
    data["observability"] = {"retention_days": 90}
    values = monitoring_values(spec_from_dict(data))
    assert values["prometheus"]["prometheusSpec"]["retention"] == "90d"
    assert "externalUrl" not in values["prometheus"]["prometheusSpec"]
    assert values["alertmanager"]["config"]["route"]["routes"] == []
    assert "grafana.ini" not in values["grafana"]


def test_dashboards(rendered: RenderedSet) -> None:
    cm = find(rendered.objects, "ConfigMap", "aiaas-platform-dashboard", "monitoring")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["aiaas-platform.json"])
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == [
        "CPU",
        "Memory",
        "Pod restarts",
        "Ingress latency (p95)",
        "Secret freshness (age / rotation period)",
    ]
    service = find(rendered.objects, "ConfigMap", "aiaas-service-dashboard", "monitoring")
    assert json.loads(service["data"]["aiaas-service.json"])["panels"]


def test_prometheus_rules_include_the_telemetry_service_alerts(rendered: RenderedSet) -> None:
    shipped = load_prometheus_rules()
    rule = find(rendered.objects, "PrometheusRule", "aiaas-service-alerts", "monitoring")
    assert rule["spec"]["groups"] == shipped["groups"]
    alerts = {r["alert"] for g in shipped["groups"] for r in g["rules"] if "alert" in r}
    assert "AiaasServiceNoTraffic" in alerts
    env_rule = find(rendered.objects, "PrometheusRule", "environment-alerts", "env-production")
    env_alerts = {r.get("alert") for g in env_rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "AiaasPodRestarting",
        "AiaasSecretRotationOverdue",
        "AiaasAutoscalerAtMax",
    } <= env_alerts
    periods = {
        r["labels"]["item"]: r["expr"]
        for g in env_rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("record") == "aiaas:secret_rotation_period_seconds"
    }
    assert periods == {
        "api-token": "vector(2592000)",
        "database-url": "vector(7776000)",
        "metrics-credentials": "vector(7776000)",
    }
    overdue = next(
        r
        for g in env_rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("alert") == "AiaasSecretRotationOverdue"
    )
    assert overdue["labels"] == {"severity": "critical", "environment": "production"}
    dev = find(rendered.objects, "PrometheusRule", "environment-alerts", "env-development")
    dev_alerts = {r.get("alert") for g in dev["spec"]["groups"] for r in g["rules"]}
    assert "AiaasAutoscalerAtMax" not in dev_alerts  # no services there


# -- errors -------------------------------------------------------------------------------------


def test_rendering_needs_gitops(spec: PlatformSpec) -> None:
    data = spec_to_dict(spec)
    data["gitops"] = None
    bare = spec_from_dict(data)
    with pytest.raises(SpecError) as info:
        render_platform(bare)
    assert [str(p) for p in info.value.problems] == [
        "gitops: rendering needs gitops.repo_url (the repository ArgoCD syncs)"
    ]
    with pytest.raises(SpecError):
        render_environment(bare, "staging")


def test_unknown_environment(spec: PlatformSpec) -> None:
    with pytest.raises(SpecError, match="no environment 'qa'"):
        render_environment(spec, "qa")


def test_render_environment_matches_the_platform_set(
    full: PlatformSpec, store: SealedStore, rendered: RenderedSet
) -> None:
    env_objects = render_environment(full, "staging", sealed=store)
    in_set = [
        o
        for o in rendered.objects
        if o["metadata"]["labels"].get("aiaas.dev/environment") == "staging"
    ]
    assert canonical(env_objects) == canonical(in_set)
    # render never mutates what it returns from earlier calls
    snapshot = copy.deepcopy(env_objects)
    render_environment(full, "staging", sealed=store)
    assert env_objects == snapshot
