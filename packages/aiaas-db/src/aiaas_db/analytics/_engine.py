"""Hourly and daily usage rollups on PostgreSQL (default) or DuckDB (embedded), one definition.

* **Window replacement.** A window's buckets are recomputed from their source (hourly: raw
  ``usage_events``; daily: hourly rollups) and replaced in one transaction: vanished keys
  deleted, changed rows updated, new rows inserted. Running a window twice leaves identical
  aggregates (and the same row ids); deleted raw events disappear from a window's rollup.
* **Late events.** Incremental hourly runs read the ``ingested_at`` watermark of the last run
  and recompute only the hours holding events ingested since (less an ``overlap``, default
  5 minutes, so rows committed by long ingest transactions are not missed); the watermark then
  moves to the run's snapshot time. Hourly runs that change anything mark the affected UTC
  days in ``analytics_daily_rollup_invalidations``; incremental daily runs recompute exactly
  those days from hourly rollups.
* **Backfills** run window after window (each committed with its checkpoint), throttled by a
  pause and/or a maximum event rate, and resume from the checkpoint when interrupted.
* **Reconciliation** runs the contract's checks (``analytics-reconciliation-checks.yml``),
  their daily equivalents (derived by rewriting the checks' syntax tree) and two stricter
  checks over every measure in both directions.
* **DuckDB**: the raw events a run needs are bulk-copied (``COPY ... TO STDOUT``) from the
  operational PostgreSQL into a ``usage_events`` mirror in the DuckDB file, window by window,
  and the same rollup definition runs there.

The targets (where rollups are stored) come from the targets file (``_targets``), the stores
from ``_backends``, the reconciliation checks from ``_reconcile`` and the bucket arithmetic from
``_windows``; this module runs them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from aiaas_db.analytics._backends import (
    _MIRROR_COLUMNS,
    _REQUIRED_TABLES,
    DUCKDB_DDL,
    _Backend,
    _connect_pg,
    _DuckDBBackend,
    _jsonable,
    _lock_key,
    _open_duckdb,
    _PostgresBackend,
    _render_pg,
    _safe_message,
)
from aiaas_db.analytics._models import (
    CheckResult,
    ReconciliationCheck,
    ReconciliationReport,
    RollupConfigError,
    RollupError,
    RollupFailedError,
    RollupLockedError,
    RollupProgress,
    RollupReport,
    RollupSchemaMissingError,
    RollupTarget,
    RollupWindowError,
    RunMode,
    UsageRow,
)
from aiaas_db.analytics._reconcile import _scoped, builtin_checks
from aiaas_db.analytics._sql import Granularity
from aiaas_db.analytics._targets import rollup_target
from aiaas_db.analytics._windows import (
    DEFAULT_WINDOW,
    STEP,
    _buckets_in,
    _check_granularity,
    _split,
    _window,
    coalesce_buckets,
    floor_bucket,
)

if TYPE_CHECKING:
    import psycopg
    from sqlglot import exp

__all__ = [
    "RollupEngine",
    "backfill",
    "reconcile",
    "run_rollup",
    "trigger_rollup",
    "usage_by_model",
    "usage_by_organization",
]

ProgressCallback = Callable[[RollupProgress], None]

DEFAULT_OVERLAP: Final = timedelta(minutes=5)
#: Raw events are copied into DuckDB at most this much event time at a time.
COPY_CHUNK: Final = timedelta(days=1)

# -- engine ------------------------------------------------------------------------------------


class RollupEngine:
    """Runs rollups, backfills, reconciliation and dashboard queries against one target.

    Use as a context manager (or call :meth:`close`). ``clock`` and ``sleep`` are injectable
    for tests; ``overlap`` re-reads that much ingest time before the watermark (late commits).
    """

    def __init__(
        self,
        target: RollupTarget,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        lock_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if overlap < timedelta(0):
            raise RollupWindowError("overlap must not be negative")
        if target.dsn is None:
            env = f" (set {target.dsn_origin})" if target.dsn_origin else ""
            raise RollupConfigError(
                f"rollup target {target.name!r} has no PostgreSQL DSN{env}; pass --dsn"
            )
        if target.dialect == "duckdb" and target.duckdb_path is None:
            raise RollupConfigError(f"rollup target {target.name!r} needs a DuckDB file path")
        self.target = target
        self.overlap = overlap
        self.lock_timeout = lock_timeout
        self._sleep = sleep
        self._monotonic = monotonic
        self._pg: psycopg.Connection[Any] | None = None
        self._store: _Backend | None = None
        self._source: _PostgresBackend | None = None
        self._locked = False

    # connections -----------------------------------------------------------------------------

    def __enter__(self) -> RollupEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and close every connection (idempotent)."""
        if self._store is not None and self._store is not self._source:
            self._store.close()
        if self._pg is not None and not self._pg.closed:
            self._pg.close()
        self._store = self._source = self._pg = None
        self._locked = False

    @property
    def dialect(self) -> Literal["postgres", "duckdb"]:
        return cast("Literal['postgres', 'duckdb']", self.target.dialect)

    def _source_backend(self) -> _PostgresBackend:
        if self._source is None:
            self._pg = _connect_pg(cast("str", self.target.dsn), self.target.name)
            self._source = _PostgresBackend(self._pg)
        return self._source

    def _backend(self) -> _Backend:
        """The store rollups live in (created and checked on first use)."""
        if self._store is not None:
            return self._store
        if self.dialect == "postgres":
            source = self._source_backend()
            self._require_schema(source)
            self._store = source
        else:
            store = _DuckDBBackend(_open_duckdb(cast("Path", self.target.duckdb_path)))
            from aiaas_db.analytics._sql import render  # noqa: PLC0415

            for ddl in DUCKDB_DDL:
                store.run(render(ddl, "duckdb"))
            self._store = store
        return self._store

    @staticmethod
    def _require_schema(source: _PostgresBackend) -> None:
        names = ", ".join(f"to_regclass('{t}')" for t in _REQUIRED_TABLES)
        _, rows = source.rows(f"SELECT {names}")
        missing = [t for t, found in zip(_REQUIRED_TABLES, rows[0], strict=True) if found is None]
        if missing:
            raise RollupSchemaMissingError(
                f"the database lacks {', '.join(missing)}; apply the platform change sets "
                "first: aiaas-db migrate up --platform"
            )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One rollup at a time per PostgreSQL database (DuckDB files lock themselves)."""
        if self.dialect != "postgres" or self._locked:
            yield
            return
        from aiaas_db._errors import LockTimeoutError  # noqa: PLC0415
        from aiaas_db.migrations._lock import AdvisoryLock  # noqa: PLC0415

        self._backend()
        conn = cast("psycopg.Connection[Any]", self._pg)
        lock = AdvisoryLock(conn, [_lock_key(conn.info.dbname)], timeout=self.lock_timeout)
        try:
            lock.acquire()
        except LockTimeoutError:
            raise RollupLockedError(
                f"another rollup holds this database's rollup lock (waited "
                f"{self.lock_timeout:g} s); wait for it or raise --lock-timeout"
            ) from None
        self._locked = True
        try:
            yield
        finally:
            self._locked = False
            lock.release()

    def _sql(self, sql: str, **values: object) -> str:
        from aiaas_db.analytics._sql import render  # noqa: PLC0415

        return render(sql, self.dialect, **values)

    def _now(self) -> datetime:
        """The database clock (ingested_at is stamped by it)."""
        _, rows = self._source_backend().rows("SELECT now()")
        return cast("datetime", rows[0][0]).astimezone(UTC)

    # window replacement ----------------------------------------------------------------------

    def _mirror(self, start: datetime, end: datetime) -> None:
        """Make the DuckDB mirror of ``usage_events`` equal PostgreSQL's for ``[start, end)``."""
        from aiaas_db.analytics._sql import render  # noqa: PLC0415

        store = self._backend()
        store.run(
            self._sql(
                "DELETE FROM usage_events WHERE occurred_at >= :s AND occurred_at < :e",
                s=start,
                e=end,
            )
        )
        source = self._source_backend()
        folder = self.target.duckdb_path.parent if self.target.duckdb_path else None
        for a, b in _split(start, end, COPY_CHUNK):
            select = render(
                f"SELECT {_MIRROR_COLUMNS} FROM usage_events "  # noqa: S608
                "WHERE occurred_at >= :s AND occurred_at < :e",
                "postgres",
                s=a,
                e=b,
            )
            fd, name = tempfile.mkstemp(prefix=".aiaas-rollup-", suffix=".csv", dir=folder)
            try:
                wrote = 0
                copy_sql = f"COPY ({select}) TO STDOUT WITH (FORMAT csv)".encode()
                with os.fdopen(fd, "wb") as fh, source.conn.cursor().copy(copy_sql) as copy:
                    for data in copy:
                        fh.write(data)
                        wrote += len(data)
                if wrote:
                    quoted = name.replace("'", "''")
                    store.run(f"COPY usage_events FROM '{quoted}' (FORMAT csv, HEADER false)")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)

    def _replace(
        self, granularity: Granularity, start: datetime, end: datetime, now: datetime
    ) -> tuple[int, int, int, int]:
        """Replace the buckets of ``[start, end)``; (events, inserted, updated, deleted).

        Runs inside the caller's transaction.
        """
        from aiaas_db.analytics._sql import (  # noqa: PLC0415
            CLEAR_INVALIDATIONS,
            INVALIDATE_DAY,
            STAGE_TABLE,
            STAGE_TOTALS,
            replacement_sql,
        )

        store = self._backend()
        if granularity == "hour" and self.dialect == "duckdb":
            self._mirror(start, end)
        stage, delete, update, insert, touch, drop = replacement_sql(granularity)
        values = {"window_start": start, "window_end": end, "now": now}
        store.run(self._sql(stage, **values))
        if self.dialect == "postgres":
            # Temporary tables are never auto-analysed: without statistics the planner picks
            # nested loops for the key joins below.
            store.run(f"ANALYZE {STAGE_TABLE}")
        _, totals = store.rows(self._sql(STAGE_TOTALS))
        events = int(totals[0][1])
        deleted = store.run(self._sql(delete, **values))
        updated = store.run(self._sql(update, **values))
        inserted = store.run(self._sql(insert, **values))
        store.run(self._sql(touch, **values))
        store.run(self._sql(drop))
        if granularity == "hour" and (inserted or updated or deleted):
            day = floor_bucket(start, "day")
            while day < end:
                store.run(self._sql(INVALIDATE_DAY, day=day, now=now))
                day += STEP["day"]
        if granularity == "day":
            store.run(self._sql(CLEAR_INVALIDATIONS, **values))
        return events, inserted, updated, deleted

    # runs ------------------------------------------------------------------------------------

    def _watermark(self, granularity: Granularity) -> datetime | None:
        from aiaas_db.analytics._sql import GET_WATERMARK  # noqa: PLC0415

        _, rows = self._backend().rows(self._sql(GET_WATERMARK, granularity=granularity))
        value = rows[0][0] if rows else None
        return cast("datetime", value).astimezone(UTC) if value is not None else None

    def run(
        self,
        granularity: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> RollupReport:
        """Roll up ``[start, end)`` (widened to whole buckets), or what changed since last run.

        Without a window an hourly run recomputes the hours holding events ingested since the
        watermark; a daily run recomputes the days whose hourly rollups changed.
        """
        gran = _check_granularity(granularity)
        if (start is None) != (end is None):
            raise RollupWindowError("give both the window start and end, or neither")
        if start is not None and end is not None:
            window = _window(gran, start, end)
            return self._execute(gran, "window", [window], progress=progress, window=window)
        with self._exclusive():
            return self._incremental(gran, progress)

    def _incremental(self, gran: Granularity, progress: ProgressCallback | None) -> RollupReport:
        from aiaas_db.analytics._sql import (  # noqa: PLC0415
            AFFECTED_HOURS,
            ALL_HOURS,
            INVALIDATED_DAYS,
        )

        store = self._backend()
        before = self._watermark(gran)
        if gran == "hour":
            until = self._now()
            if before is None:
                sql = _render_pg(ALL_HOURS, until=until)
            else:
                sql = _render_pg(AFFECTED_HOURS, since=before - self.overlap, until=until)
            _, rows = self._source_backend().rows(sql)
            buckets = [cast("datetime", r[0]).astimezone(UTC) for r in rows]
            after: datetime | None = max(until, before) if before is not None else until
        else:
            _, rows = store.rows(self._sql(INVALIDATED_DAYS))
            buckets = [cast("datetime", r[0]).astimezone(UTC) for r in rows]
            after = None
        windows = coalesce_buckets(buckets, STEP[gran], DEFAULT_WINDOW[gran])
        return self._execute(
            gran,
            "incremental",
            windows,
            progress=progress,
            watermark=(before, after),
        )

    def _execute(
        self,
        gran: Granularity,
        mode: RunMode,
        windows: Sequence[tuple[datetime, datetime]],
        *,
        progress: ProgressCallback | None = None,
        window: tuple[datetime, datetime] | None = None,
        watermark: tuple[datetime | None, datetime | None] = (None, None),
        checkpoint: Mapping[str, Any] | None = None,
        throttle: tuple[float, float | None] = (0.0, None),
        resumed_from: datetime | None = None,
    ) -> RollupReport:
        from aiaas_db.analytics._sql import (  # noqa: PLC0415
            ADVANCE_CHECKPOINT,
            FINISH_RUN,
            INSERT_RUN,
            INSERT_WATERMARK,
            UPDATE_WATERMARK,
        )

        with self._exclusive():
            store = self._backend()
            run_id = uuid.uuid4()
            started = self._now()
            span = window or ((windows[0][0], windows[-1][1]) if windows else (None, None))
            store.run(
                self._sql(
                    INSERT_RUN,
                    run_id=run_id,
                    target=self.target.name,
                    granularity=gran,
                    mode=mode,
                    window_start=span[0],
                    window_end=span[1],
                    watermark_before=watermark[0],
                    now=started,
                )
            )
            totals = [0, 0, 0, 0]
            buckets = 0
            done = 0
            pause, max_rate = throttle
            t0 = self._monotonic()

            def finish(
                status: str,
                watermark_after: datetime | None,
                error_code: str | None,
                error_message: str | None,
                now: datetime,
            ) -> None:
                store.run(
                    self._sql(
                        FINISH_RUN,
                        run_id=run_id,
                        status=status,
                        window_start=span[0],
                        window_end=span[1],
                        watermark_after=watermark_after,
                        windows=done,
                        buckets=buckets,
                        events=totals[0],
                        inserted=totals[1],
                        updated=totals[2],
                        deleted=totals[3],
                        error_code=error_code,
                        error_message=error_message,
                        now=now,
                    )
                )

            try:
                for a, b in windows:
                    now = self._now()
                    with store.transaction():
                        counts = self._replace(gran, a, b, now)
                        if checkpoint is not None:
                            store.run(
                                self._sql(
                                    ADVANCE_CHECKPOINT,
                                    next_start=b,
                                    status="completed"
                                    if b >= checkpoint["range_end"]
                                    else "running",
                                    completed_at=now if b >= checkpoint["range_end"] else None,
                                    run_id=run_id,
                                    now=now,
                                    **checkpoint,
                                )
                            )
                    totals = [x + y for x, y in zip(totals, counts, strict=True)]
                    buckets += _buckets_in(a, b, gran)
                    done += 1
                    if progress is not None:
                        progress(RollupProgress(gran, done, len(windows), a, b, counts[0]))
                    if done < len(windows):
                        self._throttle(pause, max_rate, totals[0], t0)
                if mode == "incremental" and gran == "hour":
                    values = {
                        "granularity": gran,
                        "watermark": watermark[1],
                        "run_id": run_id,
                        "now": self._now(),
                    }
                    with store.transaction():
                        store.run(self._sql(INSERT_WATERMARK, **values))
                        store.run(self._sql(UPDATE_WATERMARK, **values))
            except BaseException as exc:
                message = _safe_message(exc)
                code = exc.code if isinstance(exc, RollupError) else "ROLLUP_FAILED"
                with contextlib.suppress(Exception):
                    finish("failed", None, code, message, self._now())
                if isinstance(exc, RollupError) or not isinstance(exc, Exception):
                    raise
                raise RollupFailedError(
                    f"{gran} rollup run {run_id} failed after {done} of {len(windows)} "
                    f"window(s): {message}",
                    run_id=run_id,
                ) from exc
            finished = self._now()
            after = watermark[1] if mode == "incremental" else None
            finish("succeeded", after, None, None, finished)
            return RollupReport(
                run_id=run_id,
                target=self.target.name,
                dialect=self.dialect,
                granularity=gran,
                mode=mode,
                status="succeeded",
                started_at=started,
                finished_at=finished,
                window_start=span[0],
                window_end=span[1],
                watermark_before=watermark[0],
                watermark_after=after,
                windows=done,
                buckets=buckets,
                events=totals[0],
                rows_inserted=totals[1],
                rows_updated=totals[2],
                rows_deleted=totals[3],
                resumed_from=resumed_from,
            )

    def _throttle(self, pause: float, max_rate: float | None, events: int, t0: float) -> None:
        wait = pause
        if max_rate is not None and events:
            # Sleep until the average rate since the start is at most max_rate events/s.
            wait = max(wait, events / max_rate - (self._monotonic() - t0))
        if wait > 0:
            self._sleep(wait)

    def backfill(
        self,
        granularity: str,
        start: datetime,
        end: datetime,
        *,
        window: timedelta | None = None,
        pause: float = 0.0,
        max_events_per_second: float | None = None,
        restart: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RollupReport:
        """Roll up a long range window by window, resuming from its checkpoint.

        Each window is committed together with the checkpoint, so an interrupted backfill run
        again with the same range continues after the last committed window. ``pause`` seconds
        are slept between windows, and ``max_events_per_second`` caps the average rate.
        """
        from aiaas_db.analytics._sql import (  # noqa: PLC0415
            GET_CHECKPOINT,
            INSERT_CHECKPOINT,
            RESTART_CHECKPOINT,
        )

        gran = _check_granularity(granularity)
        size = window or DEFAULT_WINDOW[gran]
        if size < STEP[gran] or size % STEP[gran]:
            raise RollupWindowError(
                f"a {gran} backfill window must be a whole number of {gran}s, got {size}"
            )
        if pause < 0 or (max_events_per_second is not None and max_events_per_second <= 0):
            raise RollupWindowError("pause must be >= 0 and the maximum rate > 0")
        range_start, range_end = _window(gran, start, end)
        key = {"granularity": gran, "range_start": range_start, "range_end": range_end}
        with self._exclusive():
            store = self._backend()
            _, rows = store.rows(self._sql(GET_CHECKPOINT, **key))
            now = self._now()
            resumed: datetime | None = None
            if not rows:
                store.run(self._sql(INSERT_CHECKPOINT, run_id=None, now=now, **key))
                cursor = range_start
            elif restart:
                store.run(self._sql(RESTART_CHECKPOINT, run_id=None, now=now, **key))
                cursor = range_start
            else:
                cursor = cast("datetime", rows[0][0]).astimezone(UTC)
                resumed = cursor if cursor > range_start else None
            windows = _split(cursor, range_end, size)
            return self._execute(
                gran,
                "backfill",
                windows,
                progress=progress,
                window=(range_start, range_end),
                checkpoint=key,
                throttle=(pause, max_events_per_second),
                resumed_from=resumed,
            )

    # reconciliation --------------------------------------------------------------------------

    def reconcile(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        checks: Sequence[ReconciliationCheck] | None = None,
        sample: int = 5,
    ) -> ReconciliationReport:
        """Run ``checks`` (default :func:`builtin_checks`); each must return no rows.

        With ``start``/``end`` (widened to whole days) every read of raw events and rollups is
        restricted to that range.
        """
        import sqlglot  # noqa: PLC0415

        if (start is None) != (end is None):
            raise RollupWindowError("give both the reconciliation start and end, or neither")
        if start is not None and end is not None:
            start, end = _window("day", start, end)
        store = self._backend()
        results: list[CheckResult] = []
        for check in checks if checks is not None else builtin_checks():
            parsed = cast("exp.Expression", sqlglot.parse_one(check.sql, read="postgres"))
            tree = _scoped(parsed, start, end)
            names, rows = store.rows(tree.sql(dialect=self.dialect))
            results.append(
                CheckResult(
                    name=check.name,
                    granularity=check.granularity,
                    ok=not rows,
                    mismatches=len(rows),
                    sample=tuple(
                        {n: _jsonable(v) for n, v in zip(names, r, strict=True)}
                        for r in rows[:sample]
                    ),
                    description=check.description,
                )
            )
        return ReconciliationReport(
            target=self.target.name,
            dialect=self.dialect,
            checks=tuple(results),
            window_start=start,
            window_end=end,
        )

    # dashboards ------------------------------------------------------------------------------

    def usage(
        self,
        *,
        start: datetime,
        end: datetime,
        granularity: str = "day",
        by: Literal["organization", "model"] = "organization",
        organization_ids: Sequence[uuid.UUID] = (),
        model_ids: Sequence[uuid.UUID] = (),
        include_unattributed: bool = False,
    ) -> tuple[UsageRow, ...]:
        """Usage per bucket and organisation (or model) over ``[start, end)`` from rollups."""
        from aiaas_db.analytics._sql import usage_sql  # noqa: PLC0415

        gran = _check_granularity(granularity)
        if by not in ("organization", "model"):
            raise RollupWindowError(f"usage is grouped by organization or model, not {by!r}")
        range_start, range_end = _window(gran, start, end)
        sql = usage_sql(
            gran,
            by=by,
            organization_ids=organization_ids,
            model_ids=model_ids,
            with_null_model=include_unattributed,
        )
        values: dict[str, object] = {"range_start": range_start, "range_end": range_end}
        values.update({f"organization_{i}": v for i, v in enumerate(organization_ids)})
        values.update({f"model_{i}": v for i, v in enumerate(model_ids)})
        _, rows = self._backend().rows(self._sql(sql, **values))
        return tuple(
            UsageRow(
                bucket_start=cast("datetime", r[0]).astimezone(UTC),
                key=r[1] if r[1] is None or isinstance(r[1], uuid.UUID) else uuid.UUID(str(r[1])),
                request_count=int(r[2]),
                tokens_total=int(r[3]),
                error_count=int(r[4]),
                rate_limited_count=int(r[5]),
                cost_usd=Decimal(r[6]),
                latency_ms_sum=int(r[7]),
            )
            for r in rows
        )

    def history(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest rollup runs, newest first."""
        names, rows = self._backend().rows(
            self._sql(
                "SELECT * FROM analytics_rollup_runs ORDER BY started_at DESC LIMIT :limit",
                limit=limit,
            )
        )
        return [{n: _jsonable(v) for n, v in zip(names, r, strict=True)} for r in rows]


# -- module-level API --------------------------------------------------------------------------


def run_rollup(
    target: RollupTarget,
    granularity: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    progress: ProgressCallback | None = None,
) -> RollupReport:
    """One rollup run against ``target`` (see :meth:`RollupEngine.run`)."""
    with RollupEngine(target, overlap=overlap) as engine:
        return engine.run(granularity, start, end, progress=progress)


def backfill(
    target: RollupTarget,
    granularity: str,
    start: datetime,
    end: datetime,
    *,
    window: timedelta | None = None,
    pause: float = 0.0,
    max_events_per_second: float | None = None,
    restart: bool = False,
    progress: ProgressCallback | None = None,
) -> RollupReport:
    """A throttled, resumable backfill (see :meth:`RollupEngine.backfill`)."""
    with RollupEngine(target) as engine:
        return engine.backfill(
            granularity,
            start,
            end,
            window=window,
            pause=pause,
            max_events_per_second=max_events_per_second,
            restart=restart,
            progress=progress,
        )


def reconcile(
    target: RollupTarget,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    checks: Sequence[ReconciliationCheck] | None = None,
) -> ReconciliationReport:
    """Run the reconciliation checks against ``target`` (see :meth:`RollupEngine.reconcile`)."""
    with RollupEngine(target) as engine:
        return engine.reconcile(start=start, end=end, checks=checks)


def usage_by_organization(
    target: RollupTarget,
    *,
    start: datetime,
    end: datetime,
    granularity: str = "day",
    organization_ids: Sequence[uuid.UUID] = (),
) -> tuple[UsageRow, ...]:
    """Usage per bucket and organisation from the rollups (dashboards)."""
    with RollupEngine(target) as engine:
        return engine.usage(
            start=start, end=end, granularity=granularity, organization_ids=organization_ids
        )


def usage_by_model(
    target: RollupTarget,
    *,
    start: datetime,
    end: datetime,
    granularity: str = "day",
    organization_ids: Sequence[uuid.UUID] = (),
    model_ids: Sequence[uuid.UUID] = (),
    include_unattributed: bool = True,
) -> tuple[UsageRow, ...]:
    """Usage per bucket and model (``key`` None: not attributed to a model) from the rollups."""
    with RollupEngine(target) as engine:
        return engine.usage(
            start=start,
            end=end,
            granularity=granularity,
            by="model",
            organization_ids=organization_ids,
            model_ids=model_ids,
            include_unattributed=include_unattributed,
        )


def trigger_rollup(
    dsn: str,
    granularity: str,
    start: datetime,
    end: datetime,
    target: str = "postgres",
) -> RollupReport:
    """Run a rollup of ``[start, end)`` now (the schema management API's rollup trigger).

    ``target`` names a target of the targets file (``$AIAAS_ROLLUP_TARGETS`` or the built-in
    ``postgres``/``duckdb``); ``dsn`` is the operational PostgreSQL. Raises
    :class:`RollupWindowError` (422) for a bad granularity or window.
    """
    chosen = rollup_target(target, dsn=dsn)
    return run_rollup(chosen, granularity, start, end)
