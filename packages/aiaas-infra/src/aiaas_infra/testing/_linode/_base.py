"""What every API area of the emulator shares: the state it works on, the list envelope
(paging and ``X-Filter``), request-body checks and region checks."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiaas_infra.testing._linode._model import (
    _PLANS,
    JSON,
    AccountLimits,
    RegionConfig,
    _ApiError,
    _bad,
    _not_found,
)

if TYPE_CHECKING:
    from aiaas_infra.testing._linode._store import _Store

__all__: list[str] = []


# --------------------------------------------------------------------------------------------
# X-Filter


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "+contains":
        if isinstance(value, list):
            return any(isinstance(v, str) and str(operand) in v for v in value)
        return isinstance(value, str) and str(operand) in value
    if op == "+neq":
        return bool(value != operand)
    if value is None:
        return False
    try:
        if op == "+gt":
            return bool(value > operand)
        if op == "+gte":
            return bool(value >= operand)
        if op == "+lt":
            return bool(value < operand)
        if op == "+lte":
            return bool(value <= operand)
    except TypeError:
        return False
    raise _bad(f"Unknown filter operator {op}", "X-Filter")


def _matches(obj: JSON, flt: Any) -> bool:
    if not isinstance(flt, dict):
        raise _bad("Filter must be an object", "X-Filter")
    for key, cond in flt.items():
        if key in ("+order_by", "+order"):
            continue
        if key == "+and":
            if not isinstance(cond, list) or not all(_matches(obj, c) for c in cond):
                return False
            continue
        if key == "+or":
            if not isinstance(cond, list) or not any(_matches(obj, c) for c in cond):
                return False
            continue
        if key.startswith("+"):
            raise _bad(f"Unknown filter operator {key}", "X-Filter")
        if key not in obj:
            raise _bad(f"Cannot filter on {key}", "X-Filter")
        value = obj[key]
        if isinstance(cond, dict):
            if not all(_compare(value, op, operand) for op, operand in cond.items()):
                return False
        elif isinstance(value, list):
            if cond not in value:
                return False
        elif value != cond:
            return False
    return True


class _ApiBase:
    """The state and helpers the API-area mixins of :class:`LinodeEmulator` share."""

    store: _Store
    limits: AccountLimits
    bucket_quota: int
    ready_delay: float
    kubeconfig_delay: float
    database_delay: float
    kubeconfig_retry_after: int
    _regions: dict[str, RegionConfig]

    def plan(self, type_id: str) -> JSON | None:
        for pid, cls, label, vcpus, memory, disk, gpus, monthly in _PLANS:
            if pid == type_id:
                return {
                    "accelerated_devices": 0,
                    "addons": {
                        "backups": {
                            "price": {"hourly": 0.004, "monthly": 2.5},
                            "region_prices": [{"id": "id-cgk", "hourly": 0.0045, "monthly": 3.0}],
                        }
                    },
                    "class": cls,
                    "disk": disk,
                    "gpus": gpus,
                    "id": pid,
                    "label": label,
                    "memory": memory,
                    "network_out": 1000,
                    "price": {"hourly": round(monthly / 730, 4), "monthly": float(monthly)},
                    "region_prices": [
                        {
                            "id": "id-cgk",
                            "hourly": round(monthly * 1.2 / 730, 4),
                            "monthly": monthly * 1.2,
                        }
                    ],
                    "successor": None,
                    "transfer": 1000,
                    "vcpus": vcpus,
                }
        return None

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _unique_label(
        objects: Iterable[JSON], label: Any, message: str, *, own: JSON | None = None
    ) -> None:
        """A 400 on ``label`` with ``message`` when another of ``objects`` (not ``own``, the
        object being updated) has ``label``."""
        if any(o["label"] == label and (own is None or o["id"] != own["id"]) for o in objects):
            raise _bad(message, "label")

    @staticmethod
    def _find(table: Mapping[int, JSON], ident: str | int) -> JSON:
        """The object ``ident`` (an id as the URL spells it) of ``table``, or a 404."""
        found = table.get(int(ident))
        if found is None:
            raise _not_found()
        return found

    @staticmethod
    def _page(
        items: list[JSON], query: Mapping[str, list[str]], headers: Mapping[str, str]
    ) -> JSON:
        raw_filter = headers.get("x-filter")
        order_by: str | None = None
        order = "asc"
        if raw_filter:
            try:
                flt = json.loads(raw_filter)
            except json.JSONDecodeError:
                raise _bad("Invalid JSON in X-Filter", "X-Filter") from None
            items = [i for i in items if _matches(i, flt)]
            if isinstance(flt, dict):
                order_by = flt.get("+order_by")
                order = flt.get("+order", "asc")
        if order_by is not None:
            items = sorted(
                items,
                key=lambda i: (i.get(order_by) is None, i.get(order_by)),
                reverse=order == "desc",
            )
        try:
            page = int(query.get("page", ["1"])[0])
            page_size = int(query.get("page_size", ["100"])[0])
        except ValueError:
            raise _bad("page and page_size must be integers", "page") from None
        if not 25 <= page_size <= 500:
            raise _bad("page_size must be between 25 and 500", "page_size")
        pages = max(1, math.ceil(len(items) / page_size))
        if page < 1:
            raise _bad("page must be >= 1", "page")
        start = (page - 1) * page_size
        return {
            "data": items[start : start + page_size],
            "page": page,
            "pages": pages,
            "results": len(items),
        }

    @staticmethod
    def _require(body: Any, *fields: str) -> JSON:
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object")
        for f in fields:
            if body.get(f) in (None, ""):
                raise _bad(f"{f} is required", f)
        return body

    def _check_region(self, region: Any, capability: str, field: str = "region") -> RegionConfig:
        cfg = self._regions.get(region) if isinstance(region, str) else None
        if cfg is None:
            raise _bad(f"Region {region!r} does not exist", field)
        if capability not in cfg.capabilities:
            raise _bad(f"{capability} is not available in {region}", field)
        if capability in cfg.account_unavailable:
            raise _ApiError(
                403, f"{capability} is not available to this account in {region}", field
            )
        return cfg

    @staticmethod
    def _tags(body: JSON) -> list[str]:
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and 3 <= len(t) <= 50 for t in tags
        ):
            raise _bad("Tags must be 3-50 characters", "tags")
        return list(tags)
