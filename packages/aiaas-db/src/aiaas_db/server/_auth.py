"""Who may call the schema API: the API-key authenticator type and the role policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from aiaas_core import Actor, Policy, PolicyRule, RouteRule
from aiaas_db.server._http import (
    APPLY_PATH,
    ENTITIES_PATH,
    ROLLBACK_PATH,
    ROLLUP_PATH,
    ROLLUP_STATUS_PATH,
    STATUS_PATH,
)

__all__ = ["SCHEMA_API_ROLE", "schema_api_policy"]

Authenticator = Callable[[str], Awaitable[Actor]]

#: The role that may change the schema (apply, roll back, run rollups).
SCHEMA_API_ROLE: Final = "platform-engineer"
#: Roles that may read entities and run status.
READER_ROLES: Final = ("app-team", "read-only")


def schema_api_policy(
    *, admin_roles: Sequence[str] = (SCHEMA_API_ROLE,), reader_roles: Sequence[str] = READER_ROLES
) -> Policy:
    """The default policy: ``platform-engineer`` may do everything, readers may read."""
    rules = [
        PolicyRule(
            id="platform-engineers-manage-schema",
            effect="allow",
            roles=tuple(admin_roles),
            permissions=(
                "schema:read",
                "migrations:apply",
                "migrations:rollback",
                "migrations:read",
                "rollups:run",
                "rollups:read",
            ),
        )
    ]
    if reader_roles:
        rules.append(
            PolicyRule(
                id="readers-read-schema",
                effect="allow",
                roles=tuple(reader_roles),
                permissions=("schema:read", "migrations:read", "rollups:read"),
            )
        )
    return Policy(rules)


ROUTE_RULES: Final = (
    RouteRule("GET", ENTITIES_PATH, "schema:read"),
    RouteRule("POST", APPLY_PATH, "migrations:apply"),
    RouteRule("POST", ROLLBACK_PATH, "migrations:rollback"),
    RouteRule("GET", STATUS_PATH, "migrations:read"),
    RouteRule("POST", ROLLUP_PATH, "rollups:run"),
    RouteRule("GET", ROLLUP_STATUS_PATH, "rollups:read"),
    # Other methods on known paths reach the app (405 with Allow) for anyone who may read.
    RouteRule("*", ENTITIES_PATH, "schema:read"),
    RouteRule("*", APPLY_PATH, "schema:read"),
    RouteRule("*", ROLLBACK_PATH, "schema:read"),
    RouteRule("*", STATUS_PATH, "schema:read"),
    RouteRule("*", ROLLUP_PATH, "schema:read"),
    RouteRule("*", ROLLUP_STATUS_PATH, "schema:read"),
)
