"""What migration operations report: per-set results, run reports, status, drills."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from aiaas_db.migrations._state import HistoryEntry

__all__ = [
    "AppliedChangeSet",
    "DrillReport",
    "DrillStep",
    "MigrationResult",
    "MigrationStatus",
    "PendingChangeSet",
    "PreCheck",
    "RunReport",
]

ResultStatus = Literal["applied", "rolled_back", "failed", "dry_run", "skipped"]
RunStatus = Literal["succeeded", "failed", "noop"]
Operation = Literal["up", "down", "recover", "force", "accept_checksum", "drill"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@attrs.frozen
class PreCheck:
    """One pre-run check and its outcome."""

    name: str
    ok: bool
    detail: str = ""


@attrs.frozen
class MigrationResult:
    """What happened to one change set in one direction.

    ``rows_affected`` maps each touched table to its inserted/updated/deleted row counts;
    ``row_deltas`` to inserted minus deleted. ``sql`` holds the statements for dry runs.
    """

    version: int
    slug: str
    direction: Literal["up", "down"]
    status: ResultStatus
    checksum: str
    no_transaction: bool = False
    duration_ms: float = 0.0
    statements: int = 0
    rows_affected: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    error: str | None = None
    failed_statement: str | None = None
    sql: tuple[str, ...] = ()

    @property
    def row_deltas(self) -> dict[str, int]:
        return {
            table: int(counts.get("inserted", 0)) - int(counts.get("deleted", 0))
            for table, counts in self.rows_affected.items()
        }

    @property
    def rows_total(self) -> int:
        return sum(sum(int(n) for n in counts.values()) for counts in self.rows_affected.values())

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["rows_affected"] = {k: dict(v) for k, v in self.rows_affected.items()}
        out["row_deltas"] = self.row_deltas
        out["sql"] = list(self.sql)
        return out


@attrs.frozen
class RunReport:
    """The outcome of one operation (``up``, ``down``, ``recover``, ``force``, ...)."""

    run_id: str
    component: str
    operation: Operation
    status: RunStatus
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    version_before: int | None
    version_after: int | None
    results: tuple[MigrationResult, ...] = ()
    checks: tuple[PreCheck, ...] = ()
    lock_wait_s: float = 0.0
    environment: str | None = None
    applied_by: str | None = None
    approved_by: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(r.version for r in self.results if r.status != "skipped")

    @property
    def tables_touched(self) -> tuple[str, ...]:
        return tuple(sorted({t for r in self.results for t in r.rows_affected}))

    @property
    def rows_total(self) -> int:
        return sum(r.rows_total for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "component": self.component,
            "operation": self.operation,
            "status": self.status,
            "dry_run": self.dry_run,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": round(self.duration_s, 6),
            "version_before": self.version_before,
            "version_after": self.version_after,
            "environment": self.environment,
            "applied_by": self.applied_by,
            "approved_by": self.approved_by,
            "lock_wait_s": round(self.lock_wait_s, 6),
            "checks": [attrs.asdict(c) for c in self.checks],
            "results": [r.to_dict() for r in self.results],
            "tables_touched": list(self.tables_touched),
            "rows_total": self.rows_total,
        }

    def to_migration_run(self) -> dict[str, Any]:
        """The ``MigrationRun`` shape of ``contracts/schema-management.yaml``."""
        status = {"succeeded": "succeeded", "failed": "failed", "noop": "succeeded"}[self.status]
        if self.operation == "down" and self.status == "succeeded":
            status = "rolled_back"
        return {
            "runId": self.run_id,
            "component": self.component,
            "status": status,
            "submittedAt": _iso(self.started_at),
            "completedAt": _iso(self.finished_at),
            "targetVersion": None if self.version_after is None else str(self.version_after),
            "appliedVersions": [str(v) for v in self.versions],
            "metrics": {
                "durationSeconds": round(self.duration_s, 6),
                "rowChanges": self.rows_total,
                "tablesTouched": list(self.tables_touched),
            },
        }


@attrs.frozen
class PendingChangeSet:
    version: int
    slug: str
    no_transaction: bool
    destructive: bool
    author: str | None
    out_of_order: bool = False


@attrs.frozen
class AppliedChangeSet:
    version: int
    slug: str
    checksum: str
    applied_at: datetime | None
    applied_by: str | None
    approved_by: str | None
    checksum_matches: bool | None  # None when the source has no such set (or no source given)


@attrs.frozen
class MigrationStatus:
    """Where a component stands: the library call behind ``migrate status`` and health checks."""

    component: str
    initialized: bool
    current_version: int | None
    dirty: bool
    dirty_version: int | None
    dirty_detail: str | None
    failed_version: int | None
    failed_error: str | None
    applied: tuple[AppliedChangeSet, ...]
    pending: tuple[PendingChangeSet, ...]
    history: tuple[HistoryEntry, ...]
    last_migration_at: datetime | None
    checksum_mismatches: tuple[int, ...]
    missing: tuple[int, ...]
    out_of_order: tuple[int, ...]
    golang_version: int | None
    golang_dirty: bool
    source: str | None

    @property
    def blocked(self) -> bool:
        """True when applies are blocked until ``recover`` (dirty or failed head)."""
        return self.dirty or self.failed_version is not None

    def health(self) -> dict[str, Any]:
        """What a health endpoint exposes: schema version and last migration time, and flags."""
        return {
            "component": self.component,
            "schema_version": self.current_version,
            "last_migration_at": _iso(self.last_migration_at),
            "dirty": self.dirty,
            "failed_version": self.failed_version,
            "pending": len(self.pending),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "initialized": self.initialized,
            "current_version": self.current_version,
            "dirty": self.dirty,
            "dirty_version": self.dirty_version,
            "dirty_detail": self.dirty_detail,
            "failed_version": self.failed_version,
            "failed_error": self.failed_error,
            "blocked": self.blocked,
            "applied": [
                {**attrs.asdict(a), "applied_at": _iso(a.applied_at)} for a in self.applied
            ],
            "pending": [attrs.asdict(p) for p in self.pending],
            "history": [h.to_dict() for h in self.history],
            "last_migration_at": _iso(self.last_migration_at),
            "checksum_mismatches": list(self.checksum_mismatches),
            "missing": list(self.missing),
            "out_of_order": list(self.out_of_order),
            "golang_version": self.golang_version,
            "golang_dirty": self.golang_dirty,
            "source": self.source,
        }


@attrs.frozen
class DrillStep:
    """One change set's drill: fingerprints before up, after up, after down, after reapply."""

    version: int
    slug: str
    before: str
    after_up: str
    after_down: str
    after_reapply: str
    differences: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.before == self.after_down and self.after_up == self.after_reapply


@attrs.frozen
class DrillReport:
    run_id: str
    component: str
    steps: tuple[DrillStep, ...]
    started_at: datetime
    finished_at: datetime

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "component": self.component,
            "ok": self.ok,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "steps": [{**attrs.asdict(s), "ok": s.ok} for s in self.steps],
        }
