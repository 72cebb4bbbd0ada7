"""Rollup time arithmetic: UTC hour and day buckets, windows widened to whole buckets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from aiaas_db.analytics._models import RollupWindowError
from aiaas_db.analytics._sql import GRANULARITIES, Granularity

__all__: list[str] = []

#: Largest window committed in one transaction by incremental runs and backfills.
DEFAULT_WINDOW: Final[Mapping[str, timedelta]] = {
    "hour": timedelta(days=1),
    "day": timedelta(days=31),
}
STEP: Final[Mapping[str, timedelta]] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise RollupWindowError(
            f"{what} {value.isoformat()} has no time zone; give an ISO time with an offset "
            "(e.g. 2026-01-01T00:00:00Z)"
        )
    return value.astimezone(UTC)


def floor_bucket(value: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC hour or day holding ``value``."""
    value = _aware(value, "time")
    if granularity == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_bucket(value: datetime, granularity: Granularity) -> datetime:
    """The first UTC hour or day boundary at or after ``value``."""
    start = floor_bucket(value, granularity)
    return start if start == value.astimezone(UTC) else start + STEP[granularity]


def _check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise RollupWindowError(
            f"unsupported granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}"
        )
    return granularity


def _window(granularity: Granularity, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole buckets; refuses empty or inverted windows."""
    start, end = _aware(start, "window start"), _aware(end, "window end")
    if end <= start:
        raise RollupWindowError(
            f"window end {end.isoformat()} must be after its start {start.isoformat()}"
        )
    return floor_bucket(start, granularity), ceil_bucket(end, granularity)


def _split(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        nxt = min(cursor + size, end)
        out.append((cursor, nxt))
        cursor = nxt
    return out


def coalesce_buckets(
    buckets: Sequence[datetime], step: timedelta, max_span: timedelta
) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts grouped into contiguous windows no longer than ``max_span``."""
    windows: list[tuple[datetime, datetime]] = []
    for b in sorted(set(buckets)):
        if windows and windows[-1][1] == b and (b + step) - windows[-1][0] <= max_span:
            windows[-1] = (windows[-1][0], b + step)
        else:
            windows.append((b, b + step))
    return windows


def _buckets_in(start: datetime, end: datetime, granularity: Granularity) -> int:
    return int((end - start) / STEP[granularity])
