"""Budgets and rate limits with two ``inference-service`` processes on one database: a budget
spent through one process is refused by the other within the refresh interval, each process
enforces its share of the plan's rate limits, and both write ``rate_limited`` usage rows."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import psycopg
import pytest
from conftest import Platform
from test_gateway import new_key, new_org
from test_process import base_env, free_port, start, wait_ready

MODEL = "all-MiniLM-L6-v2"
REFRESH_S = 0.5
FLUSH_S = 0.1


class Services:
    """Running service processes: their base URLs, and a clean stop."""

    def __init__(self, procs: list[subprocess.Popen[str]], bases: list[str]) -> None:
        self.procs = procs
        self.bases = bases

    def stop(self) -> None:
        """SIGTERM each (drains requests and flushes usage events); each must exit 0."""
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr[-3000:]


@pytest.fixture
def two_services(platform: Platform) -> Iterator[Services]:
    """Two service processes on the platform database (the plan's limits shared by 2)."""
    env = base_env(
        INFERENCE_SERVICE_DATABASE_URL=platform.url,
        INFERENCE_SERVICE_API_KEY_HASH_KEY=platform.hash_key,
        INFERENCE_SERVICE_PROCESSES="2",
        INFERENCE_SERVICE_BUDGET_REFRESH=f"{int(REFRESH_S * 1000)}ms",
        INFERENCE_SERVICE_USAGE_FLUSH_INTERVAL=f"{int(FLUSH_S * 1000)}ms",
        INFERENCE_SERVICE_RATE_LIMITS_STARTER="key_rpm=100,org_rpm=4",
    )
    ports = [free_port(), free_port()]
    procs = [start(env, port) for port in ports]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, proc in zip(bases, procs, strict=True):
            wait_ready(base, proc)
        yield Services(procs, bases)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)


def embed(base: str, token: str, text: str) -> Any:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0) as client:
        return client.embeddings.create(model=MODEL, input=text)


def refused(base: str, token: str) -> openai.RateLimitError | None:
    try:
        embed(base, token, "may I?")
    except openai.RateLimitError as exc:
        return exc
    return None


def refusal_count(base: str, reason: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "inference_gateway_refusals_total"
                and sample.labels["reason"] == reason
            ):
                return float(sample.value)
    raise AssertionError(f"no refusal metric for {reason}")


def test_budgets_and_rate_limits_across_two_processes(
    platform: Platform, two_services: Services
) -> None:
    one, two = two_services.bases

    # Rate limits: org_rpm=4 on the starter tier, shared by 2 processes: 2 each.
    limited = new_org(platform, tier="starter")
    key = new_key(platform, limited)
    for base in (one, two):
        embed(base, key, "first")
        embed(base, key, "second")
        error = refused(base, key)
        assert error is not None
        assert error.code == "rate_limit_exceeded"
        assert "limit 2 requests per minute per service process (2 processes)" in error.message
        assert refusal_count(base, "org_requests") == 1

    # Budgets: 20 tokens a month. Process two reads the budget (and caches it) first.
    budgeted = new_org(platform, tier="pro", budget_tokens=20)
    spender, bystander = new_key(platform, budgeted), new_key(platform, budgeted)
    assert embed(two, bystander, "hi").usage.prompt_tokens < 20
    spent = embed(one, spender, "a long sentence that uses up the whole budget " * 2)
    assert spent.usage.prompt_tokens >= 20
    quota = refused(one, spender)  # the spending process knows at once
    assert quota is not None
    assert quota.code == "insufficient_quota"
    started = time.monotonic()
    deadline = started + REFRESH_S + FLUSH_S + 5.0  # the refresh interval, plus slack for CI
    while (other := refused(two, bystander)) is None:
        assert time.monotonic() < deadline, "the other process never saw the spent budget"
        time.sleep(0.05)
    assert other.code == "insufficient_quota"
    assert refusal_count(two, "insufficient_quota") >= 1

    # Both processes recorded their refusals as usage events (flushed by the clean stop).
    two_services.stop()
    with psycopg.connect(platform.url) as conn:
        rows = conn.execute(
            "SELECT organization_id, error_code, count(*), count(DISTINCT api_key_id)"
            " FROM usage_events WHERE organization_id = ANY(%s) AND status = 'rate_limited'"
            " GROUP BY organization_id, error_code",
            ([limited, budgeted],),
        ).fetchall()
    found = {(org, code): (n, keys) for org, code, n, keys in rows}
    assert set(found) == {(limited, "RATE_LIMIT_EXCEEDED"), (budgeted, "INSUFFICIENT_QUOTA")}
    assert found[limited, "RATE_LIMIT_EXCEEDED"] == (2, 1)  # one refusal per process
    refusals, keys = found[budgeted, "INSUFFICIENT_QUOTA"]
    assert refusals >= 2  # the spender's process, then the other one
    assert keys == 2
