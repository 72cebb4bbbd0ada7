"""``service_stack(app, telemetry=..., auth=...)``: a service's middleware, in one fixed order.

Every aiaas service wraps its routes the same way, outermost first:

1. :class:`~aiaas_telemetry.TelemetryMiddleware` -- accepts the client's ``X-Request-ID`` or makes
   one, **once**, and opens the request context with it; answers ``/metrics``; opens the server
   span; records the request metrics and the access-log line; renders malformed requests and
   unhandled exceptions as error bodies; sends the one ``X-Request-ID`` response header;
2. :class:`~aiaas_core.AuthMiddleware` (when ``auth`` is given) -- credential -> actor -> policy
   decision, audited through the service's :attr:`Telemetry.audit` (the events carry the request
   id of step 1), its rejections rendered like the telemetry middleware's errors (the same
   ``error_renderers`` and ``problem_details``);
3. the application.

Because the request id is made in step 1 and only read afterwards (by the auth middleware's audit
events and error bodies, the application's logs, an OpenAI endpoint's usage records), a response
carries exactly one ``X-Request-ID`` header and it is the id in every log line, audit event and
error body of that request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_core import (
    Actor,
    ASGIApp,
    AuthMiddleware,
    ErrorRenderer,
    ErrorRenderers,
    Policy,
    RouteRule,
)
from aiaas_telemetry._middleware import DEFAULT_MAX_BODY_BYTES, TelemetryMiddleware

if TYPE_CHECKING:
    from aiaas_telemetry._routes import RouteResolver
    from aiaas_telemetry._setup import Telemetry

__all__ = ["DEFAULT_PROBE_PATHS", "DEFAULT_PUBLIC_PATHS", "ServiceAuth", "service_stack"]

#: The health probes: out of the request metrics, traces and access log by default.
DEFAULT_PROBE_PATHS: Final = ("/health", "/ready")
#: The paths :class:`ServiceAuth` lets through unauthenticated by default.
DEFAULT_PUBLIC_PATHS: Final = ("/health", "/ready", "/metrics")


def _rules(value: Sequence[RouteRule]) -> tuple[RouteRule, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ServiceAuth:
    """The authentication layer of :func:`service_stack` (an :class:`aiaas_core.AuthMiddleware`).

    ``authenticate`` turns a credential into an :class:`~aiaas_core.Actor` (for example
    ``ApiKeyVerifier(store, hasher).verify``); ``policy`` and ``rules`` decide what each actor may
    call (see :class:`aiaas_core.AuthMiddleware`); ``public_paths`` pass unauthenticated.
    ``audit=True`` sends every decision to the service's audit trail
    (:meth:`Auditor.auth_hook`); ``False`` sends none. ``header``, ``api_key_header`` and
    ``max_header_bytes`` and ``malformed_credential_status`` are
    :class:`~aiaas_core.AuthMiddleware`'s. The error shape is not set
    here: :func:`service_stack` gives the auth layer the same ``error_renderers`` and
    ``problem_details`` as the telemetry layer, so every error of a path has one shape.
    """

    authenticate: Callable[[str], Awaitable[Actor]]
    policy: Policy
    rules: tuple[RouteRule, ...] = attrs.field(converter=_rules)
    public_paths: Collection[str] = DEFAULT_PUBLIC_PATHS
    audit: bool = True
    header: str = "authorization"
    api_key_header: str | None = "x-api-key"
    max_header_bytes: int = 8192
    malformed_credential_status: int = 400


def service_stack(
    app: ASGIApp,
    *,
    telemetry: Telemetry,
    auth: ServiceAuth | None = None,
    routes: RouteResolver | Collection[str] | Any | None = None,
    error_renderers: Mapping[str, ErrorRenderer] | ErrorRenderers | None = None,
    problem_details: bool = False,
    metrics_path: str | None = "/metrics",
    exclude_paths: Collection[str] = DEFAULT_PROBE_PATHS,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    access_log: bool = True,
) -> TelemetryMiddleware:
    """Wrap ``app`` as every aiaas service is wrapped: telemetry -> auth -> ``app``.

    The order is fixed (see the module documentation): the telemetry middleware is outermost and
    makes the request id once; ``auth`` (a :class:`ServiceAuth`, or ``None`` for a service
    without authentication) sits between it and ``app``. ``routes`` are the route templates for
    span names and metric labels (see :class:`TelemetryMiddleware`). ``error_renderers`` (path
    prefix -> renderer, for example ``{"/v1/": openai_error_response}``) and
    ``problem_details`` shape the errors of both layers alike. ``metrics_path`` is answered with
    the service's Prometheus metrics (``None``: not served); ``exclude_paths`` (the health
    probes by default) get the request id but no span, metrics or access-log line;
    ``max_body_bytes`` bounds request bodies (``None``: no limit); ``access_log=False`` writes no
    access-log line.

    Returns the outermost layer: serve it (``uvicorn``, :func:`aiaas_core.serve`).
    """
    inner: ASGIApp = app
    if auth is not None:
        if not isinstance(auth, ServiceAuth):
            raise TypeError(
                f"auth must be a ServiceAuth (or None for no authentication), got"
                f" {type(auth).__name__}"
            )
        inner = AuthMiddleware(
            app,
            authenticate=auth.authenticate,
            policy=auth.policy,
            rules=auth.rules,
            public_paths=auth.public_paths,
            audit=telemetry.audit.auth_hook() if auth.audit else None,
            header=auth.header,
            api_key_header=auth.api_key_header,
            max_header_bytes=auth.max_header_bytes,
            malformed_credential_status=auth.malformed_credential_status,
            problem=problem_details,
            error_renderers=error_renderers,
        )
    return TelemetryMiddleware(
        inner,
        telemetry,
        routes=routes,
        max_body_bytes=max_body_bytes,
        exclude_paths=exclude_paths,
        metrics_path=metrics_path,
        access_log=access_log,
        problem_details=problem_details,
        error_renderers=error_renderers,
    )
