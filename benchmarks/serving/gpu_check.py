"""Exercise aiaas-serving's CUDA path on a machine with a GPU (a script, not a pytest module).

    pip install -e packages/aiaas-core -e 'packages/aiaas-serving[minilm]'
    python benchmarks/serving/gpu_check.py            # CUDA (exits 2 when there is none)
    python benchmarks/serving/gpu_check.py --device cpu --count 64   # the logic, on a CPU

What it checks, printing one JSON document and exiting non-zero on any failed check:

1. MiniLM through the runtime on CUDA (fp32, pinned staging, non-blocking copies, warm-up per
   bucket) matches the CPU model (cosine >= 0.99999), and batched equals alone;
2. with ``autocast="bf16"`` and ``"fp16"``: cosine >= 0.999 against the CPU model;
3. with CUDA graphs (padding to buckets, graph batch sizes in powers of two): results match, graphs
   were captured at warm-up and replayed afterwards;
4. a real CUDA out-of-memory error above a batch size (an adapter that asks the allocator for
   more than the device has) is split, retried and lowers the model's batch limit, every request
   answered;
5. throughput on the GPU: raw length-sorted batches vs the runtime at saturation vs CUDA graphs;
6. generation: SmolLM2-135M-Instruct on the generation engine, fp32 and (CUDA) bf16 and fp16:
   the greedy answer to "What is the capital of France?" names Paris, greedy outputs in a batch
   equal the same requests alone (checked in fp32; reported for bf16/fp16, whose kernels may
   round differently by batch shape), and the engine's output tokens/s at concurrency 32 (8 on
   a CPU, on a small mix) against the bare model's decode step at that batch size (the
   decode-step limit) with its scheduling overhead as a share of a step.

``--part generation`` (or ``embeddings``) runs one half, e.g. ``python
benchmarks/serving/gpu_check.py --device cpu --part generation``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from aiaas_serving import BatchPolicy, ExecutionOptions, Runtime, SentenceEmbeddingAdapter

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world",
    "A man is playing a guitar on a stage in front of a small crowd.",
    "Batching pays on a CPU only when a batch groups similar lengths. " * 4,
    "a long input that is truncated at 256 tokens " * 40,
    "What is the capital of France?",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class OomAbove(SentenceEmbeddingAdapter):
    """MiniLM that hits a real allocator out-of-memory error for batches above ``limit``."""

    limit = 4

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["input_ids"]
        if ids.shape[0] > self.limit and ids.is_cuda:
            total = torch.cuda.get_device_properties(ids.device).total_memory
            torch.empty(total * 2, dtype=torch.uint8, device=ids.device)  # raises OOM
        return super().forward(batch)


async def served(
    adapter: Any, device: str, sentences: list[str], **options: Any
) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    policy = BatchPolicy(max_batch_size=16, max_batch_tokens=16 * 256)
    execution = ExecutionOptions(device=device, warmup=True, **options)
    async with Runtime() as runtime:
        model = await runtime.add_model("m", adapter, policy=policy, execution=execution)
        batched = await asyncio.gather(*(model.submit(s) for s in sentences))
        alone = [await model.submit(s) for s in sentences]
        info = model.info()
        graphs = runtime._models["m"].runner.graphs
    return batched, alone, {"buckets": list(info.buckets or ()), "graphs": graphs}


async def main(device: str, count: int, part: str = "all") -> int:
    checks: dict[str, Any] = {}
    failures: list[str] = []

    def check(name: str, ok: bool, **facts: Any) -> None:
        checks[name] = {"ok": ok, **facts}
        if not ok:
            failures.append(name)

    if part in ("all", "embeddings"):
        await embeddings(device, count, check, checks)
    if part in ("all", "generation"):
        await generation(device, check)
    print(json.dumps({"device": device, "checks": checks, "failed": failures}, indent=2))
    return 1 if failures else 0


async def embeddings(device: str, count: int, check: Any, checks: dict[str, Any]) -> None:
    reference_adapter = SentenceEmbeddingAdapter.minilm()
    with torch.inference_mode():
        reference = [
            reference_adapter.split(
                reference_adapter.forward(reference_adapter.collate([i], len(i))), [i]
            )[0]
            for i in (reference_adapter.prepare(s) for s in SENTENCES)
        ]

    batched, alone, facts = await served(SentenceEmbeddingAdapter.minilm(), device, SENTENCES)
    worst = min(cosine(a, b) for a, b in zip(batched, reference, strict=True))
    drift = max(float(np.abs(a - b).max()) for a, b in zip(batched, alone, strict=True))
    check("fp32_matches_cpu", worst >= 0.99999, min_cosine=worst, batched_vs_alone=drift, **facts)

    for precision in ("bf16", "fp16"):
        batched, _, facts = await served(
            SentenceEmbeddingAdapter.minilm(), device, SENTENCES, autocast=precision
        )
        worst = min(cosine(a, b) for a, b in zip(batched, reference, strict=True))
        check(f"autocast_{precision}", worst >= 0.999, min_cosine=worst, **facts)

    batched, alone, facts = await served(
        SentenceEmbeddingAdapter.minilm(), device, SENTENCES, cuda_graphs=True
    )
    worst = min(cosine(a, b) for a, b in zip(batched, reference, strict=True))
    graphs_ok = facts["graphs"] > 0 if device.startswith("cuda") else facts["graphs"] == 0
    check("cuda_graphs", worst >= 0.99999 and graphs_ok, min_cosine=worst, **facts)

    oom = OomAbove.from_directory(reference_adapter_dir())
    async with Runtime() as runtime:
        model = await runtime.add_model(
            "oom",
            oom,
            policy=BatchPolicy(max_batch_size=16, buckets=(256,)),
            execution=ExecutionOptions(device=device),
        )
        results = await asyncio.gather(*(model.submit(s) for s in SENTENCES * 3))
        limit = model.info().max_batch_size
        splits = runtime.metrics.counter(
            "aiaas_serving_batch_splits_total", model="oom", reason="oom"
        )
    expected_oom = device.startswith("cuda")
    check(
        "oom_split_and_limit",
        len(results) == len(SENTENCES) * 3
        and ((limit <= OomAbove.limit and splits > 0) if expected_oom else splits == 0),
        limit=limit,
        oom_splits=splits,
    )

    checks["throughput"] = await throughput(device, count)


QUESTION = "What is the capital of France? Answer in one sentence."
TOPICS = ("Paris", "the Moon", "rivers", "music", "winter", "libraries", "bread", "trains")


async def generation(device: str, check: Any) -> None:
    """The generation engine on SmolLM2-135M-Instruct in each precision the device runs."""
    from generation_bench_support import decode_step_limit, engine_closed_loop, make_mix

    from aiaas_serving.generation import (
        EngineOptions,
        GenerationEngine,
        SamplingParams,
        load_smollm2,
    )

    cuda = device.startswith("cuda")
    dtypes = {"fp32": torch.float32}
    if cuda:
        dtypes |= {"bf16": torch.bfloat16, "fp16": torch.float16}
    concurrency, count, prompt, output = (
        (32, 128, (64, 512), (64, 256)) if cuda else (8, 8, (32, 64), (8, 16))
    )
    for name, dtype in dtypes.items():
        model = load_smollm2(dtype=dtype, device=device)
        tokenizer = model.tokenizer

        def chat(text: str, tokenizer: Any = tokenizer) -> list[int]:
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}])
            return list(tokenizer.encode(rendered))

        greedy = SamplingParams(max_tokens=24, temperature=0.0)
        prompts = [chat(f"Write one sentence about {topic}.") for topic in TOPICS]
        requests = make_mix(model, count, prompt=prompt, output=output)
        options = EngineOptions(num_blocks=concurrency * 48 + 64, max_num_seqs=concurrency)
        async with GenerationEngine(model, options) as engine:
            answer = (await engine.generate(chat(QUESTION), greedy).result()).text
            alone = [(await engine.generate(p, greedy).result()).token_ids for p in prompts]
            results = await asyncio.gather(*(engine.generate(p, greedy).result() for p in prompts))
            same = sum(r.token_ids == a for r, a in zip(results, alone, strict=True))
            started = engine.stats()
            run, _ = await engine_closed_loop(engine, requests, concurrency)
            stats = engine.stats()
        steps = stats.steps - started.steps
        schedule = stats.schedule_seconds - started.schedule_seconds
        step_total = schedule + sum(
            getattr(stats, k) - getattr(started, k)
            for k in ("forward_seconds", "sample_seconds", "postprocess_seconds")
        )
        mean_context = sum(len(r.prompt) + r.max_tokens // 2 for r in requests) // count
        limit_s = decode_step_limit(model, concurrency, mean_context, 3)
        figures = run.figures()
        check(
            f"generation_{name}",
            "Paris" in answer and (same == len(prompts) or name != "fp32"),
            answer=answer,
            batched_equals_alone=f"{same}/{len(prompts)}",
            concurrency=concurrency,
            output_tokens_per_s=figures["output_tokens_per_s"],
            ttft_p50_s=figures["ttft_p50_s"],
            latency_p99_s=figures["latency_p99_s"],
            decode_limit_tokens_per_s=round(concurrency / limit_s, 1),
            share_of_decode_limit=round(figures["output_tokens_per_s"] * limit_s / concurrency, 3),
            schedule_share_of_step=round(schedule / step_total, 4) if step_total else 0.0,
            steps=steps,
        )
        del model, engine
        if cuda:
            torch.cuda.empty_cache()


def reference_adapter_dir() -> Any:
    from aiaas_serving import minilm_model_dir

    return minilm_model_dir()


async def throughput(device: str, count: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    words = ("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with")
    adapter = SentenceEmbeddingAdapter.minilm()
    sentences = [" ".join(rng.choice(words, size=int(rng.integers(6, 254)))) for _ in range(count)]
    items = sorted((adapter.prepare(s) for s in sentences), key=len)
    adapter.move_to(torch.device(device))
    out: dict[str, float] = {}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            for i in range(0, len(items), 64):
                chunk = items[i : i + 64]
                batch = adapter.collate(chunk, max(len(c) for c in chunk))
                on_device = {k: v.to(device) for k, v in batch.items()}
                adapter.split(adapter.forward(on_device).cpu(), chunk)
            sync()
            out["raw_length_sorted_per_s"] = round(count / (time.perf_counter() - started), 1)
    for name, options in (("runtime", {}), ("runtime_cuda_graphs", {"cuda_graphs": True})):
        policy = BatchPolicy(max_batch_size=64, max_batch_tokens=64 * 256, max_queue=count)
        execution = ExecutionOptions(device=device, warmup=True, **options)
        async with Runtime() as runtime:
            model = await runtime.add_model(name, adapter, policy=policy, execution=execution)
            for _ in range(2):
                started = time.perf_counter()
                await asyncio.gather(*(model.submit(s) for s in sentences))
                out[f"{name}_per_s"] = round(count / (time.perf_counter() - started), 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--count", type=int, default=None, help="sentences for the throughput")
    parser.add_argument("--part", choices=("all", "embeddings", "generation"), default="all")
    args = parser.parse_args()
    count = args.count or (1024 if args.device.startswith("cuda") else 64)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or pass --device cpu)")
        sys.exit(2)
    sys.exit(asyncio.run(main(args.device, count, args.part)))
