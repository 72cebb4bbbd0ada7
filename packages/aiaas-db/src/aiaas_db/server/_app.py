"""The schema management API (``contracts/schema-management.yaml``) as a pure-ASGI application.

:func:`create_schema_app` builds the whole stack with :func:`aiaas_telemetry.service_stack`,
outermost first::

    TelemetryMiddleware (request id, trace, metrics, access log, /metrics, error bodies)
      -> AuthMiddleware (API keys, the role policy; /health, /ready, /metrics are public)
        -> SchemaApi (the routes below)

======  =======================================  ==========================  ==================
method  path                                     permission                  roles (default)
======  =======================================  ==========================  ==================
GET     ``/v1/schema/entities``                  ``schema:read``             platform-engineer,
                                                                             app-team, read-only
POST    ``/v1/schema/migrations/apply``          ``migrations:apply``        platform-engineer
POST    ``/v1/schema/migrations/rollback``       ``migrations:rollback``     platform-engineer
GET     ``/v1/schema/migrations/status/{runId}`` ``migrations:read``         platform-engineer,
                                                                             app-team, read-only
POST    ``/v1/analytics/rollups/run``            ``rollups:run``             platform-engineer
GET     ``/v1/analytics/rollups/runs/{runId}``   ``rollups:read``            as migrations:read
GET     ``/health``, ``/ready``, ``/metrics``    public
======  =======================================  ==========================  ==================

Runs are asynchronous. ``apply`` and ``rollback`` validate the request and the database's state
(the pre-checks a :class:`~aiaas_db.Migrator` would run: clean head, unchanged applied sets,
nothing missing or out of order, no unconfirmed destructive set, the migration lock free), then
answer ``202`` with a ``MigrationRun`` and run the real migrator in a worker thread; its status
endpoint shows ``pending`` -> ``running`` (``appliedVersions`` growing as each change set lands) ->
``succeeded`` / ``rolled_back`` / ``failed``. One run at a time per server (``409
MIGRATION_RUN_IN_PROGRESS``); across processes the migrator's advisory lock decides (``409
MIGRATION_LOCKED`` when another migrator -- aiaas-db or golang-migrate -- holds it).

``rollback`` with ``version`` V rolls back V and every applied version after it, newest first
(``aiaas-db migrate down --to <the version before V>``). Entities come from the live catalog
(tables of the schema, partitions and the tooling's own tables left out; relationships from
foreign keys, from the ``<singular>_id`` key convention where a table deliberately has no foreign
key, and ``derivedFrom`` for the rollups) with each field's class and retention from the
platform's classification map. ``/health`` (liveness) carries each component's schema version
and last migration time, and is only ever degraded, never failing, by the database;
``/ready`` fails when the database is unreachable.

Every error is the shared error body (``contracts/error-response.schema.json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas_core import AiaasError, ASGIApp, Message, Policy, Receive, Scope, Send, error_response
from aiaas_db.server._api import SchemaApi
from aiaas_db.server._auth import ROUTE_RULES, Authenticator, schema_api_policy
from aiaas_db.server._http import PUBLIC_PATHS, ROUTES

if TYPE_CHECKING:
    from aiaas_telemetry import Telemetry

__all__ = ["create_schema_app"]


class _ErrorBoundary:
    """Renders an :class:`AiaasError` raised by the routes as the shared error body.

    TelemetryMiddleware does the same for anything that escapes; this keeps ``SchemaApi`` usable
    on its own (and in tests) without telemetry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except AiaasError as exc:
            if started:
                raise
            status, headers, body = error_response(exc, instance=scope.get("path"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})


def create_schema_app(
    api: SchemaApi,
    *,
    telemetry: Telemetry,
    authenticate: Authenticator,
    policy: Policy | None = None,
) -> ASGIApp:
    """Wrap ``api`` in the auth and telemetry middleware (see the module documentation).

    ``authenticate`` turns a credential into an :class:`~aiaas_core.Actor` (for example
    ``ApiKeyVerifier(...).verify``); ``policy`` defaults to :func:`schema_api_policy`.
    The stack is :func:`aiaas_telemetry.service_stack`'s: telemetry (outermost, the request id
    made once) -> auth (audited) -> ``api``.
    """
    from aiaas_telemetry import ServiceAuth, service_stack  # noqa: PLC0415

    app: ASGIApp = service_stack(
        _ErrorBoundary(api),
        telemetry=telemetry,
        auth=ServiceAuth(
            authenticate=authenticate,
            policy=policy or schema_api_policy(),
            rules=ROUTE_RULES,
            public_paths=PUBLIC_PATHS,
        ),
        routes=list(ROUTES),
        metrics_path="/metrics",
        exclude_paths=("/health", "/ready"),
    )
    return app
