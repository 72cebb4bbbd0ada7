"""The command for real: `inference-service` as a process, SIGTERM while requests are in flight,
and local mode (no database configured: local PostgreSQL, migrated and seeded)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import Platform

from aiaas_db import LocalPostgres, local_dev_api_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INFERENCE_SERVICE_", "OTEL_", "AIAAS_DB_"))
    }
    env.update(
        {
            "OTEL_SDK_DISABLED": "true",
            "INFERENCE_SERVICE_TRACING": "false",
            "INFERENCE_SERVICE_DEVICE": "cpu",
            # SmolLM2 (the chat model, on by default) is served in test_openai_clients.py; the
            # process tests need embeddings only and spare the shared CPUs its load
            "INFERENCE_SERVICE_CHAT": "false",
            **extra,
        }
    )
    return env


def start(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inference_service", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(base: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the service exited early: {proc.communicate(timeout=30)[1][-3000:]}"
            )
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"not ready in {timeout}s: {proc.communicate(timeout=30)[1][-3000:]}")


def requests_seen(base: str, route: str) -> tuple[float, float]:
    """(in flight, finished) for ``route``, from the service's own ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", timeout=10).text
    active = finished = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") != route:
                continue
            if sample.name == "http_server_active_requests":
                active += sample.value
            elif sample.name == "http_server_request_duration_seconds_count":
                finished += sample.value
    return active, finished


def log_lines(stderr: str) -> list[dict[str, Any]]:
    lines = []
    for line in stderr.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def test_sigterm_drains_requests_in_flight_and_flushes_their_usage(platform: Platform) -> None:
    port = free_port()
    env = base_env(
        INFERENCE_SERVICE_DATABASE_URL=platform.url,
        INFERENCE_SERVICE_API_KEY_HASH_KEY=platform.hash_key,
        INFERENCE_SERVICE_MAX_BATCH_SIZE="4",
        INFERENCE_SERVICE_USAGE_FLUSH_INTERVAL="5s",  # usage must be flushed by the drain
    )
    proc = start(env, port)
    base = f"http://127.0.0.1:{port}"
    answers: dict[str, int] = {}
    try:
        wait_ready(base, proc)
        # Eight long inputs per call and four inputs per batch: 32 batches of work, so most
        # calls are still queued when the signal lands (the drain is what answers them).
        texts = ["a sentence long enough to keep the model busy for a while " * 8] * 8
        ids = [f"drain-{i:04d}-{os.getpid()}" for i in range(16)]

        failures: dict[str, str] = {}

        def call(rid: str) -> None:
            try:
                response = httpx.post(
                    f"{base}/v1/embeddings",
                    json={"model": "all-MiniLM-L6-v2", "input": texts},
                    headers={"Authorization": f"Bearer {platform.token}", "X-Request-ID": rid},
                    timeout=120,
                )
            except httpx.HTTPError as exc:
                failures[rid] = repr(exc)
            else:
                answers[rid] = response.status_code

        threads = [threading.Thread(target=call, args=(rid,)) for rid in ids]
        for t in threads:
            t.start()
        # Every call must be accepted (in flight or already answered) before the signal, so
        # that none of them can be refused by a listener that is already closing.
        in_flight = finished = 0.0
        deadline = time.monotonic() + 60
        while in_flight + finished < len(ids) and time.monotonic() < deadline:
            in_flight, finished = requests_seen(base, "/v1/embeddings")
            time.sleep(0.02)
        assert in_flight + finished == len(ids), (
            f"the calls did not all reach the service: {in_flight} in flight, {finished} done"
        )
        proc.send_signal(signal.SIGTERM)  # all 16 accepted
        for t in threads:
            t.join(timeout=120)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    assert failures == {}
    assert answers == dict.fromkeys(ids, 200)  # every accepted request was answered
    with psycopg.connect(platform.url) as conn:
        rows = conn.execute(
            "SELECT request_id, status FROM usage_events WHERE request_id = ANY(%s)", (ids,)
        ).fetchall()
    assert sorted(rows) == [(rid, "success") for rid in ids]  # and billed before exit
    records = log_lines(stderr)
    flushed = [r for r in records if r.get("message") == "usage flushed"]
    assert flushed
    assert flushed[-1]["dropped_shutdown"] == 0
    # once ready, the start-up heap is out of the full garbage collections (a pause of ~200 ms)
    frozen = [r for r in records if r.get("message", "").startswith("start-up objects frozen")]
    assert len(frozen) == 1
    assert frozen[0]["frozen_objects"] > 100_000
    assert platform.token not in stderr


@pytest.fixture
def data_dir() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="inference-local-")
    os.chmod(base, 0o755)  # noqa: S103 - PostgreSQL runs as another user here
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_local_mode_starts_migrates_and_seeds_a_local_database(data_dir: str) -> None:
    port = free_port()
    env = base_env(INFERENCE_SERVICE_LOCAL_DATA_DIR=os.path.join(data_dir, "pg"))
    proc = start(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=180)
        token = local_dev_api_key()  # aiaas-db's published local-dev seed secret
        response = httpx.post(
            f"{base}/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": ["local", "mode"]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    assert token not in stderr  # the service never prints the key
    cluster = LocalPostgres(os.path.join(data_dir, "pg"))
    assert not cluster.running  # stopped with the service
    with cluster:
        url = cluster.url("aiaas")
        with psycopg.connect(url) as conn:
            (events,) = conn.execute(
                "SELECT count(*) FROM usage_events WHERE status = 'success' AND request_id IS"
                " NOT NULL AND region = 'local' AND occurred_at > now() - interval '1 hour'"
            ).fetchone()
    assert events >= 1


def test_help_and_bad_configuration() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "inference_service", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=base_env(),
        timeout=120,
    )
    assert helped.returncode == 0
    assert "_DATABASE_URL" in helped.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "inference_service"],
        capture_output=True,
        text=True,
        check=False,
        env=base_env(INFERENCE_SERVICE_DATABASE_URL="postgresql://nowhere/x"),
        timeout=120,
    )
    assert bad.returncode == 2
    assert "INFERENCE_SERVICE_API_KEY_HASH_KEY" in bad.stderr


def test_an_unreachable_database_is_503_not_a_crash() -> None:
    """The service starts without its database (it may come back): readiness says degraded and
    calls are refused with 503 and Retry-After, never a 500."""
    port = free_port()
    env = base_env(
        INFERENCE_SERVICE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        INFERENCE_SERVICE_API_KEY_HASH_KEY="ab" * 32,
    )
    proc = start(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        ready = httpx.get(f"{base}/ready", timeout=10).json()
        assert ready["status"] == "degraded"
        response = httpx.post(
            f"{base}/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": "x"},
            headers={"Authorization": f"Bearer {local_dev_api_key()}"},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "key_store_unavailable"
        assert int(response.headers["retry-after"]) >= 1
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
