"""The platform's own schema: change sets shipped inside aiaas-db.

Two components live in the same database and are applied in order: ``operational`` (tenants,
users, API keys, the model registry, usage events, the audit log) and then ``analytics`` (hourly
and daily rollups, the rollup engine's state). Their change sets are package resources under
``aiaas_db/schemas/<component>/``, so an installed wheel migrates without a checkout::

    aiaas-db migrate up --platform
    Migrator(dsn, platform_source("operational"), component="operational").up()
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.migrations._changesets import PackageSource

__all__ = ["PLATFORM_COMPONENTS", "PlatformComponent", "platform_source"]

PlatformComponent = Literal["operational", "analytics"]

#: The platform components, in the order they are applied (rolled back in reverse).
PLATFORM_COMPONENTS: Final[tuple[PlatformComponent, ...]] = get_args(PlatformComponent)


def platform_source(component: PlatformComponent) -> PackageSource:
    """The change sets of one platform component (package resources of aiaas-db)."""
    if component not in PLATFORM_COMPONENTS:
        raise MigrationRefusedError(
            f"unknown platform component {component!r}; expected one of "
            f"{', '.join(PLATFORM_COMPONENTS)}",
            code="MIGRATION_COMPONENT_INVALID",
        )
    return PackageSource("aiaas_db", f"schemas/{component}")
