"""inference-service: OpenAI-compatible embeddings built from the aiaas libraries.

``POST /v1/embeddings`` and ``GET /v1/models`` (aiaas-serving's endpoint on its batching runtime,
serving all-MiniLM-L6-v2 as ``all-MiniLM-L6-v2``), guarded by API keys from aiaas-db's ``api_keys``
table; one usage event per call written to ``usage_events`` off the critical path; ``/health``,
``/ready`` and ``/metrics``; SIGTERM drains accepted requests and flushes usage before exit.

``import inference_service`` is cheap (torch loads only when the service is built); the command
line's ``--help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas_core import lazy_exports
from inference_service._cli import main
from inference_service._version import __version__

_LAZY: dict[str, str] = {
    "CachedKeyStore": "_keys",
    "Database": "_database",
    "DatabaseError": "_database",
    "Gateway": "_gateway",
    "KeyDirectory": "_keys",
    "KeyOwner": "_keys",
    "ModelPrice": "_app",
    "PlanLimits": "_gateway",
    "Service": "_app",
    "Settings": "_settings",
    "UsageEvent": "_usage",
    "UsageRecorder": "_usage",
    "UsageStats": "_usage",
    "create_app": "_app",
    "load": "_settings",
    "open_database": "_database",
    "openapi_document": "_openapi",
    "prepare_platform": "_database",
}

__all__ = [
    "CachedKeyStore",
    "Database",
    "DatabaseError",
    "Gateway",
    "KeyDirectory",
    "KeyOwner",
    "ModelPrice",
    "PlanLimits",
    "Service",
    "Settings",
    "UsageEvent",
    "UsageRecorder",
    "UsageStats",
    "__version__",
    "create_app",
    "load",
    "main",
    "open_database",
    "openapi_document",
    "prepare_platform",
]

if TYPE_CHECKING:
    from inference_service._app import ModelPrice, Service, create_app
    from inference_service._database import Database, DatabaseError, open_database, prepare_platform
    from inference_service._gateway import Gateway, PlanLimits
    from inference_service._keys import CachedKeyStore, KeyDirectory, KeyOwner
    from inference_service._openapi import openapi_document
    from inference_service._settings import Settings, load
    from inference_service._usage import UsageEvent, UsageRecorder, UsageStats


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
