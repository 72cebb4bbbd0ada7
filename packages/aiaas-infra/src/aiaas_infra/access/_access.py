"""Access packages: short-lived, namespace-confined credentials for one environment and role.

::

    async with ApiClient(admin_configuration) as kube:
        package = await issue_access(
            spec, "staging", "app-team", ttl=timedelta(hours=4), kube=kube, out_dir=Path("pkg")
        )
        ...
        await revoke_access(spec, "staging", package.package_id, kube=kube)

A package is a directory (every file mode 0600, the directory 0700):

==========================  =================================================================
``kubeconfig``              one context, confined to the environment's namespace, holding a
                            ServiceAccount token from the TokenRequest API
``rbac.json``               the role's rules, as cluster bootstrap renders the Role
``observability-links.json`` the environment's dashboard, metrics and alert links
``handoff-package.json``    the ``HandoffPackage`` document (contracts/service-handoff-openapi.yaml)
``package.json``            what ``access revoke --package DIR`` needs (no secret)
==========================  =================================================================

Rules, checked before anything is sent to the cluster (:class:`AccessRequestError`, each with
its own code): the environment must be in the spec (``ACCESS_ENVIRONMENT_UNKNOWN``), the role
one of ``platform-engineer``, ``app-team``, ``read-only``, ``break-glass``
(``ACCESS_ROLE_UNKNOWN``); the TTL at least 10 minutes (the TokenRequest minimum) and at most
24 h, 8 h in production (``ACCESS_TTL_INVALID`` / ``ACCESS_TTL_TOO_LONG``); break-glass only with
an incident id (``ACCESS_INCIDENT_REQUIRED``); the spec must name ``access.api_server``
(``ACCESS_NOT_CONFIGURED``). While an environment is locked for maintenance only
platform-engineer and break-glass packages are issued (:class:`EnvironmentLockedError`).

How revocation really works
---------------------------
Tokens from the TokenRequest API are not stored by Kubernetes, so they cannot be deleted; the
API server instead checks, on every request, that the object a token is bound to still exists
with the UID the token names. Each package therefore gets its *own* ServiceAccount
(``access-<role>-<id>``, bound to the environment's ``<role>`` Role by a RoleBinding of the same
name): :func:`revoke_access` deletes both, which invalidates that package's token at once and
touches no other package. The ServiceAccount is labelled
``app.kubernetes.io/managed-by: aiaas-access`` (not ``aiaas``), so bootstrap's pruning leaves
live packages alone, and annotated with the expiry, the issuer and the incident. The token is
requested with ``expirationSeconds`` = the TTL; if the API server answers with a later expiry
than asked for, the package is refused and its ServiceAccount deleted.

Audit: ``access_package_issued`` and ``access_package_revoked`` events (``audit: true``) through
:mod:`aiaas_infra.provision._events`, with the package id, environment, role, expiry and incident.
The
token is never in an event, a log line, an error or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_core import AiaasError, NotFoundError, ValidationError
from aiaas_infra.access._handoff import (
    ACCESS_ROLES,
    EnvironmentLockedError,
    EnvironmentNotFoundError,
    handoff_document,
    is_production,
    max_ttl,
    observability_links,
)

if TYPE_CHECKING:
    from aiaas_infra.provision._events import EventSink
    from aiaas_infra.spec._model import PlatformSpec

__all__ = [
    "MIN_TTL",
    "AccessPackage",
    "AccessRequestError",
    "AccessRevocation",
    "KubeApiError",
    "PackageNotFoundError",
    "check_access_request",
    "issue_access",
    "kubeconfig_document",
    "read_package",
    "revoke_access",
    "revoke_package",
]

logger = logging.getLogger("aiaas.infra")

#: The shortest token the TokenRequest API issues (``expirationSeconds`` >= 600).
MIN_TTL: Final = timedelta(minutes=10)
MANAGED_BY: Final = "aiaas-access"
PACKAGE_FILES: Final = (
    "kubeconfig",
    "rbac.json",
    "observability-links.json",
    "handoff-package.json",
    "package.json",
)
_INCIDENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/#-]{1,63}")
_PACKAGE_ID: Final = re.compile(r"[a-f0-9]{8}")
# Leeway for clock skew between us and the API server when checking the token's expiry.
_EXPIRY_SLACK: Final = timedelta(seconds=60)


class AccessRequestError(ValidationError):
    """An access request breaks a rule; nothing was sent to the cluster. ``code`` says which."""

    code = "ACCESS_REQUEST_INVALID"
    title = "Invalid access request"


class PackageNotFoundError(NotFoundError):
    """No such access package (it was never issued here, or has been revoked)."""

    code = "ACCESS_PACKAGE_NOT_FOUND"
    title = "Access package not found"


class KubeApiError(AiaasError):
    """The Kubernetes API refused a request. ``api_status`` is its HTTP status."""

    code = "KUBE_API_ERROR"
    status = 502
    title = "Kubernetes API error"

    def __init__(self, message: str, *, api_status: int | None = None) -> None:
        self.api_status = api_status
        super().__init__(message)


@attrs.frozen
class AccessPackage:
    """An issued package: where it was written and what it grants (never the token)."""

    package_id: str
    environment: str
    namespace: str
    role: str
    service_account: str
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    directory: Path
    incident: str | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.directory / name for name in PACKAGE_FILES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "packageId": self.package_id,
            "environment": self.environment,
            "namespace": self.namespace,
            "role": self.role,
            "serviceAccount": self.service_account,
            "issuedAt": _iso(self.issued_at),
            "expiresAt": _iso(self.expires_at),
            "issuedBy": self.issued_by,
            "incident": self.incident,
            "directory": str(self.directory),
        }


@attrs.frozen
class AccessRevocation:
    """The outcome of :func:`revoke_access`: ``already_revoked`` when nothing was left."""

    package_id: str
    environment: str
    namespace: str
    service_account: str
    revoked_at: datetime
    revoked_by: str
    already_revoked: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "packageId": self.package_id,
            "environment": self.environment,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "revokedAt": _iso(self.revoked_at),
            "revokedBy": self.revoked_by,
            "alreadyRevoked": self.already_revoked,
            "reason": self.reason,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _human(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "") if hours else f"{minutes} min"


def check_access_request(
    spec: PlatformSpec,
    env: str,
    role: str,
    *,
    ttl: timedelta | None = None,
    incident: str | None = None,
) -> timedelta:
    """Check a request against the rules (see the module documentation); returns the TTL to
    use (the longest allowed when ``ttl`` is None). Raises :class:`AccessRequestError` or
    :class:`EnvironmentLockedError`."""
    if env not in spec.environments:
        raise AccessRequestError(
            f"unknown environment {env!r}: the spec declares {', '.join(spec.environments)}",
            code="ACCESS_ENVIRONMENT_UNKNOWN",
        )
    if role not in ACCESS_ROLES:
        raise AccessRequestError(
            f"unknown role {role!r}: use one of {', '.join(ACCESS_ROLES)}",
            code="ACCESS_ROLE_UNKNOWN",
        )
    if role == "break-glass" and not incident:
        raise AccessRequestError(
            "break-glass access needs an incident id: pass --incident <id> (for example INC-1234)",
            code="ACCESS_INCIDENT_REQUIRED",
        )
    if incident is not None and not _INCIDENT.fullmatch(incident):
        raise AccessRequestError(
            "the incident id must be 2-64 letters, digits and . _ : / # - (for example INC-1234)",
            code="ACCESS_INCIDENT_INVALID",
        )
    longest = max_ttl(spec, env, role)
    chosen = longest if ttl is None else ttl
    if chosen < MIN_TTL:
        raise AccessRequestError(
            f"the TTL must be at least {_human(MIN_TTL)} (the TokenRequest minimum), "
            f"got {_human(chosen) if chosen.total_seconds() > 0 else str(chosen)}",
            code="ACCESS_TTL_INVALID",
        )
    if chosen > longest:
        where = "production " if is_production(spec, env) and role != "break-glass" else ""
        raise AccessRequestError(
            f"the TTL {_human(chosen)} is too long: {where}{role} packages for {env} live at "
            f"most {_human(longest)}",
            code="ACCESS_TTL_TOO_LONG",
        )
    locked = spec.environments[env].maintenance
    if locked.locked and role not in ("platform-engineer", "break-glass"):
        raise EnvironmentLockedError(
            f"Environment {env} is locked for maintenance ({locked.reason}); only "
            "platform-engineer and break-glass packages are issued until it is unlocked"
        )
    if spec.access is None:
        raise AccessRequestError(
            "the spec names no API server for access packages: add access.api_server "
            "(https://...) to the spec",
            code="ACCESS_NOT_CONFIGURED",
        )
    return chosen


def kubeconfig_document(
    *,
    cluster: str,
    server: str,
    namespace: str,
    user: str,
    token: str,
    ca_data: bytes | None,
    context: str,
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one token user and one namespace-confined context."""
    cluster_entry: dict[str, Any] = {"server": server}
    if ca_data is not None:
        cluster_entry["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": cluster, "user": user, "namespace": namespace}}
        ],
        "current-context": context,
    }


def _role_rules(spec: PlatformSpec, env: str, role: str) -> list[dict[str, Any]]:
    """The rules of ``role``'s Role as cluster bootstrap renders it."""
    from aiaas_infra.cluster._gitops import render_environment  # noqa: PLC0415

    for obj in render_environment(spec, env):
        if obj.get("kind") == "Role" and obj.get("metadata", {}).get("name") == role:
            rules: list[dict[str, Any]] = obj.get("rules", [])
            return rules
    raise AccessRequestError(  # pragma: no cover - bootstrap renders every access role
        f"the rendered environment {env} has no Role {role!r}", code="ACCESS_ROLE_UNKNOWN"
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _check_empty(out: Path) -> str:
    """Refuse a non-empty directory; return the directory's file:// URI."""
    if out.exists() and any(out.iterdir()):
        raise AccessRequestError(
            f"{out} is not empty: give a new directory for the package",
            code="ACCESS_OUTPUT_NOT_EMPTY",
        )
    return out.resolve().as_uri()


def _write_package(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.chmod(0o700)
    for name, text in files.items():
        _write_private(out / name, text)


def _record_revocation(directory: Path, meta: dict[str, Any]) -> None:
    _write_private(directory / "package.json", _dump(meta))
    (directory / "kubeconfig").unlink(missing_ok=True)


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _api_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _failures() -> tuple[type[BaseException], ...]:
    """What a Kubernetes API call raises when it fails: an API error, or a transport error."""
    import aiohttp  # noqa: PLC0415
    from kubernetes_asyncio import client  # noqa: PLC0415

    return (client.ApiException, aiohttp.ClientError, TimeoutError)


def _kube_error(what: str, exc: BaseException) -> KubeApiError:
    status = _api_status(exc)
    reason = getattr(exc, "reason", None)
    # The API's response body is left out: it can echo the request (and so a token).
    detail = f" ({status} {reason})" if status is not None else f" ({type(exc).__name__})"
    return KubeApiError(f"the Kubernetes API refused to {what}{detail}", api_status=status)


def _emitter(spec: PlatformSpec, actor: str | None, sink: EventSink | None) -> Any:
    from aiaas_infra.provision._events import Emitter, default_actor  # noqa: PLC0415

    return Emitter(
        run_id=uuid.uuid4().hex,
        actor=actor or default_actor(),
        platform=spec.name,
        sink=sink,
    )


def _ca_from(kube: Any) -> bytes | None:
    path = getattr(getattr(kube, "configuration", None), "ssl_ca_cert", None)
    if not path:
        return None
    return Path(path).read_bytes()


async def issue_access(
    spec: PlatformSpec,
    env: str,
    role: str,
    *,
    kube: Any,
    out_dir: Path,
    ttl: timedelta | None = None,
    incident: str | None = None,
    ca_data: bytes | None = None,
    package_base_url: str | None = None,
    actor: str | None = None,
    on_event: EventSink | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AccessPackage:
    """Issue an access package for ``role`` in ``env`` into ``out_dir`` (see the module
    documentation). ``kube`` is a ``kubernetes_asyncio.client.ApiClient`` with rights to manage
    ServiceAccounts and RoleBindings in the environment's namespace; the package's CA is
    ``ca_data`` or the one ``kube`` trusts. ``package_base_url`` is where the directory will
    be published (its URLs go into ``handoff-package.json``; default: the directory's
    ``file://`` URI)."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    chosen = check_access_request(spec, env, role, ttl=ttl, incident=incident)
    assert spec.access is not None  # checked above
    now = (clock or (lambda: datetime.now(UTC)))()
    emitter = _emitter(spec, actor, on_event)
    namespace = spec.namespace(env)
    package_id = secrets.token_hex(4)
    name = f"access-{role}-{package_id}"
    out = Path(out_dir)
    out_uri = await asyncio.to_thread(_check_empty, out)
    rules = _role_rules(spec, env, role)
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "aiaas.dev/environment": env,
        "aiaas.dev/access-role": role,
        "aiaas.dev/access-package": package_id,
    }
    annotations = {
        "aiaas.dev/issued-by": emitter.actor,
        "aiaas.dev/issued-at": _iso(now),
        "aiaas.dev/expires-at": _iso(now + chosen),
    }
    if incident:
        annotations["aiaas.dev/incident"] = incident
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    # Bodies are plain manifests (the client serialises dicts as they are).
    core: Any = client.CoreV1Api(kube)
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    try:
        await core.create_namespaced_service_account(
            namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}
        )
    except _failures() as exc:
        raise _kube_error(f"create ServiceAccount {namespace}/{name}", exc) from None
    try:
        await rbac.create_namespaced_role_binding(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        seconds = int(chosen.total_seconds())
        answer = await core.create_namespaced_service_account_token(
            name,
            namespace,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": [], "expirationSeconds": seconds},
            },
        )
        token: str = answer.status.token
        expires_at: datetime = answer.status.expiration_timestamp
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at > now + chosen + _EXPIRY_SLACK:
            raise AccessRequestError(
                f"the API server issued a token valid until {_iso(expires_at)}, longer than "
                f"the {_human(chosen)} asked for; the package was not issued",
                code="ACCESS_TOKEN_TOO_LONG",
            )
        base = (package_base_url or out_uri).rstrip("/")
        document = handoff_document(
            spec,
            env,
            role,
            expires_at=expires_at,
            kubeconfig_url=f"{base}/kubeconfig",
            rbac_url=f"{base}/rbac.json",
        )
        package = AccessPackage(
            package_id=package_id,
            environment=env,
            namespace=namespace,
            role=role,
            service_account=name,
            issued_at=now,
            expires_at=expires_at,
            issued_by=emitter.actor,
            directory=out,
            incident=incident,
        )
        cluster = spec.cluster.label
        kubeconfig = kubeconfig_document(
            cluster=cluster,
            server=spec.access.api_server,
            namespace=namespace,
            user=name,
            token=token,
            ca_data=ca_data if ca_data is not None else await asyncio.to_thread(_ca_from, kube),
            context=f"{cluster}-{env}-{role}",
        )
        files = {
            "kubeconfig": _dump(kubeconfig),
            "rbac.json": _dump(
                {"environment": env, "namespace": namespace, "role": role, "rules": rules}
            ),
            "observability-links.json": _dump(observability_links(spec, env)),
            "handoff-package.json": _dump(document),
            "package.json": _dump(package.to_dict()),
        }
        del token, kubeconfig
        await asyncio.to_thread(_write_package, out, files)
    except BaseException as exc:
        # Leave no live credential behind: the ServiceAccount's deletion voids any token.
        try:
            await _delete(core, rbac, namespace, name)
        except KubeApiError:
            logger.warning(
                "could not delete ServiceAccount %s/%s after a failed issue; revoke it with "
                "`aiaas-infra access revoke --env %s --id %s`",
                namespace,
                name,
                env,
                package_id,
            )
        if isinstance(exc, _failures()):
            raise _kube_error(f"issue a token for {namespace}/{name}", exc) from None
        raise
    emitter.emit(
        "access_package_issued",
        message=f"access package {package_id} issued: {role} in {env} until {_iso(expires_at)}",
        audit=True,
        package_id=package_id,
        environment=env,
        namespace=namespace,
        role=role,
        service_account=name,
        expires_at=_iso(expires_at),
        ttl_s=int(chosen.total_seconds()),
        incident=incident,
    )
    return package


async def _delete(core: Any, rbac: Any, namespace: str, name: str) -> bool:
    """Delete the package's RoleBinding and ServiceAccount; True when either existed."""
    found = False
    for delete, what in (
        (rbac.delete_namespaced_role_binding, "RoleBinding"),
        (core.delete_namespaced_service_account, "ServiceAccount"),
    ):
        try:
            await delete(name, namespace)
            found = True
        except _failures() as exc:
            if _api_status(exc) != 404:
                raise _kube_error(f"delete {what} {namespace}/{name}", exc) from None
    return found


def read_package(directory: Path) -> dict[str, Any]:
    """The ``package.json`` of a package directory (what :func:`revoke_access` needs)."""
    path = Path(directory) / "package.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise PackageNotFoundError(
            f"{directory} is not an access package (no readable package.json)"
        ) from None
    return data


async def revoke_access(
    spec: PlatformSpec,
    env: str,
    package_id: str,
    *,
    kube: Any,
    reason: str = "",
    actor: str | None = None,
    on_event: EventSink | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AccessRevocation:
    """Revoke package ``package_id`` of ``env``: its ServiceAccount and RoleBinding are deleted,
    which invalidates its token at once (see the module documentation). Revoking twice is
    harmless (``already_revoked``). Emits ``access_package_revoked``."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    if env not in spec.environments:
        raise EnvironmentNotFoundError(
            f"unknown environment {env!r}: the spec declares {', '.join(spec.environments)}"
        )
    if not _PACKAGE_ID.fullmatch(package_id):
        raise AccessRequestError(
            f"{package_id!r} is not a package id (8 hex digits, as in package.json)",
            code="ACCESS_PACKAGE_ID_INVALID",
        )
    namespace = spec.namespace(env)
    # Bodies are plain manifests (the client serialises dicts as they are).
    core: Any = client.CoreV1Api(kube)
    rbac: Any = client.RbacAuthorizationV1Api(kube)
    try:
        accounts = await core.list_namespaced_service_account(
            namespace,
            label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY},"
            f"aiaas.dev/access-package={package_id}",
        )
    except _failures() as exc:
        raise _kube_error(f"list ServiceAccounts in {namespace}", exc) from None
    names = sorted(item.metadata.name for item in accounts.items)
    emitter = _emitter(spec, actor, on_event)
    found = False
    for name in names:
        found = await _delete(core, rbac, namespace, name) or found
    now = (clock or (lambda: datetime.now(UTC)))()
    service_account = names[0] if names else ""
    result = AccessRevocation(
        package_id=package_id,
        environment=env,
        namespace=namespace,
        service_account=service_account,
        revoked_at=now,
        revoked_by=emitter.actor,
        already_revoked=not found,
        reason=reason,
    )
    emitter.emit(
        "access_package_revoked",
        message=f"access package {package_id} in {env} revoked"
        + (" (it was already gone)" if not found else ""),
        audit=True,
        package_id=package_id,
        environment=env,
        namespace=namespace,
        service_account=service_account,
        already_revoked=not found,
        reason=reason,
    )
    return result


async def revoke_package(
    spec: PlatformSpec,
    directory: Path,
    *,
    kube: Any,
    reason: str = "",
    actor: str | None = None,
    on_event: EventSink | None = None,
) -> AccessRevocation:
    """Revoke the package written in ``directory`` (:func:`revoke_access`), then record the
    revocation in its ``package.json`` and delete its ``kubeconfig`` (the token)."""
    directory = Path(directory)
    meta = await asyncio.to_thread(read_package, directory)
    env, package_id = meta.get("environment"), meta.get("packageId")
    if not isinstance(env, str) or not isinstance(package_id, str):
        raise PackageNotFoundError(f"{directory}/package.json names no environment and package id")
    result = await revoke_access(
        spec, env, package_id, kube=kube, reason=reason, actor=actor, on_event=on_event
    )
    meta["revoked"] = result.to_dict()
    await asyncio.to_thread(_record_revocation, directory, meta)
    return result
