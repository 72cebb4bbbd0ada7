"""A local fake Kubernetes API server for tests: a real HTTP server on a free port.

No API server can run on the test machines, so the apply path is exercised against this one. It
speaks the part of the Kubernetes REST API that aiaas uses, and is strict about it:

- resources: the kinds aiaas renders (see :data:`RESOURCES`), namespaced and cluster-scoped, at
  their real paths (``/api/v1/...``, ``/apis/<group>/<version>/...``);
- verbs: get, list (``labelSelector``), create (POST), update (PUT, ``resourceVersion``
  required and compared), server-side apply (PATCH ``application/apply-patch+yaml`` with
  ``fieldManager`` and ``force``; field ownership per manager in ``managedFields``, conflicts
  answered 409 unless forced, fields a manager stops applying removed, a no-op apply changes
  nothing and keeps the ``resourceVersion``), delete (``preconditions.resourceVersion``;
  deleting a namespace deletes what is in it);
- errors as ``Status`` bodies: 400, 401, 404 (``NotFound``), 409 (``AlreadyExists``,
  ``Conflict``), 415, 422 (``Invalid`` with causes);
- validation of every object it accepts: core kinds against the official schemas
  (``kubernetes-validate``, strict: unknown fields are errors), custom resources against their
  CRD's ``openAPIV3Schema`` (jsonschema, unknown fields are errors unless the schema preserves
  them); a custom kind whose CRD is not installed is a 404, as on a real cluster;
- ``TokenRequest`` (``POST .../serviceaccounts/<name>/token``) issuing signed, expiring tokens
  bound to the ServiceAccount's uid (deleting the ServiceAccount invalidates them), TokenReview
  (``POST /apis/authentication.k8s.io/v1/tokenreviews``), and ``/aiaas-test/tokens`` to list
  (GET) and revoke (DELETE ``?namespace=&serviceaccount=``) tokens;
- every API call counted (:attr:`FakeKubeApiServer.calls`).

Authentication is a bearer token (the admin token in :meth:`FakeKubeApiServer.kubeconfig`, or
a valid ServiceAccount token); RBAC is not enforced. List items carry ``apiVersion``/``kind``
only for custom resources, as the real server does.

::

    with FakeKubeApiServer(crds=aiaas_infra.packaged_crds_dir()) as kube:
        kube.write_kubeconfig(tmp_path / "kubeconfig")
        ...
        assert kube.call_counts()["apply"] == 12
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import hashlib
import hmac
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs, urlsplit

import attrs

from aiaas_infra._kubeapply import (
    _BY_KIND,
    _BY_PLURAL,
    _MISSING,
    _SERVER_META,
    FieldPath,
    ResourceType,
    _get,
    _owned_view,
)

__all__ = ["SYSTEM_NAMESPACES", "ApiCall", "FakeKubeApiServer"]

Obj = dict[str, Any]


_TOKEN_MIN_SECONDS: Final = 600


@attrs.frozen
class ApiCall:
    """One request the fake answered: the verb (get, list, create, update, apply, delete,
    token, tokenreview), the path, and the status code."""

    method: str
    path: str
    verb: str
    status: int


class _ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


# -- field sets (server-side apply) -----------------------------------------------------------


def _set(obj: Obj, path: FieldPath, value: Any) -> None:
    cur = obj
    for key in path[:-1]:
        if not isinstance(cur.get(key), dict):
            cur[key] = {}
        cur = cur[key]
    cur[path[-1]] = copy.deepcopy(value)


def _delete(obj: Obj, path: FieldPath) -> None:
    parents: list[tuple[Obj, str]] = []
    cur: Any = obj
    for key in path[:-1]:
        if not isinstance(cur, dict) or key not in cur:
            return
        parents.append((cur, key))
        cur = cur[key]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps left empty
        if parent[key] == {}:
            del parent[key]


def _fields_v1(paths: set[FieldPath]) -> Obj:
    out: Obj = {}
    for path in sorted(paths):
        cur = out
        for key in path:
            cur = cur.setdefault(f"f:{key}", {})
    return out


def _dotted(path: FieldPath) -> str:
    return "." + ".".join(path)


# -- validation -------------------------------------------------------------------------------


class _Validators:
    """Admission: the same strict validators ``render`` uses (:mod:`aiaas_infra._validate`)."""

    _shared: ClassVar[dict[tuple[Path | None, str], Any]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, crds: Path | None, kubernetes_version: str) -> None:
        from aiaas_infra._validate import ManifestValidator  # noqa: PLC0415

        key = (crds.resolve() if crds is not None else None, kubernetes_version)
        with self._shared_lock:  # compiled schemas are costly: share them between servers
            if key not in self._shared:
                self._shared[key] = ManifestValidator(
                    crds_dir=crds, kubernetes_version=kubernetes_version
                )
            self._validator = self._shared[key]
        self._custom = {
            *self._validator.custom_kinds,
            ("monitoring.coreos.com/v1", "PrometheusRule"),
        }

    def installed(self, rt: ResourceType) -> bool:
        """Whether the cluster serves ``rt`` (a custom kind needs its CRD)."""
        return rt.builtin or (rt.api_version, rt.kind) in self._custom

    def problems(self, obj: Obj) -> list[Obj]:
        """Causes (``{"field", "message", "reason"}``) why ``obj`` is invalid; empty if valid."""
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_META}
        problems = self._validator.validate({**obj, "metadata": meta})
        return [_cause(p.path, p.message) for p in problems]


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> Obj:
    return {"field": field, "message": message, "reason": reason}


# -- the store --------------------------------------------------------------------------------


@attrs.define
class _Stored:
    obj: Obj
    managers: dict[str, tuple[str, set[FieldPath]]]  # manager -> (operation, fields)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The namespaces a new cluster has.
SYSTEM_NAMESPACES: Final = ("default", "kube-node-lease", "kube-public", "kube-system")


class FakeKubeApiServer:
    """A fake Kubernetes API server in a thread (see the module docs for what it enforces).

    ``crds`` is a directory of CustomResourceDefinition YAML files to install (their schemas
    validate custom resources; ``aiaas_infra.packaged_crds_dir()`` holds the ArgoCD and
    SealedSecret ones); without it, no custom kind but PrometheusRule is served, as on a new
    cluster; ``clock`` returns the current time (token expiry);
    ``namespaces`` exist from the start (add ``argocd`` and ``monitoring`` to stand for a
    cluster where Argo CD and kube-prometheus-stack are installed).
    """

    def __init__(
        self,
        *,
        crds: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        kubernetes_version: str = "1.31",
        clock: Callable[[], dt.datetime] = _now,
        namespaces: Iterable[str] = SYSTEM_NAMESPACES,
    ) -> None:
        self._validators = _Validators(Path(crds) if crds is not None else None, kubernetes_version)
        self._host, self._port = host, port
        self.clock = clock
        self.admin_token = secrets.token_urlsafe(24)
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._objects: dict[tuple[ResourceType, str | None, str], _Stored] = {}
        self._rv = 0
        self._revoked: set[str] = set()
        self._issued: list[Obj] = []
        self.calls: list[ApiCall] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for namespace in namespaces:
            self._create(
                _BY_KIND[("v1", "Namespace")],
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                "kube-apiserver",
            )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeKubeApiServer:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-kube-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake API server is not running; call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self, *, token: str | None = None, user: str = "aiaas-admin") -> Obj:
        """A kubeconfig document for this server (the admin token unless ``token``)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user}}],
            "current-context": "fake",
        }

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        import yaml  # noqa: PLC0415

        p = Path(path)
        p.write_text(yaml.safe_dump(self.kubeconfig(token=token)), encoding="utf-8")
        return p

    # -- inspection (not counted) -----------------------------------------------------------

    def call_counts(self) -> collections.Counter[str]:
        """API calls per verb since the last :meth:`reset_calls`."""
        with self._lock:
            return collections.Counter(c.verb for c in self.calls)

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[Obj]:
        """Copies of the stored objects (optionally of one kind / namespace), in a stable
        order."""
        with self._lock:
            found = [
                copy.deepcopy(s.obj)
                for (rt, ns, _name), s in self._objects.items()
                if (kind is None or rt.kind == kind) and (namespace is None or ns == namespace)
            ]
        return sorted(
            found,
            key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )

    def get_object(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        with self._lock:
            for (rt, ns, n), s in self._objects.items():
                if rt.kind == kind and n == name and ns == namespace:
                    return copy.deepcopy(s.obj)
        return None

    def put_object(self, obj: Obj, *, manager: str = "kubectl-edit") -> Obj:
        """Store ``obj`` as if another client updated it (``Update`` by ``manager``): test
        setup for drift and conflicts. Validated like any write."""
        rt = self._resource_of(obj)
        meta = obj.get("metadata", {})
        with self._lock:
            existing = self._objects.get((rt, meta.get("namespace"), meta["name"]))
            body = copy.deepcopy(obj)
            if existing is not None:
                body["metadata"]["resourceVersion"] = existing.obj["metadata"]["resourceVersion"]
                return self._update(rt, meta.get("namespace"), meta["name"], body, manager)
            return self._create(rt, meta.get("namespace"), body, manager)

    # -- tokens -----------------------------------------------------------------------------

    def tokens(self) -> list[Obj]:
        """Every token issued: namespace, serviceaccount, expirationTimestamp, valid."""
        with self._lock:
            return [
                {
                    **{k: v for k, v in t.items() if k != "token"},
                    "valid": self._token_user(t["token"]) is not None,
                }
                for t in self._issued
            ]

    def revoke_tokens(self, namespace: str, serviceaccount: str) -> int:
        """Revoke every token of a ServiceAccount; returns how many."""
        with self._lock:
            hits = [
                t
                for t in self._issued
                if t["namespace"] == namespace and t["serviceaccount"] == serviceaccount
            ]
            self._revoked.update(t["token"] for t in hits)
            return len(hits)

    def review_token(self, token: str) -> str | None:
        """The username a token authenticates as, or ``None`` (bad, expired, revoked, or its
        ServiceAccount was deleted)."""
        with self._lock:
            return self._token_user(token)

    def _sign(self, payload: Obj) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(payload, sort_keys=True).encode())
        sig = hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"

    def _token_user(self, token: str) -> str | None:
        if token == self.admin_token:
            return "aiaas-admin"
        parts = token.split(".")
        if len(parts) != 3 or token in self._revoked:
            return None
        expected = self._sign_check(parts[0], parts[1])
        if not hmac.compare_digest(expected, parts[2]):
            return None
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        if payload["exp"] <= self.clock().timestamp():
            return None
        sa = payload["kubernetes.io"]["serviceaccount"]
        ns = payload["kubernetes.io"]["namespace"]
        live = self._objects.get((_BY_KIND[("v1", "ServiceAccount")], ns, sa["name"]))
        if live is None or live.obj["metadata"]["uid"] != sa["uid"]:
            return None
        return str(payload["sub"])

    def _sign_check(self, head: str, body: str) -> str:
        sig = hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(sig).rstrip(b"=").decode()

    def _token_request(self, namespace: str, name: str, body: Obj) -> Obj:
        sa = self._objects.get((_BY_KIND[("v1", "ServiceAccount")], namespace, name))
        if sa is None:
            raise _not_found("serviceaccounts", name)
        spec = dict(body.get("spec") or {})
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or seconds < _TOKEN_MIN_SECONDS:
            raise _invalid(
                "TokenRequest",
                name,
                [
                    _cause(
                        "spec.expirationSeconds",
                        f"may not specify a duration less than {_TOKEN_MIN_SECONDS} seconds",
                    )
                ],
            )
        now = self.clock()
        expires = now + dt.timedelta(seconds=seconds)
        audiences = list(spec.get("audiences") or ["https://kubernetes.default.svc"])
        token = self._sign(
            {
                "iss": "https://kubernetes.default.svc",
                "sub": f"system:serviceaccount:{namespace}:{name}",
                "aud": audiences,
                "iat": int(now.timestamp()),
                "exp": int(expires.timestamp()),
                "jti": uuid.uuid4().hex,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": name, "uid": sa.obj["metadata"]["uid"]},
                },
            }
        )
        self._issued.append(
            {
                "namespace": namespace,
                "serviceaccount": name,
                "expirationTimestamp": _ts(expires),
                "token": token,
            }
        )
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": _ts(expires)},
        }

    # -- storage ----------------------------------------------------------------------------

    def _resource_of(self, obj: Obj) -> ResourceType:
        try:
            return _BY_KIND[(obj["apiVersion"], obj["kind"])]
        except KeyError:
            raise _ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource "
                f"({obj.get('apiVersion')}, {obj.get('kind')})",
            ) from None

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if rt.namespaced and (_BY_KIND[("v1", "Namespace")], None, namespace) not in self._objects:
            raise _not_found("namespaces", str(namespace))

    def _admit(self, rt: ResourceType, obj: Obj, name: str) -> None:
        causes = self._validators.problems(obj)
        if causes:
            raise _invalid(rt.kind, name, causes)

    def _render_managed(self, stored: _Stored, when: str) -> None:
        stored.obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": op,
                "apiVersion": stored.obj["apiVersion"],
                "time": when,
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(fields),
            }
            for manager, (op, fields) in sorted(stored.managers.items())
            if fields
        ]

    def _create(self, rt: ResourceType, namespace: str | None, body: Obj, manager: str) -> Obj:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise _invalid(rt.kind, "", [_cause("metadata.name", "Required value: name")])
        key = (rt, namespace, name)
        if key in self._objects:
            raise _ApiError(
                409,
                "AlreadyExists",
                f'{rt.plural} "{name}" already exists',
                details={"name": name, "kind": rt.plural},
            )
        self._check_namespace(rt, namespace)
        for server_field in _SERVER_META:
            meta.pop(server_field, None)
        if rt.namespaced:
            meta["namespace"] = namespace
        when = _ts(self.clock())
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=when,
            generation=1,
        )
        stored = _Stored(body, {manager: ("Update", set(_owned_view(body)))})
        self._render_managed(stored, when)
        self._admit(rt, body, name)
        self._objects[key] = stored
        return copy.deepcopy(body)

    def _update(
        self, rt: ResourceType, namespace: str | None, name: str, body: Obj, manager: str
    ) -> Obj:
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            raise _not_found(rt.plural, name)
        meta = body.setdefault("metadata", {})
        rv = meta.get("resourceVersion")
        if not rv:
            raise _invalid(
                rt.kind,
                name,
                [
                    _cause(
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if rv != stored.obj["metadata"]["resourceVersion"]:
            raise _conflict(rt, name)
        old_view = _owned_view(stored.obj)
        new_view = _owned_view(body)
        changed = {
            p
            for p in set(old_view) | set(new_view)
            if old_view.get(p, _MISSING) != new_view.get(p, _MISSING)
        }
        managers = {
            m: (op, {p for p in f if p not in changed and p in new_view})
            for m, (op, f) in stored.managers.items()
            if m != manager
        }
        managers[manager] = ("Update", set(new_view))
        return self._commit(rt, namespace, name, stored, body, managers)

    def _commit(  # noqa: PLR0917 -- internal
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        stored: _Stored,
        body: Obj,
        managers: dict[str, tuple[str, set[FieldPath]]],
    ) -> Obj:
        old_meta = stored.obj["metadata"]
        meta = body["metadata"]
        for keep in ("uid", "creationTimestamp"):
            meta[keep] = old_meta[keep]
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        if _owned_view(body) == _owned_view(stored.obj) and {
            m: v for m, v in managers.items() if v[1]
        } == {m: v for m, v in stored.managers.items() if v[1]}:
            return copy.deepcopy(stored.obj)  # a no-op: nothing changes, not even the version
        spec_changed = body.get("spec") != stored.obj.get("spec")
        meta["generation"] = old_meta.get("generation", 1) + (1 if spec_changed else 0)
        meta["resourceVersion"] = self._next_rv()
        new = _Stored(body, managers)
        self._render_managed(new, _ts(self.clock()))
        self._admit(rt, body, name)
        self._objects[(rt, namespace, name)] = new
        return copy.deepcopy(body)

    def _apply(  # noqa: PLR0917 -- internal
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Obj,
        manager: str,
        force: bool,
    ) -> tuple[int, Obj]:
        if patch.get("apiVersion") != rt.api_version or patch.get("kind") != rt.kind:
            raise _ApiError(
                400,
                "BadRequest",
                f"apply patch apiVersion/kind {patch.get('apiVersion')}/{patch.get('kind')} "
                f"does not match the resource {rt.api_version}/{rt.kind}",
            )
        meta = patch.get("metadata") or {}
        if meta.get("name") != name:
            raise _ApiError(
                400,
                "BadRequest",
                "the name of the object "
                f"({meta.get('name')}) does not match the name on the URL ({name})",
            )
        if rt.namespaced and meta.get("namespace", namespace) != namespace:
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the object does not match the namespace on the request",
            )
        if any(f in meta for f in ("managedFields",)):
            raise _ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        applied = _owned_view(patch)
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            body = copy.deepcopy(patch)
            self._check_namespace(rt, namespace)
            created = self._create(rt, namespace, body, manager)
            entry = self._objects[(rt, namespace, name)]
            entry.managers = {manager: ("Apply", set(applied))}
            self._render_managed(entry, created["metadata"]["creationTimestamp"])
            return 201, copy.deepcopy(entry.obj)
        live = stored.obj
        conflicts: list[tuple[str, FieldPath]] = []
        for other, (_op, fields) in stored.managers.items():
            if other != manager:
                conflicts += [
                    (other, p) for p in fields & set(applied) if _get(live, p) != applied[p]
                ]
        if conflicts and not force:
            raise _ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict"
                f"{'s' if len(conflicts) > 1 else ''}: "
                + "; ".join(f'conflict with "{m}": {_dotted(p)}' for m, p in sorted(conflicts)),
                details={
                    "name": name,
                    "kind": rt.plural,
                    "causes": [
                        {
                            "reason": "FieldManagerConflict",
                            "message": f'conflict with "{m}"',
                            "field": _dotted(p),
                        }
                        for m, p in sorted(conflicts)
                    ],
                },
            )
        taken = {p for _m, p in conflicts}
        managers = {
            m: (op, fields - taken) for m, (op, fields) in stored.managers.items() if m != manager
        }
        others = set().union(*(f for _op, f in managers.values())) if managers else set()
        body = copy.deepcopy(live)
        previous = stored.managers.get(manager, ("Apply", set()))[1]
        for path in previous - set(applied) - others:
            _delete(body, path)
        for path, value in applied.items():
            _set(body, path, value)
        managers[manager] = ("Apply", set(applied))
        return 200, self._commit(rt, namespace, name, stored, body, managers)

    def _delete_object(self, rt: ResourceType, namespace: str | None, name: str, body: Obj) -> Obj:
        stored = self._objects.get((rt, namespace, name))
        if stored is None:
            raise _not_found(rt.plural, name)
        pre = dict(body.get("preconditions") or {})
        if (
            "resourceVersion" in pre
            and pre["resourceVersion"] != stored.obj["metadata"]["resourceVersion"]
        ):
            raise _conflict(rt, name)
        if "uid" in pre and pre["uid"] != stored.obj["metadata"]["uid"]:
            raise _conflict(rt, name)
        del self._objects[(rt, namespace, name)]
        if rt.kind == "Namespace":
            for key in [k for k in self._objects if k[1] == name]:
                del self._objects[key]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": rt.plural, "uid": stored.obj["metadata"]["uid"]},
        }

    def _list(self, rt: ResourceType, namespace: str | None, selector: str | None) -> Obj:
        match = _selector(selector)
        items = []
        for (r, ns, _n), s in sorted(
            self._objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
        ):
            if r != rt or (namespace is not None and ns != namespace):
                continue
            if not match(dict(s.obj["metadata"].get("labels") or {})):
                continue
            item = copy.deepcopy(s.obj)
            if rt.builtin:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            items.append(item)
        return {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # -- request dispatch -------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Obj]:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        path = split.path.rstrip("/")
        if path.startswith("/aiaas-test/"):
            return self._test_endpoint(method, path, query)
        verb = _classify(method, path)
        status = 500
        try:
            _verb, status, out = self._dispatch(method, path, query, headers, body)
            return status, out
        except _ApiError as exc:
            status = exc.code
            return exc.code, exc.body()
        except Exception as exc:  # noqa: BLE001 -- a fake's bug must show as a 500, not a hang
            status = 500
            return 500, _ApiError(500, "InternalError", f"fake API server: {exc!r}").body()
        finally:
            with self._lock:
                self.calls.append(ApiCall(method, path, verb, status))

    def _test_endpoint(self, method: str, path: str, query: Mapping[str, str]) -> tuple[int, Obj]:
        if path == "/aiaas-test/tokens" and method == "GET":
            return 200, {"items": self.tokens()}
        if path == "/aiaas-test/tokens" and method == "DELETE":
            n = self.revoke_tokens(query.get("namespace", ""), query.get("serviceaccount", ""))
            return 200, {"revoked": n}
        return 404, _ApiError(404, "NotFound", "no such test endpoint").body()

    def _dispatch(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        raw: bytes,
    ) -> tuple[str, int, Obj]:
        if path == "/version" and method == "GET":
            return "get", 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-aiaas-fake"}
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with self._lock:
            user = self._token_user(token) if token else None
        if user is None:
            raise _ApiError(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        body = _parse_body(raw, headers) if raw else {}
        if (group, version, rest) == ("authentication.k8s.io", "v1", ["tokenreviews"]):
            if method != "POST":
                raise _ApiError(405, "MethodNotAllowed", "only create is allowed")
            with self._lock:
                who = self._token_user(str((body.get("spec") or {}).get("token", "")))
            status: Obj = {"authenticated": who is not None}
            if who is not None:
                status["user"] = {"username": who}
            return (
                "tokenreview",
                201,
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "metadata": {},
                    "spec": body.get("spec", {}),
                    "status": status,
                },
            )
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = _BY_PLURAL.get((group, version, rest[0]))
        if rt is None or not self._validators.installed(rt):
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) >= 3 else None
        if rt.namespaced and name is not None and namespace is None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rt.namespaced and namespace is not None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        with self._lock:
            if sub is not None:
                if (rt.kind, sub, method) == ("ServiceAccount", "token", "POST") and name:
                    return "token", 201, self._token_request(str(namespace), name, body)
                raise _ApiError(404, "NotFound", "the server could not find the requested resource")
            if name is None:
                if method == "GET":
                    return "list", 200, self._list(rt, namespace, query.get("labelSelector"))
                if method == "POST":
                    if rt.namespaced and namespace is None:
                        raise _ApiError(
                            404, "NotFound", "the server could not find the requested resource"
                        )
                    self._check_identity(rt, body)
                    if (
                        rt.namespaced
                        and body.get("metadata", {}).get("namespace", namespace) != namespace
                    ):
                        raise _ApiError(
                            400,
                            "BadRequest",
                            "the namespace of the provided "
                            "object does not match the namespace sent on the request",
                        )
                    manager = query.get("fieldManager", "unknown")
                    return "create", 201, self._create(rt, namespace, body, manager)
                raise _ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
            if method == "GET":
                stored = self._objects.get((rt, namespace, name))
                if stored is None:
                    raise _not_found(rt.plural, name)
                return "get", 200, copy.deepcopy(stored.obj)
            if method == "PUT":
                self._check_identity(rt, body)
                if body.get("metadata", {}).get("name") != name:
                    raise _ApiError(
                        400,
                        "BadRequest",
                        "the name of the object does not match the name on the URL",
                    )
                manager = query.get("fieldManager", "unknown")
                return "update", 200, self._update(rt, namespace, name, body, manager)
            if method == "PATCH":
                ctype = headers.get("content-type", "").split(";")[0].strip()
                if ctype != "application/apply-patch+yaml":
                    raise _ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the fake supports server-side apply only, not {ctype}",
                    )
                manager = query.get("fieldManager", "")
                if not manager:
                    raise _ApiError(
                        400,
                        "BadRequest",
                        "PatchOptions.meta.k8s.io "
                        '"" is invalid: fieldManager: Required value: is required '
                        "for apply patch",
                    )
                force = query.get("force", "false") == "true"
                code, out = self._apply(rt, namespace, name, body, manager, force)
                return "apply", code, out
            if method == "DELETE":
                return "delete", 200, self._delete_object(rt, namespace, name, body)
        raise _ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    @staticmethod
    def _check_identity(rt: ResourceType, body: Obj) -> None:
        # like the real server: a body without apiVersion/kind takes the endpoint's
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        if body.get("apiVersion") != rt.api_version or body.get("kind") != rt.kind:
            raise _ApiError(
                400,
                "BadRequest",
                f"the object is {body.get('apiVersion')}/"
                f"{body.get('kind')}, not {rt.api_version}/{rt.kind}",
            )


def _classify(method: str, path: str) -> str:
    """The verb of a request, from its method and path shape (what an audit log records)."""
    if path.endswith("/tokenreviews"):
        return "tokenreview"
    if method == "POST" and path.endswith("/token"):
        return "token"
    if method == "GET":
        parts = path.strip("/").split("/")
        depth = len(parts) - (2 if parts[:1] == ["api"] else 3)  # segments after the version
        return "list" if depth in (1, 3) else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "apply", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _parse_body(raw: bytes, headers: Mapping[str, str]) -> Obj:
    ctype = headers.get("content-type", "")
    try:
        if "yaml" in ctype:
            import yaml  # noqa: PLC0415

            doc = yaml.safe_load(raw)
        else:
            doc = json.loads(raw)
    except ValueError as exc:
        raise _ApiError(400, "BadRequest", f"the request body is not valid: {exc}") from None
    if not isinstance(doc, dict):
        raise _ApiError(400, "BadRequest", "the request body must be an object")
    return doc


def _not_found(plural: str, name: str) -> _ApiError:
    return _ApiError(
        404, "NotFound", f'{plural} "{name}" not found', details={"name": name, "kind": plural}
    )


def _conflict(rt: ResourceType, name: str) -> _ApiError:
    return _ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "kind": rt.plural},
    )


def _invalid(kind: str, name: str, causes: list[Obj]) -> _ApiError:
    summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes[:5])
    return _ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {summary}',
        details={"name": name, "kind": kind, "causes": causes},
    )


def _selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """An equality/existence label selector (``a=b,c!=d,e,!f``)."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif term.startswith("!"):
            terms.append(("!", term[1:].strip(), ""))
        else:
            terms.append(("exists", term, ""))

    def match(labels: Mapping[str, str]) -> bool:
        for op, key, value in terms:
            ok = {
                "!=": labels.get(key) != value,
                "=": labels.get(key) == value,
                "!": key not in labels,
                "exists": key in labels,
            }[op]
            if not ok:
                return False
        return True

    return match


def _make_handler(server: FakeKubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # one response is headers + body: do not let Nagle hold the body for an ACK
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests read server.calls instead

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = server.handle(self.command, self.path, headers, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    return Handler
