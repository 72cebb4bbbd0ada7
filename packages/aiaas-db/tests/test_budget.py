"""BudgetTracker against a real PostgreSQL: hourly rollups for complete hours plus the events
since, period boundaries, the cost budget, the cache and its refresh, outages."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import seed_support

from aiaas_db import (
    Budget,
    BudgetTracker,
    BudgetUnavailableError,
    LocalPostgres,
    Migrator,
    rollup_target,
    run_rollup,
)

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

#: The tests' "now": mid-November, so the month holds whole hours before and after it.
NOW = datetime(2026, 11, 15, 12, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def execute(url: str, sql: str, params: tuple[object, ...] | dict[str, Any] = ()) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else None


def make_org(
    url: str, *, tokens: int = 10_000, usd: str | None = None, period: str = "month"
) -> Any:
    [(org,)] = execute(
        url,
        "INSERT INTO organizations (slug, display_name, plan_tier, budget_limit_tokens,"
        " budget_limit_usd, budget_period) VALUES (%s, 'Budget test', 'starter', %s, %s, %s)"
        " RETURNING organization_id",
        (f"b-{uuid.uuid4().hex[:10]}", tokens, usd, period),
    )
    return org


def add_event(url: str, org: Any, at: datetime, tokens: int, cost: str = "0") -> None:
    execute(
        url,
        "INSERT INTO usage_events (occurred_at, organization_id, tokens_consumed, latency_ms,"
        " status, region, cost_usd) VALUES (%s, %s, %s, 1, 'success', 'local', %s)",
        (at, org, tokens, cost),
    )


def tracker(url: str, clock: Clock | None = None, **kw: Any) -> BudgetTracker:
    return BudgetTracker(url, clock=clock or Clock(), now=lambda: NOW, **kw)


async def test_rollups_for_complete_hours_plus_the_events_since(platform_url: str) -> None:
    org = make_org(platform_url, tokens=1_000)
    add_event(platform_url, org, NOW.replace(day=1, hour=0, minute=0), 100)  # first instant
    add_event(platform_url, org, NOW.replace(hour=9, minute=10), 200)
    add_event(platform_url, org, NOW.replace(hour=10, minute=40), 300)
    add_event(platform_url, org, NOW - timedelta(days=20), 5_000)  # last month: not counted
    add_event(platform_url, org, NOW.replace(day=30, hour=23), 7)  # later this month: counted
    run_rollup(rollup_target("postgres", dsn=platform_url), "hour")  # real incremental run
    # Pretend the rollup last ran at 10:20: hours before 10:00 come from the rollups.
    execute(
        platform_url,
        "UPDATE analytics_rollup_watermarks SET watermark = %s WHERE granularity = 'hour'",
        (NOW.replace(hour=10, minute=20),),
    )
    budget = await tracker(platform_url).get(org)
    assert budget is not None
    assert budget.used_tokens == 100 + 200 + 300 + 7
    assert (budget.period, budget.plan_tier, budget.active) == ("month", "starter", True)
    assert budget.period_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert budget.period_end == datetime(2026, 12, 1, tzinfo=UTC)
    assert budget.read_at == NOW
    assert (budget.remaining_tokens, budget.exhausted, budget.exhausted_by) == (393, False, None)

    # The rollups are what is read for complete hours (no raw scan of them) ...
    execute(
        platform_url,
        "UPDATE analytics_hourly_rollups SET tokens_total = tokens_total + 1000"
        " WHERE organization_id = %s AND bucket_start = %s",
        (org, NOW.replace(hour=9, minute=0)),
    )
    add_event(platform_url, org, NOW.replace(hour=8, minute=5), 40)  # not rolled up yet
    # ... and the raw events from the first incomplete hour on.
    add_event(platform_url, org, NOW.replace(hour=10, minute=1), 50)
    again = await tracker(platform_url).get(org)
    assert again is not None
    assert again.used_tokens == 100 + 1200 + 300 + 7 + 50
    assert (again.remaining_tokens, again.exhausted, again.exhausted_by) == (0, True, "tokens")


async def test_without_a_rollup_the_whole_period_is_read_from_events(platform_url: str) -> None:
    org = make_org(platform_url)
    add_event(platform_url, org, NOW.replace(hour=1), 11)
    add_event(platform_url, org, NOW.replace(day=1, hour=0, minute=0) - timedelta(seconds=1), 99)
    budget = await tracker(platform_url).get(org)
    assert budget is not None
    assert budget.used_tokens == 11


async def test_the_day_period_and_the_cost_budget(platform_url: str) -> None:
    org = make_org(platform_url, tokens=1_000_000, usd="0.5000", period="day")
    add_event(platform_url, org, NOW.replace(hour=0, minute=0), 10, "0.30")
    add_event(platform_url, org, NOW - timedelta(days=1), 10, "9.00")  # yesterday
    clock = Clock()
    budgets = tracker(platform_url, clock)
    budget = await budgets.get(org)
    assert budget is not None
    assert (budget.period_start, budget.period_end) == (
        datetime(2026, 11, 15, tzinfo=UTC),
        datetime(2026, 11, 16, tzinfo=UTC),
    )
    assert (budget.used_tokens, budget.used_usd, budget.limit_usd) == (
        10,
        Decimal("0.30"),
        Decimal("0.5"),
    )
    assert not budget.exhausted
    budgets.record(org, 5, Decimal("0.25"))  # this process's spend counts at once
    spent = await budgets.get(str(org))
    assert spent is not None
    assert (spent.used_tokens, spent.exhausted_by) == (15, "cost")


async def test_the_cache_refreshes_every_interval_and_keeps_recent_local_spend(
    platform_url: str,
) -> None:
    org = make_org(platform_url, tokens=1_000)
    clock = Clock()
    budgets = tracker(platform_url, clock, refresh_interval=5.0, write_lag=1.0)
    assert (await budgets.get(org)).used_tokens == 0  # type: ignore[union-attr]
    assert budgets.reads == 1
    add_event(platform_url, org, NOW.replace(hour=2), 100)  # another process's spend
    budgets.record(org, 30, Decimal(0))
    clock.now += 4.0
    cached = await budgets.get(org)
    assert budgets.reads == 1  # served from the cache: no query
    assert cached is not None
    assert cached.used_tokens == 30
    budgets.record(org, 20, Decimal(0))  # recorded 1 s before the refresh: maybe not written
    clock.now += 1.0
    refreshed = await budgets.get(org)
    assert budgets.reads == 2
    assert refreshed is not None
    # 100 from the database; the 30 recorded 5 s ago is written by now (dropped from the local
    # spend), the 20 recorded within write_lag is still counted
    assert refreshed.used_tokens == 120
    assert "1 organisations" in repr(budgets)


async def test_unknown_organisations_and_outages(pg: LocalPostgres, platform_url: str) -> None:
    clock = Clock()
    budgets = tracker(platform_url, clock)
    assert await budgets.get(uuid.uuid4()) is None
    with pytest.raises(ValueError, match="organization_id must be a uuid"):
        await budgets.get("not-a-uuid")
    org = make_org(platform_url)
    budgets.record(org, 10, Decimal(0))  # not cached yet: nothing to add to
    assert await budgets.get(org) is not None

    down = False

    async def connect() -> Any:
        if down:
            raise OSError("connection refused")
        return await psycopg.AsyncConnection.connect(platform_url, autocommit=True)

    flaky = BudgetTracker(connect, clock=clock, now=lambda: NOW)
    first = await flaky.get(org)
    assert isinstance(first, Budget)
    down = True
    clock.now += 60
    stale = await flaky.get(org)  # the cached reading is served while the database is down
    assert stale == first
    assert flaky.read_failures == 1
    with pytest.raises(BudgetUnavailableError) as info:
        await flaky.get(make_org(platform_url))
    assert (info.value.status, info.value.code) == (503, "BUDGET_UNAVAILABLE")
    for bad in ({"refresh_interval": 0}, {"write_lag": -1}, {"max_organizations": 0}):
        with pytest.raises(ValueError, match=">"):
            BudgetTracker(platform_url, **bad)


async def test_only_the_operational_schema(pg: LocalPostgres) -> None:
    """Without the analytics component every period is read from usage_events."""
    from aiaas_db.platform._components import platform_source
    from aiaas_db.platform._pii import PiiProtector

    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    try:
        protector = PiiProtector.for_local_development("budget tests")
        Migrator(
            url, platform_source("operational"), component="operational", protector=protector
        ).up()
        org = make_org(url)
        add_event(url, org, NOW.replace(hour=3), 42)
        budget = await tracker(url).get(org)
        assert budget is not None
        assert budget.used_tokens == 42
    finally:
        pg.drop_database(name)


async def test_concurrent_requests_share_one_read_and_survive_its_cancellation(
    platform_url: str,
) -> None:
    org = make_org(platform_url)
    clock = Clock()
    gate = asyncio.Event()
    gate.set()

    async def connect() -> Any:
        await gate.wait()
        return await psycopg.AsyncConnection.connect(platform_url, autocommit=True)

    budgets = BudgetTracker(connect, clock=clock, now=lambda: NOW)
    first = await budgets.get(org)
    clock.now += 10
    readings = await asyncio.gather(*(budgets.get(org) for _ in range(5)))
    assert budgets.reads == 2  # one read for the five
    assert all(r == first for r in readings)
    clock.now += 10
    gate.clear()  # the next read hangs ...
    reader = asyncio.ensure_future(budgets.get(org))
    await asyncio.sleep(0.05)
    waiter = asyncio.ensure_future(budgets.get(org))
    await asyncio.sleep(0.05)
    reader.cancel()  # ... and its request goes away
    assert await asyncio.wait_for(waiter, 5) == first  # the waiter gets the cached reading
    gate.set()
    assert await budgets.get(org) == first  # and the next request reads again
    assert budgets.cached(org) == first
    assert budgets.cached(uuid.uuid4()) is None
