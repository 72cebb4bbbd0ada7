"""The rendered monitoring: each environment's PrometheusRule, the Grafana dashboards, the
kube-prometheus-stack values overlay and the platform-wide observability objects.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiaas_infra.cluster._objects import (
    ARGOCD_NAMESPACE,
    ENV_LABEL,
    IN_CLUSTER,
    KUBE_PROMETHEUS_STACK,
    MONITORING_NAMESPACE,
    _meta,
    _obj,
    _sorted,
)

if TYPE_CHECKING:
    from aiaas_infra.spec._model import Environment, PlatformSpec

__all__: list[str] = []

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
