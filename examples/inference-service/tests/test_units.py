"""The pieces that need no database: settings, usage events, prices and the key cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from inference_service import (
    CachedKeyStore,
    ModelPrice,
    PlanLimits,
    UsageEvent,
    UsageRecorder,
    load,
)
from inference_service._gateway import DEFAULT_PLAN_LIMITS, format_reset, parse_plan_limits

import aiaas_db
from aiaas_core import (
    AiaasDeprecationWarning,
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


def test_model_price() -> None:
    price = ModelPrice(uuid.uuid4(), Decimal("0.020000"))
    assert price.cost(1500) == Decimal("0.03000000")
    assert price.cost(0) == 0
    assert ModelPrice(None, Decimal(0)).cost(10_000) == 0


async def test_the_old_usage_recorder_name_is_deprecated_but_works() -> None:
    async def never() -> object:
        raise OSError("no database in this test")

    assert UsageEvent is aiaas_db.UsageEvent  # the writer lives in aiaas-db now
    with pytest.warns(AiaasDeprecationWarning, match="use aiaas_db.UsageWriter instead"):
        recorder = UsageRecorder(never, buffer_limit=1)
    assert isinstance(recorder, aiaas_db.UsageWriter)
    assert recorder.record(event())
    assert not recorder.record(event())
    assert (await recorder.aclose(timeout=0.1)).dropped_buffer_full == 1


def test_plan_limits_settings_defaults_overrides_and_problems() -> None:
    settings = load({}, {})
    assert settings.plan_limits() == dict(DEFAULT_PLAN_LIMITS)
    assert (settings.budgets, settings.rate_limits, settings.processes) == (True, True, 1)
    tuned = load(
        {
            "INFERENCE_SERVICE_RATE_LIMITS_FREE": "key_rpm=2, org_tpm=1_000",
            "INFERENCE_SERVICE_PROCESSES": "3",
        },
        {},
    )
    free = tuned.plan_limits()["free"]
    assert free == PlanLimits(key_rpm=2, key_tpm=100_000, org_rpm=120, org_tpm=1_000)
    assert free.per_process(3) == PlanLimits(key_rpm=1, key_tpm=33_334, org_rpm=40, org_tpm=334)
    assert parse_plan_limits(free.text(), DEFAULT_PLAN_LIMITS["pro"]) == free
    with pytest.raises(ConfigError) as bad:
        load(
            {
                "INFERENCE_SERVICE_RATE_LIMITS_PRO": "rpm=5",
                "INFERENCE_SERVICE_RATE_LIMITS_STARTER": "key_rpm=0",
                "INFERENCE_SERVICE_PROCESSES": "0",
                "INFERENCE_SERVICE_BUDGET_REFRESH": "0s",
            },
            {},
        )
    problems = {p.path: p for p in bad.value.problems}
    assert {"rate_limits_pro", "rate_limits_starter", "processes", "budget_refresh"} <= set(
        problems
    )
    assert "key_rpm, key_tpm, org_rpm, org_tpm" in str(bad.value)


def test_reset_durations_are_written_as_openai_does() -> None:
    assert [format_reset(s) for s in (0, 0.02, 0.9991, 1, 1.2, 59.5, 60, 360, 3723)] == [
        "0ms",
        "20ms",
        "1s",
        "1s",
        "2s",
        "1m0s",
        "1m0s",
        "6m0s",
        "1h2m3s",
    ]


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
    now[0] = 201  # a failed read is retried after retry_after (1 s), not at once
    assert await cache.get("AAAAAAAAAAAA") == record
    with pytest.raises(ValueError, match="fresh_for"):
        CachedKeyStore(store, fresh_for=10, stale_for=5)


def test_public_names_are_sorted_complete_and_resolvable() -> None:
    import inference_service

    assert inference_service.__all__ == sorted(inference_service.__all__)
    for name in inference_service.__all__:
        assert getattr(inference_service, name) is not None
    assert set(dir(inference_service)) == {*vars(inference_service), *inference_service.__all__}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = inference_service.nope


def test_the_banner_shows_the_chat_model_only_when_it_is_served() -> None:
    from types import SimpleNamespace

    from inference_service._cli import banner

    local = SimpleNamespace(api_key="aiaas_k", local=True, data_dir="/d", server="PostgreSQL")
    on = banner(load({}, {}), local, port=8080, seconds=1.0)
    assert "serving all-MiniLM-L6-v2 and SmolLM2-135M-Instruct" in on
    assert "curl -sN http://127.0.0.1:8080/v1/chat/completions" in on
    assert 'stream = client.chat.completions.create(model="SmolLM2-135M-Instruct"' in on
    off = banner(load({"INFERENCE_SERVICE_CHAT": "false"}, {}), local, port=8080, seconds=1.0)
    assert "SmolLM2" not in off
    assert "/chat/completions" not in off
    settings = load({"INFERENCE_SERVICE_CHAT_KV_CACHE_MIB": "64"}, {})
    assert (settings.chat, settings.chat_kv_cache_mib, settings.chat_timeout) == (
        True,
        64,
        timedelta(seconds=120),
    )
