"""API discovery (plain and aggregated, with kubectl's short names) and OpenAPI v2/v3 of the
fake Kubernetes API server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Final

from aiaas_infra.cluster._apply import (
    RESOURCES,
    ResourceType,
)
from aiaas_infra.testing._kube._model import (
    Obj,
    _KubeBase,
)
from aiaas_infra.testing._kube._transport import _HttpServer

__all__: list[str] = []


# -- discovery ------------------------------------------------------------------------------

#: ``kubectl`` short names (``kubectl get cm``), as the real server and the CRDs declare them.
_SHORT_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "namespaces": ("ns",),
    "serviceaccounts": ("sa",),
    "configmaps": ("cm",),
    "services": ("svc",),
    "resourcequotas": ("quota",),
    "limitranges": ("limits",),
    "networkpolicies": ("netpol",),
    "deployments": ("deploy",),
    "horizontalpodautoscalers": ("hpa",),
    "poddisruptionbudgets": ("pdb",),
    "applications": ("app", "apps"),
    "applicationsets": ("appset", "appsets"),
    "appprojects": ("appproj", "appprojs"),
    "prometheusrules": ("promrule",),
}
_VERBS: Final = ("create", "delete", "get", "list", "patch", "update")
_AGGREGATED: Final = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
#: Served besides :data:`RESOURCES`: TokenReview (create only).
_TOKEN_REVIEW: Final = ResourceType(
    "authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False
)


def _wants_aggregated(accept: str) -> bool:
    """Whether the client asks for aggregated discovery (``apidiscovery.k8s.io/v2``)."""
    for media in accept.split(","):
        params = {
            k.strip().lower(): v.strip()
            for k, _, v in (p.partition("=") for p in media.split(";")[1:])
        }
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
            return params.get("as") == "APIGroupDiscoveryList"
    return False


def _resource_entry(rt: ResourceType) -> Obj:
    """The legacy discovery entry (``APIResource``) of one resource."""
    entry: Obj = {
        "name": rt.plural,
        "singularName": rt.kind.lower(),
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": ["create"] if rt is _TOKEN_REVIEW else list(_VERBS),
    }
    if rt.plural in _SHORT_NAMES:
        entry["shortNames"] = list(_SHORT_NAMES[rt.plural])
    return entry


def _aggregated_entry(rt: ResourceType) -> Obj:
    """The aggregated discovery entry (``APIResourceDiscovery``) of one resource."""
    entry: Obj = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.kind.lower(),
        "verbs": ["create"] if rt is _TOKEN_REVIEW else list(_VERBS),
    }
    if rt.plural in _SHORT_NAMES:
        entry["shortNames"] = list(_SHORT_NAMES[rt.plural])
    if rt.kind == "ServiceAccount":
        entry["subresources"] = [
            {
                "subresource": "token",
                "responseKind": {
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                },
                "verbs": ["create"],
            }
        ]
    return entry


_OPENAPI_INFO: Final = {"title": "Kubernetes (aiaas fake)", "version": "v1.31.0"}
#: What clients accept (``...spec.v2@v1.0+protobuf``) and the server answers (``@`` is not
#: allowed in a media type, so the real server answers ``...spec.v2.v1.0+protobuf``).
_OPENAPI_V2_PROTOBUF: Final = "application/com.github.proto-openapi.spec.v2"
_OPENAPI_V2_PROTOBUF_TYPE: Final = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _query(name: str, description: str) -> Obj:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _openapi_v3(rts: Iterable[ResourceType]) -> Obj:
    """The OpenAPI v3 document of one group-version: paths and operations, no schemas."""
    validation = _query("fieldValidation", "Strict: unknown or duplicate fields are errors.")
    manager = _query("fieldManager", "The name of the actor making the change.")
    paths: Obj = {}
    for rt in rts:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        scoped: list[Obj] = []
        if rt.namespaced:
            scoped.append(
                {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
            )

        def op(action: str, *params: Obj, gvk: Obj = gvk) -> Obj:
            return {
                "operationId": f"{action}{gvk['kind']}",
                "parameters": list(params),
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }

        collection = rt.path("{namespace}" if rt.namespaced else None)
        if rt.plural == "tokenreviews":
            paths[collection] = {"post": op("post", validation, manager)}
            continue
        paths[collection] = {
            "parameters": scoped,
            "get": op("list", _query("labelSelector", "Select by labels.")),
            "post": op("post", validation, manager),
        }
        name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        paths[rt.path("{namespace}" if rt.namespaced else None, "{name}")] = {
            "parameters": [name, *scoped],
            "get": op("get"),
            "put": op("put", validation, manager),
            "patch": op("patch", validation, manager, _query("force", "Take over conflicts.")),
            "delete": op("delete"),
        }
    return {
        "openapi": "3.0.0",
        "info": _OPENAPI_INFO,
        "paths": paths,
        "components": {"schemas": {}},
    }


def _protobuf_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    out = bytearray([number << 3 | 2])
    size = len(payload)
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def _openapi_v2_protobuf() -> bytes:
    """``/openapi/v2`` as the gnostic ``openapi_v2.Document`` protobuf older kubectl
    releases only read: ``swagger`` (1) and ``info`` (2: ``title`` 1, ``version`` 2); no
    definitions, so client-side validation finds no schema and leaves it to the server."""
    info = _protobuf_field(1, _OPENAPI_INFO["title"].encode()) + _protobuf_field(
        2, _OPENAPI_INFO["version"].encode()
    )
    return _protobuf_field(1, b"2.0") + _protobuf_field(2, info)


class _DiscoveryApi(_KubeBase):
    """Discovery and OpenAPI documents for what the server serves."""

    _server: _HttpServer | None

    # -- discovery --------------------------------------------------------------------------

    def _served(self) -> dict[tuple[str, str], list[ResourceType]]:
        """The resources this cluster serves, by (group, version), in a stable order."""
        out: dict[tuple[str, str], list[ResourceType]] = {}
        for rt in (*RESOURCES, _TOKEN_REVIEW):
            if rt is _TOKEN_REVIEW or self._validators.installed(rt):
                out.setdefault((rt.group, rt.version), []).append(rt)
        return dict(sorted(out.items()))

    def _discovery(self, parts: list[str], accept: str) -> Obj | None:
        """A discovery document for ``/api``, ``/apis``, ``/apis/<group>``,
        ``/api/v1`` or ``/apis/<group>/<version>``; ``None`` for any other path."""
        served = self._served()
        groups: dict[str, list[str]] = {}
        for group, version in served:
            groups.setdefault(group, []).append(version)
        if parts in (["api"], ["apis"]):
            core = parts == ["api"]
            if _wants_aggregated(accept):
                items = []
                for group, versions in groups.items():
                    if (group == "") != core:
                        continue
                    items.append(
                        {
                            "metadata": {"name": group} if group else {},
                            "versions": [
                                {
                                    "version": v,
                                    "resources": [
                                        _aggregated_entry(rt) for rt in served[(group, v)]
                                    ],
                                    "freshness": "Current",
                                }
                                for v in versions
                            ],
                        }
                    )
                return {
                    "apiVersion": "apidiscovery.k8s.io/v2",
                    "kind": "APIGroupDiscoveryList",
                    "metadata": {},
                    "items": items,
                }
            if core:
                host, port = self._server.server_address[:2] if self._server else ("", 0)
                return {
                    "kind": "APIVersions",
                    "versions": groups.get("", []),
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{host!s}:{port}"}
                    ],
                }
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(g, vs) for g, vs in groups.items() if g],
            }
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups and parts[1]:
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                **self._group(parts[1], groups[parts[1]]),
            }
        key = ("", parts[1]) if parts[:1] == ["api"] and len(parts) == 2 else None
        if parts[:1] == ["apis"] and len(parts) == 3:
            key = (parts[1], parts[2])
        if key is None or key not in served:
            return None
        resources = [_resource_entry(rt) for rt in served[key]]
        if key == ("", "v1"):
            resources.append(
                {
                    "name": "serviceaccounts/token",
                    "singularName": "",
                    "namespaced": True,
                    "group": "authentication.k8s.io",
                    "version": "v1",
                    "kind": "TokenRequest",
                    "verbs": ["create"],
                }
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{key[0]}/{key[1]}" if key[0] else key[1],
            "resources": resources,
        }

    def _openapi(self, parts: list[str]) -> Obj | None:
        """``/openapi/v2`` (no definitions: the fake validates on the server), the
        ``/openapi/v3`` index, and ``/openapi/v3/<api|apis/group>/<version>``: every path and
        operation served, each tagged with its kind, with the query parameters the fake
        takes (``fieldValidation`` among them, which tells kubectl to leave validation to the
        server)."""
        if parts == ["v2"]:
            return {
                "swagger": "2.0",
                "info": _OPENAPI_INFO,
                "paths": {},
                "definitions": {},
            }
        served = self._served()
        if parts == ["v3"]:
            index: Obj = {}
            for (group, version), rts in served.items():
                key = f"apis/{group}/{version}" if group else f"api/{version}"
                text = json.dumps(_openapi_v3(rts), sort_keys=True).encode()
                digest = hashlib.sha512(text).hexdigest()[:32].upper()
                index[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            return {"paths": index}
        chosen: list[ResourceType] | None = None
        if parts[:2] == ["v3", "api"] and len(parts) == 3:
            chosen = served.get(("", parts[2]))
        elif parts[:2] == ["v3", "apis"] and len(parts) == 4:
            chosen = served.get((parts[2], parts[3]))
        return None if chosen is None else _openapi_v3(chosen)

    @staticmethod
    def _group(group: str, versions: list[str]) -> Obj:
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}
