"""The pieces that need no database: settings, usage events, prices and the key cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from inference_service import CachedKeyStore, ModelPrice, UsageEvent, UsageRecorder, load

from aiaas_core import (
    ApiKeyRecord,
    ConfigError,
    InMemoryApiKeyStore,
    ServiceUnavailableError,
)


def event(**changes: object) -> UsageEvent:
    fields: dict[str, object] = {
        "occurred_at": datetime.now(UTC),
        "organization_id": uuid.uuid4(),
        "api_key_id": uuid.uuid4(),
        "model_id": None,
        "request_id": "r1",
        "tokens_consumed": 3,
        "latency_ms": 12,
        "status": "success",
        "error_code": None,
        "region": "local",
        "cost_usd": Decimal("0.00000300"),
    }
    fields.update(changes)
    return UsageEvent(**fields)  # type: ignore[arg-type]


def test_settings_defaults_and_problems() -> None:
    settings = load({}, {})
    assert settings.database_url is None
    assert settings.model == "all-MiniLM-L6-v2"
    assert settings.hasher() is None
    with pytest.raises(ConfigError) as caught:
        load({"INFERENCE_SERVICE_DATABASE_URL": "postgresql://x/y"}, {})
    assert "INFERENCE_SERVICE_API_KEY_HASH_KEY" in str(caught.value.problems[0].hint)
    with pytest.raises(ConfigError) as bad:
        load(
            {
                "INFERENCE_SERVICE_PORT": "eighty",
                "INFERENCE_SERVICE_DEVICE": "tpu",
                "INFERENCE_SERVICE_USAGE_BUFFER": "0",
                "INFERENCE_SERVICE_REQUEST_TIMEOUT": "0s",
            },
            {},
        )
    paths = {p.path for p in bad.value.problems}
    assert {"port", "device", "usage_buffer", "request_timeout"} <= paths
    with pytest.raises(ConfigError) as weak:
        load({"INFERENCE_SERVICE_API_KEY_HASH_KEY": "zz-not-a-key-zz"}, {})
    assert weak.value.problems[0].path == "api_key_hash_key"
    assert "zz-not-a-key-zz" not in str(weak.value)  # a secret is never echoed
    good = load({"INFERENCE_SERVICE_API_KEY_HASH_KEY": "ab" * 32}, {"port": 9000})
    assert good.port == 9000
    assert good.hasher() is not None


def test_usage_events_are_validated() -> None:
    assert event().status == "success"
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
    assert event(status="rate_limited", error_code="MODEL_OVERLOADED").error_code


def test_model_price() -> None:
    price = ModelPrice(uuid.uuid4(), Decimal("0.020000"))
    assert price.cost(1500) == Decimal("0.03000000")
    assert price.cost(0) == 0
    assert ModelPrice(None, Decimal(0)).cost(10_000) == 0


async def test_recorder_counts_drops_when_the_buffer_is_full_and_after_close() -> None:
    async def never() -> object:
        raise OSError("no database in this test")

    recorder = UsageRecorder(never, buffer_limit=2, batch_size=10, flush_interval=5)
    assert recorder.record(event())
    assert recorder.record(event())
    assert not recorder.record(event())  # full: dropped, counted, never blocks
    stats = recorder.stats
    assert (stats.accepted, stats.pending, stats.dropped_buffer_full) == (3, 2, 1)
    final = await recorder.aclose(timeout=0.1)  # never started: nothing can be written
    assert final.dropped_shutdown == 2
    assert final.pending == 0
    assert not recorder.record(event())
    after = recorder.stats
    assert after.dropped_shutdown == 3
    assert after.accepted == after.written + after.dropped_buffer_full + after.dropped_shutdown
    with pytest.raises(ValueError, match="buffer_limit"):
        UsageRecorder(never, buffer_limit=0)
    with pytest.raises(ValueError, match="flush_interval"):
        UsageRecorder(never, flush_interval=0)


class FlakyStore:
    """The in-memory store with a switch that makes reads fail like a database that is down."""

    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self.inner = InMemoryApiKeyStore(records)
        self.down = False
        self.reads = 0

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        self.reads += 1
        if self.down:
            raise ConnectionError("database is down")
        return await self.inner.get(key_id)

    async def touch(self, key_id: str, when: datetime) -> None:
        if self.down:
            raise ConnectionError("database is down")
        await self.inner.touch(key_id, when)


async def test_key_cache_fresh_stale_and_unknown_keys() -> None:
    record = ApiKeyRecord(
        key_id="AAAAAAAAAAAA", digest="hmac-sha256$v1$" + "A" * 43, created_at=datetime.now(UTC)
    )
    store = FlakyStore([record])
    now = [0.0]
    cache = CachedKeyStore(store, fresh_for=10, stale_for=100, clock=lambda: now[0])
    assert await cache.get("AAAAAAAAAAAA") == record
    assert await cache.get("AAAAAAAAAAAA") == record
    assert store.reads == 1  # fresh: from memory
    assert await cache.get("BBBBBBBBBBBB") is None
    now[0] = 50
    store.down = True
    assert await cache.get("AAAAAAAAAAAA") == record  # stale, but the store is down
    assert cache.stale_reads == 1
    with pytest.raises(ServiceUnavailableError) as caught:
        await cache.get("CCCCCCCCCCCC")  # never seen: fail closed, as 503
    assert caught.value.code == "KEY_STORE_UNAVAILABLE"
    assert caught.value.headers["Retry-After"] == "5"
    now[0] = 200
    with pytest.raises(ServiceUnavailableError):
        await cache.get("AAAAAAAAAAAA")  # too stale to trust
    await cache.touch("AAAAAAAAAAAA", datetime.now(UTC) + timedelta(seconds=1))  # logged only
    store.down = False
    assert await cache.get("AAAAAAAAAAAA") == record
    with pytest.raises(ValueError, match="fresh_for"):
        CachedKeyStore(store, fresh_for=10, stale_for=5)


def test_public_names_are_sorted_complete_and_resolvable() -> None:
    import inference_service

    assert inference_service.__all__ == sorted(inference_service.__all__)
    for name in inference_service.__all__:
        assert getattr(inference_service, name) is not None
    assert set(dir(inference_service)) == set(inference_service.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = inference_service.nope
