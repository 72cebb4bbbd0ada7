"""The service for real: uvicorn + httpx, API keys and usage rows in a real PostgreSQL, the real
MiniLM model."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
from conftest import Platform, make_service, serve
from prometheus_client.parser import text_string_to_metric_families

from aiaas_core import ApiKeyVerifier, InMemoryApiKeyStore


def add_key(
    platform: Platform, *, roles: list[str], scopes: list[str], status: str = "active"
) -> str:
    """Issue a key for acme-pro straight into api_keys; returns its token."""
    key, record = ApiKeyVerifier(InMemoryApiKeyStore(), platform.hasher).issue(roles=roles)
    with psycopg.connect(platform.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (organization_id, key_id, name, hashed_secret, scopes, roles,"
            " status) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                platform.organization_id,
                record.key_id,
                f"test-{record.key_id}",
                record.digest,
                scopes,
                roles,
                status,
            ),
        )
    return key.token


def usage_rows(platform: Platform, request_ids: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(platform.url) as conn:
        return conn.execute(
            "SELECT request_id, organization_id, api_key_id, model_id, tokens_consumed, status,"
            " error_code, cost_usd, latency_ms FROM usage_events WHERE request_id = ANY(%s)"
            " ORDER BY request_id",
            (request_ids,),
        ).fetchall()


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_embeddings_with_the_seeded_key_and_their_usage_rows(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    texts = ["How do I batch requests?", "Dynamic batching groups requests."]
    async with serve(service) as client:
        response = await client.post(
            "/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": texts},
            headers={**bearer(platform.token), "X-Request-ID": "inference-e2e-0001"},
        )
        assert response.status_code == 200, response.text
        # the gateway's rate-limit headers (acme-pro: the pro tier's per-key limits)
        assert response.headers["x-ratelimit-limit-requests"] == "1200"
        assert response.headers["x-ratelimit-remaining-requests"] == "1199"
        assert response.headers["x-ratelimit-limit-tokens"] == "2000000"
        body = response.json()
        vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert vectors.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        tokens = body["usage"]["prompt_tokens"]
        assert tokens == sum(len(minilm.tokenize(t)) for t in texts)
        models = await client.get("/v1/models", headers=bearer(platform.token))
        assert [m["id"] for m in models.json()["data"]] == ["all-MiniLM-L6-v2"]
        assert await service.usage.flush(10)
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "inference_usage_events_total", outcome="written") >= 1
        assert metric(metrics, "aiaas_serving_requests_total", model="embedder", outcome="ok") == 2
    (row,) = usage_rows(platform, ["inference-e2e-0001"])
    _, org, api_key_id, model_id, used, status, code, cost, latency = row
    assert org == platform.organization_id
    assert api_key_id is not None
    assert model_id == service.price.model_id is not None
    assert (used, status, code) == (tokens, "success", None)
    assert cost == (Decimal(tokens) * Decimal("0.000020") / 1000).quantize(Decimal("1e-8"))
    assert latency >= 0
    assert service.drained  # the lifespan shutdown drained the runtime and the usage writer


def openai_code(response: httpx.Response) -> tuple[int, str]:
    """The status and the stable code of an error in OpenAI's shape (every /v1 error)."""
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    return response.status_code, error["code"].upper()


async def test_keys_roles_and_scopes_are_enforced(
    platform: Platform, telemetry: Any, minilm: Any, error_validator: Any
) -> None:
    billing = add_key(platform, roles=["billing"], scopes=["embeddings:create"])
    reader = add_key(platform, roles=["developer"], scopes=["models:read"])
    revoked = add_key(platform, roles=["developer"], scopes=[], status="revoked")
    service = make_service(platform.database(), telemetry, minilm)
    payload = {"model": "all-MiniLM-L6-v2", "input": "hello"}
    async with serve(service) as client:
        anonymous = await client.post("/v1/embeddings", json=payload)
        assert openai_code(anonymous) == (401, "AUTH_UNAUTHENTICATED")
        wrong = platform.token[:-8] + ("A" * 8)
        garbled = await client.post("/v1/embeddings", json=payload, headers=bearer(wrong))
        assert openai_code(garbled) in {(401, "API_KEY_CHECKSUM"), (401, "API_KEY_INVALID")}
        gone = await client.post("/v1/embeddings", json=payload, headers=bearer(revoked))
        assert openai_code(gone) == (401, "API_KEY_REVOKED")
        denied = await client.post("/v1/embeddings", json=payload, headers=bearer(billing))
        assert openai_code(denied) == (403, "AUTH_ROLE_DENIED")
        assert denied.json()["error"]["type"] == "permission_error"
        scoped = await client.post("/v1/embeddings", json=payload, headers=bearer(reader))
        assert openai_code(scoped) == (403, "AUTH_SCOPE_DENIED")
        assert (await client.get("/v1/models", headers=bearer(reader))).status_code == 200
        unknown = await client.post(
            "/v1/embeddings", json={**payload, "model": "gpt-4"}, headers=bearer(platform.token)
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        for path in ("/health", "/ready"):
            probe = await client.get(path)
            assert probe.status_code == 200, probe.text
        assert (await client.post("/health")).status_code == 405
        nowhere = await client.get("/nowhere", headers=bearer(platform.token))
        assert nowhere.status_code in (403, 404)
        error_validator(nowhere.json())  # outside /v1/: the platform's error body
        assert await service.usage.flush(10)
    stats = service.usage.stats
    assert stats.written == 1  # only the authenticated embeddings call (the unknown model)
    with psycopg.connect(platform.url) as conn:
        row = conn.execute(
            "SELECT status, error_code, tokens_consumed, cost_usd FROM usage_events"
            " WHERE error_code = 'MODEL_NOT_FOUND' ORDER BY occurred_at DESC LIMIT 1"
        ).fetchone()
    assert row == ("error", "MODEL_NOT_FOUND", 0, Decimal(0))


async def test_overload_is_429_and_recorded_as_rate_limited(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        INFERENCE_SERVICE_MAX_QUEUE="1",
        INFERENCE_SERVICE_MAX_BATCH_SIZE="1",
    )
    long_text = "dynamic batching " * 60
    async with serve(service) as client:
        ids = [f"overload-{uuid.uuid4().hex}" for _ in range(12)]
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/embeddings",
                    json={"model": "all-MiniLM-L6-v2", "input": long_text},
                    headers={**bearer(platform.token), "X-Request-ID": rid},
                )
                for rid in ids
            )
        )
        assert await service.usage.flush(10)
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429}
    assert 429 in codes
    assert 200 in codes
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
    rows = {r[0]: r for r in usage_rows(platform, ids)}
    assert len(rows) == len(ids)  # one usage event per call, whatever its outcome
    for rid, answer in zip(ids, answers, strict=True):
        status = rows[rid][5]
        assert status == ("success" if answer.status_code == 200 else "rate_limited")


@pytest.fixture
def pg_dir() -> Any:
    """A data directory the ``postgres`` OS user can reach (pytest's tmp_path is private)."""
    import os
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="inference-pg-")
    os.chmod(base, 0o755)  # noqa: S103 - PostgreSQL runs as another user here
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("limit", [2])
async def test_requests_continue_while_the_database_is_down(
    pg_dir: str, telemetry: Any, minilm: Any, limit: int
) -> None:
    """Stop PostgreSQL under a running service: cached keys keep working, usage is buffered up
    to the limit (the rest counted as dropped), and written once the database is back."""
    import socket

    from conftest import SEED_SECRET
    from inference_service._database import Database, prepare_platform

    from aiaas_db import LocalPostgres, local_dev_api_key, seed_api_key_hasher

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = LocalPostgres(pg_dir, port=port)
    cluster.start()
    try:
        url = cluster.create_database("platform")
        prepare_platform(url, seed_secret=SEED_SECRET)
        token = local_dev_api_key(SEED_SECRET)
        service = make_service(
            Database(url, seed_api_key_hasher(SEED_SECRET)),
            telemetry,
            minilm,
            INFERENCE_SERVICE_USAGE_BUFFER=str(limit),
            INFERENCE_SERVICE_USAGE_FLUSH_INTERVAL="50ms",
        )
        payload = {"model": "all-MiniLM-L6-v2", "input": "still here"}
        async with serve(service) as client:
            first = await client.post("/v1/embeddings", json=payload, headers=bearer(token))
            assert first.status_code == 200
            assert await service.usage.flush(10)
            cluster.stop()
            during = []
            for i in range(limit + 2):
                answer = await client.post(
                    "/v1/embeddings",
                    json=payload,
                    headers={**bearer(token), "X-Request-ID": f"outage-{i:04d}"},
                )
                during.append(answer.status_code)
                await asyncio.sleep(0.1)  # let the writer try (and fail)
            assert during == [200] * (limit + 2)
            stats = service.usage.stats
            assert not stats.database_up
            assert stats.pending == limit
            assert stats.dropped_buffer_full == 2
            ready = await client.get("/ready")
            assert ready.status_code == 200  # degraded, not failing: requests are served
            assert ready.json()["status"] == "degraded"
            metrics = (await client.get("/metrics")).text
            assert (
                metric(metrics, "inference_usage_events_total", outcome="dropped_buffer_full") == 2
            )
            assert metric(metrics, "inference_usage_database_up") == 0
            # The installed aiaas packages fit: that check stays ok through the outage.
            assert ready.json()["checks"]["version-skew"]["status"] == "ok"
            assert metric(metrics, "aiaas_version_skew_problems") == 0
            cluster.start()
            for _ in range(200):
                if service.usage.stats.pending == 0:
                    break
                await asyncio.sleep(0.05)
            assert service.usage.stats.database_up
        with psycopg.connect(url) as conn:
            (written,) = conn.execute(
                "SELECT count(*) FROM usage_events WHERE request_id LIKE 'outage-%'"
            ).fetchone()
        assert written == limit
        final = service.usage.stats
        assert final.accepted == final.written + final.dropped_buffer_full + final.dropped_shutdown
    finally:
        cluster.stop()
