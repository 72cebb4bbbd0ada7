"""UsageWriter: validated events, batched idempotent inserts into a real ``usage_events``,
buffering while the database is down, counted drops, bounded shutdown flush."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import seed_support

from aiaas_db import USAGE_EVENT_COLUMNS, UsageEvent, UsageWriter

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")


def event(**changes: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "occurred_at": datetime.now(UTC),
        "organization_id": ORG,
        "api_key_id": None,
        "model_id": None,
        "request_id": "req-1",
        "tokens_consumed": 7,
        "latency_ms": 3,
        "status": "success",
        "error_code": None,
        "region": "local",
        "cost_usd": Decimal("0.001"),
    }
    fields.update(changes)
    return UsageEvent(**fields)


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM usage_events").fetchone()
    assert row is not None
    return int(row[0])


def test_usage_events_are_validated() -> None:
    assert event().status == "success"
    assert len(event().row()) == len(USAGE_EVENT_COLUMNS)
    with pytest.raises(ValueError, match="tokens_consumed"):
        event(tokens_consumed=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        event(occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the naive time is the point
    with pytest.raises(ValueError, match="status"):
        event(status="maybe")
    with pytest.raises(ValueError, match="error_code"):
        event(status="error", error_code=None)
    with pytest.raises(ValueError, match="error_code"):
        event(error_code="BOOM")
    assert event(status="rate_limited", error_code="RATE_LIMIT_EXCEEDED").error_code
    # a generation request splits its tokens; the split adds up to tokens_consumed
    assert event(prompt_tokens=5, completion_tokens=2).row()[-2:] == (5, 2)
    assert event(prompt_tokens=7).prompt_tokens == 7
    with pytest.raises(ValueError, match="prompt_tokens"):
        event(prompt_tokens=-1)
    with pytest.raises(ValueError, match="completion_tokens"):
        event(completion_tokens=-2)
    with pytest.raises(ValueError, match=r"must equal tokens_consumed, got 5 \+ 5 != 7"):
        event(prompt_tokens=5, completion_tokens=5)


async def test_the_token_split_reaches_the_table_and_its_checks_hold(platform_url: str) -> None:
    writer = UsageWriter(platform_url, flush_interval=0.05)
    writer.start()
    assert writer.record(event(request_id="gen", prompt_tokens=4, completion_tokens=3))
    assert writer.record(event(request_id="emb"))
    assert await writer.flush(timeout=10)
    await writer.aclose(timeout=5)
    with psycopg.connect(platform_url) as conn:
        rows = conn.execute(
            "SELECT request_id, prompt_tokens, completion_tokens, tokens_consumed"
            " FROM usage_events ORDER BY request_id"
        ).fetchall()
        assert rows == [("emb", None, None, 7), ("gen", 4, 3, 7)]
        # the database refuses a split that does not add up, whoever writes it
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_usage_events_token_split"):
            conn.execute(
                "INSERT INTO usage_events (occurred_at, organization_id, tokens_consumed,"
                " latency_ms, status, region, prompt_tokens, completion_tokens)"
                " VALUES (now(), %s, 7, 1, 'success', 'local', 5, 5)",
                (ORG,),
            )


def test_the_column_list_matches_the_table(platform_url: str) -> None:
    with psycopg.connect(platform_url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'usage_events' AND column_default IS NULL"
        ).fetchall()
    # every column without a default is filled by the writer (ingested_at has one)
    assert {r[0] for r in rows} <= set(USAGE_EVENT_COLUMNS)


async def test_drops_are_counted_when_the_buffer_is_full_and_after_close() -> None:
    async def never() -> object:
        raise OSError("no database in this test")

    writer = UsageWriter(never, buffer_limit=2, batch_size=10, flush_interval=5)
    assert writer.record(event())
    assert writer.record(event())
    assert not writer.record(event())  # full: dropped, counted, never blocks
    stats = writer.stats
    assert (stats.accepted, stats.pending, stats.dropped_buffer_full) == (3, 2, 1)
    final = await writer.aclose(timeout=0.1)  # never started: nothing can be written
    assert final.dropped_shutdown == 2
    assert final.pending == 0
    assert not writer.record(event())
    after = writer.stats
    assert after.dropped_shutdown == 3
    assert after.accepted == after.written + after.dropped_buffer_full + after.dropped_shutdown
    with pytest.raises(ValueError, match="buffer_limit"):
        UsageWriter(never, buffer_limit=0)
    with pytest.raises(ValueError, match="flush_interval"):
        UsageWriter(never, flush_interval=0)


async def test_batched_idempotent_inserts_into_the_real_table(platform_url: str) -> None:
    seen: list[int] = []
    writer = UsageWriter(
        platform_url, batch_size=4, flush_interval=0.05, on_change=lambda s: seen.append(s.written)
    )
    writer.start()
    events = [event(request_id=f"req-{i}") for i in range(10)]
    for e in events:
        assert writer.record(e)
    assert await writer.flush(timeout=10)
    assert count(platform_url) == 10
    assert writer.stats.written == 10
    assert writer.stats.database_up
    assert max(seen) == 10
    # a batch written again (a retry after an ambiguous failure) never counts twice
    for e in events[:3]:
        writer.record(e)
    assert await writer.flush(timeout=10)
    assert count(platform_url) == 10
    final = await writer.aclose(timeout=5)
    assert final.accepted == final.written == 13
    assert final.dropped_shutdown == 0


async def test_buffered_while_the_database_is_down_then_written(
    platform_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    down = True

    async def connect() -> Any:
        if down:
            raise OSError("connection refused")
        return await psycopg.AsyncConnection.connect(platform_url, autocommit=True)

    def broken_metrics(_stats: object) -> None:
        raise RuntimeError("metrics backend is broken")

    writer = UsageWriter(connect, flush_interval=0.02, max_backoff=0.05, on_change=broken_metrics)
    writer.start()
    with caplog.at_level(logging.WARNING, logger="aiaas.db.usage"):
        for i in range(5):
            assert writer.record(event(request_id=f"down-{i}"))  # requests go on
        for _ in range(1000):  # a condition, not a time: the writer has tried and failed
            if writer.stats.write_failures >= 1 and not writer.stats.database_up:
                break
            await asyncio.sleep(0.01)
        assert not writer.stats.database_up
        assert writer.stats.pending == 5
        assert writer.stats.write_failures >= 1
        assert not await writer.flush(timeout=0.1)
        down = False
        assert await writer.flush(timeout=10)
    assert writer.stats.database_up
    assert count(platform_url) == 5
    assert "usage events not written (OSError)" in caplog.text
    assert "usage metrics callback failed" in caplog.text
    await writer.aclose(timeout=5)


async def test_the_shutdown_flush_is_bounded_and_counts_what_it_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def never() -> object:
        raise OSError("the database is gone")

    writer = UsageWriter(never, flush_interval=0.01, max_backoff=0.05)
    writer.start()
    for _ in range(3):
        writer.record(event())
    with caplog.at_level(logging.ERROR, logger="aiaas.db.usage"):
        stats = await writer.aclose(timeout=0.2)
    assert (stats.written, stats.dropped_shutdown, stats.pending) == (0, 3, 0)
    assert "3 usage events could not be written before shutdown" in caplog.text
