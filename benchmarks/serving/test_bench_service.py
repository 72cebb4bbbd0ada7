"""inference-service end to end: what the service adds over the batching runtime it embeds.

The service runs as it is deployed: ``python -m inference_service`` in its own process under
uvicorn, in local mode (aiaas-db's throwaway PostgreSQL, migrated and seeded; the local-dev key),
tracing off, its JSON logs to a file. Clients are httpx (one ``AsyncClient``, 64 connections)
posting one sentence per ``POST /v1/embeddings`` call, closed loop at concurrency 64, over the
same fixed 256-sentence mix (8-256 tokens) as ``test_bench_serving.py``. Beside it, in this
process, the runtime alone with the service's own batch policy (``BatchPolicy(max_batch_size=32,
max_queue=1024)``, the rest default), driven by the same closed loop. Each contender runs in turn,
three rounds, best throughput kept. The figures include everything a caller pays: HTTP, JSON,
API-key auth (cached), the telemetry middleware and access log, the usage event, and, on this
2-core machine, the CPU the load generator itself takes from the model.

The example is not installed by the benchmarks session: it runs from its source tree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from serving_bench_support import closed_loop, make_sentences, percentiles

from aiaas_db import local_dev_api_key
from aiaas_serving import BatchPolicy, Runtime, SentenceEmbeddingAdapter

torch.set_num_threads(2)

EXAMPLE_SRC = Path(__file__).resolve().parents[2] / "examples" / "inference-service" / "src"
N = 256
CONCURRENCY = 64
ROUNDS = 3
MODEL = "all-MiniLM-L6-v2"


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[str, int]]:
    """The service as a process in local mode; its base URL (once ``/ready`` says so) and pid."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(EXAMPLE_SRC), os.environ.get("PYTHONPATH")])
        ),
        "INFERENCE_SERVICE_TRACING": "false",
    }
    env.pop("INFERENCE_SERVICE_DATABASE_URL", None)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_service", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 240
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"inference-service exited early:\n{log.read()[-3000:]}")
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("inference-service was not ready within 240 s")
                time.sleep(0.25)
            yield base, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)


@pytest.mark.benchmark(group="serving-service")
def test_service_end_to_end_vs_the_runtime_alone(benchmark: Any, service: tuple[str, int]) -> None:
    base, pid = service
    adapter = SentenceEmbeddingAdapter.minilm()
    adapter.move_to(torch.device("cpu"))
    sentences = make_sentences(adapter, N)
    headers = {"Authorization": f"Bearer {local_dev_api_key()}"}
    loop = asyncio.new_event_loop()
    runtime = Runtime(device="cpu")
    model = loop.run_until_complete(
        runtime.add_model("minilm", adapter, policy=BatchPolicy(max_batch_size=32, max_queue=1024))
    )
    client = httpx.AsyncClient(
        base_url=base,
        headers=headers,
        timeout=120,
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
    )
    statuses: list[int] = []

    async def over_http(sentence: str) -> None:
        response = await client.post("/v1/embeddings", json={"model": MODEL, "input": sentence})
        statuses.append(response.status_code)

    contenders = {"runtime": model.submit, "service": over_http}
    for call in contenders.values():  # warm both (threads, connections, the key cache)
        loop.run_until_complete(closed_loop(call, sentences[-32:], 8))
    best: dict[str, dict[str, float]] = {}

    def rounds() -> None:
        for _ in range(ROUNDS):
            for name, call in contenders.items():
                server_cpu, own_cpu = _process_cpu_s(pid), time.process_time()
                seconds, latencies = loop.run_until_complete(
                    closed_loop(call, sentences, CONCURRENCY)
                )
                point = {"throughput": round(N / seconds, 2), **percentiles(latencies)}
                # CPU ms per request: the service process, and this one (the runtime alone,
                # or the HTTP clients when the service is measured).
                point["service_cpu_ms"] = round(1000 * (_process_cpu_s(pid) - server_cpu) / N, 2)
                point["this_process_cpu_ms"] = round(1000 * (time.process_time() - own_cpu) / N, 2)
                if point["throughput"] > best.get(name, {}).get("throughput", 0.0):
                    best[name] = point

    started = time.perf_counter()
    benchmark.pedantic(rounds, rounds=1, iterations=1)
    elapsed = time.perf_counter() - started
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(runtime.aclose())
    loop.close()

    # Behaviour, not timing: every call over HTTP was answered with an embedding.
    assert len(statuses) == 32 + ROUNDS * N
    assert set(statuses) == {200}, sorted(set(statuses))
    ratio = best["service"]["throughput"] / best["runtime"]["throughput"]
    benchmark.extra_info.update(
        {
            "runtime_c64": best["runtime"],
            "service_c64": best["service"],
            "service_over_runtime_throughput": round(ratio, 3),
            "p50_added_ms": round(1000 * (best["service"]["p50_s"] - best["runtime"]["p50_s"]), 1),
            "rounds": ROUNDS,
            "wall_s": round(elapsed, 1),
        }
    )
    print(
        f"\ninference-service vs runtime at c={CONCURRENCY}: "
        f"{best['service']['throughput']} vs {best['runtime']['throughput']} sentences/s "
        f"({ratio:.3f}x); p50 {best['service']['p50_s']} vs {best['runtime']['p50_s']} s, "
        f"p99 {best['service']['p99_s']} vs {best['runtime']['p99_s']} s; CPU per call: service "
        f"process {best['service']['service_cpu_ms']} ms, clients "
        f"{best['service']['this_process_cpu_ms']} ms; runtime alone "
        f"{best['runtime']['this_process_cpu_ms']} ms"
    )
