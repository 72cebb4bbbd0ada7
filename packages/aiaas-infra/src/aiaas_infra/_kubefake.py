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

- resources: the kinds aiaas renders (see :data:`RESOURCES`), namespaced and cluster-scoped, at
  their real paths (``/api/v1/...``, ``/apis/<group>/<version>/...``);
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
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import socket
import ssl
import tempfile
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
    RESOURCES,
    FieldPath,
    ResourceType,
    _get,
    _owned_view,
)

__all__ = ["SYSTEM_NAMESPACES", "ApiCall", "FakeKubeApiServer"]

Obj = dict[str, Any]


_TOKEN_MIN_SECONDS: Final = 600
#: The largest request body the fake reads (the real API server's limit is 3 MiB).
MAX_REQUEST_BODY: Final = 3 * 1024 * 1024
_MAX_CHUNK_LINE: Final = 4096


@attrs.frozen
class ApiCall:
    """One request the fake answered: the verb (get, list, create, update, apply, delete,
    token, tokenreview, discovery), the path, and the status code."""

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


# -- TLS ------------------------------------------------------------------------------------


def _tls_material(host: str) -> tuple[bytes, ssl.SSLContext]:
    """A fresh self-signed CA (PEM) and a server context whose certificate it signed, valid
    for ``127.0.0.1``, ``::1``, ``localhost`` and ``host``; the keys never touch the disk
    beyond a private temporary file read back at once."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiaas-fake-kube-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if host and extra not in names:
        names.append(extra)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # no HTTP/2: kubectl falls back to HTTP/1.1
    with tempfile.TemporaryDirectory(prefix="aiaas-fake-kube-") as tmp:
        chain = Path(tmp) / "server.pem"
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                + cert.public_bytes(pem)
            )
        context.load_cert_chain(chain)
    return ca.public_bytes(pem), context


class _HttpServer(ThreadingHTTPServer):
    """The threaded HTTP server, over TLS when given a context: the handshake runs in the
    connection's own thread (a client that never completes it holds up nobody), and a
    connection a client breaks or abandons is not an error."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is None:
            return sock, addr
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys  # noqa: PLC0415

        if isinstance(sys.exc_info()[1], OSError):  # ssl.SSLError, resets, timeouts
            return
        super().handle_error(request, client_address)  # pragma: no cover - a fake's own bug


class FakeKubeApiServer:
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

    def _list(
        self,
        rt: ResourceType,
        namespace: str | None,
        selector: str | None,
        field_selector: str | None = None,
    ) -> Obj:
        match = _selector(selector)
        fields = _field_selector(field_selector)
        items = []
        for (r, ns, _n), s in sorted(
            self._objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2])
        ):
            if r != rt or (namespace is not None and ns != namespace):
                continue
            if not match(dict(s.obj["metadata"].get("labels") or {})):
                continue
            if not fields({"metadata.name": _n, "metadata.namespace": ns or ""}):
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


def _classify(method: str, path: str) -> str:
    """The verb of a request, from its method and path shape (what an audit log records)."""
    if path.endswith("/tokenreviews"):
        return "tokenreview"
    if method == "POST" and path.endswith("/token"):
        return "token"
    if method == "GET":
        parts = path.strip("/").split("/")
        if (
            parts[:1] == ["openapi"]
            or (parts[:1] == ["api"] and len(parts) <= 2)
            or (parts[:1] == ["apis"] and len(parts) <= 3)
        ):
            return "discovery"
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


def _field_selector(text: str | None) -> Callable[[Mapping[str, str]], bool]:
    """A field selector (``metadata.name=x,metadata.namespace!=y``): the fields every kind
    supports on a real server; any other field is a 400, as there."""
    terms: list[tuple[bool, str, str]] = []  # (equal, field, value)
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        equal = "!=" not in term
        field, sep, value = term.replace("!=", "=").replace("==", "=").partition("=")
        field = field.strip()
        if not sep or field not in ("metadata.name", "metadata.namespace"):
            raise _ApiError(
                400,
                "BadRequest",
                f'unable to parse requirement: field label not supported: "{field}" (the '
                "fake API server selects on metadata.name and metadata.namespace)",
            )
        terms.append((equal, field, value.strip()))

    def match(values: Mapping[str, str]) -> bool:
        return all((values.get(f) == v) == equal for equal, f, v in terms)

    return match


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


class _FramingError(Exception):
    """A request whose body cannot be read: answered with ``status`` and the connection
    closed (what follows on it cannot be trusted to start a new request)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.error = _ApiError(status, reason, message)


class _TruncatedError(Exception):
    """The client closed the connection before the whole body arrived."""


def _read_exact(rfile: Any, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) < size:
        raise _TruncatedError
    return bytes(data)


def _read_chunked(rfile: Any, limit: int) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (RFC 9112 section 7.1): chunks, then trailers up
    to the blank line, which are read and dropped."""
    body = bytearray()
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise _TruncatedError
        if len(line) > _MAX_CHUNK_LINE or not line.endswith(b"\n"):
            raise _FramingError(400, "BadRequest", "a chunk-size line is too long")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise _FramingError(
                400, "BadRequest", f"invalid chunk size {size_text[:32]!r} in a chunked body"
            )
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise _FramingError(
                413,
                "RequestEntityTooLarge",
                f"the request body is larger than the limit of {limit} bytes",
            )
        body += _read_exact(rfile, size)
        if rfile.readline(3).rstrip(b"\r\n") != b"":
            raise _FramingError(400, "BadRequest", "a chunk is longer than its chunk size says")
    for _ in range(100):  # trailer fields, then the empty line
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line:
            raise _TruncatedError
        if line in (b"\r\n", b"\n"):
            return bytes(body)
    raise _FramingError(400, "BadRequest", "too many trailer fields after a chunked body")


def _read_body(headers: Any, rfile: Any, limit: int = MAX_REQUEST_BODY) -> bytes:
    """The request body, framed by ``Transfer-Encoding: chunked`` or ``Content-Length``."""
    codings = [
        c.strip().lower()
        for value in headers.get_all("Transfer-Encoding") or []
        for c in value.split(",")
        if c.strip()
    ]
    lengths = headers.get_all("Content-Length") or []
    if codings:
        if lengths:  # RFC 9112 section 6.3: a request smuggling attempt, refused
            raise _FramingError(
                400,
                "BadRequest",
                "a request may not carry both Transfer-Encoding and Content-Length",
            )
        if codings != ["chunked"]:
            raise _FramingError(
                501,
                "NotImplemented",
                f"transfer coding {', '.join(codings)!r} is not supported; send the body "
                "with Content-Length or Transfer-Encoding: chunked",
            )
        return _read_chunked(rfile, limit)
    if not lengths:
        return b""
    values = {v.strip() for v in lengths}
    text = values.pop()
    if values or not text.isdigit() or not text.isascii():
        raise _FramingError(400, "BadRequest", "invalid Content-Length header")
    size = int(text)
    if size > limit:
        raise _FramingError(
            413,
            "RequestEntityTooLarge",
            f"the request body is larger than the limit of {limit} bytes",
        )
    return _read_exact(rfile, size) if size else b""


def _make_handler(server: FakeKubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # an idle keep-alive connection (or a stalled handshake) is dropped

        def setup(self) -> None:
            super().setup()
            # one response is headers + body: do not let Nagle hold the body for an ACK
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests read server.calls instead

        def _send(self, status: int, data: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            try:
                raw = _read_body(self.headers, self.rfile)
            except _TruncatedError:
                self.close_connection = True
                return
            except _FramingError as exc:
                self.close_connection = True
                self._send(exc.error.code, json.dumps(exc.error.body()).encode())
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, content_type = server._respond(self.command, self.path, headers, raw)
            self._send(status, body, content_type)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    return Handler
