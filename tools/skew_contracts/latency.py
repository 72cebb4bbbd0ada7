"""Latency figures of one skew-matrix combination, printed as one JSON object.

    python tools/skew_contracts/latency.py [--world N] [--embeddings N] [--migrations N]

``tools/skew.py`` runs it with the combination's wheels on ``PYTHONPATH`` (and world-service's
source after them). Each figure is measured in-process with the real components:

* ``world_request_ms``: ``GET /world`` through world-service's full stack (telemetry
  middleware, authentication, routes) over ``httpx.ASGITransport``, one request at a time;
* ``embeddings_ms``: ``POST /v1/embeddings`` of aiaas-serving's OpenAI endpoint over the real
  MiniLM model on the CPU (the path inference-service serves, with its torch thread count: the
  usable CPUs minus one), one sentence per request;
* ``migration_per_set_ms``: ``Migrator.up`` over N small change sets minus the same SQL run
  directly through psycopg, divided by N, on a throwaway PostgreSQL cluster.

Percentiles are nearest-rank over the samples after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

WARMUP = 20


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) of ``samples`` in milliseconds, rounded to microseconds."""
    if not samples:
        raise ValueError("no samples to summarise")
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": rank(0.50), "p99": rank(0.99), "n": len(ordered)}


async def _timed(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    for _ in range(min(WARMUP, count)):
        await call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def world_request(count: int) -> dict[str, float]:
    import httpx
    from world_service import create_app, load

    from aiaas_telemetry import load_profile, setup

    sink = io.StringIO()  # the request logs are not the figure
    telemetry = setup(
        load_profile({"service_name": "world-service"}, environ={}),
        tracing=False,
        log_stream=sink,
    )
    try:
        app = create_app(load({}, {}), telemetry)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://skew") as client:

            async def call() -> None:
                response = await client.get("/world")
                if response.status_code != 200:
                    raise RuntimeError(f"GET /world answered {response.status_code}")

            return percentiles(await _timed(call, count))
    finally:
        telemetry.shutdown(timeout_s=1)


async def embeddings(count: int) -> dict[str, float]:
    import httpx
    import torch

    from aiaas_serving import BatchPolicy, Runtime, SentenceEmbeddingAdapter, mount_openai

    # inference-service's rule (its torch_threads "auto"): the usable CPUs minus one, so the
    # event loop keeps a CPU. torch's default (every CPU) makes its OpenMP threads wait for each
    # other at each barrier while the scheduler runs something else: on 2 shared cores that is
    # the 0.5 s p99 an earlier matrix showed, a figure of the machine's load, not of the code.
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - 1))
    runtime = Runtime(device="cpu")
    await runtime.add_model(
        "minilm", SentenceEmbeddingAdapter.minilm(), policy=BatchPolicy(max_batch_size=32)
    )
    try:
        transport = httpx.ASGITransport(app=mount_openai(None, runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://skew") as client:
            body = {"model": "minilm", "input": "the version skew matrix measures this request"}

            async def call() -> None:
                response = await client.post("/v1/embeddings", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"POST /v1/embeddings answered {response.status_code}")

            return percentiles(await _timed(call, count))
    finally:
        await runtime.aclose()


def migration_per_set(sets: int) -> dict[str, float]:
    import psycopg

    from aiaas_db import LocalPostgres, Migrator

    folder = Path(tempfile.mkdtemp(prefix="aiaas-skew-sets-"))
    try:
        for i in range(sets):
            hour, minute = divmod(i, 60)
            version = f"20240101{hour:02d}{minute:02d}"
            (folder / f"{version}_t{i}.up.sql").write_text(
                f"CREATE TABLE t{i} (id int PRIMARY KEY, v text);\n"
                f"INSERT INTO t{i} VALUES (1, 'x');\n"
            )
            (folder / f"{version}_t{i}.down.sql").write_text(f"DROP TABLE t{i};\n")
        scripts = [p.read_text() for p in sorted(folder.glob("*.up.sql"))]
        with LocalPostgres.temporary() as cluster:
            direct_url = cluster.create_database(f"d_{uuid.uuid4().hex[:12]}")
            ours_url = cluster.create_database(f"m_{uuid.uuid4().hex[:12]}")
            start = time.perf_counter()
            with psycopg.connect(direct_url, autocommit=True) as conn:
                for script in scripts:
                    with conn.transaction():
                        for statement in script.split(";\n"):
                            if statement.strip():
                                conn.execute(statement.encode())
            direct = time.perf_counter() - start
            start = time.perf_counter()
            report = Migrator(ours_url, folder, component="skew").up()
            ours = time.perf_counter() - start
            if len(report.versions) != sets:
                raise RuntimeError(f"Migrator.up applied {len(report.versions)} of {sets} sets")
        return {
            "per_set_overhead": round((ours - direct) / sets * 1000, 3),
            "sets": sets,
            "direct_s": round(direct, 3),
            "migrator_s": round(ours, 3),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=0, metavar="N", help="GET /world requests")
    parser.add_argument("--embeddings", type=int, default=0, metavar="N", help="embeddings calls")
    parser.add_argument("--migrations", type=int, default=0, metavar="N", help="change sets")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    if args.world:
        figures["world_request_ms"] = asyncio.run(world_request(args.world))
    if args.embeddings:
        figures["embeddings_ms"] = asyncio.run(embeddings(args.embeddings))
    if args.migrations:
        figures["migration_per_set_ms"] = migration_per_set(args.migrations)
    json.dump(figures, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
