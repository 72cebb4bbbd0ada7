"""Runs of the schema API: rollup requests and triggers, and the in-memory run book."""

from __future__ import annotations

import importlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal, Protocol, runtime_checkable

import attrs

from aiaas_core import ConflictError
from aiaas_db.server._http import _iso

__all__ = ["RollupRequest", "RollupTrigger", "default_rollup_trigger"]

#: Finished runs kept in memory for the status endpoints (the oldest finished ones go first).
MAX_RUNS_KEPT: Final = 1000


# -- rollups -----------------------------------------------------------------------------------


@attrs.frozen
class RollupRequest:
    """A validated rollup request: rebuild ``granularity`` buckets in ``[start, end)``."""

    run_id: str
    granularity: Literal["hour", "day"]
    start: datetime
    end: datetime
    reconcile_late_arrivals: bool = True


@runtime_checkable
class RollupTrigger(Protocol):
    """What the API calls (in a worker thread) to run one rollup request.

    It returns when the rollup is done and raises to report a failure (an
    :class:`~aiaas_core.AiaasError`'s code and message are shown in the run's ``error``).
    """

    def __call__(self, request: RollupRequest, /) -> object: ...


def default_rollup_trigger(dsn: str, target: str = "postgres") -> RollupTrigger | None:
    """The rollup engine (``aiaas_db.analytics._engine.trigger_rollup``) bound to ``dsn`` and
    ``target``.

    ``None`` when the engine is not importable: the API then answers rollup requests with
    ``503 ROLLUPS_UNAVAILABLE`` rather than pretending.
    """
    try:
        module = importlib.import_module("aiaas_db.analytics._engine")
    except ImportError:
        return None
    run = getattr(module, "trigger_rollup", None)
    if not callable(run):
        return None

    def trigger(request: RollupRequest, /) -> object:
        return run(dsn, request.granularity, request.start, request.end, target=target)

    return trigger


@attrs.define
class _Run:
    run_id: str
    kind: Literal["apply", "rollback", "rollup"]
    submitted_at: datetime
    status: str
    component: str | None = None
    target_version: str | None = None
    dry_run: bool = False
    versions: list[str] = attrs.Factory(list)
    granularities: tuple[str, ...] = ()
    completed_at: datetime | None = None
    metrics: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    thread_id: int | None = None

    @property
    def active(self) -> bool:
        return self.completed_at is None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"runId": self.run_id, "status": self.status}
        if self.kind == "rollup":
            doc["granularities"] = list(self.granularities)
            doc["submittedAt"] = _iso(self.submitted_at)
        else:
            doc["component"] = self.component
            doc["submittedAt"] = _iso(self.submitted_at)
            if self.target_version is not None:
                doc["targetVersion"] = self.target_version
            doc["appliedVersions"] = list(self.versions)
            if self.metrics is not None:
                doc["metrics"] = dict(self.metrics)
            doc["dryRun"] = self.dry_run
            doc["operation"] = self.kind
        if self.completed_at is not None:
            doc["completedAt"] = _iso(self.completed_at)
        if self.error is not None:
            doc["error"] = dict(self.error)
        return doc


class _RunBook:
    """Runs by id, thread-safe; at most one migration run and one rollup run active at once."""

    def __init__(self, keep: int = MAX_RUNS_KEPT) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._threads: list[threading.Thread] = []
        self._keep = keep

    def _refuse_if_busy(self, family: str) -> None:
        for other in self._runs.values():
            if other.active and ("rollup" if other.kind == "rollup" else "migration") == family:
                what = "rollup" if family == "rollup" else f"migration ({other.kind})"
                raise ConflictError(
                    f"a {what} run is in progress (runId {other.run_id}); wait for it to "
                    "finish (see its status) and retry",
                    code=f"{family.upper()}_RUN_IN_PROGRESS",
                )

    def ensure_idle(self, family: str) -> None:
        """Raise 409 when a run of ``family`` (``migration`` or ``rollup``) is active."""
        with self._lock:
            self._refuse_if_busy(family)

    def start(self, run: _Run, target: Callable[[_Run], None]) -> dict[str, Any]:
        """Register ``run`` (refusing when one of its kind is active) and start its thread."""
        with self._lock:
            self._refuse_if_busy("rollup" if run.kind == "rollup" else "migration")
            self._runs[run.run_id] = run
            self._trim()
            thread = threading.Thread(
                target=target, args=(run,), name=f"aiaas-db-{run.kind}-{run.run_id[:8]}"
            )
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
            return run.document()

    def _trim(self) -> None:
        while len(self._runs) > self._keep:
            oldest = next((k for k, r in self._runs.items() if not r.active), None)
            if oldest is None:
                return
            del self._runs[oldest]

    def update(self, run: _Run, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(run, key, value)

    def add_version(self, thread_id: int, version: str) -> None:
        with self._lock:
            for run in self._runs.values():
                if run.active and run.thread_id == thread_id and run.kind != "rollup":
                    if run.status == "pending":
                        run.status = "running"
                    if version not in run.versions:
                        run.versions.append(version)

    def mark_running(self, thread_id: int) -> None:
        with self._lock:
            for run in self._runs.values():
                if run.active and run.thread_id == thread_id and run.status == "pending":
                    run.status = "running"

    def get(self, run_id: str, *, rollup: bool) -> dict[str, Any] | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or (run.kind == "rollup") != rollup:
                return None
            return run.document()

    def busy(self) -> bool:
        with self._lock:
            return any(r.active for r in self._runs.values())

    def join(self, timeout: float) -> None:
        for thread in list(self._threads):
            thread.join(timeout)


class _Progress(logging.Handler):
    """Feeds the migrator's events (logged from a worker thread) into that thread's run."""

    def __init__(self, book: _RunBook) -> None:
        super().__init__(logging.INFO)
        self.book = book

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if record.thread is None:
            return
        if event == "migration_finish" and not getattr(record, "dry_run", False):
            status = getattr(record, "status", "")
            if status in ("applied", "rolled_back"):
                self.book.add_version(record.thread, str(getattr(record, "version", "")))
        elif event in ("migration_start", "migration_pre_checks", "migration_dry_run"):
            self.book.mark_running(record.thread)
