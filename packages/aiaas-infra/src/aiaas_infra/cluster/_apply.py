"""Apply a rendered object set to a cluster: server-side apply, in order, idempotently, pruning.

``bootstrap`` renders the platform (:func:`aiaas_infra.cluster._gitops.render_platform`) and applies
it; :func:`apply_objects` applies any ordered list of manifests. Through kubernetes-asyncio:

1. one ``list`` per kind aiaas manages (label ``app.kubernetes.io/managed-by=aiaas``, all
   namespaces) reads what is live;
2. each desired object, in apply order (namespaces, RBAC, policies, secrets, apps), is
   server-side applied (``PATCH application/apply-patch+yaml``, field manager ``aiaas``,
   ``force``) unless it is live as last applied from this very configuration (annotation
   ``aiaas.dev/applied-config``, a digest of the rendered object) and nobody changed any of
   its fields since, in which case no call is made;
3. with ``prune``, live objects aiaas owns (the label *and* an ``aiaas`` managed-fields entry,
   no owner references) that are no longer rendered are deleted (reverse order, with a
   ``resourceVersion`` precondition; what is inside a pruned namespace goes with it).

So a no-op re-bootstrap costs one list per managed kind and nothing else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_core import AiaasError

if TYPE_CHECKING:
    from aiaas_infra.secrets._secrets import SealedStore
    from aiaas_infra.spec._model import PlatformSpec

__all__ = [
    "RESOURCES",
    "BootstrapError",
    "BootstrapReport",
    "ObjectResult",
    "ResourceType",
    "apply_objects",
    "bootstrap",
    "resource_for",
]

FieldPath = tuple[str, ...]


@attrs.frozen
class ResourceType:
    """One REST resource: its group/version, kind, plural and scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    builtin: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name is not None else base


#: The resources aiaas renders and applies, in apply order.
RESOURCES: Final[tuple[ResourceType, ...]] = (
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", namespaced=True),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", namespaced=True),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False
    ),
    ResourceType("", "v1", "ResourceQuota", "resourcequotas", namespaced=True),
    ResourceType("", "v1", "LimitRange", "limitranges", namespaced=True),
    ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True),
    ResourceType("bitnami.com", "v1alpha1", "SealedSecret", "sealedsecrets", True, False),
    ResourceType("", "v1", "Secret", "secrets", namespaced=True),
    ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True),
    ResourceType("argoproj.io", "v1alpha1", "AppProject", "appprojects", True, False),
    ResourceType("argoproj.io", "v1alpha1", "ApplicationSet", "applicationsets", True, False),
    ResourceType("argoproj.io", "v1alpha1", "Application", "applications", True, False),
    ResourceType("apps", "v1", "Deployment", "deployments", namespaced=True),
    ResourceType("", "v1", "Service", "services", namespaced=True),
    ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ResourceType("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", True, False),
)

_BY_KIND: Final = {(r.api_version, r.kind): r for r in RESOURCES}
_BY_PLURAL: Final = {(r.group, r.version, r.plural): r for r in RESOURCES}


def resource_for(api_version: str, kind: str) -> ResourceType:
    """The :class:`ResourceType` of ``apiVersion``/``kind``; ``KeyError`` if aiaas does not
    know it."""
    return _BY_KIND[(api_version, kind)]


_SERVER_META: Final = frozenset(
    {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"}
)


def _flatten(obj: Mapping[str, Any], prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    """Leaf paths of an object: maps are descended, lists and scalars are leaves."""
    out: dict[FieldPath, Any] = {}
    for key, value in obj.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def _owned_view(obj: Mapping[str, Any]) -> dict[FieldPath, Any]:
    """The fields a manager can own: everything but identity, server-set metadata and status."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {
        k: v
        for k, v in dict(body.pop("metadata", {}) or {}).items()
        if k not in _SERVER_META and k not in ("name", "namespace")
    }
    if meta:
        body["metadata"] = meta
    return _flatten(body)


def _get(obj: Mapping[str, Any], path: FieldPath) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return _MISSING
        cur = cur[key]
    return cur


_MISSING: Final = object()


FIELD_MANAGER: Final = "aiaas"
#: The digest of the configuration aiaas last applied to an object.
APPLIED_ANNOTATION: Final = "aiaas.dev/applied-config"
MANAGED_BY: Final = ("app.kubernetes.io/managed-by", "aiaas")
#: Never listed nor pruned: the controller makes Secrets from SealedSecrets (and listing
#: Secrets would read their data). Other controller-made objects (Applications from an
#: ApplicationSet) are left alone because aiaas does not own them (owner references, and no
#: ``aiaas`` field manager).
_NEVER_PRUNED: Final = frozenset({"Secret"})
_RANK: Final = {(r.api_version, r.kind): i for i, r in enumerate(RESOURCES)}

Action = Literal[
    "created",
    "configured",
    "unchanged",
    "pruned",
    "would-create",
    "would-configure",
    "would-prune",
]
Key = tuple[str, str, str | None, str]  # apiVersion, kind, namespace, name


class BootstrapError(AiaasError):
    """The cluster refused an operation; ``report`` says what was done before it, ``api_status``
    is the HTTP status and ``causes`` the API server's field causes."""

    code = "BOOTSTRAP_FAILED"
    status = 502
    title = "Bootstrap failed"

    def __init__(
        self,
        message: str,
        *,
        report: BootstrapReport | None = None,
        api_status: int | None = None,
        causes: Sequence[str] = (),
    ) -> None:
        self.report = report
        self.api_status = api_status
        self.causes = tuple(causes)
        super().__init__(message)


@attrs.frozen
class ObjectResult:
    """What happened to one object."""

    kind: str
    namespace: str | None
    name: str
    action: Action

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}: {self.action}"


@attrs.frozen
class BootstrapReport:
    """The outcome of a bootstrap: one result per object, and the API calls it took."""

    results: tuple[ObjectResult, ...]
    api_calls: int
    calls_by_verb: Mapping[str, int]
    dry_run: bool = False
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for r in self.results if r.action == action)

    @property
    def changed(self) -> bool:
        """Whether anything was (or, in a dry run, would be) created, changed or pruned."""
        return any(r.action != "unchanged" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        actions = sorted({r.action for r in self.results})
        return {
            "dry_run": self.dry_run,
            "changed": self.changed,
            "api_calls": self.api_calls,
            "calls_by_verb": dict(sorted(self.calls_by_verb.items())),
            "summary": {a: self.count(a) for a in actions},
            "objects": [
                {"kind": r.kind, "namespace": r.namespace, "name": r.name, "action": r.action}
                for r in self.results
            ],
        }


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def _config_hash(obj: Mapping[str, Any]) -> str:
    """A digest of an object as aiaas renders it (recorded in :data:`APPLIED_ANNOTATION`)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _with_hash(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with the digest of its applied configuration as an annotation."""
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_ANNOTATION: _config_hash(obj)}
    return out


def _in_sync(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether ``live`` was last applied by aiaas from this very configuration (its
    :data:`APPLIED_ANNOTATION` matches) and still holds every desired value (no drift).

    The annotation stands for the field set aiaas owns: a field aiaas stopped applying
    changes the digest, so the object is applied and the server removes the field. This
    holds on a real API server too, whose managedFields encode lists by key.
    """
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    want = (desired.get("metadata") or {}).get("annotations") or {}
    if annotations.get(APPLIED_ANNOTATION) != want.get(APPLIED_ANNOTATION):
        return False
    for path, value in _owned_view(desired).items():
        got = _get(live, path)
        if got is _MISSING or got != value:
            return False
    return True


def _owned_by_aiaas(live: Mapping[str, Any]) -> bool:
    meta = live.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY[0]) != MANAGED_BY[1]:
        return False
    if meta.get("ownerReferences"):
        return False
    return any(m.get("manager") == FIELD_MANAGER for m in meta.get("managedFields") or [])


class _Kube:
    """The few calls bootstrap makes, through kubernetes-asyncio's ApiClient, counted."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.calls: dict[str, int] = {}

    async def _call(self, verb: str, path: str, method: str, **kwargs: Any) -> Any:
        self.calls[verb] = self.calls.get(verb, 0) + 1
        return await self.api.call_api(
            path,
            method,
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            **kwargs,
        )

    async def list(self, rt: ResourceType, selector: str) -> list[dict[str, Any]] | None:
        """Items of a kind (``apiVersion``/``kind`` filled in), or ``None`` if the cluster
        does not serve it (a CRD not installed)."""
        from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

        try:
            data = await self._call(
                "list",
                rt.path(),
                "GET",
                query_params=[("labelSelector", selector)],
                header_params={"Accept": "application/json"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        items = []
        for item in data.get("items") or []:
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
            items.append(item)
        return items

    async def apply(self, rt: ResourceType, obj: Mapping[str, Any], force: bool) -> Any:
        meta = obj["metadata"]
        return await self._call(
            "apply",
            rt.path(meta.get("namespace"), meta["name"]),
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER), ("force", str(force).lower())],
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            body=dict(obj),
        )

    async def delete(self, rt: ResourceType, live: Mapping[str, Any]) -> Any:
        meta = live["metadata"]
        return await self._call(
            "delete",
            rt.path(meta.get("namespace"), meta["name"]),
            "DELETE",
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "propagationPolicy": "Background",
                "preconditions": {"resourceVersion": meta["resourceVersion"]},
            },
        )


async def _client(kube: Any) -> tuple[Any, bool]:
    """An ApiClient from a kubeconfig path, a kubeconfig dict, or an ApiClient itself (which
    the caller keeps and closes)."""
    from kubernetes_asyncio import config  # noqa: PLC0415

    if isinstance(kube, str | Path):
        return await config.new_client_from_config(
            config_file=str(kube), persist_config=False
        ), True
    if isinstance(kube, Mapping):
        return await config.new_client_from_config_dict(config_dict=dict(kube)), True
    return kube, False


def _ordered(objects: Iterable[Any]) -> list[tuple[ResourceType, dict[str, Any]]]:
    out: list[tuple[ResourceType, dict[str, Any]]] = []
    seen: set[Key] = set()
    problems: list[str] = []
    for i, obj in enumerate(objects):
        try:
            rt = resource_for(obj["apiVersion"], obj["kind"])
            name = obj["metadata"]["name"]
        except (KeyError, TypeError):
            problems.append(
                f"objects[{i}]: {obj.get('apiVersion')}/{obj.get('kind')} is not a kind "
                "aiaas applies, or has no metadata.name"
                if isinstance(obj, Mapping)
                else f"objects[{i}]: not a mapping"
            )
            continue
        namespace = obj["metadata"].get("namespace")
        if rt.namespaced and not namespace:
            problems.append(f"{rt.kind} {name}: namespaced, but has no metadata.namespace")
        if not rt.namespaced and namespace:
            problems.append(f"{rt.kind} {name}: cluster-scoped, but has a namespace")
        key = _key(obj)
        if key in seen:
            problems.append(f"{rt.kind} {namespace or ''}/{name}: listed twice")
        seen.add(key)
        out.append((rt, dict(obj)))
    if problems:
        raise BootstrapError(
            "cannot apply the object set:\n  - " + "\n  - ".join(problems), causes=problems
        )
    return sorted(out, key=lambda item: _RANK[(item[0].api_version, item[0].kind)])


def _api_error(exc: Any, doing: str, report: BootstrapReport) -> BootstrapError:

    message, causes = str(exc.reason), []
    try:
        status = json.loads(exc.body)
        message = status.get("message", message)
        causes = [
            f"{c.get('field', '')}: {c.get('message', '')}"
            for c in (status.get("details") or {}).get("causes") or []
        ]
    except (TypeError, ValueError):
        pass
    return BootstrapError(
        f"{doing} failed (HTTP {exc.status}): {message}",
        report=report,
        api_status=exc.status,
        causes=causes,
    )


async def apply_objects(
    objects: Iterable[Mapping[str, Any]],
    kube: Any,
    *,
    prune: bool = True,
    dry_run: bool = False,
    force: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BootstrapReport:
    """Server-side apply ``objects`` (any order; applied in aiaas's apply order) to the
    cluster ``kube`` (a kubeconfig path or dict, or a kubernetes-asyncio ``ApiClient``).

    ``force`` takes fields over from other managers (as ``kubectl apply --server-side
    --force-conflicts``); without it a conflict fails the bootstrap. ``dry_run`` lists and
    reports without writing. Raises :class:`BootstrapError` (with the report so far) when the
    cluster refuses a write.
    """
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    started = time.perf_counter()
    desired = [(rt, _with_hash(obj)) for rt, obj in _ordered(objects)]
    api, owned = await _client(kube)
    k = _Kube(api)
    results: list[ObjectResult] = []

    def report() -> BootstrapReport:
        return BootstrapReport(
            tuple(results),
            sum(k.calls.values()),
            dict(k.calls),
            dry_run,
            time.perf_counter() - started,
        )

    try:
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        live: dict[Key, dict[str, Any]] = {}
        served: set[str] = set()
        kinds = [r for r in RESOURCES if r.kind not in _NEVER_PRUNED]
        wanted = {rt for rt, _ in desired}
        kinds += [r for r in wanted if r not in kinds]
        for rt in kinds:
            try:
                items = await k.list(rt, selector)
            except ApiException as exc:
                raise _api_error(exc, f"listing {rt.plural}", report()) from None
            if items is None:
                continue
            served.add(rt.kind)
            live.update((_key(item), item) for item in items)
        total = len(desired)
        for done, (rt, obj) in enumerate(desired, start=1):
            key = _key(obj)
            current = live.get(key)
            meta = obj["metadata"]
            label = f"{rt.kind} {meta.get('namespace') or ''}/{meta['name']}".replace(" /", " ")
            if current is not None and _in_sync(obj, current):
                action: Action = "unchanged"
            elif dry_run:
                action = "would-configure" if current is not None else "would-create"
            else:
                if rt.kind not in served:
                    raise BootstrapError(
                        f"the cluster does not serve {rt.api_version} {rt.kind}: install its "
                        "CRD (sealed-secrets, Argo CD, Prometheus Operator) first",
                        report=report(),
                        api_status=404,
                    )
                try:
                    applied = await k.apply(rt, obj, force)
                except ApiException as exc:
                    raise _api_error(exc, f"applying {label}", report()) from None
                if current is None:
                    action = "created"
                elif applied["metadata"].get("resourceVersion") == current["metadata"].get(
                    "resourceVersion"
                ):
                    action = "unchanged"
                else:
                    action = "configured"
            results.append(ObjectResult(rt.kind, meta.get("namespace"), meta["name"], action))
            if on_progress is not None:
                on_progress(done, total, label)
        if prune:
            await _prune(k, desired, live, results, dry_run, report)
    finally:
        if owned:
            await api.close()
    return report()


async def _prune(  # noqa: PLR0917 -- internal
    k: _Kube,
    desired: list[tuple[ResourceType, dict[str, Any]]],
    live: Mapping[Key, dict[str, Any]],
    results: list[ObjectResult],
    dry_run: bool,
    report: Callable[[], BootstrapReport],
) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException  # noqa: PLC0415

    keep = {_key(obj) for _rt, obj in desired}
    gone = [
        (resource_for(key[0], key[1]), obj)
        for key, obj in live.items()
        if key not in keep and key[1] not in _NEVER_PRUNED and _owned_by_aiaas(obj)
    ]
    pruned_namespaces = {obj["metadata"]["name"] for rt, obj in gone if rt.kind == "Namespace"}
    gone.sort(key=lambda item: _RANK[(item[0].api_version, item[0].kind)], reverse=True)
    for rt, obj in gone:
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        if namespace in pruned_namespaces:  # goes with its namespace
            results.append(
                ObjectResult(
                    rt.kind, namespace, meta["name"], "would-prune" if dry_run else "pruned"
                )
            )
            continue
        if not dry_run:
            try:
                await k.delete(rt, obj)
            except ApiException as exc:
                if exc.status != 404:  # already gone is what we wanted
                    where = f"{namespace}/" if namespace else ""
                    raise _api_error(
                        exc, f"pruning {rt.kind} {where}{meta['name']}", report()
                    ) from None
        results.append(
            ObjectResult(rt.kind, namespace, meta["name"], "would-prune" if dry_run else "pruned")
        )


async def bootstrap(
    spec: PlatformSpec,
    kube: Any,
    *,
    sealed: SealedStore | None = None,
    prune: bool = True,
    dry_run: bool = False,
    force: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BootstrapReport:
    """Render the platform (``render_platform(spec, sealed=sealed)``) and apply it with
    :func:`apply_objects`."""
    from aiaas_infra.cluster._gitops import render_platform  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    rendered = render_platform(spec, sealed=sealed)
    return await apply_objects(
        rendered.objects,
        kube,
        prune=prune,
        dry_run=dry_run,
        force=force,
        on_progress=on_progress,
    )
