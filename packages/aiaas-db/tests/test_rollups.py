"""Rollups on PostgreSQL and DuckDB: reconciliation, late events, idempotence, deletions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rollup_support
from hypothesis import given, settings
from hypothesis import strategies as st
from rollup_support import (
    MODELS,
    ORGS,
    T0,
    Event,
    duck_target,
    expected,
    full_rows,
    insert_events,
    pg_target,
    rollup_rows,
    run_sql,
    spread,
)

from aiaas_db.analytics._engine import (
    RollupEngine,
    backfill,
    reconcile,
    run_rollup,
    trigger_rollup,
    usage_by_model,
    usage_by_organization,
)
from aiaas_db.analytics._models import (
    RollupConfigError,
    RollupFailedError,
    RollupLockedError,
    RollupProgress,
    RollupSchemaMissingError,
    RollupTarget,
    RollupUnavailableError,
    RollupWindowError,
)

# Fixtures (a database with the platform schema per test, or one per module).
rollup_template = rollup_support.rollup_template
url = rollup_support.url
shared_db = rollup_support.shared_db
DAY = timedelta(days=1)


@pytest.fixture
def duck_path(tmp_path: Path) -> Path:
    return tmp_path / "analytics.duckdb"


# -- reconciliation after random event sets (both engines, identical aggregates) ---------------


_events = st.lists(
    st.builds(
        Event,
        occurred_at=st.integers(min_value=0, max_value=3 * 24 * 3600 - 1).map(
            lambda s: T0 + timedelta(seconds=s)
        ),
        organization_id=st.sampled_from(ORGS),
        model_id=st.sampled_from(MODELS),
        tokens=st.integers(min_value=0, max_value=10**9),
        latency_ms=st.integers(min_value=0, max_value=2**31 - 1),
        status=st.sampled_from(("success", "error", "rate_limited")),
        cost_usd=st.decimals(min_value=Decimal(0), max_value=Decimal("999999.99999999"), places=8),
    ),
    max_size=60,
)


@settings(max_examples=15)
@given(events=_events)
def test_random_events_reconcile_on_both_engines(
    shared_db: str, tmp_path_factory: pytest.TempPathFactory, events: list[Event]
) -> None:
    run_sql(
        shared_db,
        "TRUNCATE usage_events, analytics_hourly_rollups, analytics_daily_rollups, "
        "analytics_rollup_watermarks, analytics_rollup_runs, "
        "analytics_daily_rollup_invalidations",
    )
    insert_events(shared_db, events)
    path = tmp_path_factory.mktemp("duck") / "a.duckdb"
    for target in (pg_target(shared_db), duck_target(shared_db, path)):
        with RollupEngine(target) as engine:
            hourly = engine.run("hour", T0, T0 + 3 * DAY)
            daily = engine.run("day")  # incremental: the days the hourly run changed
            assert hourly.events == len(events)
            assert daily.events == len(events)
            report = engine.reconcile()
            assert report.ok, report.to_dict()
    for gran in ("hour", "day"):
        want = expected(events, gran)
        assert rollup_rows(shared_db, gran) == want
        assert rollup_rows(path, gran, duckdb=True) == want


# -- late events, watermark, daily invalidation -------------------------------------------------


def test_late_event_recomputes_only_its_bucket(url: str, duck_path: Path) -> None:
    events = spread(300)
    old = datetime.now(UTC) - timedelta(hours=1)
    insert_events(url, events, ingested_at=old)
    for target in (pg_target(url), duck_target(url, duck_path)):
        with RollupEngine(target, overlap=timedelta(0)) as engine:
            first = engine.run("hour")
            assert first.mode == "incremental"
            assert first.watermark_before is None
            assert first.buckets == 48
            engine.run("day")
            assert engine.run("hour").windows == 0  # nothing ingested since
    late = [Event(T0 + timedelta(hours=5, minutes=7), ORGS[0], MODELS[0], tokens=77)]
    insert_events(url, late)
    all_events = events + late
    hourly_before = {r[0]: r for r in full_rows(url, "hour")}
    for target in (pg_target(url), duck_target(url, duck_path)):
        with RollupEngine(target, overlap=timedelta(0)) as engine:
            report = engine.run("hour")
            assert (report.windows, report.buckets) == (1, 1)
            assert report.window_start == T0 + timedelta(hours=5)
            assert report.rows_updated + report.rows_inserted == 1
            assert report.watermark_after is not None
            assert report.watermark_before is not None
            assert report.watermark_after > report.watermark_before
            day = engine.run("day")
            assert (day.windows, day.buckets) == (1, 1)
            assert day.window_start == T0
            assert engine.run("day").windows == 0  # invalidation consumed
            assert engine.reconcile().ok
    assert rollup_rows(url, "hour") == expected(all_events, "hour")
    assert rollup_rows(url, "day") == expected(all_events, "day")
    assert rollup_rows(duck_path, "day", duckdb=True) == expected(all_events, "day")
    # last_reconciled_at moved only in the late event's hour.
    after = {r[0]: r for r in full_rows(url, "hour")}
    moved = {
        row[1]
        for k, row in after.items()
        if k not in hourly_before or row[-3] != hourly_before[k][-3]
    }
    assert moved == {T0 + timedelta(hours=5)}


def test_overlap_rereads_recent_ingest(url: str) -> None:
    insert_events(url, spread(50, hours=2))
    with RollupEngine(pg_target(url), overlap=timedelta(minutes=10)) as engine:
        engine.run("hour")
        again = engine.run("hour")
    # Events ingested within the overlap are looked at again; nothing changes.
    assert again.buckets == 2
    assert (again.rows_inserted, again.rows_updated, again.rows_deleted) == (0, 0, 0)


# -- idempotence and deletions ------------------------------------------------------------------


def test_running_a_window_twice_leaves_identical_tables(url: str) -> None:
    insert_events(url, spread(400))
    target = pg_target(url)
    run_rollup(target, "hour", T0, T0 + 2 * DAY)
    run_rollup(target, "day", T0, T0 + 2 * DAY)
    first = {g: full_rows(url, g) for g in ("hour", "day")}
    again = run_rollup(target, "hour", T0, T0 + 2 * DAY)
    run_rollup(target, "day", T0, T0 + 2 * DAY)
    assert (again.rows_inserted, again.rows_updated, again.rows_deleted) == (0, 0, 0)
    for g in ("hour", "day"):
        second = full_rows(url, g)
        # ids, keys, measures, created_at and updated_at identical; last_reconciled_at moves.
        strip = [(*r[:-3], *r[-2:]) for r in first[g]]
        assert [(*r[:-3], *r[-2:]) for r in second] == strip
        assert all(b[-3] > a[-3] for a, b in zip(first[g], second, strict=True))


def test_deleted_events_are_purged_from_rollups(url: str, duck_path: Path) -> None:
    insert_events(url, spread(300))
    targets = (pg_target(url), duck_target(url, duck_path))
    for t in targets:
        run_rollup(t, "hour", T0, T0 + 2 * DAY)
        run_rollup(t, "day")
    run_sql(url, "DELETE FROM usage_events WHERE organization_id = %s", (ORGS[1],))
    # The contract's check looks from raw events only; the stricter check finds stale rows.
    stale = reconcile(targets[0])
    failing = {c.name for c in stale.checks if not c.ok}
    assert "rollup_measures_match_usage" in failing
    assert "request_count_matches_usage" not in failing
    for t in targets:
        report = run_rollup(t, "hour", T0, T0 + 2 * DAY)
        assert report.rows_deleted > 0
        run_rollup(t, "day")
    remaining = [e for e in spread(300) if e.organization_id != ORGS[1]]
    assert rollup_rows(url, "hour") == expected(remaining, "hour")
    assert rollup_rows(url, "day") == expected(remaining, "day")
    assert rollup_rows(duck_path, "hour", duckdb=True) == expected(remaining, "hour")
    assert rollup_rows(duck_path, "day", duckdb=True) == expected(remaining, "day")
    assert reconcile(targets[0]).ok
    assert reconcile(targets[1]).ok


def test_window_is_widened_to_whole_buckets_and_recorded(url: str) -> None:
    insert_events(url, spread(100))
    with RollupEngine(pg_target(url)) as engine:
        report = engine.run("hour", T0 + timedelta(minutes=30), T0 + timedelta(hours=2, minutes=1))
        assert (report.window_start, report.window_end) == (T0, T0 + timedelta(hours=3))
        assert report.buckets == 3
        runs = engine.history(limit=5)
    assert runs[0]["analytics_rollup_run_id"] == str(report.run_id)
    assert runs[0]["status"] == "succeeded"
    assert runs[0]["mode"] == "window"
    assert runs[0]["source_events"] == report.events
    assert report.to_rollup_run()["status"] == "succeeded"
    assert report.to_dict()["window_start"] == T0.isoformat()


# -- failures ------------------------------------------------------------------------------------


def test_failed_run_is_recorded_and_commits_nothing(url: str) -> None:
    insert_events(url, spread(100))
    run_sql(
        url,
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON analytics_hourly_rollups
        FOR EACH ROW WHEN (NEW.organization_id = '00000000-0000-0000-0000-000000000003')
        EXECUTE FUNCTION refuse();
        """,
    )
    with RollupEngine(pg_target(url)) as engine:
        with pytest.raises(RollupFailedError) as info:
            engine.run("hour", T0, T0 + DAY)
        assert "refused by test" in info.value.message
        run = engine.history(limit=1)[0]
    assert run["analytics_rollup_run_id"] == str(info.value.run_id)
    assert (run["status"], run["error_code"]) == ("failed", "ROLLUP_FAILED")
    assert "refused by test" in run["error_message"]
    assert run_sql(url, "SELECT count(*) FROM analytics_hourly_rollups") == [(0,)]


@pytest.mark.parametrize(
    ("granularity", "start", "end", "fragment"),
    [
        ("minute", T0, T0 + DAY, "unsupported granularity"),
        ("hour", T0 + DAY, T0, "must be after"),
        ("hour", T0.replace(tzinfo=None), T0 + DAY, "no time zone"),
        ("hour", T0, None, "both"),
    ],
)
def test_bad_windows_are_refused(
    url: str, granularity: str, start: datetime, end: datetime | None, fragment: str
) -> None:
    with RollupEngine(pg_target(url)) as engine, pytest.raises(RollupWindowError) as info:
        engine.run(granularity, start, end)
    assert fragment in info.value.message
    assert info.value.status == 422


def test_schema_missing_and_unreachable(db_url: str) -> None:
    with pytest.raises(RollupSchemaMissingError) as info:
        run_rollup(pg_target(db_url), "hour", T0, T0 + DAY)
    assert "aiaas-db migrate up --platform" in info.value.message
    bad = RollupTarget(
        "postgres", "postgres", dsn="postgresql://nobody:s3cret@127.0.0.1:1/x?connect_timeout=1"
    )
    with pytest.raises(RollupUnavailableError) as unreachable:
        run_rollup(bad, "hour", T0, T0 + DAY)
    assert "s3cret" not in unreachable.value.message
    assert "s3cret" not in repr(bad)


def test_concurrent_rollup_is_locked_out(url: str) -> None:
    insert_events(url, spread(20))
    with RollupEngine(pg_target(url)) as holder:
        # Hold the lock as a running rollup would.
        with (
            holder._exclusive(),
            RollupEngine(pg_target(url), lock_timeout=0) as other,
            pytest.raises(RollupLockedError),
        ):
            other.run("hour", T0, T0 + DAY)
        assert holder.run("hour", T0, T0 + DAY).status == "succeeded"


# -- backfill ----------------------------------------------------------------------------------


def test_backfill_resumes_from_its_checkpoint(url: str, duck_path: Path) -> None:
    events = spread(600, hours=24 * 6)
    insert_events(url, events)
    for target in (pg_target(url), duck_target(url, duck_path)):
        seen: list[RollupProgress] = []

        def interrupt_after_two(p: RollupProgress, seen: list[RollupProgress] = seen) -> None:
            seen.append(p)
            if p.windows_done == 2:
                raise KeyboardInterrupt

        with RollupEngine(target) as engine:
            with pytest.raises(KeyboardInterrupt):
                engine.backfill("hour", T0, T0 + 6 * DAY, progress=interrupt_after_two)
            assert [p.windows_total for p in seen] == [6, 6]
            assert engine.history(limit=1)[0]["status"] == "failed"
            resumed = engine.backfill("hour", T0, T0 + 6 * DAY)
            assert resumed.resumed_from == T0 + 2 * DAY
            assert resumed.windows == 4
            assert engine.backfill("hour", T0, T0 + 6 * DAY).windows == 0  # completed
            again = engine.backfill("hour", T0, T0 + 6 * DAY, restart=True)
            assert (again.windows, again.resumed_from) == (6, None)
            assert again.rows_inserted == again.rows_updated == again.rows_deleted == 0
            days = engine.backfill("day", T0, T0 + 6 * DAY, window=timedelta(days=2))
            assert days.windows == 3
            assert engine.reconcile().ok
    assert rollup_rows(url, "hour") == expected(events, "hour")
    assert rollup_rows(duck_path, "day", duckdb=True) == expected(events, "day")


def test_backfill_throttles_between_windows(url: str) -> None:
    insert_events(url, spread(240, hours=24 * 4))
    sleeps: list[float] = []
    clock = iter(range(1000))
    with RollupEngine(
        pg_target(url), sleep=sleeps.append, monotonic=lambda: float(next(clock))
    ) as engine:
        engine.backfill("hour", T0, T0 + 4 * DAY, pause=0.25)
        assert sleeps == [0.25, 0.25, 0.25]  # between windows, not after the last
        sleeps.clear()
        report = engine.backfill("hour", T0, T0 + 4 * DAY, restart=True, max_events_per_second=10)
    # 60 events per window at <= 10 events/s: each pause tops the average up to the cap.
    assert len(sleeps) == 3
    assert all(s > 0.25 for s in sleeps)
    assert report.events == 240


def test_backfill_refuses_bad_arguments(url: str) -> None:
    with RollupEngine(pg_target(url)) as engine:
        for kwargs in (
            {"window": timedelta(minutes=30)},
            {"window": timedelta(hours=36), "granularity": "day"},
            {"pause": -1.0},
            {"max_events_per_second": 0.0},
        ):
            gran = str(kwargs.pop("granularity", "hour"))
            with pytest.raises(RollupWindowError):
                engine.backfill(gran, T0, T0 + DAY, **kwargs)  # type: ignore[arg-type]


# -- dashboards and the trigger API --------------------------------------------------------------


def test_usage_queries_match_raw_events_on_both_engines(url: str, duck_path: Path) -> None:
    events = spread(500)
    insert_events(url, events)
    pg, duck = pg_target(url), duck_target(url, duck_path)
    for t in (pg, duck):
        run_rollup(t, "hour", T0, T0 + 2 * DAY)
        run_rollup(t, "day")
    by_org = usage_by_organization(pg, start=T0, end=T0 + 2 * DAY, granularity="day")
    assert by_org == usage_by_organization(duck, start=T0, end=T0 + 2 * DAY, granularity="day")
    want: dict[tuple[Any, ...], list[Any]] = {}
    for (bucket, org, _model), m in expected(events, "day").items():
        row = want.setdefault((bucket, org), [0, 0, 0, 0, Decimal(0), 0])
        for i, v in enumerate(m):
            row[i] += v
    got = {
        (r.bucket_start, r.key): [
            r.request_count,
            r.tokens_total,
            r.error_count,
            r.rate_limited_count,
            r.cost_usd,
            r.latency_ms_sum,
        ]
        for r in by_org
    }
    assert got == want
    hourly = usage_by_organization(
        pg, start=T0, end=T0 + timedelta(hours=3), granularity="hour", organization_ids=[ORGS[2]]
    )
    assert {r.key for r in hourly} == {ORGS[2]}
    assert {r.bucket_start for r in hourly} == {T0 + timedelta(hours=h) for h in range(3)}
    by_model = usage_by_model(pg, start=T0, end=T0 + DAY, model_ids=[MODELS[0]])
    assert {r.key for r in by_model} == {MODELS[0], None}
    assert by_model == usage_by_model(duck, start=T0, end=T0 + DAY, model_ids=[MODELS[0]])
    only = usage_by_model(
        pg, start=T0, end=T0 + DAY, model_ids=[MODELS[1]], include_unattributed=False
    )
    assert {r.key for r in only} == {MODELS[1]}
    assert only[0].mean_latency_ms == only[0].latency_ms_sum / only[0].request_count


def test_trigger_rollup_runs_the_window(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIAAS_ROLLUP_TARGETS", raising=False)
    insert_events(url, spread(120))
    report = trigger_rollup(url, "hour", T0, T0 + DAY)
    assert (report.target, report.dialect, report.mode) == ("postgres", "postgres", "window")
    body = report.to_rollup_run()
    assert set(body) == {"runId", "status", "granularities", "submittedAt", "completedAt"}
    assert body["granularities"] == ["hour"]
    with pytest.raises(RollupWindowError):
        trigger_rollup(url, "week", T0, T0 + DAY)


def test_backfill_function_and_reconcile_window(url: str) -> None:
    insert_events(url, spread(200))
    target = pg_target(url)
    assert backfill(target, "hour", T0, T0 + 2 * DAY).windows == 2
    backfill(target, "day", T0, T0 + 2 * DAY)
    run_sql(
        url,
        "UPDATE analytics_hourly_rollups SET request_count = request_count + 1 "
        "WHERE bucket_start = %s",
        (T0 + timedelta(hours=30),),
    )
    report = reconcile(target)
    assert not report.ok
    bad = {c.name for c in report.checks if not c.ok}
    assert {"request_count_matches_usage", "daily_matches_hourly"} <= bad
    assert report.mismatches >= 3
    sample = next(c for c in report.checks if c.name == "request_count_matches_usage").sample[0]
    assert sample["usage_count"] + 1 == sample["rollup_count"]
    # Scoped to the first day, the corrupted hour (day 2) is out of range.
    assert reconcile(target, start=T0, end=T0 + DAY).ok
    assert not reconcile(target, start=T0 + DAY, end=T0 + 2 * DAY).ok
    with pytest.raises(RollupWindowError):
        reconcile(target, start=T0)


def test_unsupported_and_deleted_targets(tmp_path: Path, url: str) -> None:
    with pytest.raises(RollupConfigError, match="unsupported rollup dialect"):
        RollupTarget("w", "snowflake", dsn=url)
    with pytest.raises(RollupConfigError, match="folder of the DuckDB file"):
        run_rollup(duck_target(url, tmp_path / "missing" / "a.duckdb"), "hour", T0, T0 + DAY)
    with pytest.raises(RollupConfigError, match="has no PostgreSQL DSN"):
        RollupEngine(RollupTarget("p", "postgres", dsn_origin="AIAAS_DB_URL"))
    with pytest.raises(RollupConfigError, match="needs a DuckDB file path"):
        RollupEngine(RollupTarget("d", "duckdb", dsn=url))
    with pytest.raises(RollupWindowError):
        RollupEngine(pg_target(url), overlap=timedelta(seconds=-1))


def test_duckdb_mirror_holds_only_copied_windows(url: str, duck_path: Path) -> None:
    insert_events(url, spread(240, hours=24 * 4))
    run_rollup(duck_target(url, duck_path), "hour", T0 + DAY, T0 + 2 * DAY)
    import duckdb

    with duckdb.connect(str(duck_path), read_only=True) as conn:
        lo, hi, n = conn.execute(
            "SELECT min(occurred_at), max(occurred_at), count(*) FROM usage_events"
        ).fetchone()  # type: ignore[misc]
    assert lo >= T0 + DAY
    assert hi < T0 + 2 * DAY
    with psycopg.connect(url) as conn:
        pg_n = conn.execute(
            "SELECT count(*) FROM usage_events WHERE occurred_at >= %s AND occurred_at < %s",
            (T0 + DAY, T0 + 2 * DAY),
        ).fetchone()
    assert pg_n == (n,)
    assert 0 < n < 240
