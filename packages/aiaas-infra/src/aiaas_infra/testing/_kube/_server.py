"""A local fake Kubernetes API server for tests: a real HTTP(S) server on a free port.

No API server can run on the test machines, so the apply path is exercised against this one. It
speaks the part of the Kubernetes REST API that aiaas and ``kubectl`` use, and is strict about
it:

- transport: HTTP/1.1 with keep-alive, request bodies framed by ``Content-Length`` or
  ``Transfer-Encoding: chunked`` (both at once, another transfer coding, a malformed chunk or
  a body over :data:`MAX_REQUEST_BODY` is refused with a ``Status`` and the connection closed);
  over TLS with ``tls=True`` (a fresh self-signed CA and a serving certificate for
  ``127.0.0.1``, ``::1`` and ``localhost``; :attr:`FakeKubeApiServer.ca_pem`, and the
  kubeconfig carries it as ``certificate-authority-data``): ``kubectl`` sends a bearer token
  only over TLS;
- discovery: ``/api``, ``/apis``, ``/apis/<group>``, ``/api/v1``, ``/apis/<group>/<version>``,
  aggregated discovery (``apidiscovery.k8s.io/v2``) when the client asks for it, with
  ``kubectl``'s short names (``cm``, ``ns``, ...); OpenAPI: ``/openapi/v3`` (every served path
  and operation, with the ``fieldValidation`` parameter, so ``kubectl`` leaves validation to
  the server) and ``/openapi/v2`` (JSON or protobuf, no definitions);

- resources: the kinds aiaas renders (see ``RESOURCES`` in ``aiaas_infra.cluster._apply``),
  namespaced and cluster-scoped, at their real paths (``/api/v1/...``,
  ``/apis/<group>/<version>/...``);
- verbs: get, list (``labelSelector``; ``fieldSelector`` on ``metadata.name`` and
  ``metadata.namespace``), create (POST), update (PUT, ``resourceVersion``
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

    with FakeKubeApiServer(tls=True) as kube:  # for kubectl
        kube.write_kubeconfig(tmp_path / "kubeconfig")
        subprocess.run(["kubectl", "--kubeconfig", str(tmp_path / "kubeconfig"), "get", "ns"])
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import json
import os
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiaas_infra.cluster._apply import (
    _BY_KIND,
    _BY_PLURAL,
    ResourceType,
)
from aiaas_infra.testing._kube._discovery import (
    _AGGREGATED,
    _OPENAPI_V2_PROTOBUF,
    _OPENAPI_V2_PROTOBUF_TYPE,
    _DiscoveryApi,
    _openapi_v2_protobuf,
)
from aiaas_infra.testing._kube._model import (
    SYSTEM_NAMESPACES,
    ApiCall,
    Obj,
    _ApiError,
    _classify,
    _not_found,
    _now,
    _parse_body,
    _Stored,
    _Validators,
)
from aiaas_infra.testing._kube._storage import _ObjectStore
from aiaas_infra.testing._kube._tokens import _TokenApi
from aiaas_infra.testing._kube._transport import _HttpServer, _make_handler, _tls_material

__all__ = ["FakeKubeApiServer"]


class FakeKubeApiServer(_TokenApi, _ObjectStore, _DiscoveryApi):
    """A fake Kubernetes API server in a thread (see the module docs for what it enforces).

    ``crds`` is a directory of CustomResourceDefinition YAML files to install (their schemas
    validate custom resources; ``aiaas_infra.packaged_crds_dir()`` holds the ArgoCD and
    SealedSecret ones); without it, no custom kind but PrometheusRule is served, as on a new
    cluster; ``clock`` returns the current time (token expiry);
    ``namespaces`` exist from the start (add ``argocd`` and ``monitoring`` to stand for a
    cluster where Argo CD and kube-prometheus-stack are installed); ``tls`` serves HTTPS with
    a fresh self-signed CA (:attr:`ca_pem`, written into :meth:`kubeconfig`), which
    ``kubectl`` needs: it sends no bearer token over plain HTTP.
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
        tls: bool = False,
    ) -> None:
        self._validators = _Validators(Path(crds) if crds is not None else None, kubernetes_version)
        self._host, self._port = host, port
        self._ca_pem: bytes | None = None
        self._tls: ssl.SSLContext | None = None
        if tls:
            self._ca_pem, self._tls = _tls_material(host)
        self.clock = clock
        self.admin_token = secrets.token_urlsafe(24)
        self._signing_key = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._objects: dict[tuple[ResourceType, str | None, str], _Stored] = {}
        self._rv = 0
        self._revoked: set[str] = set()
        self._issued: list[Obj] = []
        self.calls: list[ApiCall] = []
        self._server: _HttpServer | None = None
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
        self._server = _HttpServer((self._host, self._port), handler, self._tls)
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
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    @property
    def ca_pem(self) -> bytes:
        """The PEM certificate of the CA that signed the server's certificate (TLS only)."""
        if self._ca_pem is None:
            raise RuntimeError(
                "the fake API server serves plain HTTP and has no CA; create it with tls=True"
            )
        return self._ca_pem

    def kubeconfig(
        self,
        *,
        token: str | None = None,
        user: str = "aiaas-admin",
        namespace: str | None = None,
    ) -> Obj:
        """A kubeconfig document for this server (the admin token unless ``token``; over TLS
        with the CA as ``certificate-authority-data``; ``namespace``: the context's)."""
        cluster: Obj = {"server": self.url}
        if self._ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        context: Obj = {"cluster": "fake", "user": user}
        if namespace is not None:
            context["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, namespace: str | None = None
    ) -> Path:
        """Write :meth:`kubeconfig` to ``path`` (mode 0600: it holds a token)."""
        import yaml  # noqa: PLC0415

        p = Path(path)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(yaml.safe_dump(self.kubeconfig(token=token, namespace=namespace)))
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

    def _respond(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        """:meth:`handle`, encoded, with the response's content type."""
        status, out = self.handle(method, raw_path, headers, body)
        if out.get("kind") == "APIGroupDiscoveryList":
            return status, json.dumps(out).encode(), _AGGREGATED
        if (
            status == 200
            and out.get("swagger") == "2.0"
            and _OPENAPI_V2_PROTOBUF in headers.get("accept", "")
        ):
            return status, _openapi_v2_protobuf(), _OPENAPI_V2_PROTOBUF_TYPE
        return status, json.dumps(out).encode(), "application/json"

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
        if method == "GET" and (len(parts) <= 3 or parts[0] == "openapi"):
            with self._lock:
                if parts[0] == "openapi":
                    found = self._openapi(parts[1:])
                else:
                    found = self._discovery(parts, headers.get("accept", ""))
            if found is not None:
                return "discovery", 200, found
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
                    return (
                        "list",
                        200,
                        self._list(
                            rt, namespace, query.get("labelSelector"), query.get("fieldSelector")
                        ),
                    )
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
