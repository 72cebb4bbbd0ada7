"""Helpers of the rollup tests: writing usage events, a Python model of the rollups, snapshots."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from aiaas_db import LocalPostgres, Migrator
from aiaas_db.analytics._models import RollupTarget
from aiaas_db.platform._pii import PiiProtector

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ORGS = tuple(uuid.UUID(int=i + 1) for i in range(3))
MODELS: tuple[uuid.UUID | None, ...] = (uuid.UUID(int=1000), uuid.UUID(int=1001), None)
MEASURES = (
    "request_count",
    "tokens_total",
    "error_count",
    "rate_limited_count",
    "cost_usd",
    "latency_ms_sum",
)


#: Protects the migration audit actor (the platform's audit log) in these tests.
PROTECTOR = PiiProtector.for_local_development("aiaas-db rollup tests: migration audit")


def apply_platform(url: str) -> None:
    from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source

    for component in PLATFORM_COMPONENTS:
        Migrator(url, platform_source(component), component=component, protector=PROTECTOR).up()


@pytest.fixture(scope="session")
def rollup_template(pg: LocalPostgres) -> str:
    """A database with the platform schema applied, copied by every rollup test."""
    name = f"tpl_rollup_{uuid.uuid4().hex[:8]}"
    apply_platform(pg.create_database(name))
    return name


@pytest.fixture
def url(pg: LocalPostgres, rollup_template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield pg.create_database(name, template=rollup_template)
    pg.drop_database(name)


@pytest.fixture(scope="module")
def shared_db(pg: LocalPostgres, rollup_template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield pg.create_database(name, template=rollup_template)
    pg.drop_database(name)


@attrs.frozen
class Event:
    occurred_at: datetime
    organization_id: uuid.UUID
    model_id: uuid.UUID | None
    tokens: int = 10
    latency_ms: int = 5
    status: str = "success"
    cost_usd: Decimal = Decimal("0.00100000")


def insert_events(url: str, events: Iterable[Event], *, ingested_at: datetime | None = None) -> int:
    """COPY ``events`` into usage_events (ingested_at: now() unless given)."""
    n = 0
    with psycopg.connect(url, autocommit=True) as conn:
        cols = (
            "occurred_at, organization_id, model_id, tokens_consumed, latency_ms, status, "
            "error_code, region, cost_usd, ingested_at"
        )
        with conn.cursor().copy(f"COPY usage_events ({cols}) FROM STDIN") as copy:
            for e in events:
                copy.write_row(
                    (
                        e.occurred_at,
                        e.organization_id,
                        e.model_id,
                        e.tokens,
                        e.latency_ms,
                        e.status,
                        None if e.status == "success" else "X",
                        "eu-west-1",
                        e.cost_usd,
                        ingested_at or datetime.now(UTC),
                    )
                )
                n += 1
    return n


def expected(events: Iterable[Event], granularity: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The rollup rows a correct engine produces, computed in Python."""
    acc: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0), 0])
    for e in events:
        at = e.occurred_at.astimezone(UTC)
        bucket = (
            at.replace(minute=0, second=0, microsecond=0)
            if granularity == "hour"
            else at.replace(hour=0, minute=0, second=0, microsecond=0)
        )
        row = acc[(bucket, e.organization_id, e.model_id)]
        row[0] += 1
        row[1] += e.tokens
        row[2] += e.status == "error"
        row[3] += e.status == "rate_limited"
        row[4] += e.cost_usd
        row[5] += e.latency_ms
    return {k: tuple(v) for k, v in acc.items()}


def rollup_rows(
    url_or_path: str | Path, granularity: str, *, duckdb: bool = False
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The rollup table as {(bucket, org, model): measures}."""
    table = f"analytics_{'hourly' if granularity == 'hour' else 'daily'}_rollups"
    sql = f"SELECT bucket_start, organization_id, model_id, {', '.join(MEASURES)} FROM {table}"  # noqa: S608
    if duckdb:
        import duckdb as ddb

        with ddb.connect(str(url_or_path), read_only=True) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        with psycopg.connect(str(url_or_path)) as conn:
            rows = conn.execute(sql.encode()).fetchall()
    return {
        (r[0].astimezone(UTC), _uuid(r[1]), _uuid(r[2])): (
            int(r[3]),
            int(r[4]),
            int(r[5]),
            int(r[6]),
            Decimal(r[7]),
            int(r[8]),
        )
        for r in rows
    }


def full_rows(url: str, granularity: str) -> list[tuple[Any, ...]]:
    """Every column of the rollup table, ordered by id."""
    table = f"analytics_{'hourly' if granularity == 'hour' else 'daily'}_rollups"
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1".encode()).fetchall()  # noqa: S608


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def pg_target(url: str) -> RollupTarget:
    return RollupTarget(name="postgres", dialect="postgres", dsn=url)


def duck_target(url: str, path: Path) -> RollupTarget:
    return RollupTarget(name="duckdb", dialect="duckdb", dsn=url, duckdb_path=path)


def spread(n: int, *, start: datetime = T0, hours: int = 48, step_s: int = 997) -> list[Event]:
    """``n`` deterministic events over ``hours`` hours, all orgs, models and statuses."""
    statuses = ("success", "success", "error", "rate_limited")
    return [
        Event(
            occurred_at=start + timedelta(seconds=(i * step_s) % (hours * 3600)),
            organization_id=ORGS[i % len(ORGS)],
            model_id=MODELS[(i // 3) % len(MODELS)],
            tokens=(i * 37) % 500,
            latency_ms=(i * 13) % 900,
            status=statuses[i % len(statuses)],
            cost_usd=Decimal(i % 997) / Decimal(10**8) * 12345,
        )
        for i in range(n)
    ]


def run_sql(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode() if not params else sql, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []
