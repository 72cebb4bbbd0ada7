"""aiaas-serving generation: the continuous-batching engine against transformers and its limit.

SmolLM2-135M-Instruct (``aiaas_serving.generation.load_smollm2()``, fp32 on a CPU with 2 torch
threads, bf16 on CUDA) on a seeded mix: prompts of 16-512 tokens, 16-256 generated tokens per
request (greedy, to the end: ``ignore_eos``). Side by side in one run:

1. the engine under closed-loop clients at concurrency 1/8/32/64 vs ``transformers``' ``generate``
   in static batches of the same size (left-padded, the same prompts and weights, greedy, each
   row to its batch's largest ``max_tokens``): output tokens/s, time to first token p50/p99,
   request latency p50/p99;
2. both against one request at a time (concurrency 1);
3. the decode-step limit: the bare model's paged forward at the engine's batch size over a full
   cache; the engine's output tokens/s as a share of it, and its scheduling overhead (planning
   and batch building, ``EngineStats.schedule_seconds``) as a share of a step;
4. prefix caching on and off with a shared system prompt;
5. Poisson arrivals at several rates (the engine vs ``transformers`` behind a static-batching
   server), and latency-throughput curves as PNG.

Every figure lands in the benchmark JSON (``extra_info``) and in
``.benchmarks/generation-summary.json``; the curves in
``.benchmarks/generation-latency-throughput.png``. Aims (reported, never asserted): >= 2.5x
transformers' static batching throughput at concurrency 32, >= 80 % of the decode-step limit,
scheduling overhead < 5 % of a step.

``AIAAS_BENCH_QUICK=1`` runs a small form (short prompts and outputs, few requests, concurrency
1/4/8) that exercises every comparison in a few minutes; the full form is sized to finish in about
15 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from generation_bench_support import (
    Request,
    Run,
    StaticBatcher,
    decode_step_limit,
    engine_closed_loop,
    engine_open_loop,
    engine_options,
    hf_generate,
    make_mix,
    plot_generation_curves,
    poisson_arrivals,
    static_closed_loop,
    static_open_loop,
    text_ids,
    transformers_model,
)
from serving_bench_support import RESULTS_DIR

from aiaas_serving.generation import GenerationEngine, GenerationModel, load_smollm2

CUDA = torch.cuda.is_available()
if not CUDA:
    torch.set_num_threads(2)
QUICK = os.environ.get("AIAAS_BENCH_QUICK", "") not in ("", "0")


@dataclass(frozen=True)
class Scale:
    prompt: tuple[int, int]  # prompt lengths (tokens)
    output: tuple[int, int]  # max_tokens per request
    concurrency: tuple[int, ...]
    requests: Callable[[int], int]  # requests per closed-loop point, by concurrency
    rates: tuple[float, ...]  # Poisson arrival rates, as shares of the engine's c=32-ish rate
    poisson_requests: int
    prefix_requests: int
    system_prompt: int  # tokens of the shared system prompt
    limit_steps: int


FULL = Scale(
    prompt=(16, 512),
    output=(16, 256),
    concurrency=(1, 8, 32, 64),
    requests=lambda c: 3 if c == 1 else min(2 * c, 64),
    rates=(0.4, 0.8),
    poisson_requests=24,
    prefix_requests=24,
    system_prompt=384,
    limit_steps=5,
)
QUICK_SCALE = Scale(
    prompt=(16, 64),
    output=(8, 24),
    concurrency=(1, 4, 8),
    requests=lambda c: max(3, 2 * c),
    rates=(0.5, 1.0),
    poisson_requests=8,
    prefix_requests=8,
    system_prompt=96,
    limit_steps=3,
)
SCALE = QUICK_SCALE if QUICK else FULL
CURVE_LEVEL = 32 if 32 in SCALE.concurrency else SCALE.concurrency[-1]  # the headline level

RESULTS: dict[str, Any] = {}
WARM: list[bool] = []
CURVES: dict[str, list[dict[str, Any]]] = {
    "engine (closed loop)": [],
    "transformers static batches (closed loop)": [],
    "engine (Poisson)": [],
    "transformers static batcher (Poisson)": [],
}


@pytest.fixture(scope="module")
def model() -> GenerationModel:
    device = "cuda" if CUDA else "cpu"
    dtype = torch.bfloat16 if CUDA else torch.float32
    return load_smollm2(dtype=dtype, device=device)


@pytest.fixture(scope="module")
def hf(model: GenerationModel) -> Any:
    return transformers_model(model)


def pad_of(model: GenerationModel) -> int:
    """The id ``transformers`` pads with (left): the first EOS id, as generate does."""
    return int(model.config.eos_token_ids[0]) if model.config.eos_token_ids else 0


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
    (RESULTS_DIR / "generation-summary.json").write_text(
        json.dumps(
            {
                "quick": QUICK,
                "device": "cuda" if CUDA else "cpu",
                "figures": figures,
                "results": RESULTS,
                "curves": CURVES,
            },
            indent=2,
        )
    )
    if any(CURVES.values()):
        plot_generation_curves(CURVES, RESULTS_DIR / "generation-latency-throughput.png")
    print("\naiaas-serving generation benchmark figures:")
    for key, value in figures.items():
        print(f"  {key:<52} {value}")


def summarise() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in SCALE.concurrency:
        point = RESULTS.get(f"closed_loop_c{c}")
        if point:
            out[f"speedup_vs_transformers_static_c{c}"] = point["speedup_vs_transformers"]
            if "speedup_vs_one_at_a_time" in point:
                out[f"speedup_vs_one_at_a_time_c{c}"] = point["speedup_vs_one_at_a_time"]
    limit = RESULTS.get("decode_step_limit")
    if limit:
        for key in (
            "batch_size",
            "engine_share_of_limit_mix",
            "engine_share_of_limit_decode",
            "schedule_share_of_step",
            "schedule_ms_per_step",
        ):
            out[f"limit_{key}"] = limit[key]
    prefix = RESULTS.get("prefix_caching")
    if prefix:
        out["prefix_caching_throughput_gain"] = prefix["throughput_gain"]
        out["prefix_caching_ttft_p50_ratio"] = prefix["ttft_p50_ratio"]
        out["prefix_cache_hit_rate"] = prefix["on"]["hit_rate"]
    return out


def timed(benchmark: Any, fn: Callable[[], Any]) -> None:
    benchmark.pedantic(fn, rounds=1, iterations=1)


def record(benchmark: Any, key: str, figures: dict[str, Any]) -> None:
    RESULTS[key] = figures
    benchmark.extra_info.update(figures)


def mix(model: GenerationModel, count: int, seed: int = 7) -> list[Request]:
    return make_mix(model, count, prompt=SCALE.prompt, output=SCALE.output, seed=seed)


def engine_run(
    loop: asyncio.AbstractEventLoop,
    model: GenerationModel,
    requests: list[Request],
    concurrency: int,
    **changes: Any,
) -> tuple[Run, list[list[int]], Any]:
    """A fresh engine sized for ``concurrency``, one closed-loop pass; returns its stats."""

    async def go() -> tuple[Run, list[list[int]], Any]:
        options = engine_options(requests, concurrency, **changes)
        async with GenerationEngine(model, options) as engine:
            run, outputs = await engine_closed_loop(engine, requests, concurrency)
            return run, outputs, engine.stats()

    return loop.run_until_complete(go())


def step_figures(stats: Any) -> dict[str, float]:
    total = (
        stats.schedule_seconds
        + stats.forward_seconds
        + stats.sample_seconds
        + stats.postprocess_seconds
    )
    steps = max(1, stats.steps)
    return {
        "steps": stats.steps,
        "mean_tokens_per_step": round(stats.tokens / steps, 2),
        "step_ms": round(total / steps * 1e3, 3),
        "schedule_ms_per_step": round(stats.schedule_seconds / steps * 1e3, 4),
        "forward_ms_per_step": round(stats.forward_seconds / steps * 1e3, 3),
        "sample_ms_per_step": round(stats.sample_seconds / steps * 1e3, 4),
        "postprocess_ms_per_step": round(stats.postprocess_seconds / steps * 1e3, 4),
        "schedule_share_of_step": round(stats.schedule_seconds / total, 4) if total else 0.0,
        "preemptions": stats.preemptions,
    }


# --- 1, 2. closed loops: the engine vs transformers' static batches vs one at a time ----------


@pytest.mark.benchmark(group="generation-closed-loop")
@pytest.mark.parametrize("c", SCALE.concurrency, ids=lambda c: f"c{c}")
def test_engine_vs_transformers_static_batches(benchmark, model, hf, loop, c) -> None:
    """At concurrency ``c``: the engine (a fresh one, its KV pool sized for the level) under
    closed-loop clients, then ``transformers`` in static batches of that size, on the same
    requests. Greedy outputs of both are compared token for token (reported). Levels run in
    order; the one-at-a-time ratios need the ``c1`` level in the same run."""
    pad_id = pad_of(model)
    if not WARM:  # first calls allocate: keep them out of the figures
        warm = make_mix(model, 2, prompt=(16, 64), output=(4, 4), seed=1)
        engine_run(loop, model, warm, 2)
        hf_generate(hf, warm, pad_id)
        WARM.append(True)
    requests = mix(model, SCALE.requests(c))
    box: dict[str, Any] = {}

    def measure() -> None:
        box["engine"] = engine_run(loop, model, requests, c)
        batcher = StaticBatcher(hf, c, pad_id)
        try:
            box["hf"] = loop.run_until_complete(static_closed_loop(batcher, requests, c))
        finally:
            batcher.close()

    timed(benchmark, measure)
    run, outputs, stats = box["engine"]
    hf_run, hf_outputs = box["hf"]
    ours, theirs = run.figures(), hf_run.figures()
    same = sum(a == b for a, b in zip(outputs, hf_outputs, strict=True))
    point: dict[str, Any] = {
        "concurrency": c,
        "engine": {
            **ours,
            **step_figures(stats),
            # the wall clock per step: the timed parts plus the loop's hops between them
            "wall_ms_per_step": round(run.seconds / max(1, stats.steps) * 1e3, 3),
        },
        "transformers_static": theirs,
        "speedup_vs_transformers": round(
            ours["output_tokens_per_s"] / theirs["output_tokens_per_s"], 3
        ),
        "greedy_outputs_identical": f"{same}/{len(requests)}",
    }
    one = RESULTS.get("closed_loop_c1")
    if c > 1 and one is not None:
        point["speedup_vs_one_at_a_time"] = round(
            ours["output_tokens_per_s"] / one["engine"]["output_tokens_per_s"], 3
        )
        point["speedup_vs_transformers_one_at_a_time"] = round(
            ours["output_tokens_per_s"] / one["transformers_static"]["output_tokens_per_s"], 3
        )
    record(benchmark, f"closed_loop_c{c}", point)
    CURVES["engine (closed loop)"].append({**ours, "label": f"c={c}"})
    CURVES["transformers static batches (closed loop)"].append({**theirs, "label": f"c={c}"})


# --- 3. the decode-step limit and the engine's scheduling overhead ---------------------------


@pytest.mark.benchmark(group="generation-limit")
def test_decode_step_limit_and_scheduling_overhead(benchmark, model, loop) -> None:
    """The bare model's decode step at the engine's batch size over a full cache (the limit),
    against the engine on the mix at that concurrency and on a pure-decode load (every request
    prompted at once with the same prompt length, so after the first steps only decodes run)."""
    c = CURVE_LEVEL
    requests = mix(model, SCALE.requests(c))
    context = round(
        sum(len(r.prompt) + r.max_tokens / 2 for r in requests) / len(requests)
    )  # the mix's mean context while decoding
    box: dict[str, Any] = {}

    def measure() -> None:
        point = RESULTS.get(f"closed_loop_c{c}")
        if point is None:  # run alone (-k): measure the engine on the mix here
            run, _, stats = engine_run(loop, model, requests, c)
            box["mix"] = {**run.figures(), **step_figures(stats)}
        else:  # the closed-loop test's engine pass at this level, same requests
            box["mix"] = point["engine"]
        # pure decode: c requests of the mean context's prompt, all admitted at once
        prompt_len = max(1, context - SCALE.output[1] // 2)
        rngs = [random.Random(i) for i in range(c)]  # noqa: S311 - a reproducible workload
        decode = [Request(tuple(text_ids(model, g, prompt_len)), SCALE.output[1]) for g in rngs]
        box["decode"] = engine_run(loop, model, decode, c)
        box["limit_s"] = decode_step_limit(model, c, context, SCALE.limit_steps)

    timed(benchmark, measure)
    mix_figures = box["mix"]
    decode_run, _, decode_stats = box["decode"]
    limit_tps = c / box["limit_s"]
    mix_tps = mix_figures["output_tokens_per_s"]
    # the decode phase of the pure-decode run: from every request's first token to the last end
    first = max(t.first for t in decode_run.timings)
    last = max(t.end for t in decode_run.timings)
    decoded = sum(t.tokens - 1 for t in decode_run.timings)
    decode_tps = decoded / (last - first) if last > first else 0.0
    record(
        benchmark,
        "decode_step_limit",
        {
            "batch_size": c,
            "context_tokens": context,
            "limit_step_ms": round(box["limit_s"] * 1e3, 3),
            "limit_output_tokens_per_s": round(limit_tps, 2),
            "engine_mix_output_tokens_per_s": mix_tps,
            "engine_share_of_limit_mix": round(mix_tps / limit_tps, 3),
            "engine_decode_output_tokens_per_s": round(decode_tps, 2),
            "engine_share_of_limit_decode": round(decode_tps / limit_tps, 3),
            "schedule_share_of_step": mix_figures["schedule_share_of_step"],
            "schedule_ms_per_step": mix_figures["schedule_ms_per_step"],
            "mix_run": mix_figures,
            "decode_run": step_figures(decode_stats),
        },
    )


# --- 4. prefix caching on and off ----------------------------------------------------------


@pytest.mark.benchmark(group="generation-prefix-caching")
def test_prefix_caching_on_and_off(benchmark, model, loop) -> None:
    """Chat requests sharing one system prompt (rendered with the model's chat template), short
    questions, at concurrency 8: the engine with prefix caching on, then off."""
    rng = random.Random(5)  # noqa: S311 - a reproducible workload, not a secret
    system = model.tokenizer.decode(text_ids(model, rng, SCALE.system_prompt))
    requests = []
    for i in range(SCALE.prefix_requests):
        question = model.tokenizer.decode(text_ids(model, rng, rng.randint(16, 64)))
        text = model.tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": question}]
        )
        requests.append(Request(tuple(model.tokenizer.encode(text)), 16 + i % 17))
    c = min(8, SCALE.prefix_requests)
    box: dict[str, Any] = {}

    def measure() -> None:
        for name, on in (("on", True), ("off", False)):
            run, _, stats = engine_run(loop, model, requests, c, prefix_caching=on)
            hits, queries = stats.prefix_cache_hits, stats.prefix_cache_queries
            box[name] = {
                **run.figures(),
                **step_figures(stats),
                "prefix_cache_hits": hits,
                "prefix_cache_queries": queries,
                "hit_rate": round(hits / queries, 3) if queries else 0.0,
            }

    timed(benchmark, measure)
    on, off = box["on"], box["off"]
    record(
        benchmark,
        "prefix_caching",
        {
            "system_prompt_tokens": SCALE.system_prompt,
            "mean_prompt_tokens": round(sum(len(r.prompt) for r in requests) / len(requests), 1),
            "concurrency": c,
            "on": on,
            "off": off,
            "throughput_gain": round(on["output_tokens_per_s"] / off["output_tokens_per_s"], 3),
            "ttft_p50_ratio": round(on["ttft_p50_s"] / off["ttft_p50_s"], 3),
        },
    )


# --- 5. Poisson arrivals ---------------------------------------------------------------------


@pytest.mark.benchmark(group="generation-poisson")
def test_poisson_arrivals(benchmark, model, hf, loop) -> None:
    """Open-loop Poisson arrivals at several rates, the same arrivals for both: the engine and
    ``transformers`` behind a static-batching server (batches of up to the headline concurrency
    of whatever waits). Rates are shares of the engine's request rate at the headline
    concurrency, measured first on the same requests."""
    requests = mix(model, SCALE.poisson_requests, seed=13)
    pad_id = pad_of(model)
    c = CURVE_LEVEL
    points: list[dict[str, Any]] = []

    def measure() -> None:
        point = RESULTS.get(f"closed_loop_c{c}")
        if point is None:  # run alone (-k): measure the engine's request rate here
            capacity = engine_run(loop, model, requests, c)[0].figures()["requests_per_s"]
        else:
            capacity = point["engine"]["requests_per_s"]
        for share in SCALE.rates:
            rate = capacity * share
            arrivals = poisson_arrivals(len(requests), rate)

            async def engine_side(arrivals: list[float] = arrivals) -> Run:
                options = engine_options(requests, len(requests))
                async with GenerationEngine(model, options) as engine:
                    return await engine_open_loop(engine, requests, arrivals)

            ours = loop.run_until_complete(engine_side()).figures()
            batcher = StaticBatcher(hf, c, pad_id)
            try:
                theirs = loop.run_until_complete(
                    static_open_loop(batcher, requests, arrivals)
                ).figures()
            finally:
                batcher.close()
            points.append(
                {
                    "rate_per_s": round(rate, 4),
                    "share_of_capacity": share,
                    "engine": ours,
                    "transformers_static": theirs,
                }
            )
            CURVES["engine (Poisson)"].append({**ours, "label": f"{rate:.2g}/s"})
            CURVES["transformers static batcher (Poisson)"].append(
                {**theirs, "label": f"{rate:.2g}/s"}
            )

    started = time.perf_counter()
    timed(benchmark, measure)
    record(
        benchmark,
        "poisson",
        {"points": points, "seconds": round(time.perf_counter() - started, 1)},
    )
