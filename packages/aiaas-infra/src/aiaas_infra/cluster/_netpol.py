"""Evaluate rendered NetworkPolicies: would this connection be allowed?

Implements the Kubernetes ``networking.k8s.io/v1`` semantics for one connection from a source
pod to a destination pod (or an address outside the cluster):

* a pod is *isolated* for egress (ingress) when any policy of its namespace selects it and
  lists ``Egress`` (``Ingress``) in ``policyTypes``; a pod no policy isolates allows everything;
* an isolated pod allows a connection when at least one rule of a policy that selects it
  matches the peer (``podSelector`` — same namespace —, ``namespaceSelector``, both, or
  ``ipBlock`` with its ``except`` list) and the port (``port``, ``endPort``, ``protocol``,
  default TCP; a rule without ports matches every port);
* the connection succeeds only when the source's egress **and** the destination's ingress
  allow it (``direction="both"``, the default); ``"egress"``/``"ingress"`` evaluate one side.

Namespace labels come from the Namespace objects in the set; every namespace also carries
``kubernetes.io/metadata.name`` (namespaces outside the set, like ``kube-system``, have only that
unless ``namespace_labels`` adds more). Named ports in policies are not resolved (none are
rendered) and match nothing. Used by tests to prove environments are isolated::

    verdict = allowed(
        rendered.objects,
        src_namespace="env-staging",
        src_labels={},
        dst_namespace="env-production",
        dst_labels={},
        port=8080,
    )
    assert not verdict.allowed
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = ["PolicyDecision", "Verdict", "allowed"]

Direction = Literal["ingress", "egress", "both"]


@attrs.frozen
class PolicyDecision:
    """One side of a connection: whether it allows it, and why."""

    allowed: bool
    isolated: bool  # some policy selects the pod for this direction
    policy: str | None  # "namespace/name" of the first policy that allowed it
    reason: str


@attrs.frozen
class Verdict:
    """Whether a connection is allowed: both sides, each with the policy that decided."""

    allowed: bool
    egress: PolicyDecision | None
    ingress: PolicyDecision | None

    @property
    def policies(self) -> tuple[str, ...]:
        """The policies that allowed the connection (one per evaluated side)."""
        return tuple(
            d.policy for d in (self.egress, self.ingress) if d is not None and d.policy is not None
        )

    def __str__(self) -> str:
        sides = [
            f"{name}: {d.reason}"
            for name, d in (("egress", self.egress), ("ingress", self.ingress))
            if d is not None
        ]
        return ("allowed" if self.allowed else "denied") + " (" + "; ".join(sides) + ")"


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector selects ``labels`` (an empty selector selects everything)."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or ()
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, False)
        if not ok:
            return False
    return True


@attrs.frozen
class _Endpoint:
    namespace: str | None  # None: outside the cluster
    labels: Mapping[str, str]
    ns_labels: Mapping[str, str]
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, other: _Endpoint) -> bool:
    block = peer.get("ipBlock")
    if block is not None:
        if other.ip is None:
            return False
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if other.ip not in net:
            return False
        return not any(
            other.ip in ipaddress.ip_network(e, strict=False) for e in block.get("except") or ()
        )
    if other.namespace is None:
        return False  # pod and namespace selectors match pods only
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is None:
        ns_ok = other.namespace == policy_ns
    else:
        ns_ok = _matches(ns_selector, other.ns_labels)
    return ns_ok and _matches(pod_selector, other.labels)


def _port_matches(ports: Iterable[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    ports = list(ports or ())
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            continue  # named ports are not resolved
        end = entry.get("endPort", number)
        if number <= port <= end:
            return True
    return False


def _decide(
    policies: list[Mapping[str, Any]],
    kind: Literal["Ingress", "Egress"],
    pod: _Endpoint,
    other: _Endpoint,
    *,
    port: int,
    protocol: str,
) -> PolicyDecision:
    if pod.namespace is None:
        return PolicyDecision(True, False, None, "outside the cluster: not subject to policies")
    field, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    selecting = []
    for policy in policies:
        meta, spec = policy["metadata"], policy.get("spec") or {}
        if meta.get("namespace") != pod.namespace:
            continue
        types = spec.get("policyTypes") or (
            ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
        )
        if kind in types and _matches(spec.get("podSelector") or {}, pod.labels):
            selecting.append(policy)
    if not selecting:
        return PolicyDecision(True, False, None, f"no policy isolates the pod for {field}")
    for policy in sorted(selecting, key=lambda p: str(p["metadata"]["name"])):
        name = f"{policy['metadata']['namespace']}/{policy['metadata']['name']}"
        for rule in (policy.get("spec") or {}).get(field) or ():
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(p, pod.namespace, other) for p in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return PolicyDecision(True, True, name, f"allowed by {name}")
    names = ", ".join(sorted(f"{p['metadata']['name']}" for p in selecting))
    return PolicyDecision(False, True, None, f"isolated by {names}; no rule allows it")


def allowed(
    objects: Iterable[Mapping[str, Any]],
    *,
    src_namespace: str | None,
    src_labels: Mapping[str, str] | None = None,
    dst_namespace: str | None,
    dst_labels: Mapping[str, str] | None = None,
    port: int,
    protocol: str = "TCP",
    direction: Direction = "both",
    src_ip: str | None = None,
    dst_ip: str | None = None,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Verdict:
    """Whether the rendered NetworkPolicies in ``objects`` allow a connection.

    ``src_namespace``/``dst_namespace`` ``None`` with ``src_ip``/``dst_ip`` stands for an
    address outside the cluster (matched by ``ipBlock`` rules only).
    """
    objects = list(objects)
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    ns_labels: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") == "Namespace":
            ns_labels[obj["metadata"]["name"]] = dict(obj["metadata"].get("labels") or {})
    for name, extra in (namespace_labels or {}).items():
        ns_labels.setdefault(name, {}).update(extra)

    def endpoint(ns: str | None, labels: Mapping[str, str] | None, ip: str | None) -> _Endpoint:
        if ns is None and ip is None:
            raise ValueError("give a namespace, or an ip for an address outside the cluster")
        labels_of_ns = {**ns_labels.get(ns, {}), "kubernetes.io/metadata.name": ns} if ns else {}
        return _Endpoint(
            namespace=ns,
            labels=dict(labels or {}),
            ns_labels=labels_of_ns,
            ip=ipaddress.ip_address(ip) if ip is not None else None,
        )

    src = endpoint(src_namespace, src_labels, src_ip)
    dst = endpoint(dst_namespace, dst_labels, dst_ip)
    egress = (
        _decide(policies, "Egress", src, dst, port=port, protocol=protocol)
        if direction != "ingress"
        else None
    )
    ingress = (
        _decide(policies, "Ingress", dst, src, port=port, protocol=protocol)
        if direction != "egress"
        else None
    )
    ok = all(d.allowed for d in (egress, ingress) if d is not None)
    return Verdict(allowed=ok, egress=egress, ingress=ingress)
