"""The schema-management HTTP API (``aiaas-db serve``)."""

from __future__ import annotations

from aiaas_db.server._api import SchemaApi
from aiaas_db.server._app import create_schema_app
from aiaas_db.server._auth import schema_api_policy
from aiaas_db.server._runs import RollupRequest, RollupTrigger, default_rollup_trigger

__all__ = [
    "RollupRequest",
    "RollupTrigger",
    "SchemaApi",
    "create_schema_app",
    "default_rollup_trigger",
    "schema_api_policy",
]
