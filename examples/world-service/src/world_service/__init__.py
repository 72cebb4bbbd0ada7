"""world-service: an HTTP JSON service built from the aiaas libraries.

``GET /world`` answers ``{"message": "Hello, world-service!", "timestamp": "<ISO-8601 UTC>"}``;
``/health`` and ``/ready`` are the liveness and readiness probes
(:class:`aiaas_core.HealthRegistry`); ``/metrics`` is Prometheus; ``GET /admin/config`` is
guarded by :class:`aiaas_core.AuthMiddleware` (an API key whose role is ``admin``). Telemetry
(JSON logs, traces, metrics, audit events) comes from :mod:`aiaas_telemetry`.
"""

from __future__ import annotations

from world_service._app import WorldApp, create_app, utc_timestamp
from world_service._cli import __version__, main
from world_service._settings import Settings, load, parse_key_entry

__all__ = [
    "Settings",
    "WorldApp",
    "__version__",
    "create_app",
    "load",
    "main",
    "parse_key_entry",
    "utc_timestamp",
]
