"""The emulator's catalog: regions, region and account availability, Linode types and LKE
versions."""

from __future__ import annotations

from typing import Any

from aiaas_infra.testing._linode._base import _ApiBase
from aiaas_infra.testing._linode._model import (
    _PLANS,
    JSON,
    KUBERNETES_VERSIONS,
    RegionConfig,
    _not_found,
)

__all__: list[str] = []


class _CatalogApi(_ApiBase):
    """The emulator's catalog: regions, region and account availability, Linode types and LKE"""

    # -- regions, types, versions ---------------------------------------------------------------

    def _region_json(self, cfg: RegionConfig) -> JSON:
        return {
            "id": cfg.id,
            "country": cfg.country,
            "capabilities": list(cfg.capabilities),
            "monitors": {"alerts": ["Managed Databases"], "metrics": ["Managed Databases"]},
            "status": "ok",
            "resolvers": {"ipv4": "172.105.34.5,172.105.35.5", "ipv6": "2600:3c03::7,2600:3c03::4"},
            "label": cfg.id,
            "site_type": "core",
            "placement_group_limits": {
                "maximum_pgs_per_customer": 100,
                "maximum_linodes_per_pg": 5,
            },
        }

    def _list_regions(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._region_json(c) for c in self._regions.values()], query, headers)

    def _get_region(self, *, region: str, **_: Any) -> JSON:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._region_json(cfg)

    def _availability(self, cfg: RegionConfig) -> list[JSON]:
        return [
            {"region": cfg.id, "plan": pid, "available": pid not in cfg.unavailable_plans}
            for pid, *_rest in _PLANS
        ]

    def _list_regions_availability(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        rows = [row for c in self._regions.values() for row in self._availability(c)]
        return self._page(rows, query, headers)

    def _region_availability(self, *, region: str, **_: Any) -> list[JSON]:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._availability(cfg)

    @staticmethod
    def _account_row(cfg: RegionConfig) -> JSON:
        return {
            "region": cfg.id,
            "unavailable": list(cfg.account_unavailable),
            "available": [c for c in cfg.capabilities if c not in cfg.account_unavailable],
        }

    def _list_account_availability(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([self._account_row(c) for c in self._regions.values()], query, headers)

    def _account_availability(self, *, region: str, **_: Any) -> JSON:
        cfg = self._regions.get(region)
        if cfg is None:
            raise _not_found()
        return self._account_row(cfg)

    def _lke_versions(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        return self._page([{"id": v} for v in KUBERNETES_VERSIONS], query, headers)

    def _lke_version(self, *, version: str, **_: Any) -> JSON:
        if version not in KUBERNETES_VERSIONS:
            raise _not_found()
        return {"id": version}

    def _list_types(self, *, query: Any, headers: Any, **_: Any) -> JSON:
        plans = [self.plan(p[0]) for p in _PLANS]
        return self._page([p for p in plans if p is not None], query, headers)

    def _get_type(self, *, type_id: str, **_: Any) -> JSON:
        plan = self.plan(type_id)
        if plan is None:
            raise _not_found()
        return plan
