"""Isolation proven on the rendered NetworkPolicies: traffic between environments is denied;
DNS, metrics scraping, same-namespace traffic and the reviewed allows are allowed."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from gitops_support import gpu_spec

from aiaas_infra import PlatformSpec, render_platform
from aiaas_infra.cluster._netpol import allowed

Obj = dict[str, Any]
ENVS = ("development", "staging", "production", "system")
KUBE_DNS = {"k8s-app": "kube-dns"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
APP = {"app.kubernetes.io/name": "embeddings"}


@pytest.fixture(scope="module")
def objects(spec: PlatformSpec) -> tuple[Obj, ...]:
    return render_platform(gpu_spec(spec)).objects


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(ENVS, 2)))
def test_traffic_between_environments_is_denied(
    objects: tuple[Obj, ...], src: str, dst: str
) -> None:
    verdict = allowed(
        objects,
        src_namespace=f"env-{src}",
        src_labels=APP,
        dst_namespace=f"env-{dst}",
        dst_labels=APP,
        port=8080,
    )
    assert not verdict.allowed
    assert verdict.egress is not None
    assert verdict.ingress is not None
    assert not verdict.egress.allowed  # the source may not send ...
    assert not verdict.ingress.allowed  # ... and the destination would not accept
    assert verdict.policies == ()
    assert str(verdict).startswith("denied (egress: isolated by ")


@pytest.mark.parametrize("env", ENVS)
def test_dns_to_kube_system_is_allowed(objects: tuple[Obj, ...], env: str) -> None:
    for protocol in ("UDP", "TCP"):
        verdict = allowed(
            objects,
            src_namespace=f"env-{env}",
            src_labels=APP,
            dst_namespace="kube-system",
            dst_labels=KUBE_DNS,
            port=53,
            protocol=protocol,
        )
        assert verdict.allowed
        assert verdict.egress is not None
        assert verdict.egress.policy == f"env-{env}/allow-dns"
        assert verdict.ingress is not None
        assert not verdict.ingress.isolated  # kube-system is not ours: no policy there
    other_pod = allowed(
        objects,
        src_namespace=f"env-{env}",
        dst_namespace="kube-system",
        dst_labels={"component": "kube-apiserver"},
        port=53,
        protocol="UDP",
    )
    assert not other_pod.allowed
    other_port = allowed(
        objects,
        src_namespace=f"env-{env}",
        dst_namespace="kube-system",
        dst_labels=KUBE_DNS,
        port=9153,
    )
    assert not other_port.allowed


@pytest.mark.parametrize("env", ENVS)
def test_metrics_scraping_from_monitoring_is_allowed(objects: tuple[Obj, ...], env: str) -> None:
    scrape = allowed(
        objects,
        src_namespace="monitoring",
        src_labels=PROMETHEUS,
        dst_namespace=f"env-{env}",
        dst_labels=APP,
        port=9464,
    )
    assert scrape.allowed
    assert scrape.ingress is not None
    assert scrape.ingress.policy == f"env-{env}/allow-metrics-scraping"
    grafana = allowed(
        objects,
        src_namespace="monitoring",
        src_labels={"app.kubernetes.io/name": "grafana"},
        dst_namespace=f"env-{env}",
        dst_labels=APP,
        port=9464,
    )
    assert not grafana.allowed
    # an environment's pods cannot reach into monitoring themselves
    out = allowed(
        objects,
        src_namespace=f"env-{env}",
        dst_namespace="monitoring",
        dst_labels=PROMETHEUS,
        port=9090,
    )
    assert not out.allowed


@pytest.mark.parametrize("env", ENVS)
def test_traffic_inside_the_namespace_is_allowed(objects: tuple[Obj, ...], env: str) -> None:
    verdict = allowed(
        objects,
        src_namespace=f"env-{env}",
        src_labels={"app": "client"},
        dst_namespace=f"env-{env}",
        dst_labels=APP,
        port=8080,
    )
    assert verdict.allowed
    assert verdict.policies == (
        f"env-{env}/allow-same-namespace",
        f"env-{env}/allow-same-namespace",
    )


def test_reviewed_allows(objects: tuple[Obj, ...]) -> None:
    ingress = allowed(
        objects,
        src_namespace="ingress-nginx",
        src_labels={"app.kubernetes.io/name": "ingress-nginx"},
        dst_namespace="env-production",
        dst_labels=APP,
        port=8080,
    )
    assert ingress.allowed
    assert ingress.ingress is not None
    assert ingress.ingress.policy == "env-production/allow-from-ingress"
    wrong_port = allowed(
        objects,
        src_namespace="ingress-nginx",
        dst_namespace="env-production",
        dst_labels=APP,
        port=9090,
    )
    assert not wrong_port.allowed
    not_staging = allowed(
        objects, src_namespace="ingress-nginx", dst_namespace="env-staging", port=8080
    )
    assert not not_staging.allowed
    postgres = allowed(
        objects, src_namespace="env-production", dst_namespace=None, dst_ip="10.20.8.5", port=5432
    )
    assert postgres.allowed
    assert postgres.egress is not None
    assert postgres.egress.policy == "env-production/allow-to-postgres"
    assert postgres.ingress is not None
    assert postgres.ingress.reason == "outside the cluster: not subject to policies"
    elsewhere = allowed(
        objects, src_namespace="env-production", dst_namespace=None, dst_ip="10.20.0.5", port=5432
    )
    assert not elsewhere.allowed
    from_staging = allowed(
        objects, src_namespace="env-staging", dst_namespace=None, dst_ip="10.20.8.5", port=5432
    )
    assert not from_staging.allowed


@pytest.mark.parametrize("env", ENVS)
def test_the_internet_is_unreachable(objects: tuple[Obj, ...], env: str) -> None:
    verdict = allowed(
        objects, src_namespace=f"env-{env}", dst_namespace=None, dst_ip="1.1.1.1", port=443
    )
    assert not verdict.allowed
    inbound = allowed(
        objects, src_namespace=None, src_ip="203.0.113.9", dst_namespace=f"env-{env}", port=8080
    )
    assert not inbound.allowed


# -- the evaluator's semantics on hand-written policies ----------------------------------------


def policy(ns: str, name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def test_unselected_pods_are_not_isolated() -> None:
    objs = [policy("a", "only-web", {"podSelector": {"matchLabels": {"app": "web"}}})]
    verdict = allowed(objs, src_namespace="b", dst_namespace="a", dst_labels={"app": "db"}, port=1)
    assert verdict.allowed
    assert verdict.ingress is not None
    assert verdict.ingress.reason == "no policy isolates the pod for ingress"
    web = allowed(objs, src_namespace="b", dst_namespace="a", dst_labels={"app": "web"}, port=1)
    assert not web.allowed  # policyTypes defaults to Ingress, with no rules


def test_policy_types_default_to_egress_when_egress_rules_exist() -> None:
    objs = [policy("a", "egress", {"podSelector": {}, "egress": [{"to": [{"podSelector": {}}]}]})]
    out = allowed(objs, src_namespace="a", dst_namespace="b", port=1, direction="egress")
    assert not out.allowed
    assert out.ingress is None
    inside = allowed(objs, src_namespace="a", dst_namespace="a", port=1, direction="egress")
    assert inside.allowed


def test_match_expressions_and_namespace_labels() -> None:
    peer = {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "team", "operator": "In", "values": ["blue"]},
                {"key": "frozen", "operator": "DoesNotExist"},
            ]
        },
        "podSelector": {
            "matchExpressions": [
                {"key": "role", "operator": "NotIn", "values": ["batch"]},
                {"key": "app", "operator": "Exists"},
            ]
        },
    }
    objs = [
        policy("a", "from-blue", {"podSelector": {}, "ingress": [{"from": [peer]}]}),
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "b", "labels": {"team": "blue"}},
        },
    ]

    def check(
        src_ns: str, labels: dict[str, str], extra: dict[str, dict[str, str]] | None = None
    ) -> bool:
        return allowed(
            objs,
            src_namespace=src_ns,
            src_labels=labels,
            dst_namespace="a",
            port=80,
            direction="ingress",
            namespace_labels=extra,
        ).allowed

    assert check("b", {"app": "x"})
    assert not check("b", {"app": "x", "role": "batch"})
    assert not check("b", {})
    assert not check("c", {"app": "x"})
    assert check("c", {"app": "x"}, {"c": {"team": "blue"}})
    assert not check("b", {"app": "x"}, {"b": {"frozen": "yes"}})
    bad_op = [
        policy(
            "a",
            "odd",
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchExpressions": [{"key": "k", "operator": "Gt"}]}}
                        ]
                    }
                ],
            },
        )
    ]
    assert not allowed(
        bad_op, src_namespace="a", src_labels={"k": "1"}, dst_namespace="a", port=1
    ).allowed


def test_ports_ranges_protocols_and_ip_blocks() -> None:
    rule = {
        "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
        "ports": [
            {"port": 8000, "endPort": 8100, "protocol": "TCP"},
            {"port": "metrics"},
            {"protocol": "UDP"},
        ],
    }
    objs = [policy("a", "out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [rule]})]

    def check(ip: str, port: int, protocol: str = "TCP") -> bool:
        return allowed(
            objs, src_namespace="a", dst_namespace=None, dst_ip=ip, port=port, protocol=protocol
        ).allowed

    assert check("10.2.3.4", 8050)
    assert not check("10.2.3.4", 8101)
    assert not check("10.1.2.3", 8050)  # excepted
    assert check("10.1.2.3", 5353, "UDP") is False  # excepted for every port
    assert check("10.9.9.9", 5353, "UDP")  # any UDP port
    assert not check("11.0.0.1", 8050)
    # pod and namespace selectors never match addresses outside the cluster
    pods_only = [
        policy(
            "a",
            "pods",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        )
    ]
    assert not allowed(
        pods_only, src_namespace="a", dst_namespace=None, dst_ip="10.0.0.1", port=1
    ).allowed
    # an ipBlock does not match a pod given by namespace only
    assert not allowed(objs, src_namespace="a", dst_namespace="b", port=8050).allowed


def test_an_endpoint_needs_a_namespace_or_an_ip() -> None:
    with pytest.raises(ValueError, match="give a namespace, or an ip"):
        allowed([], src_namespace=None, dst_namespace="a", port=1)
