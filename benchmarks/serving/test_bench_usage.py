"""inference-service: what recording usage costs a request, and how fast the writer drains.

* ``record``: the request-path cost of one usage event (an append to the bounded buffer).
* Writer throughput: 10 000 usage events written by aiaas-db's ``UsageWriter`` (batches of 500, one
  ``INSERT ... SELECT FROM unnest(...)`` each) against the naive peer, one autocommit ``INSERT``
  per event, into the platform schema's partitioned ``usage_events`` on a throwaway PostgreSQL,
  measured side by side in the same run. ``extra_info`` carries events/s and the ratio.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import psycopg
import pytest

from aiaas_db import (
    PLATFORM_COMPONENTS,
    USAGE_EVENT_COLUMNS,
    LocalPostgres,
    Migrator,
    PiiProtector,
    UsageEvent,
    UsageWriter,
    platform_source,
)

EVENTS = 10_000


def make_event(org: uuid.UUID) -> UsageEvent:
    return UsageEvent(
        occurred_at=datetime.now(UTC),
        organization_id=org,
        api_key_id=None,
        model_id=None,
        request_id=uuid.uuid4().hex,
        tokens_consumed=42,
        latency_ms=7,
        status="success",
        error_code=None,
        region="bench",
        cost_usd=Decimal("0.00000084"),
    )


@pytest.fixture(scope="module")
def platform_url() -> Iterator[str]:
    with LocalPostgres.temporary() as pg:
        url = pg.create_database("bench")
        protector = PiiProtector.for_local_development("benchmark-seed-secret-0001")
        for component in PLATFORM_COMPONENTS:
            Migrator(url, platform_source(component), component=component, protector=protector).up()
        yield url


def test_record_is_an_append(benchmark: Any) -> None:
    async def never() -> Any:
        raise OSError("not used")

    recorder = UsageWriter(never, buffer_limit=10_000_000, batch_size=10_000_000)
    event = make_event(uuid.uuid4())
    benchmark(recorder.record, event)


def test_writer_throughput_vs_one_insert_per_event(benchmark: Any, platform_url: str) -> None:
    org = uuid.uuid4()
    events = [make_event(org) for _ in range(EVENTS)]

    async def connect() -> Any:
        return await psycopg.AsyncConnection.connect(platform_url, autocommit=True)

    async def batched() -> float:
        recorder = UsageWriter(connect, buffer_limit=EVENTS, batch_size=500, flush_interval=0.01)
        recorder.start()
        t0 = time.perf_counter()
        for e in events:
            recorder.record(e)
        stats = await recorder.aclose(timeout=120)
        assert stats.written == EVENTS
        return time.perf_counter() - t0

    async def naive() -> float:
        conn = await connect()
        t0 = time.perf_counter()
        async with conn:
            for e in events:
                await conn.execute(
                    f"INSERT INTO usage_events ({', '.join(USAGE_EVENT_COLUMNS)})"  # noqa: S608
                    f" VALUES ({', '.join(['%s'] * len(USAGE_EVENT_COLUMNS))})",
                    attrs.evolve(e, usage_event_id=uuid.uuid4()).row(),
                )
        return time.perf_counter() - t0

    naive_s = asyncio.run(naive())
    batched_s = benchmark.pedantic(lambda: asyncio.run(batched()), rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "events": EVENTS,
            "batched_events_per_s": round(EVENTS / batched_s),
            "naive_events_per_s": round(EVENTS / naive_s),
            "speedup": round(naive_s / batched_s, 2),
        }
    )
    with psycopg.connect(platform_url) as conn:
        (rows,) = conn.execute(
            "SELECT count(*) FROM usage_events WHERE organization_id = %s", (org,)
        ).fetchone()
    assert rows == 2 * EVENTS
