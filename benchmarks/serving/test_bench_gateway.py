"""inference-service: what the gateway checks (budget, rate limits) add to a request.

Two measurements, each with and without the checks in the same run:

* **The check path** (pytest-benchmark): one request's gateway work, as ``Service`` does it --
  ``Gateway.admit`` (the organisation's budget from aiaas-db's ``BudgetTracker`` over a real
  PostgreSQL with the platform schema, cache refreshed every 5 s as in production; the key's and
  organisation's request and token buckets of aiaas-core's ``RateLimiter``), the response start
  sent with the six ``x-ratelimit-*`` headers, and ``Gateway.charge`` of the tokens afterwards --
  against the same request without the gateway (the response start sent as is). 100 keys of 10
  organisations in turn, 1 000 requests per round; ``extra_info["per_request_us"]`` is the
  median per request.
* **The whole service in this process**: ``POST /v1/embeddings`` (one short sentence) through
  ``create_app(service)`` -- telemetry, API-key auth, the gateway, the embeddings endpoint on
  the real MiniLM -- for a service with the checks and the same service with
  ``INFERENCE_SERVICE_BUDGETS=false`` and ``INFERENCE_SERVICE_RATE_LIMITS=false``, interleaved
  round by round; the medians per request and their difference are in ``extra_info`` (the model
  dominates: the difference is within the noise of a shared machine).

The example is not installed by the benchmarks session: it is imported from its source tree.
"""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aiaas_db import BudgetTracker, LocalPostgres, local_dev_api_key

EXAMPLE_SRC = Path(__file__).resolve().parents[2] / "examples" / "inference-service" / "src"
sys.path.insert(0, str(EXAMPLE_SRC))

from inference_service import Service, create_app, load  # noqa: E402
from inference_service._database import Database, prepare_platform  # noqa: E402
from inference_service._gateway import Gateway  # noqa: E402

SEED_SECRET = "gateway-benchmark-seed-secret-0001"
REQUESTS = 1_000
KEYS = 100
ORGS = 10
SERVICE_ROUNDS = 15
SERVICE_REQUESTS = 20


@pytest.fixture(scope="module")
def platform_url() -> Iterator[str]:
    with LocalPostgres.temporary() as pg:
        url = pg.create_database("bench")
        prepare_platform(url, seed_secret=SEED_SECRET)
        yield url


@pytest.fixture(scope="module")
def orgs(platform_url: str) -> list[uuid.UUID]:
    made = []
    with psycopg.connect(platform_url, autocommit=True) as conn:
        for i in range(ORGS):
            row = conn.execute(
                "INSERT INTO organizations (slug, display_name, plan_tier, budget_limit_tokens)"
                " VALUES (%s, 'bench', 'enterprise', 1000000000) RETURNING organization_id",
                (f"bench-gw-{i}",),
            ).fetchone()
            assert row is not None
            made.append(row[0])
    return made


START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]}


async def _sink(_message: Any) -> None:
    return None


def _rounds(benchmark: Any, batch: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(batch())  # warm: the budget cache, the buckets
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=30, iterations=1)
    finally:
        loop.close()
    benchmark.extra_info["requests_per_round"] = REQUESTS
    benchmark.extra_info["per_request_us"] = round(benchmark.stats.stats.median / REQUESTS * 1e6, 2)


@pytest.mark.benchmark(group="gateway-check-path")
def test_request_path_with_the_gateway_checks(
    benchmark: Any, platform_url: str, orgs: list[uuid.UUID]
) -> None:
    gateway = Gateway(BudgetTracker(platform_url, refresh_interval=5.0))
    keys = [(orgs[i % ORGS], f"key{i:09d}") for i in range(KEYS)]
    cost = Decimal("0.00000024")

    async def batch() -> None:
        for i in range(REQUESTS):
            org, key = keys[i % KEYS]
            verdict = await gateway.admit(org, key)
            send = verdict.wrap(_sink)  # type: ignore[union-attr]
            await send(START)
            gateway.charge(org, key, 12, cost)

    _rounds(benchmark, batch)
    assert sum(gateway.refusals.values()) == 0


@pytest.mark.benchmark(group="gateway-check-path")
def test_request_path_without_the_gateway(benchmark: Any) -> None:
    async def batch() -> None:
        for _ in range(REQUESTS):
            await _sink(START)

    _rounds(benchmark, batch)


def _make_service(url: str, minilm: Any, **env: str) -> Service:
    from aiaas_db import seed_api_key_hasher
    from aiaas_telemetry import load_profile, setup

    telemetry = setup(
        load_profile({"service_name": "inference-service"}, environ={}),
        tracing=False,
        log_stream=io.StringIO(),
    )
    database = Database(url, seed_api_key_hasher(SEED_SECRET))
    return Service(
        load({"INFERENCE_SERVICE_DEVICE": "cpu", **env}, {}),
        telemetry,
        connect=database.connect,
        key_store=database.key_store(),
        hasher=database.hasher,
        adapter_factory=lambda: minilm,
    )


async def _post(app: Any, token: str) -> int:
    body = json.dumps({"model": "all-MiniLM-L6-v2", "input": "How fast is the gateway?"}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


@pytest.mark.benchmark(group="gateway-service")
def test_service_requests_with_and_without_the_gateway(benchmark: Any, platform_url: str) -> None:
    from aiaas_serving import SentenceEmbeddingAdapter

    minilm = SentenceEmbeddingAdapter.minilm()
    token = local_dev_api_key(SEED_SECRET)
    services = {
        "with": _make_service(platform_url, minilm),
        "without": _make_service(
            platform_url,
            minilm,
            INFERENCE_SERVICE_BUDGETS="false",
            INFERENCE_SERVICE_RATE_LIMITS="false",
        ),
    }
    assert services["without"].gateway is None
    loop = asyncio.new_event_loop()
    apps = {name: create_app(svc) for name, svc in services.items()}
    per_request: dict[str, list[float]] = {name: [] for name in services}

    async def requests(name: str) -> None:
        for _ in range(SERVICE_REQUESTS):
            started = time.perf_counter()
            assert await _post(apps[name], token) == 200
            per_request[name].append(time.perf_counter() - started)

    try:
        for svc in services.values():
            loop.run_until_complete(svc.startup())
        for name in services:  # warm: key cache, budget cache, the model
            loop.run_until_complete(requests(name))
        per_request = {name: [] for name in services}

        def interleaved() -> None:
            for _ in range(SERVICE_ROUNDS):
                for name in services:
                    loop.run_until_complete(requests(name))

        benchmark.pedantic(interleaved, rounds=1, iterations=1)
    finally:
        for svc in services.values():
            loop.run_until_complete(svc.shutdown())
            svc.telemetry.shutdown()
        loop.close()
    medians = {name: statistics.median(times) * 1e6 for name, times in per_request.items()}
    benchmark.extra_info.update(
        {
            "requests_each": len(per_request["with"]),
            "median_us_with_gateway": round(medians["with"], 1),
            "median_us_without_gateway": round(medians["without"], 1),
            "gateway_overhead_us": round(medians["with"] - medians["without"], 1),
        }
    )
