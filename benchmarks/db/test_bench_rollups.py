"""aiaas-db rollups: PostgreSQL vs DuckDB (embedded) vs a naive full recompute, in one run.

Data (``load_synthetic``): ``AIAAS_BENCH_ROLLUP_EVENTS`` events (default 10 000 000) over the 12
months before 2026-01-01, plus one dense hour (2025-07-01 12:00 UTC) holding
``AIAAS_BENCH_ROLLUP_HOUR_EVENTS`` more (default a tenth: 1 000 000).

* ``hour-1m``: the hourly rollup of the dense hour -- PostgreSQL, DuckDB (including the bulk COPY
  of the hour's raw events from PostgreSQL) and the naive way (recompute every hour of all
  events). The platform allows 5 minutes per hour of data: ``extra_info.budget_ratio`` is the
  share of it used.
* ``backfill-12m`` / ``daily-12m``: hourly backfill of the 12 months, then daily rollups of the
  12 months from hourly rollups, on both engines.
* ``dashboard``: usage queries over the rollups (the platform allows 2 s each).

Every benchmark records peak memory in ``extra_info``: ``client_peak_rss_mib`` (this process,
DuckDB included: it runs in-process) and ``server_peak_rss_mib`` (the PostgreSQL backend that
served the work), each reset before the measured call (``/proc/<pid>/clear_refs``).

Reproduce: ``nox -s benchmarks -- benchmarks/db/test_bench_rollups.py`` (or pytest on this
file); develop with ``AIAAS_BENCH_ROLLUP_EVENTS=200000``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from aiaas_db import LocalPostgres, Migrator
from aiaas_db.analytics._engine import RollupEngine
from aiaas_db.analytics._models import RollupTarget
from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source
from aiaas_db.platform._pii import PiiProtector
from aiaas_db.platform._synthetic import load_synthetic

EVENTS = int(os.environ.get("AIAAS_BENCH_ROLLUP_EVENTS", "10000000"))
HOUR_EVENTS = int(os.environ.get("AIAAS_BENCH_ROLLUP_HOUR_EVENTS", str(max(EVENTS // 10, 1))))
ORGANIZATIONS = int(os.environ.get("AIAAS_BENCH_ROLLUP_ORGANIZATIONS", "500"))
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
DENSE = datetime(2025, 7, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOUR_BUDGET_S = 300.0
DASHBOARD_BUDGET_S = 2.0
_T = TypeVar("_T")

NAIVE_HOURLY = """
BEGIN;
DELETE FROM analytics_hourly_rollups;
INSERT INTO analytics_hourly_rollups (bucket_start, organization_id, model_id, request_count,
    tokens_total, error_count, rate_limited_count, cost_usd, latency_ms_sum)
SELECT date_trunc('hour', occurred_at), organization_id, model_id, count(*),
       sum(tokens_consumed), count(*) FILTER (WHERE status = 'error'),
       count(*) FILTER (WHERE status = 'rate_limited'), sum(cost_usd), sum(latency_ms)
FROM usage_events GROUP BY 1, 2, 3;
COMMIT;
"""


def _rss_mib(pid: int | str, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak(pid: int | str) -> None:
    # Not permitted: the peak then covers the process's whole life.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class Meter:
    """Peak RSS of this process and of one PostgreSQL backend around a measured call."""

    def __init__(self, backend_pid: int | None) -> None:
        self.backend_pid = backend_pid

    def measure(self, benchmark: Any, fn: Callable[[], _T], **extra: Any) -> _T:
        results: list[_T] = []

        def setup() -> tuple[tuple[()], dict[str, Any]]:
            _reset_peak("self")
            if self.backend_pid:
                _reset_peak(self.backend_pid)
            return (), {}

        def run() -> None:
            results.append(fn())

        benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
        benchmark.extra_info.update(
            {
                "client_peak_rss_mib": round(_rss_mib("self"), 1),
                "server_peak_rss_mib": (
                    round(_rss_mib(self.backend_pid), 1) if self.backend_pid else None
                ),
                "seconds": round(benchmark.stats.stats.max, 3),
                "events_total": EVENTS + HOUR_EVENTS,
                **extra,
            }
        )
        return results[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with LocalPostgres.temporary() as pg:
        url = pg.create_database(f"rollups_{uuid.uuid4().hex[:8]}")
        protector = PiiProtector.for_local_development("aiaas benchmarks")
        for component in PLATFORM_COMPONENTS:
            Migrator(url, platform_source(component), component=component, protector=protector).up()
        t0 = time.perf_counter()
        load_synthetic(url, organizations=ORGANIZATIONS, events=EVENTS, start=START, end=END)
        load_synthetic(
            url,
            organizations=ORGANIZATIONS,
            events=HOUR_EVENTS,
            start=DENSE,
            end=DENSE + HOUR,
            seed=1,
        )
        load_s = time.perf_counter() - t0
        folder = tmp_path_factory.mktemp("duck")
        yield {"url": url, "duck": folder / "analytics.duckdb", "load_s": load_s}


def _pg(data: dict[str, Any]) -> RollupTarget:
    return RollupTarget("postgres", "postgres", dsn=data["url"])


def _duck(data: dict[str, Any]) -> RollupTarget:
    return RollupTarget("duckdb", "duckdb", dsn=data["url"], duckdb_path=data["duck"])


def _engine(target: RollupTarget) -> tuple[RollupEngine, Meter]:
    engine = RollupEngine(target)
    engine._backend()  # open connections before measuring
    engine._source_backend()
    pid = engine._pg.info.backend_pid if engine._pg is not None else None
    return engine, Meter(pid)


@pytest.mark.benchmark(group="rollup-hour-1m")
def test_hour_1m_postgres(benchmark: Any, dataset: dict[str, Any]) -> None:
    engine, meter = _engine(_pg(dataset))
    with engine:
        report = meter.measure(
            benchmark, lambda: engine.run("hour", DENSE, DENSE + HOUR), load_s=dataset["load_s"]
        )
    assert report.events >= HOUR_EVENTS
    benchmark.extra_info.update(
        hour_events=report.events,
        budget_s=HOUR_BUDGET_S,
        budget_ratio=round(benchmark.stats.stats.max / HOUR_BUDGET_S, 4),
    )


@pytest.mark.benchmark(group="rollup-hour-1m")
def test_hour_1m_duckdb(benchmark: Any, dataset: dict[str, Any]) -> None:
    engine, meter = _engine(_duck(dataset))
    with engine:
        report = meter.measure(benchmark, lambda: engine.run("hour", DENSE, DENSE + HOUR))
    assert report.events >= HOUR_EVENTS
    benchmark.extra_info.update(
        hour_events=report.events,
        includes="COPY of the hour's raw events from PostgreSQL into DuckDB",
        budget_s=HOUR_BUDGET_S,
        budget_ratio=round(benchmark.stats.stats.max / HOUR_BUDGET_S, 4),
    )


@pytest.mark.benchmark(group="rollup-hour-1m")
def test_hour_1m_naive_full_recompute(benchmark: Any, dataset: dict[str, Any]) -> None:
    """The naive way to refresh one hour: recompute every hour of every event."""
    with psycopg.connect(dataset["url"], autocommit=True) as conn:
        meter = Meter(conn.info.backend_pid)
        meter.measure(benchmark, lambda: conn.execute(NAIVE_HOURLY.encode()))
    benchmark.extra_info.update(
        budget_s=HOUR_BUDGET_S, budget_ratio=round(benchmark.stats.stats.max / HOUR_BUDGET_S, 4)
    )


@pytest.mark.benchmark(group="rollup-backfill-12m")
@pytest.mark.parametrize("engine_name", ["postgres", "duckdb"])
def test_backfill_hourly_12m(benchmark: Any, dataset: dict[str, Any], engine_name: str) -> None:
    target = _pg(dataset) if engine_name == "postgres" else _duck(dataset)
    engine, meter = _engine(target)
    with engine:
        report = meter.measure(
            benchmark,
            lambda: engine.backfill("hour", START, END, window=timedelta(days=7), restart=True),
        )
        benchmark.extra_info.update(windows=report.windows, events=report.events)
        assert report.events == EVENTS + HOUR_EVENTS


@pytest.mark.benchmark(group="rollup-daily-12m")
@pytest.mark.parametrize("engine_name", ["postgres", "duckdb"])
def test_daily_12m(benchmark: Any, dataset: dict[str, Any], engine_name: str) -> None:
    target = _pg(dataset) if engine_name == "postgres" else _duck(dataset)
    engine, meter = _engine(target)
    with engine:
        report = meter.measure(benchmark, lambda: engine.run("day", START, END))
        benchmark.extra_info.update(days=report.buckets, rows=report.rows_inserted)
        assert report.events == EVENTS + HOUR_EVENTS
        check = engine.reconcile(start=START, end=END)
        benchmark.extra_info["reconciled"] = check.ok
        assert check.ok, check.to_dict()


@pytest.mark.benchmark(group="rollup-daily-12m")
def test_daily_12m_naive_from_raw(benchmark: Any, dataset: dict[str, Any]) -> None:
    """The reference's way: daily rollups straight from 12 months of raw events."""
    sql = NAIVE_HOURLY.replace("analytics_hourly_rollups", "analytics_daily_rollups").replace(
        "'hour'", "'day'"
    )
    with psycopg.connect(dataset["url"], autocommit=True) as conn:
        Meter(conn.info.backend_pid).measure(benchmark, lambda: conn.execute(sql.encode()))


_QUERIES: dict[str, dict[str, Any]] = {
    "one-org-daily-12m": {"granularity": "day", "by": "organization", "days": 365, "one": True},
    "one-org-by-model-daily-90d": {"granularity": "day", "by": "model", "days": 90, "one": True},
    "all-orgs-hourly-24h": {"granularity": "hour", "by": "organization", "days": 1},
    "all-orgs-daily-30d": {"granularity": "day", "by": "organization", "days": 30},
    # A stress case rather than a dashboard: every organisation, every day of the year.
    "all-orgs-daily-12m": {"granularity": "day", "by": "organization", "days": 365},
}
_BUSIEST = (
    "SELECT organization_id FROM analytics_daily_rollups GROUP BY organization_id "
    "ORDER BY SUM(request_count) DESC LIMIT 1"
)


@pytest.mark.benchmark(group="rollup-dashboard")
@pytest.mark.parametrize("engine_name", ["postgres", "duckdb"])
@pytest.mark.parametrize("query", sorted(_QUERIES))
def test_dashboard(benchmark: Any, dataset: dict[str, Any], engine_name: str, query: str) -> None:
    spec = _QUERIES[query]
    target = _pg(dataset) if engine_name == "postgres" else _duck(dataset)
    engine, meter = _engine(target)
    with engine:
        orgs: list[uuid.UUID] = []
        if spec.get("one"):
            _, busiest = engine._backend().rows(_BUSIEST)
            orgs = [uuid.UUID(str(busiest[0][0]))]
        rows = meter.measure(
            benchmark,
            lambda: engine.usage(
                start=END - timedelta(days=spec["days"]),
                end=END,
                granularity=spec["granularity"],
                by=spec["by"],
                organization_ids=orgs,
                include_unattributed=spec["by"] == "model",
            ),
        )
    benchmark.extra_info.update(
        rows=len(rows),
        budget_s=DASHBOARD_BUDGET_S,
        budget_ratio=round(benchmark.stats.stats.max / DASHBOARD_BUDGET_S, 4),
    )
    assert rows
