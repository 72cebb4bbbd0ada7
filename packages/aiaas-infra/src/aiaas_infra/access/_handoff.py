"""The environment handoff: package documents, and the handoff API (pure ASGI).

A *handoff package* (``HandoffPackage`` in ``contracts/service-handoff-openapi.yaml``) tells an
application team how to use one environment in one role: where its namespace-confined
kubeconfig and RBAC summary are, links to its dashboards, alerts and metrics, and the steps to
deploy. :func:`handoff_document` builds it from the platform spec; ``aiaas-infra access issue``
writes one beside the credentials it issues, and the handoff API serves them::

    GET /v1/environments                                  EnvironmentSummary list
    GET /v1/environments/{environment}/handoff?role=ROLE  HandoffPackage
    GET /openapi.json                                     the API's OpenAPI document
    GET /health, /ready, /metrics                         liveness, readiness, Prometheus

:func:`create_handoff_app` composes the routes with aiaas-core's :class:`~aiaas_core.AuthMiddleware`
(API keys, a :class:`~aiaas_core.Policy`, deny by default) inside aiaas-telemetry's middleware
(request ids, traces, metrics, access log, RFC 7807 error bodies). Answers:

====== ============================ =========================================================
status code                         when
====== ============================ =========================================================
400    ``HANDOFF_ROLE_INVALID``     ``role`` is not app-team, platform-engineer or read-only
                                    (break-glass is issued by the CLI only, with an incident),
                                    or is given twice
401    ``AUTH_UNAUTHENTICATED`` ... no or a rejected credential
401    ``AUTH_HEADER_INVALID``      a malformed ``Authorization`` / ``X-API-Key`` header (empty,
                                    not a token, repeated, or both headers): the served schema
                                    allows any string in either, so it is a rejected credential
403    ``AUTH_ROLE_DENIED``         the policy denies ``environments:read``,
                                    ``handoff:<environment>`` or ``handoff-role:<role>``
404    ``ENVIRONMENT_NOT_FOUND``    the spec has no such environment, or it is retired
423    ``ENVIRONMENT_LOCKED``       ``environments.<name>.maintenance.locked`` is true
====== ============================ =========================================================

Contract deviations (the served ``/openapi.json``, package data ``contracts/handoff-openapi.yaml``,
lists them in ``info.x-aiaas-deviations``; tests prove it is the contract plus exactly these):
``security-schemes`` (bearer and ``X-API-Key`` are declared: the contract answers 401 but names no
scheme); ``problem-json-errors`` (errors are RFC 7807 ``application/problem+json``, the shape of
the contract's ``Error``, with ``code``, ``request_id``, ``trace_id``, ``timestamp`` extension
members; the contract says ``application/json``); ``bad-request-and-forbidden-responses`` (400
and 403 are documented); ``environments-from-spec`` (the ``environment`` enum lists the spec's
environments instead of the fixed four). A handoff package's ``expiresAt`` is when a package
issued now would expire (now + the role's longest TTL in that environment).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, urlencode

from aiaas_core import (
    Actor,
    ASGIApp,
    BadRequestError,
    LockedError,
    MethodNotAllowedError,
    NotFoundError,
    Policy,
    PolicyRule,
    Receive,
    Scope,
    Send,
    run_lifespan,
    send_json,
)

if TYPE_CHECKING:
    from aiaas_infra.provision._state import StateStore
    from aiaas_infra.spec._model import PlatformSpec
    from aiaas_telemetry import Telemetry

__all__ = [
    "ACCESS_ROLES",
    "DASHBOARD_UID",
    "HANDOFF_ROLES",
    "MAX_TTL",
    "MAX_TTL_PRODUCTION",
    "EnvironmentLockedError",
    "EnvironmentNotFoundError",
    "create_handoff_app",
    "default_handoff_policy",
    "deployment_guide",
    "handoff_document",
    "handoff_openapi",
    "is_production",
    "max_ttl",
    "observability_links",
]

Authenticator = Callable[[str], Awaitable[Actor]]

#: Every access role an environment has (the Roles cluster bootstrap renders).
ACCESS_ROLES: Final = ("platform-engineer", "app-team", "read-only", "break-glass")
#: The roles the handoff API serves packages for (break-glass is CLI-only, with an incident).
HANDOFF_ROLES: Final = ("app-team", "platform-engineer", "read-only")
#: The longest an access package may live.
MAX_TTL: Final = timedelta(hours=24)
#: The longest a production package may live (break-glass excepted: 24 h with an incident).
MAX_TTL_PRODUCTION: Final = timedelta(hours=8)

#: The uid of the platform dashboard cluster bootstrap installs (its ``namespace`` variable
#: selects the environment).
DASHBOARD_UID: Final = "aiaas-platform"
LIST_PATH: Final = "/v1/environments"
_HANDOFF_PREFIX: Final = "/v1/environments/"
_HANDOFF_SUFFIX: Final = "/handoff"
ROUTES: Final = (
    LIST_PATH,
    "/v1/environments/{environment}/handoff",
    "/openapi.json",
    "/health",
    "/ready",
)
PUBLIC_PATHS: Final = ("/health", "/ready", "/metrics", "/openapi.json")
_JSON: Final = b"application/json"


class EnvironmentNotFoundError(NotFoundError):
    """The spec declares no such environment, or it is retired."""

    code = "ENVIRONMENT_NOT_FOUND"
    title = "Environment not found"


class EnvironmentLockedError(LockedError):
    """The environment is locked for maintenance (``maintenance.locked`` in the spec)."""

    code = "ENVIRONMENT_LOCKED"
    title = "Environment locked"


# --------------------------------------------------------------------------------------------
# Rules


def _maintenance(spec: PlatformSpec, env: str) -> tuple[bool, str]:
    maintenance = spec.environments[env].maintenance
    return maintenance.locked, maintenance.reason


def _observability(spec: PlatformSpec) -> dict[str, str]:
    obs = spec.observability
    found = {
        "grafana_url": obs.grafana_url,
        "prometheus_url": obs.prometheus_url,
        "alertmanager_url": obs.alertmanager_url,
    }
    return {key: value.rstrip("/") for key, value in found.items() if value}


def is_production(spec: PlatformSpec, env: str) -> bool:
    """Whether ``env`` is production: named so, or labelled ``aiaas.dev/tier: production``."""
    labels = spec.environments[env].labels
    return env == "production" or labels.get("aiaas.dev/tier") == "production"


def max_ttl(spec: PlatformSpec, env: str, role: str) -> timedelta:
    """The longest package ``role`` may get in ``env``: 24 h, 8 h in production (break-glass
    24 h everywhere, and only with an incident id)."""
    if role != "break-glass" and is_production(spec, env):
        return MAX_TTL_PRODUCTION
    return MAX_TTL


# --------------------------------------------------------------------------------------------
# Package documents


def observability_links(spec: PlatformSpec, env: str) -> list[dict[str, str]]:
    """Links to ``env``'s dashboard, metrics and alerts (empty when the spec names no
    observability URLs). Each link is scoped to the environment's namespace."""
    urls = _observability(spec)
    ns = spec.namespace(env)
    links: list[dict[str, str]] = []
    if "grafana_url" in urls:
        query = urlencode({"var-namespace": ns})
        links.append(
            {
                "type": "grafana-dashboard",
                "url": f"{urls['grafana_url']}/d/{DASHBOARD_UID}?{query}",
                "description": f"{env}: CPU, memory, pod restarts, ingress latency and secret "
                "freshness",
            }
        )
    if "prometheus_url" in urls:
        query = urlencode({"g0.expr": f'up{{namespace="{ns}"}}', "g0.tab": "0"})
        links.append(
            {
                "type": "prometheus",
                "url": f"{urls['prometheus_url']}/graph?{query}",
                "description": f"{env}: Prometheus queries for namespace {ns}",
            }
        )
    if "alertmanager_url" in urls:
        query = urlencode({"filter": f'{{namespace="{ns}"}}'})
        links.append(
            {
                "type": "alertmanager",
                "url": f"{urls['alertmanager_url']}/#/alerts?{query}",
                "description": f"{env}: firing alerts for namespace {ns}",
            }
        )
    return links


def deployment_guide(spec: PlatformSpec, env: str, role: str) -> dict[str, Any]:
    """The steps ``role`` follows to work in ``env`` (``deploymentGuide`` of the package)."""
    ns = spec.namespace(env)
    steps: list[dict[str, Any]] = [
        {
            "name": "Use the package's kubeconfig",
            "command": "export KUBECONFIG=$PWD/kubeconfig",
            "notes": f"The context is confined to namespace {ns}; the token expires with the "
            "package (expiresAt).",
        },
        {
            "name": "Check what the role may do",
            "command": f"kubectl auth can-i --list --namespace {ns}",
            "notes": "rbac.json lists the same rules.",
        },
    ]
    if role == "read-only":
        steps.append(
            {
                "name": "Inspect workloads",
                "command": f"kubectl get deployments,pods,services --namespace {ns}",
            }
        )
    else:
        gitops_dir = spec.gitops.path if spec.gitops is not None else "environments"
        sync = spec.environments[env].sync or ("manual" if is_production(spec, env) else "auto")
        steps.append(
            {
                "name": "Deploy through GitOps",
                "command": f"git push  # change {gitops_dir}/{env}/ in the GitOps repository",
                "notes": "This environment syncs only after a manual ArgoCD sync (a reviewed gate)."
                if sync == "manual"
                else "ArgoCD syncs the change automatically.",
            }
        )
        steps.append(
            {
                "name": "Watch the rollout",
                "command": f"kubectl rollout status deployment --namespace {ns} --timeout 10m",
            }
        )
    steps.append(
        {
            "name": "Check the environment's health",
            "command": f"kubectl get events --namespace {ns} --sort-by=.lastTimestamp",
            "notes": "Dashboards and alerts: observability-links.json.",
        }
    )
    return {"steps": [{"order": i, **step} for i, step in enumerate(steps, start=1)]}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def handoff_document(
    spec: PlatformSpec,
    env: str,
    role: str,
    *,
    expires_at: datetime,
    kubeconfig_url: str,
    rbac_url: str,
) -> dict[str, Any]:
    """The ``HandoffPackage`` document for ``role`` in ``env`` (JSON-ready)."""
    if env not in spec.environments:
        raise EnvironmentNotFoundError(f"Environment not found: the spec has no {env!r}")
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return {
        "environment": env,
        "role": role,
        "expiresAt": _iso(expires_at),
        "kubeconfigUrl": kubeconfig_url,
        "rbacUrl": rbac_url,
        "observabilityLinks": observability_links(spec, env),
        "deploymentGuide": deployment_guide(spec, env, role),
    }


@cache
def _served_contract() -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    text = (resources.files("aiaas_infra") / "contracts" / "handoff-openapi.yaml").read_text(
        encoding="utf-8"
    )
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def handoff_openapi(spec: PlatformSpec | None = None) -> dict[str, Any]:
    """The handoff API's OpenAPI document; with ``spec``, its ``environment`` enum lists the
    spec's environments."""
    doc = copy.deepcopy(_served_contract())
    if spec is not None:
        op = doc["paths"]["/v1/environments/{environment}/handoff"]["get"]
        for param in op["parameters"]:
            if param["name"] == "environment":
                param["schema"]["enum"] = list(spec.environments)
    return doc


# --------------------------------------------------------------------------------------------
# The API


def default_handoff_policy() -> Policy:
    """Who may read what: platform engineers everything; app teams the list and app-team or
    read-only packages of every environment; read-only actors read-only packages."""
    return Policy(
        [
            PolicyRule(
                id="platform-engineers",
                effect="allow",
                roles=["platform-engineer"],
                permissions=["*"],
            ),
            PolicyRule(
                id="app-teams",
                effect="allow",
                roles=["app-team"],
                permissions=[
                    "environments:read",
                    "handoff:*",
                    "handoff-role:app-team",
                    "handoff-role:read-only",
                ],
            ),
            PolicyRule(
                id="read-only",
                effect="allow",
                roles=["read-only"],
                permissions=["environments:read", "handoff:*", "handoff-role:read-only"],
            ),
        ]
    )


class _HandoffRoutes:
    """The routes behind the middleware (see the module documentation)."""

    def __init__(
        self,
        spec: PlatformSpec,
        *,
        policy: Policy,
        package_base_url: str,
        ingress_domain: str,
        store: StateStore | None,
        clock: Callable[[], datetime],
    ) -> None:
        self.spec = spec
        self.policy = policy
        self.package_base_url = package_base_url.rstrip("/")
        self.ingress_domain = ingress_domain.strip(".")
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self.openapi = json.dumps(handoff_openapi(spec), separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise NotFoundError("the handoff API speaks HTTP only")
        path: str = scope["path"]
        method: str = scope["method"]
        env = self._handoff_env(path)
        if path not in ROUTES and env is None:
            raise NotFoundError(f"Not found: no route {path}")
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(
                "Method not allowed: the handoff API answers GET and HEAD", allow=("GET", "HEAD")
            )
        head = method == "HEAD"
        if path == LIST_PATH:
            await send_json(send, 200, {"data": await self._summaries()}, head=head)
        elif env is not None:
            role = self._role(scope)
            document = await self._handoff(scope, env, role)
            await send_json(send, 200, document, head=head)
        elif path == "/openapi.json":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", _JSON),
                        (b"content-length", str(len(self.openapi)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b"" if head else self.openapi})
        else:  # /health, /ready: the spec is loaded; the state (when used) is readable
            if path == "/ready" and self.store is not None:
                await asyncio.to_thread(self.store.environments)
            await send_json(send, 200, {"status": "ok"}, head=head)

    @staticmethod
    def _handoff_env(path: str) -> str | None:
        if not (path.startswith(_HANDOFF_PREFIX) and path.endswith(_HANDOFF_SUFFIX)):
            return None
        env = path[len(_HANDOFF_PREFIX) : -len(_HANDOFF_SUFFIX)]
        return env if env and "/" not in env else None

    @staticmethod
    def _role(scope: Scope) -> str:
        query = scope.get("query_string", b"").decode("latin-1")
        roles = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "role"]
        if len(roles) > 1:
            raise BadRequestError("Give role at most once", code="HANDOFF_ROLE_INVALID")
        role = roles[0] if roles else "app-team"
        if role not in HANDOFF_ROLES:
            hint = (
                " (break-glass packages are issued with `aiaas-infra access issue --incident`)"
                if role == "break-glass"
                else ""
            )
            raise BadRequestError(
                f"role must be one of {', '.join(HANDOFF_ROLES)}{hint}",
                code="HANDOFF_ROLE_INVALID",
            )
        return role

    async def _records(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        return await asyncio.to_thread(self.store.environments)

    async def _summaries(self) -> list[dict[str, Any]]:
        records = await self._records()
        out: list[dict[str, Any]] = []
        for name, env in self.spec.environments.items():
            record = records.get(name)
            pools = []
            for label in env.pools:
                pool = self.spec.cluster.pool(label)
                if pool is None:  # pragma: no cover - the spec validates pool references
                    continue
                high = pool.autoscaler.max if pool.autoscaler.enabled else None
                pools.append(
                    {
                        "type": pool.type,
                        "count": pool.count,
                        "maxCount": max(high or pool.count, pool.count),
                        "gpu": pool.gpu,
                    }
                )
            out.append(
                {
                    "name": name,
                    "status": record.status if record is not None else "provisioning",
                    "ingressBaseDomain": f"{name}.{self.ingress_domain}",
                    "lastUpdatedAt": record.since if record is not None else _iso(self.started_at),
                    "nodePools": pools,
                }
            )
        return out

    async def _handoff(self, scope: Scope, env: str, role: str) -> dict[str, Any]:
        actor = scope.get("aiaas.actor")
        if env not in self.spec.environments:
            raise EnvironmentNotFoundError(
                f"Environment not found: {env!r} is not one of {', '.join(self.spec.environments)}"
            )
        record = (await self._records()).get(env)
        if record is not None and record.status == "retired":
            raise EnvironmentNotFoundError(f"Environment not found: {env} is retired")
        if isinstance(actor, Actor):
            self.policy.require(actor, "handoff-role", role)
        locked, reason = _maintenance(self.spec, env)
        if locked:
            raise EnvironmentLockedError(
                f"Environment {env} is locked for maintenance"
                + (f": {reason}" if reason else "")
                + "; try again later"
            )
        base = f"{self.package_base_url}/{quote(env)}/{quote(role)}"
        return handoff_document(
            self.spec,
            env,
            role,
            expires_at=self.clock() + max_ttl(self.spec, env, role),
            kubeconfig_url=f"{base}/kubeconfig",
            rbac_url=f"{base}/rbac.json",
        )


def create_handoff_app(
    spec: PlatformSpec,
    *,
    telemetry: Telemetry,
    authenticate: Authenticator,
    policy: Policy | None = None,
    package_base_url: str,
    ingress_domain: str | None = None,
    store: StateStore | None = None,
    clock: Callable[[], datetime] | None = None,
    audit: bool = True,
) -> ASGIApp:
    """The handoff API: telemetry middleware → auth → routes.

    - ``authenticate``: ``async (credential) -> Actor`` (e.g. ``ApiKeyVerifier.verify``).
    - ``policy``: who may do what (:func:`default_handoff_policy` by default). Permissions:
      ``environments:read`` (the list), ``handoff:<environment>`` and ``handoff-role:<role>``.
    - ``package_base_url``: where issued packages are published; a package's ``kubeconfigUrl``
      is ``<base>/<environment>/<role>/kubeconfig`` (``rbacUrl``: ``.../rbac.json``), the layout
      ``aiaas-infra access issue --out <base-dir>/<environment>/<role>`` writes.
    - ``ingress_domain``: environments' ingress base domain is ``<environment>.<domain>``
      (default ``<platform name>.internal``).
    - ``store``: the state store whose environment statuses are reported (and whose retired
      environments answer 404); without one every environment reads ``provisioning``.
    """
    from aiaas_core import RouteRule  # noqa: PLC0415
    from aiaas_telemetry import ServiceAuth, service_stack  # noqa: PLC0415

    routes = _HandoffRoutes(
        spec,
        policy=policy if policy is not None else default_handoff_policy(),
        package_base_url=package_base_url,
        ingress_domain=ingress_domain or f"{spec.name}.internal",
        store=store,
        clock=clock or (lambda: datetime.now(UTC)),
    )
    # The served schema declares bearer and X-API-Key as alternatives whose values are any string,
    # so an empty or malformed key, or both headers at once, is a request the schema allows: a
    # rejected credential (401 AUTH_HEADER_INVALID), never a 400 that would call a valid request
    # refused (schemathesis ST202).
    auth = ServiceAuth(
        authenticate=authenticate,
        policy=routes.policy,
        rules=(
            RouteRule("GET", LIST_PATH, "environments:read"),
            RouteRule("GET", "/v1/environments/{environment}/handoff", "handoff:{environment}"),
        ),
        public_paths=PUBLIC_PATHS,
        audit=audit,
        malformed_credential_status=401,
    )
    return service_stack(
        routes,
        telemetry=telemetry,
        auth=auth,
        routes=list(ROUTES),
        metrics_path="/metrics",
        exclude_paths=("/health", "/ready"),
        problem_details=True,
    )
