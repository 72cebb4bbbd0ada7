"""The gateway for real: budgets and rate limits in front of the model, answered to the official
``openai`` client, recorded as ``rate_limited`` usage rows in a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import openai
import psycopg
import pytest
from conftest import Platform, make_service, serve
from inference_service import KeyDirectory, KeyOwner
from prometheus_client.parser import text_string_to_metric_families

from aiaas_core import ApiKeyRecord, ApiKeyVerifier, InMemoryApiKeyStore
from aiaas_db import PostgresApiKeyStore

MODEL = "all-MiniLM-L6-v2"


def new_org(
    platform: Platform,
    *,
    tier: str = "free",
    budget_tokens: int = 1_000_000,
    budget_usd: str | None = None,
) -> uuid.UUID:
    with psycopg.connect(platform.url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO organizations (slug, display_name, plan_tier, budget_limit_tokens,"
            " budget_limit_usd) VALUES (%s, 'Gateway test', %s, %s, %s)"
            " RETURNING organization_id",
            (f"gw-{uuid.uuid4().hex[:12]}", tier, budget_tokens, budget_usd),
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def new_key(platform: Platform, org: uuid.UUID, scopes: tuple[str, ...] = ("*",)) -> str:
    key, record = ApiKeyVerifier(InMemoryApiKeyStore(), platform.hasher).issue()
    with psycopg.connect(platform.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (organization_id, key_id, name, hashed_secret, scopes, roles)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (org, record.key_id, f"gw-{record.key_id}", record.digest, list(scopes), ["service"]),
        )
    return key.token


def org_rows(platform: Platform, org: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(platform.url) as conn:
        return conn.execute(
            "SELECT status, error_code, tokens_consumed, model_id IS NULL, api_key_id IS NULL"
            " FROM usage_events WHERE organization_id = %s ORDER BY occurred_at",
            (org,),
        ).fetchall()


def refusals(text: str) -> dict[str, float]:
    for family in text_string_to_metric_families(text):
        if family.name == "inference_gateway_refusals":
            return {
                s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")
            }
    raise AssertionError("no inference_gateway_refusals metric")


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """Makes official openai clients for a service (closed when the test ends)."""
    made: list[openai.AsyncOpenAI] = []

    def make(base_url: Any, token: str, retries: int = 0) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=retries)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_request_and_token_rate_limits_per_key_and_organisation(
    platform: Platform, telemetry: Any, minilm: Any, clients: Any
) -> None:
    org = new_org(platform)
    first, second = new_key(platform, org), new_key(platform, org)
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        INFERENCE_SERVICE_RATE_LIMITS_FREE="key_rpm=2,key_tpm=1000000,org_rpm=3,org_tpm=1000000",
    )
    async with serve(service) as http:
        ai = clients(http.base_url, first)
        ok = await ai.embeddings.with_raw_response.create(model=MODEL, input="one")
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
        assert ok.headers["x-ratelimit-remaining-requests"] == "1"
        assert ok.headers["x-ratelimit-reset-requests"] == "30s"
        assert ok.headers["x-ratelimit-limit-tokens"] == "1000000"
        await ai.embeddings.create(model=MODEL, input="two")
        with pytest.raises(openai.RateLimitError) as refused:
            await ai.embeddings.create(model=MODEL, input="three")
        error = refused.value
        assert (error.status_code, error.code, error.type) == (
            429,
            "rate_limit_exceeded",
            "requests",
        )
        assert "Rate limit reached for requests on this API key: limit 2 requests per minute" in (
            error.message
        )
        assert 1 <= int(error.response.headers["retry-after"]) <= 30
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
        # the organisation's limit (3 per minute) is shared by its keys
        other = clients(http.base_url, second)
        await other.embeddings.create(model=MODEL, input="four")
        with pytest.raises(openai.RateLimitError) as org_refused:
            await other.embeddings.create(model=MODEL, input="five")
        assert "on your organisation" in org_refused.value.message
        assert await service.usage.flush(10)
        counts = refusals((await http.get("/metrics")).text)
    assert counts["key_requests"] == 1
    assert counts["org_requests"] == 1
    rows = org_rows(platform, org)
    assert [r[:2] for r in rows] == [("success", None)] * 2 + [
        ("rate_limited", "RATE_LIMIT_EXCEEDED"),
        ("success", None),
        ("rate_limited", "RATE_LIMIT_EXCEEDED"),
    ]
    for status, _code, tokens, no_model, no_key in rows:
        assert not no_key
        if status == "rate_limited":
            assert (tokens, no_model) == (0, True)  # refused before any compute


async def test_tokens_are_charged_after_and_refuse_the_next_request(
    platform: Platform, telemetry: Any, minilm: Any, clients: Any
) -> None:
    org = new_org(platform)
    token = new_key(platform, org)
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        INFERENCE_SERVICE_RATE_LIMITS_FREE="key_tpm=5",
    )
    async with serve(service) as http:
        ai = clients(http.base_url, token)
        used = await ai.embeddings.create(model=MODEL, input="a sentence of more than five tokens")
        assert used.usage.prompt_tokens > 5  # admitted: the bucket was full
        with pytest.raises(openai.RateLimitError) as refused:
            await ai.embeddings.create(model=MODEL, input="x")
        assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
        assert refused.value.response.headers["x-ratelimit-remaining-tokens"] == "0"
        counts = refusals((await http.get("/metrics")).text)
    assert counts["key_tokens"] == 1


async def test_a_spent_budget_is_insufficient_quota_and_never_retried(
    platform: Platform, telemetry: Any, minilm: Any, clients: Any
) -> None:
    org = new_org(platform, budget_tokens=3)
    token = new_key(platform, org)
    service = make_service(platform.database(), telemetry, minilm)
    async with serve(service) as http:
        # default retries: the client must not retry a spent quota (x-should-retry: false)
        ai = clients(http.base_url, token, retries=2)
        await ai.embeddings.create(model=MODEL, input="this spends more than three tokens")
        with pytest.raises(openai.RateLimitError) as refused:
            await ai.embeddings.create(model=MODEL, input="again")
        error = refused.value
        assert (error.code, error.type) == ("insufficient_quota", "insufficient_quota")
        assert "You exceeded your current quota" in error.message
        assert "token budget for this month is spent (limit 3 tokens)" in error.message
        assert error.response.headers["x-should-retry"] == "false"
        assert await service.usage.flush(10)
        counts = refusals((await http.get("/metrics")).text)
    assert counts["insufficient_quota"] == 1
    assert [r[:2] for r in org_rows(platform, org)] == [
        ("success", None),
        ("rate_limited", "INSUFFICIENT_QUOTA"),  # once: not retried
    ]


async def test_the_cost_budget_and_spend_of_other_processes(
    platform: Platform, telemetry: Any, minilm: Any, clients: Any
) -> None:
    broke = new_org(platform, budget_usd="0")
    shared = new_org(platform, budget_tokens=1_000)
    service = make_service(
        platform.database(), telemetry, minilm, INFERENCE_SERVICE_BUDGET_REFRESH="200ms"
    )
    async with serve(service) as http:
        with pytest.raises(openai.RateLimitError) as refused:
            await clients(http.base_url, new_key(platform, broke)).embeddings.create(
                model=MODEL, input="x"
            )
        assert "cost budget for this month is spent (limit 0.0000 USD)" in refused.value.message
        ai = clients(http.base_url, new_key(platform, shared))
        await ai.embeddings.create(model=MODEL, input="fine")
        # another process spends the rest: seen within the refresh interval
        with psycopg.connect(platform.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO usage_events (occurred_at, organization_id, tokens_consumed,"
                " latency_ms, status, region, cost_usd) VALUES (now(), %s, 1000, 1, 'success',"
                " 'elsewhere', %s)",
                (shared, Decimal(0)),
            )
        await asyncio.sleep(0.3)
        with pytest.raises(openai.RateLimitError) as spent:
            await ai.embeddings.create(model=MODEL, input="too late")
        assert spent.value.code == "insufficient_quota"


async def test_turned_off_checks_send_nothing_and_refuse_nothing(
    platform: Platform, telemetry: Any, minilm: Any, clients: Any
) -> None:
    org = new_org(platform, budget_tokens=0)
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        INFERENCE_SERVICE_BUDGETS="false",
        INFERENCE_SERVICE_RATE_LIMITS="false",
    )
    assert service.gateway is None
    async with serve(service) as http:
        answer = await clients(
            http.base_url, new_key(platform, org)
        ).embeddings.with_raw_response.create(model=MODEL, input="free for all")
        assert "x-ratelimit-limit-requests" not in answer.headers
        metrics = (await http.get("/metrics")).text
    assert "inference_gateway_refusals" not in metrics


async def test_key_directory_learns_owners_from_records_or_with_one_query(
    platform: Platform,
) -> None:
    async def connect() -> Any:
        return await psycopg.AsyncConnection.connect(platform.url, autocommit=True)

    org = new_org(platform)
    token = new_key(platform, org)
    key_id = token.split("_")[1]
    directory = KeyDirectory(connect, max_entries=1)
    record = await PostgresApiKeyStore(platform.url).get(key_id)
    assert record is not None
    owner = await directory.learn(record)  # from the record itself
    assert owner is not None
    assert owner.organization_id == org
    assert await directory.learn(record) is owner  # cached
    # a store that does not know the owner: one query
    bare = ApiKeyRecord(key_id=key_id, digest=record.digest, created_at=datetime.now(UTC))
    directory = KeyDirectory(connect, max_entries=1)
    assert await directory.learn(bare) == KeyOwner(owner.api_key_id, org)
    assert directory.cached(key_id) == owner
    unknown = ApiKeyRecord(key_id="Z" * 12, digest=record.digest, created_at=datetime.now(UTC))
    assert await directory.learn(unknown) is None
    other = attrs.evolve(record, key_id="Y" * 12)
    await directory.learn(other)
    assert directory.cached(key_id) is None  # at most max_entries kept
    assert directory.cached("Y" * 12) is not None
