"""aiaas-serving: the batching runtime against the model's limit and against its peers.

Everything runs side by side in one process on the same all-MiniLM-L6-v2 object with 2 torch
threads, on a fixed mix of 256 sentences whose token lengths spread uniformly over 8-256:

1. the limit (raw length-sorted batches of 32) vs the runtime at saturation (all requests at
   once): efficiency;
2. the runtime vs unbatched per-request execution at concurrency 64: speedup;
3. the runtime vs Ray Serve's ``@serve.batch`` in-process (same model, batch size 32, 10 ms wait),
   and the runtime without aging across buckets (``age_window=1.0``, at concurrency 64): p50 and
   p99 latency as ratios to Ray's (``p50_vs_ray_serve_batch_c64``, ``p99_vs_...``);
4. one request at an idle device: latency added over calling the model directly, and the
   runtime's own per-request cost with a no-op model;
5. padding buckets vs pad-to-longest (one bucket) at saturation.

Latency-throughput curves (closed-loop clients at concurrency 1, 4, 16, 64) are drawn into
``.benchmarks/serving-latency-throughput.png``; every figure lands in the benchmark JSON
(``extra_info``) and in ``.benchmarks/serving-summary.json``.

Reference figures measured on this 2-core machine before the runtime existed: length-sorted full
batches 55.4 sentences/s (the limit); pad-to-longest in arrival order 26.8/s; one per call
40.8/s; Ray's @serve.batch 26.6/s with p50 2.4 s. Aims: >= 90 % of the limit at saturation, a
per-request runtime overhead under 15 us. Benchmarks report; they never assert timings.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from serving_bench_support import (
    RESULTS_DIR,
    Unbatched,
    closed_loop,
    make_sentences,
    percentiles,
    plot_bars,
    plot_curves,
    raw_arrival_order,
    raw_length_sorted,
    ray_serve_batcher,
    run_batches,
)

from aiaas_serving import BatchPolicy, Runtime, SentenceEmbeddingAdapter

torch.set_num_threads(2)

N = 256
BATCH = 32
WAIT_S = 0.01
SWEEP = (1, 4, 16)
SWEEP_N = 96  # sentences per point below concurrency 64
RESULTS: dict[str, dict[str, Any]] = {}
NO_WINDOW = "aiaas runtime, age_window=1"
CURVES: dict[str, list[dict[str, float]]] = {
    "aiaas runtime": [],
    NO_WINDOW: [],
    "unbatched": [],
    "ray": [],
}


def policy(**changes: Any) -> BatchPolicy:
    base = {
        "max_batch_size": BATCH,
        "max_batch_tokens": BATCH * 256,
        "max_delay": WAIT_S,
        "max_queue": 4096,
    }
    return BatchPolicy(**{**base, **changes})


@pytest.fixture(scope="module")
def adapter() -> SentenceEmbeddingAdapter:
    model = SentenceEmbeddingAdapter.minilm()
    model.move_to(torch.device("cpu"))
    for length in (16, 64, 128, 256):  # first calls allocate; keep that out of the figures
        run_batches(model, [model.dummy_item(length)] * 8, 8)
    return model


@pytest.fixture(scope="module")
def sentences(adapter: SentenceEmbeddingAdapter) -> list[str]:
    return make_sentences(adapter, N)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    figures = summarise()
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "serving-summary.json").write_text(
        json.dumps({"figures": figures, "results": RESULTS, "curves": CURVES}, indent=2)
    )
    if any(CURVES.values()):
        plot_curves(CURVES, RESULTS_DIR / "serving-latency-throughput.png")
    bars = {k: v["throughput"] for k, v in RESULTS.items() if "throughput" in v}
    if bars:
        plot_bars(bars, RESULTS_DIR / "serving-throughput.png", "MiniLM sentences/s, 2 threads")
    print("\naiaas-serving benchmark figures:")
    for key, value in figures.items():
        print(f"  {key:<40} {value}")


def summarise() -> dict[str, float]:
    def tput(key: str) -> float | None:
        return RESULTS.get(key, {}).get("throughput")

    out: dict[str, float] = {}
    pairs = {
        "efficiency_vs_length_sorted_limit": ("runtime_saturation", "limit_length_sorted"),
        "speedup_vs_unbatched_c64": ("runtime_c64", "unbatched_c64"),
        "speedup_vs_ray_serve_batch_c64": ("runtime_c64", "ray_serve_batch_c64"),
        "age_window_throughput_gain_c64": ("runtime_c64", "runtime_no_age_window_c64"),
        "buckets_over_pad_to_longest": ("runtime_buckets", "runtime_pad_to_longest"),
    }
    for name, (ours, theirs) in pairs.items():
        a, b = tput(ours), tput(theirs)
        if a and b:
            out[name] = round(a / b, 3)
    ours, ray = RESULTS.get("runtime_c64", {}), RESULTS.get("ray_serve_batch_c64", {})
    before = RESULTS.get("runtime_no_age_window_c64", {})
    for q in ("p50_s", "p99_s"):
        if ours.get(q) and ray.get(q):
            out[f"{q[:3]}_vs_ray_serve_batch_c64"] = round(ours[q] / ray[q], 3)
        if before.get(q) and ray.get(q):
            out[f"{q[:3]}_vs_ray_serve_batch_c64_age_window_1"] = round(before[q] / ray[q], 3)
    idle = RESULTS.get("idle_single_request", {})
    if idle:
        out["idle_added_latency_us_vs_device_thread"] = idle["added_us"]
        out["idle_added_latency_us_vs_caller_thread"] = idle["added_vs_caller_thread_us"]
        out["idle_added_latency_us_noop_model"] = idle["noop_added_us"]
    overhead = RESULTS.get("runtime_overhead_noop", {})
    if overhead:
        out["overhead_us_per_request_handles"] = overhead["handles_us"]
        out["overhead_us_per_request_tasks"] = overhead["tasks_us"]
    return out


def timed(benchmark: Any, fn: Callable[[], Any], rounds: int = 1) -> float:
    """Run ``fn`` ``rounds`` times through pytest-benchmark; return the median seconds."""
    seconds: list[float] = []

    def once() -> None:
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)

    benchmark.pedantic(once, rounds=rounds, iterations=1)
    return statistics.median(seconds)


def record(benchmark: Any, key: str, **figures: Any) -> None:
    RESULTS[key] = figures
    benchmark.extra_info.update(figures)


def new_runtime(
    loop: asyncio.AbstractEventLoop, adapter: Any, **changes: Any
) -> tuple[Runtime, Any]:
    runtime = Runtime(device="cpu")
    model = loop.run_until_complete(runtime.add_model("minilm", adapter, policy=policy(**changes)))
    return runtime, model


# --- 1. the limit vs the runtime at saturation; 5. buckets vs pad-to-longest ------------------


def _burst(loop: asyncio.AbstractEventLoop, model: Any, sentences: list[str]) -> None:
    async def burst() -> None:
        await asyncio.gather(*(model.submit(s) for s in sentences))

    loop.run_until_complete(burst())


def _best(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Run each contender in turn, ``rounds`` times, and keep each one's best time: on a
    shared, noisy machine, interleaving and the minimum keep the comparison fair."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


@pytest.mark.benchmark(group="serving-saturation")
def test_saturation_vs_the_length_sorted_limit(benchmark, adapter, sentences, loop) -> None:
    """The limit (the model alone on length-sorted full batches of 32) against the runtime with
    every request submitted at once (a deep queue; it picks bucket batches)."""
    runtime, model = new_runtime(loop, adapter)
    _burst(loop, model, sentences[-24:])  # first calls on a fresh thread are slow
    box: dict[str, float] = {}
    timed(
        benchmark,
        lambda: box.update(
            _best(
                {
                    "limit": lambda: raw_length_sorted(adapter, sentences, BATCH),
                    "runtime": lambda: _burst(loop, model, sentences),
                },
                rounds=2,
            )
        ),
    )
    efficiency = runtime.metrics.histogram("aiaas_serving_padding_efficiency", model="minilm")
    sizes = runtime.metrics.histogram("aiaas_serving_batch_size", model="minilm")
    loop.run_until_complete(runtime.aclose())
    RESULTS["limit_length_sorted"] = {"throughput": round(N / box["limit"], 2)}
    record(
        benchmark,
        "runtime_saturation",
        throughput=round(N / box["runtime"], 2),
        limit_throughput=round(N / box["limit"], 2),
        efficiency=round(box["limit"] / box["runtime"], 3),
        mean_batch_size=round(sizes.mean, 2),
        mean_padding_efficiency=round(efficiency.mean, 3),
    )


@pytest.mark.benchmark(group="serving-saturation")
def test_padding_buckets_vs_pad_to_longest(benchmark, adapter, sentences, loop) -> None:
    """At saturation: the runtime with its padding buckets, the runtime with one bucket (batches
    in arrival order padded to their longest), and the model alone doing the latter."""
    bucketed, with_buckets = new_runtime(loop, adapter)
    longest, one_bucket = new_runtime(loop, adapter, buckets=(256,))
    for model in (with_buckets, one_bucket):  # first calls on a fresh thread are slow
        _burst(loop, model, sentences[-24:])
    box: dict[str, float] = {}
    timed(
        benchmark,
        lambda: box.update(
            _best(
                {
                    "buckets": lambda: _burst(loop, with_buckets, sentences),
                    "longest": lambda: _burst(loop, one_bucket, sentences),
                    "raw": lambda: raw_arrival_order(adapter, sentences, BATCH),
                },
                rounds=1,
            )
        ),
    )
    pad = {
        name: rt.metrics.histogram("aiaas_serving_padding_efficiency", model="minilm").mean
        for name, rt in (("buckets", bucketed), ("longest", longest))
    }
    for rt in (bucketed, longest):
        loop.run_until_complete(rt.aclose())
    RESULTS["raw_arrival_order"] = {"throughput": round(N / box["raw"], 2)}
    RESULTS["runtime_buckets"] = {"throughput": round(N / box["buckets"], 2)}
    record(
        benchmark,
        "runtime_pad_to_longest",
        throughput=round(N / box["longest"], 2),
        buckets_throughput=round(N / box["buckets"], 2),
        raw_arrival_order_throughput=round(N / box["raw"], 2),
        gain=round(box["longest"] / box["buckets"], 3),
        padding_efficiency_buckets=round(pad["buckets"], 3),
        padding_efficiency_longest=round(pad["longest"], 3),
    )


# --- 2, 3. closed-loop clients: runtime vs unbatched vs Ray's @serve.batch -------------------


@pytest.mark.benchmark(group="serving-concurrency")
def test_concurrency_64_and_latency_throughput_curves(benchmark, adapter, sentences, loop):
    """Closed-loop clients at concurrency 64 (all 256 sentences) and 1, 4, 16 (the first 96):
    the runtime, unbatched per-request execution (one call per request on one device thread),
    and Ray Serve's @serve.batch in-process (max_batch_size=32, batch_wait_timeout_s=0.01),
    each contender in turn at each level."""
    runtime, model = new_runtime(loop, adapter)
    # the same runtime without aging across buckets (every queued request of the chosen bucket
    # joins its batch, as before age_window existed), at concurrency 64 only
    windowless, no_window = new_runtime(loop, adapter, age_window=1.0)
    unbatched = Unbatched(adapter)

    async def build() -> Any:  # Ray's batch queue binds to the loop it first runs on
        return ray_serve_batcher(adapter, BATCH, WAIT_S)

    ray = loop.run_until_complete(build())
    calls = {
        "aiaas runtime": model.submit,
        NO_WINDOW: no_window.submit,
        "unbatched": unbatched,
        "ray": ray.embed,
    }
    for call in calls.values():  # first calls on a fresh thread are slow: keep them out
        loop.run_until_complete(closed_loop(call, sentences[-24:], 4))

    def sweep() -> None:
        for concurrency, items in ((64, sentences), *((c, sentences[:SWEEP_N]) for c in SWEEP)):
            for name, call in calls.items():
                if name == NO_WINDOW and concurrency != 64:
                    continue
                seconds, latencies = loop.run_until_complete(closed_loop(call, items, concurrency))
                point = {
                    "concurrency": concurrency,
                    "throughput": round(len(items) / seconds, 2),
                    **percentiles(latencies),
                }
                CURVES[name].append(point)

    timed(benchmark, sweep)
    sizes = runtime.metrics.histogram("aiaas_serving_batch_size", model="minilm")
    loop.run_until_complete(runtime.aclose())
    loop.run_until_complete(windowless.aclose())
    loop.run_until_complete(ray.aclose())
    unbatched.close()
    for name, key in (
        ("aiaas runtime", "runtime_c64"),
        (NO_WINDOW, "runtime_no_age_window_c64"),
        ("unbatched", "unbatched_c64"),
        ("ray", "ray_serve_batch_c64"),
    ):
        RESULTS[key] = dict(next(p for p in CURVES[name] if p["concurrency"] == 64))
    benchmark.extra_info["mean_runtime_batch_size"] = round(sizes.mean, 2)
    benchmark.extra_info["c64"] = {
        k: RESULTS[k]
        for k in (
            "runtime_c64",
            "runtime_no_age_window_c64",
            "unbatched_c64",
            "ray_serve_batch_c64",
        )
    }
    benchmark.extra_info["curves"] = CURVES


# --- 4. one request at an idle device; the runtime's own per-request cost --------------------


@pytest.mark.benchmark(group="serving-overhead")
def test_idle_single_request_added_latency(benchmark, adapter, loop) -> None:
    """One short request at an idle device: through the runtime vs calling the model directly.

    Three views, alternating call by call (40 rounds of MiniLM, 500 of a no-op model):
    - ``added_us``: the model called directly on the runtime's own device thread (one thread hop,
      the same OpenMP pool) vs ``submit``: what the runtime adds beyond a bare hop;
    - ``added_vs_caller_thread_us``: the model called on the caller's thread vs ``submit``. On 2
      shared cores this also pays for switching between two OpenMP thread pools, which a served
      model (always on its device thread) does not;
    - ``noop_added_us``: a no-op model, ``submit`` vs a direct call: the runtime's machinery at
      idle (admission, dispatch, thread hop, settlement).
    """
    text = "How long does one short request take when nothing else is running?"
    item = adapter.prepare(text)
    runtime, model = new_runtime(loop, adapter)
    device_thread = runtime._workers["cpu"].executor  # the runtime's own device thread
    noop_runtime = Runtime(device="cpu")
    noop = loop.run_until_complete(noop_runtime.add_model("noop", _Noop()))
    bare = _Noop()
    times: dict[str, list[float]] = {
        k: [] for k in ("caller", "device_thread", "runtime", "noop_direct", "noop_runtime")
    }

    def direct() -> None:
        run_batches(adapter, [adapter.prepare(text)], 1)

    async def alternate(rounds: int) -> None:
        calls = {
            "caller": lambda: asyncio.sleep(0, direct()),
            "device_thread": lambda: loop.run_in_executor(device_thread, direct),
            "runtime": lambda: model.submit(text),
        }
        for _ in range(rounds):
            for name, call in calls.items():
                started = time.perf_counter()
                await call()
                times[name].append(time.perf_counter() - started)
        for i in range(500):
            started = time.perf_counter()
            items = [bare.prepare(i)]
            bare.split(bare.forward(bare.collate(items, 1)), items)
            times["noop_direct"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await noop.submit(i)
            times["noop_runtime"].append(time.perf_counter() - started)

    timed(benchmark, lambda: loop.run_until_complete(alternate(40)))
    loop.run_until_complete(runtime.aclose())
    loop.run_until_complete(noop_runtime.aclose())
    med = {k: statistics.median(v) for k, v in times.items()}
    record(
        benchmark,
        "idle_single_request",
        tokens=len(item),
        caller_thread_median_ms=round(med["caller"] * 1e3, 3),
        device_thread_median_ms=round(med["device_thread"] * 1e3, 3),
        runtime_median_ms=round(med["runtime"] * 1e3, 3),
        added_us=round((med["runtime"] - med["device_thread"]) * 1e6, 1),
        added_vs_caller_thread_us=round((med["runtime"] - med["caller"]) * 1e6, 1),
        noop_added_us=round((med["noop_runtime"] - med["noop_direct"]) * 1e6, 1),
    )


class _Noop:
    """A model that does nothing: what is left is the runtime's own cost."""

    max_length = None

    def prepare(self, inputs: Any) -> Any:
        return inputs

    def cost(self, item: Any) -> int:
        return 1

    def collate(self, items: Any, padded_length: int) -> Any:
        return items

    def forward(self, batch: Any) -> Any:
        return batch

    def split(self, outputs: Any, items: Any) -> Any:
        return outputs

    def move_to(self, device: Any) -> None:
        return None


@pytest.mark.benchmark(group="serving-overhead")
def test_runtime_overhead_per_request(benchmark, loop) -> None:
    """Per-request cost of admission, queueing, batching, dispatch and settlement, with a no-op
    model at batch 64: through handles (``enqueue`` + await) and with one task per request
    (``asyncio.gather`` of ``submit``), minus the same adapter calls made directly."""
    count = 20_000
    runtime = Runtime(device="cpu")
    model = loop.run_until_complete(
        runtime.add_model("noop", _Noop(), policy=BatchPolicy(max_batch_size=64, max_queue=count))
    )
    noop = _Noop()

    def direct() -> None:
        for start in range(0, count, 64):
            items = list(range(start, min(count, start + 64)))
            noop.split(noop.forward(noop.collate(items, 1)), items)

    async def handles() -> None:
        pending = [model.enqueue(i) for i in range(count)]
        for handle in pending:
            await handle

    async def tasks() -> None:
        await asyncio.gather(*(model.submit(i) for i in range(count)))

    results: dict[str, float] = {}

    def measure() -> None:
        for name, run in (
            ("direct", direct),
            ("handles", lambda: loop.run_until_complete(handles())),
            ("tasks", lambda: loop.run_until_complete(tasks())),
        ):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            results[name] = best

    timed(benchmark, measure)
    loop.run_until_complete(runtime.aclose())
    record(
        benchmark,
        "runtime_overhead_noop",
        handles_us=round((results["handles"] - results["direct"]) / count * 1e6, 2),
        tasks_us=round((results["tasks"] - results["direct"]) / count * 1e6, 2),
        direct_us=round(results["direct"] / count * 1e6, 3),
    )
