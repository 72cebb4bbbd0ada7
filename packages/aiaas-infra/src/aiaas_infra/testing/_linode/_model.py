"""The emulator's configuration (regions, plans, account limits), faults, request records and
the errors its API answers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs

__all__ = [
    "AccountLimits",
    "Fault",
    "RegionConfig",
    "RequestRecord",
]

JSON = dict[str, Any]

ALL_CAPABILITIES: Final = (
    "Linodes",
    "NodeBalancers",
    "Block Storage",
    "Object Storage",
    "Kubernetes",
    "Cloud Firewall",
    "VPCs",
    "GPU Linodes",
    "Managed Databases",
    "Linode Interfaces",
)

KUBERNETES_VERSIONS: Final = ("1.32", "1.31", "1.30")

_PLANS: Final = (
    # id, class, label, vcpus, memory MB, disk MB, gpus, monthly price
    ("g6-nanode-1", "nanode", "Nanode 1GB", 1, 1024, 25600, 0, 5),
    ("g6-standard-1", "standard", "Linode 2GB", 1, 2048, 51200, 0, 12),
    ("g6-standard-2", "standard", "Linode 4GB", 2, 4096, 81920, 0, 24),
    ("g6-standard-4", "standard", "Linode 8GB", 4, 8192, 163840, 0, 48),
    ("g6-standard-8", "standard", "Linode 16GB", 6, 16384, 327680, 0, 96),
    ("g6-dedicated-2", "dedicated", "Dedicated 4GB", 2, 4096, 81920, 0, 36),
    ("g6-dedicated-4", "dedicated", "Dedicated 8GB", 4, 8192, 163840, 0, 72),
    ("g6-dedicated-8", "dedicated", "Dedicated 16GB", 8, 16384, 327680, 0, 144),
    ("g2-gpu-rtx4000a1-s", "gpu", "RTX4000 Ada x1 Small", 4, 16384, 512000, 1, 350),
    ("g1-gpu-rtx6000-1", "gpu", "Dedicated 32GB + RTX6000 GPU x1", 8, 32768, 655360, 1, 1000),
)


# --------------------------------------------------------------------------------------------
# Configuration


@attrs.frozen
class RegionConfig:
    """A region the emulator serves: its capabilities and the plans sold out there."""

    id: str
    capabilities: tuple[str, ...] = ALL_CAPABILITIES
    country: str = "us"
    unavailable_plans: tuple[str, ...] = ()
    account_unavailable: tuple[str, ...] = ()


DEFAULT_REGIONS: Final = (
    RegionConfig("us-ord"),
    RegionConfig("us-sea"),
    RegionConfig(
        "us-east",
        capabilities=tuple(c for c in ALL_CAPABILITIES if c != "GPU Linodes"),
    ),
    RegionConfig(
        "eu-west",
        country="gb",
        capabilities=("Linodes", "NodeBalancers", "Block Storage", "Object Storage"),
    ),
)


@attrs.frozen
class AccountLimits:
    """Account limits; a create beyond one answers 400 ``Account Limit reached``."""

    clusters: int = 10
    nodes: int = 300
    firewalls: int = 50
    vpcs: int = 10
    subnets_per_vpc: int = 16
    buckets_per_region: int = 50
    keys: int = 100
    databases: int = 20


@attrs.frozen
class Fault:
    """A fault to inject into matching requests.

    ``kind``:

    * ``"status"``: answer ``status`` (with ``Retry-After`` when ``retry_after`` is set) instead
      of serving the request -- nothing is changed;
    * ``"latency"``: wait ``delay`` seconds, then serve the request normally;
    * ``"drop"``: serve the request (a create *is* made) and close the connection without an
      answer -- the client sees a lost response;
    * ``"timeout"``: serve the request, then hold the answer ``delay`` seconds (longer than the
      client's timeout) before sending it.

    ``method`` (``None`` for any) and ``path`` (a regular expression searched in the path after
    ``/v4``) select requests; ``times`` limits how many requests it hits (``None``: all).
    """

    kind: Literal["status", "latency", "drop", "timeout"]
    path: str = ""
    method: str | None = None
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    times: int | None = 1
    reason: str = ""


@attrs.frozen
class RequestRecord:
    """One request the emulator received, and the status it answered (0: no answer)."""

    method: str
    path: str
    status: int
    fault: str | None = None


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        self.headers = dict(headers or {})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _bad(reason: str, field: str | None = None) -> _ApiError:
    return _ApiError(400, reason, field)


def _not_found() -> _ApiError:
    return _ApiError(404, "Not found")


_EMULATED_AREAS: Final = (
    "regions, account availability, LKE clusters and pools, Linode types, firewalls, VPCs and "
    "subnets, Object Storage (buckets, keys, quotas) and managed PostgreSQL databases"
)


def _not_emulated(method: str, path: str) -> _ApiError:
    """An endpoint outside the emulated surface: 501, never a 404 that reads as a missing object."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    return _ApiError(
        501,
        f"{method} /v4{shown} is not emulated by aiaas-infra's Linode emulator; it emulates "
        f"{_EMULATED_AREAS}. Use the real Linode API for anything else",
    )


def _limit(what: str) -> _ApiError:
    return _ApiError(
        400, f"Account Limit reached. Please open a support ticket to raise the {what} limit."
    )


def _public(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
