"""The operational access paths use their indexes and prune partitions (plans, not timings).

A modest data set (30 000 usage events over 10 daily partitions, 5 000 API keys, 10 000 audit
entries) is loaded with COPY and analysed; each access path's ``EXPLAIN (FORMAT JSON)`` must show
index scans on the intended index, no sequential scan, and only the partitions of the queried
days. The planner sees real statistics: no ``enable_seqscan`` tricks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from aiaas_db import (
    LocalPostgres,
    Migrator,
    PiiProtector,
    ensure_partitions,
    platform_source,
)

PII = PiiProtector.for_local_development("test-access-paths")
FIRST_DAY = date(2026, 11, 10)
DAYS = 10
EVENTS = 30_000
ORGS = [uuid.UUID(int=n + 1) for n in range(200)]
MODELS = [uuid.UUID(int=10_000 + n) for n in range(20)]
ACTORS = [f"user:{n}" for n in range(400)]
START = datetime.combine(FIRST_DAY, datetime.min.time(), tzinfo=UTC)


def _load(conn: psycopg.Connection[Any]) -> None:
    """Generated in SQL (fast on a small machine), deterministic through setseed()."""
    conn.execute("SELECT setseed(0.5)")
    conn.execute(
        """
        INSERT INTO usage_events (occurred_at, organization_id, model_id, tokens_consumed,
            latency_ms, status, error_code, region)
        SELECT %(start)s + random() * interval '1 day' * %(days)s,
               ('00000000-0000-0000-0000-'
                || lpad(to_hex(1 + (random() * 199)::int), 12, '0'))::uuid,
               ('00000000-0000-0000-0000-'
                || lpad(to_hex(10000 + (random() * 19)::int), 12, '0'))::uuid,
               (random() * 2000)::int, (random() * 500)::int,
               CASE WHEN r < 0.02 THEN 'error' WHEN r < 0.05 THEN 'rate_limited' ELSE 'success' END,
               CASE WHEN r < 0.02 THEN 'MODEL_FAILED' WHEN r < 0.05 THEN 'RATE_LIMITED' END,
               'eu-west-1'
        FROM (SELECT random() AS r FROM generate_series(1, %(events)s)) AS g
        """,
        {"start": START, "days": DAYS, "events": EVENTS},
    )
    conn.execute(
        "INSERT INTO organizations (organization_id, slug, display_name, plan_tier)"
        " SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid,"
        " 'org-' || n, 'Org ' || n, 'pro' FROM generate_series(1, 200) AS n"
    )
    conn.execute(
        "INSERT INTO api_keys (organization_id, key_id, name, hashed_secret)"
        " SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(1 + n % 200), 12, '0'))::uuid,"
        " lpad(n::text, 12, 'k'), 'key-' || n, 'digest' FROM generate_series(1, 5000) AS n"
    )
    with conn.cursor().copy(
        "COPY audit_log_entries (occurred_at, actor_type, actor_id, action, target) FROM STDIN"
    ) as copy:
        digests = [PII.digest(a) for a in ACTORS]
        actions = ("api_key.create", "api_key.revoke", "user.login")
        for n in range(10_000):
            moment = START + timedelta(seconds=(n * 7919) % (DAYS * 86_400))
            copy.write_row((moment, "user", digests[n % len(digests)], actions[n % 3], f"t:{n}"))
    for table in ("usage_events", "api_keys", "audit_log_entries", "organizations"):
        conn.execute(f"VACUUM ANALYZE {table}")


@pytest.fixture(scope="module")
def url(pg: LocalPostgres) -> Iterator[str]:
    dsn = pg.create_database("access_paths")
    Migrator(dsn, platform_source("operational"), component="operational", protector=PII).up()
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_partitions(conn, ahead=DAYS - 1, today=FIRST_DAY, protector=PII)
        _load(conn)
    yield dsn
    pg.drop_database("access_paths")


def plan(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Every node of the plan of ``query``, depth first."""
    with psycopg.connect(url) as conn:
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    return nodes


def scanned(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Relation Name"] for n in nodes if "Relation Name" in n}


def indexes(nodes: list[dict[str, Any]]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


def assert_index_only_paths(nodes: list[dict[str, Any]]) -> None:
    types = {n["Node Type"] for n in nodes}
    assert "Seq Scan" not in types, types
    assert types & {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}, types


def day_window(first: int, days: int) -> tuple[datetime, datetime]:
    lo = datetime.combine(FIRST_DAY + timedelta(days=first), datetime.min.time(), tzinfo=UTC)
    return lo, lo + timedelta(days=days)


def partitions_of(first: int, days: int) -> set[str]:
    return {f"usage_events_p{FIRST_DAY + timedelta(days=first + n):%Y%m%d}" for n in range(days)}


def test_the_data_set_is_spread_over_the_daily_partitions(url: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM usage_events GROUP BY 1"
        ).fetchall()
    counts: dict[str, int] = dict(rows)
    assert set(counts) == partitions_of(0, DAYS)  # nothing in the default partition
    assert sum(counts.values()) == EVENTS


def test_organization_and_time_range(url: str) -> None:
    lo, hi = day_window(3, 2)
    nodes = plan(
        url,
        "SELECT occurred_at, tokens_consumed FROM usage_events WHERE organization_id = %s"
        " AND occurred_at >= %s AND occurred_at < %s ORDER BY occurred_at",
        (ORGS[7], lo, hi),
    )
    assert_index_only_paths(nodes)
    assert scanned(nodes) == partitions_of(3, 2)  # pruned: 2 of 11 partitions
    assert all("organization_id_occurred_at" in i for i in indexes(nodes))


def test_model_and_time_range(url: str) -> None:
    lo, hi = day_window(5, 1)
    nodes = plan(
        url,
        "SELECT count(*), sum(tokens_consumed) FROM usage_events WHERE model_id = %s"
        " AND occurred_at >= %s AND occurred_at < %s",
        (MODELS[3], lo + timedelta(hours=6), hi - timedelta(hours=6)),
    )
    assert_index_only_paths(nodes)
    assert scanned(nodes) == partitions_of(5, 1)
    assert all("model_id_occurred_at" in i for i in indexes(nodes))


def test_status_and_time_range(url: str) -> None:
    lo, hi = day_window(0, 3)
    nodes = plan(
        url,
        "SELECT occurred_at, error_code FROM usage_events WHERE status = 'error'"
        " AND occurred_at >= %s AND occurred_at < %s",
        (lo, hi),
    )
    assert_index_only_paths(nodes)
    assert scanned(nodes) == partitions_of(0, 3)
    assert all("status_occurred_at" in i for i in indexes(nodes))


def test_api_key_by_key_id(url: str) -> None:
    nodes = plan(
        url,
        "SELECT api_key_id, organization_id, hashed_secret, status FROM api_keys WHERE key_id = %s",
        ("kkkkkkkk1234",),
    )
    assert_index_only_paths(nodes)
    assert indexes(nodes) == {"uq_api_keys_key_id"}


def test_audit_entries_by_actor(url: str) -> None:
    nodes = plan(
        url,
        "SELECT occurred_at, action, target FROM audit_log_entries WHERE actor_id = %s"
        " ORDER BY occurred_at DESC LIMIT 50",
        (PII.digest(ACTORS[9]),),
    )
    assert_index_only_paths(nodes)
    assert indexes(nodes) == {"idx_audit_log_entries_actor_id_occurred_at"}


def test_audit_entries_by_time_window(url: str) -> None:
    lo, _ = day_window(2, 1)
    nodes = plan(
        url,
        "SELECT action, target FROM audit_log_entries WHERE occurred_at >= %s AND occurred_at < %s",
        (lo, lo + timedelta(hours=1)),
    )
    assert_index_only_paths(nodes)
    assert indexes(nodes) == {"idx_audit_log_entries_occurred_at"}
