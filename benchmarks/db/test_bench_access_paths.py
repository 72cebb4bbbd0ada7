"""aiaas-db: the operational access paths at scale, with their query plans.

The platform schema is applied to a throwaway cluster, then
:func:`aiaas_db.platform._synthetic.load_synthetic` loads ``AIAAS_BENCH_DB_ORGS`` organisations
(default
100 000) and ``AIAAS_BENCH_DB_EVENTS`` usage events (default 10 000 000) over
``AIAAS_BENCH_DB_DAYS`` daily partitions (default 30) with COPY, plus ``AIAAS_BENCH_DB_AUDIT``
audit entries (default events / 10, at most 1 000 000). The load time goes to ``extra_info`` of
``test_load``.

Each access path then runs ``AIAAS_BENCH_DB_ROUNDS`` times (default 300) with parameters drawn
at random the way traffic draws them (organisations and models in proportion to their traffic, a
random window inside the loaded range); ``extra_info`` carries p50/p95/p99 in milliseconds and
the ``EXPLAIN (ANALYZE, BUFFERS)`` plan of one representative call, with whether it used an index
and how many ``usage_events`` partitions it touched (partition pruning). Plans are also printed
(``-s``).

Develop with ``AIAAS_BENCH_DB_EVENTS=200000 AIAAS_BENCH_DB_ORGS=5000``; the full scale takes
several minutes to load on a small machine. Benchmarks report; they never assert timings.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from aiaas_db import LocalPostgres, Migrator

EVENTS = int(os.environ.get("AIAAS_BENCH_DB_EVENTS", "10000000"))
ORGS = int(os.environ.get("AIAAS_BENCH_DB_ORGS", "100000"))
DAYS = int(os.environ.get("AIAAS_BENCH_DB_DAYS", "30"))
AUDIT = int(os.environ.get("AIAAS_BENCH_DB_AUDIT", str(min(EVENTS // 10, 1_000_000))))
ROUNDS = int(os.environ.get("AIAAS_BENCH_DB_ROUNDS", "300"))
END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=DAYS)

#: Server settings for a developer machine (the cluster is throwaway).
SETTINGS = {
    "shared_buffers": "1GB",
    "effective_cache_size": "8GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "random_page_cost": "1.1",
    "jit": "off",
}


class Scenario:
    """The loaded database and the parameter pools drawn from it."""

    def __init__(self, url: str, load: dict[str, Any]) -> None:
        self.url = url
        self.load = load
        self.rng = random.Random(20261126)  # noqa: S311 -- benchmark parameters
        with psycopg.connect(url) as conn:
            # Traffic-weighted pools: a sample of events names organisations and models in
            # proportion to the requests they make.
            sample = conn.execute(
                "SELECT organization_id, model_id FROM usage_events TABLESAMPLE SYSTEM (1)"
                " REPEATABLE (7) LIMIT 20000"
            ).fetchall()
            self.orgs = [r[0] for r in sample]
            self.models = [r[1] for r in sample if r[1] is not None]
            self.all_orgs = [
                r[0] for r in conn.execute("SELECT organization_id FROM organizations").fetchall()
            ]
            self.key_ids = [r[0] for r in conn.execute("SELECT key_id FROM api_keys").fetchall()]
            self.actors = [
                r[0]
                for r in conn.execute(
                    "SELECT actor_id FROM audit_log_entries TABLESAMPLE SYSTEM (5) LIMIT 20000"
                ).fetchall()
            ]

    def window(self, length: timedelta) -> tuple[datetime, datetime]:
        span = (END - START - length).total_seconds()
        low = START + timedelta(seconds=self.rng.uniform(0, span))
        return low, low + length

    def org(self) -> uuid.UUID:
        # 90 % by traffic (who calls), 10 % any organisation (long tail, mostly idle tenants).
        pool = self.orgs if self.rng.random() < 0.9 else self.all_orgs
        return pool[self.rng.randrange(len(pool))]  # type: ignore[no-any-return]


ACCESS_PATHS: dict[str, tuple[str, Callable[[Scenario], tuple[Any, ...]]]] = {
    "org_time_range_page": (
        "SELECT usage_event_id, occurred_at, model_id, tokens_consumed, status, cost_usd"
        " FROM usage_events WHERE organization_id = %s AND occurred_at >= %s"
        " AND occurred_at < %s ORDER BY occurred_at DESC LIMIT 100",
        lambda s: (s.org(), *s.window(timedelta(days=1))),
    ),
    "org_time_range_summary": (
        "SELECT count(*), sum(tokens_consumed), sum(cost_usd),"
        " count(*) FILTER (WHERE status = 'error') FROM usage_events"
        " WHERE organization_id = %s AND occurred_at >= %s AND occurred_at < %s",
        lambda s: (s.org(), *s.window(timedelta(days=1))),
    ),
    "model_time_range_page": (
        "SELECT usage_event_id, occurred_at, organization_id, tokens_consumed, latency_ms"
        " FROM usage_events WHERE model_id = %s AND occurred_at >= %s AND occurred_at < %s"
        " ORDER BY occurred_at DESC LIMIT 100",
        lambda s: (s.models[s.rng.randrange(len(s.models))], *s.window(timedelta(hours=1))),
    ),
    "status_time_page": (
        "SELECT usage_event_id, occurred_at, organization_id, error_code FROM usage_events"
        " WHERE status = %s AND occurred_at >= %s AND occurred_at < %s"
        " ORDER BY occurred_at DESC LIMIT 100",
        lambda s: (
            "error" if s.rng.random() < 0.7 else "rate_limited",
            *s.window(timedelta(hours=1)),
        ),
    ),
    "api_key_by_key_id": (
        # The query PostgresApiKeyStore.get runs on every authenticated request.
        "SELECT k.key_id, k.hashed_secret, k.created_at, k.name, k.roles, k.scopes,"
        " CASE WHEN o.deleted_at IS NOT NULL OR o.status = ANY(%s) THEN 'revoked'"
        " ELSE k.status END, k.expires_at, k.last_used_at FROM api_keys k"
        " JOIN organizations o ON o.organization_id = k.organization_id WHERE k.key_id = %s",
        lambda s: (["closed", "suspended"], s.key_ids[s.rng.randrange(len(s.key_ids))]),
    ),
    "audit_by_actor": (
        "SELECT audit_log_entry_id, occurred_at, action, target FROM audit_log_entries"
        " WHERE actor_id = %s ORDER BY occurred_at DESC LIMIT 50",
        lambda s: (s.actors[s.rng.randrange(len(s.actors))],),
    ),
}


def _apply_platform(url: str, protector: Any) -> None:
    from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source

    for component in PLATFORM_COMPONENTS:
        Migrator(url, platform_source(component), component=component, protector=protector).up()


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    from aiaas_db.platform._pii import PiiProtector
    from aiaas_db.platform._synthetic import load_synthetic, load_synthetic_audit

    with LocalPostgres.temporary(settings=SETTINGS) as pg:
        url = pg.create_database("bench_access")
        protector = PiiProtector.for_local_development("aiaas-db benchmark secret")
        _apply_platform(url, protector)
        started = time.perf_counter()
        report = load_synthetic(
            url, organizations=ORGS, events=EVENTS, start=START, end=END, progress=True
        )
        audit_started = time.perf_counter()
        load_synthetic_audit(
            url,
            entries=AUDIT,
            actors=max(AUDIT // 100, 1),
            start=START,
            end=END,
            protector=protector,
        )
        done = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) usage_events")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()
        load = {
            **report.to_dict(),
            "audit_entries": AUDIT,
            "audit_seconds": round(done - audit_started, 2),
            "total_seconds": round(done - started, 2),
            "database_size": size[0] if size else None,
        }
        print(f"\nloaded: {load}")
        yield Scenario(url, load)


def _plan_facts(plan: str) -> dict[str, Any]:
    partitions = set(re.findall(r"on (usage_events_p\d{8}|usage_events_default)", plan))
    return {
        "uses_index": bool(re.search(r"Index (Only )?Scan|Bitmap Index Scan", plan)),
        "seq_scan": "Seq Scan" in plan,
        "usage_partitions_touched": len(partitions),
    }


@pytest.mark.benchmark(group="db-load")
def test_load(benchmark: Any, scenario: Scenario) -> None:
    """Reports the load (done once, in the fixture); times a cheap count for the table."""
    with psycopg.connect(scenario.url) as conn:
        benchmark.pedantic(
            lambda: conn.execute("SELECT count(*) FROM organizations").fetchone(),
            rounds=3,
            iterations=1,
        )
    benchmark.extra_info.update(scenario.load)


@pytest.mark.parametrize("path", list(ACCESS_PATHS))
@pytest.mark.benchmark(group="db-access-paths")
def test_access_path(benchmark: Any, scenario: Scenario, path: str) -> None:
    sql, draw = ACCESS_PATHS[path]
    with psycopg.connect(scenario.url, autocommit=True) as conn:
        # The representative plan, with the parameters of a typical (traffic-weighted) call.
        params = draw(scenario)
        plan = "\n".join(
            str(r[0])
            for r in conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}",
                params,
            ).fetchall()
        )
        print(f"\n--- {path}\n{plan}")
        for _ in range(10):  # warm the caches and the prepared statement
            conn.execute(sql, draw(scenario)).fetchall()

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (draw(scenario),), {}

        def run(p: tuple[Any, ...]) -> None:
            conn.execute(sql, p, prepare=True).fetchall()

        benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    data = sorted(benchmark.stats.stats.data)
    cut = statistics.quantiles(data, n=100, method="inclusive")
    benchmark.extra_info.update(
        {
            "events": EVENTS,
            "organizations": ORGS,
            "p50_ms": round(statistics.median(data) * 1000, 3),
            "p95_ms": round(cut[94] * 1000, 3),
            "p99_ms": round(cut[98] * 1000, 3),
            "plan": plan,
            **_plan_facts(plan),
        }
    )
