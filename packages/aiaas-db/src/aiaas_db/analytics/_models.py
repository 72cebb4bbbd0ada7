"""Value objects and errors of the rollup engine (``aiaas-db rollup``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import attrs

from aiaas_core import (
    AiaasError,
    ConfigError,
    InternalError,
    LockedError,
    ServiceUnavailableError,
    ValidationError,
)

__all__ = [
    "CheckResult",
    "ReconciliationCheck",
    "ReconciliationReport",
    "RollupConfigError",
    "RollupError",
    "RollupFailedError",
    "RollupLockedError",
    "RollupProgress",
    "RollupReport",
    "RollupSchemaMissingError",
    "RollupTarget",
    "RollupUnavailableError",
    "RollupWindowError",
    "UsageRow",
]

RunMode = Literal["incremental", "window", "backfill"]
RunStatus = Literal["succeeded", "failed"]


# -- errors ------------------------------------------------------------------------------------


class RollupError(AiaasError):
    """Base of every rollup error."""

    code = "ROLLUP_ERROR"


class RollupConfigError(RollupError, ConfigError):
    """The targets file or a target is invalid (unknown name, unsupported dialect, no DSN)."""

    code = "ROLLUP_TARGET_INVALID"
    title = "Invalid rollup target"


class RollupWindowError(RollupError, ValidationError):
    """The granularity or window is not acceptable."""

    code = "ROLLUP_WINDOW_INVALID"
    title = "Invalid rollup window"


class RollupLockedError(RollupError, LockedError):
    """Another rollup run holds the target's lock."""

    code = "ROLLUP_LOCKED"
    title = "Another rollup is running"


class RollupSchemaMissingError(RollupError, ConfigError):
    """The target database lacks the analytics tables (change sets not applied)."""

    code = "ROLLUP_SCHEMA_MISSING"
    title = "Analytics schema missing"


class RollupUnavailableError(RollupError, ServiceUnavailableError):
    """The database (or the DuckDB extra) cannot be reached or loaded."""

    code = "ROLLUP_UNAVAILABLE"
    title = "Rollup target unavailable"


class RollupFailedError(RollupError, InternalError):
    """A rollup run failed; its run is recorded as failed and nothing partial was committed."""

    code = "ROLLUP_FAILED"
    title = "Rollup failed"

    def __init__(self, message: str, *, run_id: uuid.UUID | None = None) -> None:
        self.run_id = run_id
        super().__init__(message)


# -- targets -----------------------------------------------------------------------------------


def _dialect(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    from aiaas_db.analytics._sql import DIALECTS  # noqa: PLC0415 -- tiny module, no sqlglot import

    if value not in DIALECTS:
        raise RollupConfigError(
            f"unsupported rollup dialect {value!r}; supported: {', '.join(DIALECTS)}"
        )


@attrs.frozen
class RollupTarget:
    """A named place rollups are written to.

    ``postgres``: rollups live in the database ``dsn`` names, beside its ``usage_events``.
    ``duckdb``: rollups (and a mirror of the raw events they need) live in the DuckDB file
    ``duckdb_path``; raw events are copied from the PostgreSQL database ``dsn``.
    The DSN is a secret: it is never part of ``repr`` or :meth:`to_dict`.
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9_.-]{1,63}"))
    dialect: str = attrs.field(validator=_dialect)
    dsn: str | None = attrs.field(default=None, repr=False)
    duckdb_path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    #: Where the DSN comes from (an environment variable name), for messages.
    dsn_origin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dialect": self.dialect,
            "duckdb_path": str(self.duckdb_path) if self.duckdb_path else None,
            "dsn_configured": self.dsn is not None,
        }


# -- reports -----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@attrs.frozen
class RollupProgress:
    """Reported after every committed window of a run or backfill."""

    granularity: str
    windows_done: int
    windows_total: int
    window_start: datetime
    window_end: datetime
    events: int


@attrs.frozen
class RollupReport:
    """What one rollup run (or backfill) did."""

    run_id: uuid.UUID
    target: str
    dialect: str
    granularity: str
    mode: RunMode
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    watermark_before: datetime | None = None
    watermark_after: datetime | None = None
    windows: int = 0
    buckets: int = 0
    events: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    resumed_from: datetime | None = None
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "target": self.target,
            "dialect": self.dialect,
            "granularity": self.granularity,
            "mode": self.mode,
            "status": self.status,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": round(self.duration_s, 3),
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "watermark_before": _iso(self.watermark_before),
            "watermark_after": _iso(self.watermark_after),
            "windows": self.windows,
            "buckets": self.buckets,
            "events": self.events,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "rows_deleted": self.rows_deleted,
            "resumed_from": _iso(self.resumed_from),
            "error": self.error,
        }

    def to_rollup_run(self) -> dict[str, Any]:
        """The schema-management API's ``RollupRun`` body for this run."""
        return {
            "runId": str(self.run_id),
            "status": self.status,
            "granularities": [self.granularity],
            "submittedAt": _iso(self.started_at),
            "completedAt": _iso(self.finished_at),
        }


@attrs.frozen
class ReconciliationCheck:
    """A check in the contract's format: SQL that returns no rows when rollups are right."""

    name: str = attrs.field(validator=attrs.validators.matches_re(r"[a-z][a-z0-9_]*"))
    sql: str = attrs.field(validator=attrs.validators.min_len(1))
    granularity: str = attrs.field(default="hour", validator=attrs.validators.in_(("hour", "day")))
    description: str = ""


@attrs.frozen
class CheckResult:
    name: str
    granularity: str
    ok: bool
    mismatches: int
    sample: tuple[dict[str, Any], ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "granularity": self.granularity,
            "ok": self.ok,
            "mismatches": self.mismatches,
            "sample": [dict(s) for s in self.sample],
            "description": self.description,
        }


@attrs.frozen
class ReconciliationReport:
    target: str
    dialect: str
    checks: tuple[CheckResult, ...]
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "dialect": self.dialect,
            "ok": self.ok,
            "mismatches": self.mismatches,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "checks": [c.to_dict() for c in self.checks],
        }


@attrs.frozen
class UsageRow:
    """Usage of one organisation (or model) in one bucket, from the rollups."""

    bucket_start: datetime
    key: uuid.UUID | None
    request_count: int
    tokens_total: int
    error_count: int
    rate_limited_count: int
    cost_usd: Decimal
    latency_ms_sum: int

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.request_count if self.request_count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket_start": self.bucket_start.isoformat(),
            "key": str(self.key) if self.key is not None else None,
            "request_count": self.request_count,
            "tokens_total": self.tokens_total,
            "error_count": self.error_count,
            "rate_limited_count": self.rate_limited_count,
            "cost_usd": str(self.cost_usd),
            "latency_ms_sum": self.latency_ms_sum,
        }
