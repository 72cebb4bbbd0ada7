"""service-template: a minimal HTTP JSON service on aiaas-core and aiaas-telemetry.

``GET /v1/greeting?name=ada`` answers ``{"greeting": "Hello, Ada!"}``; ``/health`` and ``/ready``
are the liveness and readiness probes (:class:`aiaas_core.HealthRegistry`); ``/metrics`` is
Prometheus. Configuration: ``SERVICE_TEMPLATE_*`` environment variables
(:func:`aiaas_core.load_settings`); telemetry: :mod:`aiaas_telemetry` (JSON logs, traces,
metrics). Copy it with ``nox -s new_service -- NAME`` to start a new service.

Where to change things: ``_config.py`` (settings), ``_app.py`` (routes, health checks, startup
and shutdown), ``_cli.py`` (the command line; rarely). The modules import each other relatively
(``from ._app import ...``) so that a renamed copy's imports stay sorted whatever its name.
"""

from __future__ import annotations

from aiaas_core import MethodNotAllowedError

from ._app import (
    MAX_NAME_LENGTH,
    ServiceApp,
    build_health,
    create_app,
    greeting_name,
)
from ._cli import main
from ._config import ENV_PREFIX, SERVICE_NAME, Settings, __version__, load

__all__ = [
    "ENV_PREFIX",
    "MAX_NAME_LENGTH",
    "SERVICE_NAME",
    "MethodNotAllowedError",
    "ServiceApp",
    "Settings",
    "__version__",
    "build_health",
    "create_app",
    "greeting_name",
    "load",
    "main",
]
