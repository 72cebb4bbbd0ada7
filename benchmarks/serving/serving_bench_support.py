"""Workload, peers and reporting for the aiaas-serving benchmarks (benchmark-only code).

- A fixed, seeded mix of sentences whose MiniLM token lengths spread uniformly from 8 to 256.
- The limits and peers measured beside the runtime, on the same model object and thread count:
  raw length-sorted batches (the limit), raw pad-to-longest batches in arrival order, one request
  per call, and Ray Serve's ``@serve.batch`` used in-process (plain asyncio, with its one call
  into a Serve replica context patched out, as when used outside a deployment).
- Closed-loop clients (``concurrency`` tasks, each sending its next request when the last one
  returns) and latency percentiles.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / ".benchmarks"

WORDS = (  # noqa: SIM905 - a word list reads best as text
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more about up out who them some could what into than then other time only new like system "
    "model request batch serving latency throughput device memory queue token budget cluster "
    "service platform inference embedding vector search query document answer"
).split()


def make_sentences(adapter: Any, count: int, *, seed: int = 7) -> list[str]:
    """``count`` sentences whose token lengths are uniform over 8-256 (fixed seed): the mix the
    reference figures of DESIGN.md were measured on."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    sentences: list[str] = []
    while len(sentences) < count:
        target = rng.randint(8, 256)
        words = [rng.choice(WORDS) for _ in range(max(1, target - 2))]
        text = " ".join(words)
        while len(adapter.tokenize(text)) > target and len(words) > 1:
            words.pop()
            text = " ".join(words)
        sentences.append(text)
    return sentences


def run_batches(adapter: Any, items: Sequence[list[int]], batch_size: int) -> list[Any]:
    """The model alone: ``items`` in batches of ``batch_size`` in the given order, each padded to
    its longest, under inference mode."""
    results: list[Any] = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = adapter.collate(chunk, max(len(i) for i in chunk))
            results.extend(adapter.split(adapter.forward(batch), chunk))
    return results


def raw_length_sorted(adapter: Any, sentences: Sequence[str], batch_size: int) -> None:
    items = sorted((adapter.prepare(s) for s in sentences), key=len)
    run_batches(adapter, items, batch_size)


def raw_arrival_order(adapter: Any, sentences: Sequence[str], batch_size: int) -> None:
    run_batches(adapter, [adapter.prepare(s) for s in sentences], batch_size)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_s": round(pick(0.50), 4),
        "p95_s": round(pick(0.95), 4),
        "p99_s": round(pick(0.99), 4),
        "mean_s": round(statistics.fmean(ordered), 4),
    }


async def closed_loop(
    call: Callable[[str], Awaitable[Any]], sentences: Sequence[str], concurrency: int
) -> tuple[float, list[float]]:
    """Send every sentence through ``call`` from ``concurrency`` clients; return the wall time
    and each request's latency."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for s in sentences:
        queue.put_nowait(s)
    latencies: list[float] = []

    async def client() -> None:
        while not queue.empty():
            sentence = queue.get_nowait()
            started = time.perf_counter()
            await call(sentence)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


class Unbatched:
    """One request per model call, on one device thread (what serving without batching does)."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="unbatched")

    def _one(self, sentence: str) -> Any:
        item = self.adapter.prepare(sentence)
        return run_batches(self.adapter, [item], 1)[0]

    async def __call__(self, sentence: str) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._one, sentence)

    def close(self) -> None:
        self.executor.shutdown()


def ray_serve_batcher(adapter: Any, max_batch_size: int, wait_s: float) -> Any:
    """Ray Serve's ``@serve.batch`` in-process around the same model: arrival-order batches of up
    to ``max_batch_size``, waiting up to ``wait_s`` for each to fill, padded to the longest, the
    forward on one executor thread (as a replica would run a blocking model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic deprecations inside Ray's own imports
        from ray import serve
        from ray.serve import batching

    # The one private call: outside a Serve replica there is no replica context to consult.
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = lambda self: None
    executor = ThreadPoolExecutor(1, thread_name_prefix="ray-batch")

    class Embedder:
        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
        async def embed(self, sentences: list[str]) -> list[Any]:
            loop = asyncio.get_running_loop()
            items = [adapter.prepare(s) for s in sentences]
            return await loop.run_in_executor(executor, run_batches, adapter, items, len(items))

        async def aclose(self) -> None:
            """Stop Ray's background batching task (it runs until cancelled) and the thread."""
            lazy = Embedder.embed._get_handling_task_stack.__self__  # type: ignore[attr-defined]
            task = lazy.queue._handle_batch_task
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            executor.shutdown()

    return Embedder()


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Latency (p50, p95) against throughput, one line per system, points by concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for name, unsorted in curves.items():
        points = sorted(unsorted, key=lambda p: p["concurrency"])
        xs = [p["throughput"] for p in points]
        for ax, key in zip(axes, ("p50_s", "p95_s"), strict=True):
            ys = [p[key] for p in points]
            ax.plot(xs, ys, marker="o", label=name)
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.annotate(f"c={int(p['concurrency'])}", (x, y), fontsize=7)
    for ax, key in zip(axes, ("p50", "p95"), strict=True):
        ax.set_xlabel("throughput (sentences/s)")
        ax.set_ylabel(f"{key} latency (s)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle("all-MiniLM-L6-v2, 8-256 tokens, 2 CPU threads: latency vs throughput")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(figures: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(figures)
    ax.barh(names, [figures[n] for n in names], color="tab:blue")
    for i, name in enumerate(names):
        ax.annotate(f"{figures[name]:.1f}", (figures[name], i), va="center", fontsize=8)
    ax.set_xlabel("sentences/s")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
