"""Synthetic bulk data: shape of the distributions, partitions, determinism, refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import seed_support

from aiaas_db import LocalPostgres
from aiaas_db.platform._pii import PiiProtector
from aiaas_db.platform._seeds import LoadProgress
from aiaas_db.platform._synthetic import (
    SyntheticError,
    SyntheticReport,
    load_synthetic,
    load_synthetic_audit,
)

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

START = datetime(2026, 10, 1, tzinfo=UTC)
END = START + timedelta(days=3)
EVENTS = 20_000


def q(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def loaded(platform_url: str) -> tuple[str, SyntheticReport]:
    report = load_synthetic(
        platform_url, organizations=300, events=EVENTS, start=START, end=END, models=8, seed=7
    )
    return platform_url, report


def test_counts_and_partitions(loaded: tuple[str, SyntheticReport]) -> None:
    url, report = loaded
    assert (report.organizations, report.models, report.events) == (300, 8, EVENTS)
    assert report.partitions_created >= 3
    assert report.events_per_second > 0
    assert report.to_dict()["start"] == START.isoformat()
    assert q(url, "SELECT count(*) FROM organizations WHERE starts_with(slug, 'syn7-o')") == [
        (300,)
    ]
    assert q(url, "SELECT count(*) FROM usage_events") == [(EVENTS,)]
    assert q(url, "SELECT count(*) FROM usage_events_default") == [(0,)]
    days = q(
        url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'usage_events'::regclass"
        " AND starts_with(c.relname, 'usage_events_p2026100')",
    )
    assert {d[0] for d in days} >= {f"usage_events_p2026100{d}" for d in (1, 2, 3)}
    bounds = q(url, "SELECT min(occurred_at), max(occurred_at) FROM usage_events")[0]
    assert bounds[0] >= START
    assert bounds[1] < END
    # Every key belongs to an organisation that is not closed; closed ones have none.
    closed = q(
        url,
        "SELECT count(*) FROM organizations o JOIN api_keys k USING (organization_id)"
        " WHERE o.status = 'closed'",
    )
    assert closed == [(0,)]
    assert report.api_keys == q(url, "SELECT count(*) FROM api_keys")[0][0]


def test_distributions(loaded: tuple[str, SyntheticReport]) -> None:
    url, _ = loaded
    stats = q(
        url,
        "SELECT count(*) FILTER (WHERE status = 'error')::float / count(*),"
        " count(*) FILTER (WHERE status = 'rate_limited')::float / count(*),"
        " count(*) FILTER (WHERE model_id IS NULL),"
        " min(tokens_consumed) FILTER (WHERE status <> 'rate_limited'),"
        " max(tokens_consumed), max(tokens_consumed) FILTER (WHERE status = 'rate_limited'),"
        " count(*) FILTER (WHERE status = 'success' AND error_code IS NOT NULL),"
        " count(*) FILTER (WHERE status <> 'success' AND error_code IS NULL),"
        " min(latency_ms), count(DISTINCT region) FROM usage_events",
    )[0]
    errors, limited, no_model, min_tokens, max_tokens, limited_tokens = stats[:6]
    assert 0.015 < errors < 0.025
    assert 0.006 < limited < 0.014
    assert 0 < no_model < EVENTS * 0.015
    assert min_tokens == 8
    assert max_tokens <= 2048
    assert limited_tokens == 0
    assert stats[6] == 0
    assert stats[7] == 0
    assert stats[8] >= 4
    assert stats[9] >= 2
    # Skewed traffic: the busiest organisation sends far more than an even share, closed none.
    per_org = q(
        url,
        "SELECT o.status, count(e.*) FROM organizations o"
        " LEFT JOIN usage_events e USING (organization_id) GROUP BY o.organization_id, o.status"
        " ORDER BY 2 DESC",
    )
    assert per_org[0][1] > 10 * EVENTS / len(per_org)
    assert all(n == 0 for status, n in per_org if status == "closed")
    top_model = q(
        url, "SELECT count(*) FROM usage_events GROUP BY model_id ORDER BY 1 DESC LIMIT 1"
    )
    assert top_model[0][0] > EVENTS / 8 * 1.5
    costs = q(
        url,
        "SELECT count(*) FROM usage_events WHERE status = 'success' AND cost_usd = 0"
        " AND model_id IS NOT NULL",
    )
    assert costs == [(0,)]


def test_same_seed_same_data(
    pg: LocalPostgres,
    platform_template: str,
    loaded: tuple[str, SyntheticReport],
) -> None:
    url, _ = loaded
    name = f"t_syn_{uuid.uuid4().hex[:12]}"
    other = pg.create_database(name, template=platform_template)
    try:
        load_synthetic(
            other, organizations=300, events=EVENTS, start=START, end=END, models=8, seed=7
        )
        query = (
            "SELECT organization_id, model_id, status, count(*), sum(tokens_consumed),"
            " sum(cost_usd) FROM usage_events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        assert q(url, query) == q(other, query)
    finally:
        pg.drop_database(name)


def test_reload_is_refused_other_seed_adds(loaded: tuple[str, SyntheticReport]) -> None:
    url, _ = loaded
    with pytest.raises(SyntheticError) as info:
        load_synthetic(
            url, organizations=300, events=EVENTS, start=START, end=END, models=8, seed=7
        )
    assert info.value.code == "SYNTHETIC_DUPLICATE"
    assert q(url, "SELECT count(*) FROM usage_events") == [(EVENTS,)]
    with psycopg.connect(url) as conn:
        more = load_synthetic(
            conn, organizations=10, events=1000, start=START, end=END, models=2, seed=8
        )
    assert more.events == 1000
    assert q(url, "SELECT count(*) FROM usage_events") == [(EVENTS + 1000,)]


def test_progress_and_zero_events(platform_url: str) -> None:
    totals: list[int] = []
    steps: list[int] = []

    class Recorder:
        def advance(self, rows: int) -> None:
            steps.append(rows)

        def close(self) -> None:
            steps.append(-1)

    def factory(total: int) -> LoadProgress:
        totals.append(total)
        recorder = Recorder()
        assert isinstance(recorder, LoadProgress)
        return recorder

    load_synthetic(
        platform_url, organizations=5, events=60_000, start=START, end=END, progress=factory
    )
    assert totals == [60_000]
    assert steps[-1] == -1
    assert sum(steps[:-1]) == 60_000
    assert len(steps) > 2  # streamed in chunks
    empty = load_synthetic(platform_url, organizations=5, events=0, start=START, end=END, seed=3)
    assert empty.events == 0
    assert empty.organizations == 5


def test_rich_progress(platform_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    load_synthetic(platform_url, organizations=3, events=500, start=START, end=END, progress=True)
    assert "synthetic usage events" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"organizations": 0}, "organizations"),
        ({"events": -1}, "events"),
        ({"models": 0}, "models"),
        ({"end": START}, "after start"),
        ({"start": datetime(2026, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
        ({"end": START + timedelta(days=4000)}, "ten years"),
    ],
)
def test_invalid_arguments(platform_url: str, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"organizations": 2, "events": 10, "start": START, "end": END}
    args.update(kwargs)
    with pytest.raises(SyntheticError, match=message) as info:
        load_synthetic(platform_url, **args)
    assert info.value.code == "SYNTHETIC_INVALID"


def test_schema_missing(db_url: str) -> None:
    with pytest.raises(SyntheticError) as info:
        load_synthetic(db_url, organizations=1, events=1, start=START, end=END)
    assert info.value.code == "SYNTHETIC_SCHEMA_MISSING"


def test_audit_entries(platform_url: str) -> None:
    pii = PiiProtector.for_local_development("synthetic-audit-tests-secret")
    written = load_synthetic_audit(
        platform_url, entries=12_000, actors=50, start=START, end=END, protector=pii, seed=1
    )
    assert written == 12_000
    rows = q(
        platform_url,
        "SELECT count(*), count(DISTINCT actor_id), min(occurred_at), max(occurred_at)"
        " FROM audit_log_entries WHERE starts_with(target, 'synthetic:')",
    )[0]
    assert rows[0] == 12_000
    assert 10 < rows[1] <= 50
    assert rows[2] >= START
    assert rows[3] < END
    actors = q(
        platform_url,
        "SELECT DISTINCT actor_id FROM audit_log_entries WHERE starts_with(target, 'synthetic:')",
    )
    assert all(a[0].startswith("hmac-sha256$") for a in actors)
    with pytest.raises(SyntheticError):
        load_synthetic_audit(platform_url, entries=1, actors=0, start=START, end=END, protector=pii)
