"""Workload, peers and reporting for the generation benchmarks (benchmark-only code).

- A seeded request mix: prompts of uniform random length (token ids of random English words,
  cut to the exact length) and a ``max_tokens`` per request, generated to the end (``ignore_eos``:
  every contender does the same work).
- The engine driven by closed-loop clients or Poisson arrivals, timing each request's first
  token and its end from its stream.
- ``transformers``' ``generate`` on the same weights (the model's own state dict loaded into
  ``transformers.LlamaForCausalLM``) in static batches: left-padded, greedy, every row run to the
  batch's largest ``max_tokens`` (``min_new_tokens`` keeps EOS out, as ``ignore_eos`` does for
  the engine). Its first token's time comes from a logits processor (called once per step, the
  first call right after the prefill); a request ends when its batch returns.
- The raw decode step: the model's paged forward over one decode token per sequence with a full
  cache, the engine's step without the engine.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aiaas_serving.generation import (
    EngineOptions,
    ForwardBatch,
    GenerationEngine,
    GenerationModel,
    PagedKVCache,
    SamplingParams,
)

WORDS = (  # noqa: SIM905 - a word list reads best as text
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more about up out who them some could what into than then other time only new like system "
    "model request batch serving latency throughput device memory queue token budget cluster "
    "service platform inference embedding vector search query document answer river mountain "
    "garden history music science kitchen winter library window market journey morning"
).split()


@dataclass(frozen=True)
class Request:
    prompt: tuple[int, ...]
    max_tokens: int


@dataclass
class Timing:
    """One request's times (seconds, perf_counter) and its generated tokens."""

    arrival: float
    first: float = 0.0
    end: float = 0.0
    tokens: int = 0

    @property
    def ttft(self) -> float:
        return self.first - self.arrival

    @property
    def latency(self) -> float:
        return self.end - self.arrival


@dataclass
class Run:
    """A contender's pass over some requests: wall time and per-request timings."""

    seconds: float
    timings: list[Timing] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        tokens = sum(t.tokens for t in self.timings)
        ttft = sorted(t.ttft for t in self.timings)
        latency = sorted(t.latency for t in self.timings)
        return {
            "requests": len(self.timings),
            "output_tokens": tokens,
            "seconds": round(self.seconds, 3),
            "output_tokens_per_s": round(tokens / self.seconds, 2),
            "requests_per_s": round(len(self.timings) / self.seconds, 3),
            "ttft_p50_s": round(pick(ttft, 0.50), 4),
            "ttft_p99_s": round(pick(ttft, 0.99), 4),
            "latency_p50_s": round(pick(latency, 0.50), 4),
            "latency_p99_s": round(pick(latency, 0.99), 4),
            "latency_mean_s": round(statistics.fmean(latency), 4),
        }


def pick(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def text_ids(model: GenerationModel, rng: random.Random, length: int) -> list[int]:
    """``length`` token ids of random words (the tokenizer's ids, cut to the exact length)."""
    ids: list[int] = []
    while len(ids) < length:
        words = " ".join(rng.choice(WORDS) for _ in range(max(8, length)))
        ids.extend(model.tokenizer.encode(" " + words))
    return ids[:length]


def make_mix(
    model: GenerationModel,
    count: int,
    *,
    prompt: tuple[int, int],
    output: tuple[int, int],
    seed: int = 7,
    prefix: Sequence[int] = (),
) -> list[Request]:
    """``count`` requests: prompt lengths uniform over ``prompt`` (after ``prefix``, when given),
    ``max_tokens`` uniform over ``output``; the same seed gives the same requests."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    out = []
    for _ in range(count):
        length = rng.randint(*prompt)
        tokens = rng.randint(*output)
        out.append(Request((*prefix, *text_ids(model, rng, length)), tokens))
    return out


def engine_options(requests: Sequence[Request], concurrency: int, **changes: Any) -> EngineOptions:
    """Options whose KV pool holds ``concurrency`` of the longest requests (no preemption from
    a pool sized too small: the comparison is about batching)."""
    longest = max(len(r.prompt) + r.max_tokens for r in requests)
    block = 16
    base: dict[str, Any] = {
        "block_size": block,
        "num_blocks": concurrency * -(-longest // block) + 4,
        "max_num_seqs": max(concurrency, 1),
        "max_step_tokens": max(512, concurrency),
        "max_waiting": 4096,
    }
    return EngineOptions(**{**base, **changes})


def greedy(request: Request) -> SamplingParams:
    return SamplingParams(max_tokens=request.max_tokens, temperature=0.0, ignore_eos=True)


async def _one(engine: GenerationEngine, request: Request, timing: Timing) -> list[int]:
    tokens: list[int] = []
    async for delta in engine.generate(list(request.prompt), greedy(request)):
        if delta.token_ids and not timing.first:
            timing.first = time.perf_counter()
        tokens.extend(delta.token_ids)
    timing.end = time.perf_counter()
    timing.tokens = len(tokens)
    return tokens


async def engine_closed_loop(
    engine: GenerationEngine, requests: Sequence[Request], concurrency: int
) -> tuple[Run, list[list[int]]]:
    """``concurrency`` clients, each sending its next request when the last one finished."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(requests)):
        queue.put_nowait(i)
    timings: list[Timing | None] = [None] * len(requests)
    outputs: list[list[int]] = [[] for _ in requests]

    async def client() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            timing = timings[i] = Timing(time.perf_counter())
            outputs[i] = await _one(engine, requests[i], timing)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Run(seconds, [t for t in timings if t is not None]), outputs


def poisson_arrivals(count: int, rate: float, seed: int = 11) -> list[float]:
    """Arrival offsets (seconds from the start) of a Poisson process of ``rate`` per second."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    at, out = 0.0, []
    for _ in range(count):
        at += rng.expovariate(rate)
        out.append(at)
    return out


async def engine_open_loop(
    engine: GenerationEngine, requests: Sequence[Request], arrivals: Sequence[float]
) -> Run:
    """Each request sent at its arrival offset, whatever is still running."""
    started = time.perf_counter()

    async def send(request: Request, offset: float) -> Timing:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
        timing = Timing(time.perf_counter())
        await _one(engine, request, timing)
        return timing

    timings = await asyncio.gather(*(send(r, a) for r, a in zip(requests, arrivals, strict=True)))
    return Run(time.perf_counter() - started, list(timings))


# --- transformers ---------------------------------------------------------------------------


def transformers_model(model: GenerationModel) -> Any:
    """``transformers.LlamaForCausalLM`` holding the same weights (same dtype and device)."""
    import transformers

    c = model.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=list(c.eos_token_ids) or None,
    )
    hf = transformers.LlamaForCausalLM(config).to(dtype=model.dtype)
    missing, unexpected = hf.load_state_dict(model.model.hf_state_dict(), strict=False)
    if unexpected or [m for m in missing if not m.endswith("rotary_emb.inv_freq")]:
        raise RuntimeError(f"weights did not map: missing {missing}, unexpected {unexpected}")
    return hf.to(model.device).eval().requires_grad_(False)


class _StepClock:
    """A logits processor that only notes when each generation step's logits arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def hf_generate(hf: Any, batch: Sequence[Request], pad_id: int) -> tuple[list[list[int]], float]:
    """One static batch through ``generate``: left-padded, greedy, every row to the batch's
    largest ``max_tokens``; returns each request's own tokens and the first step's time."""
    from transformers import LogitsProcessorList

    longest = max(len(r.prompt) for r in batch)
    new = max(r.max_tokens for r in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, r in enumerate(batch):
        ids[row, longest - len(r.prompt) :] = torch.tensor(r.prompt)
        mask[row, longest - len(r.prompt) :] = 1
    clock = _StepClock()
    device = hf.device
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            logits_processor=LogitsProcessorList([clock]),
        )
    generated = out[:, longest:].cpu()
    return [generated[row, : r.max_tokens].tolist() for row, r in enumerate(batch)], clock.times[0]


class StaticBatcher:
    """``transformers`` behind a static-batching server: whatever is waiting when the model is
    free (up to ``size``) runs as one ``generate`` batch; requests leave when it returns."""

    def __init__(self, hf: Any, size: int, pad_id: int) -> None:
        self.hf = hf
        self.size = size
        self.pad_id = pad_id
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="hf-generate")
        self.waiting: list[tuple[Request, Timing, asyncio.Future[list[int]]]] = []
        self.busy = False
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, request: Request, timing: Timing) -> list[int]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.waiting.append((request, timing, future))
        if not self.busy:
            self.busy = True
            self.task = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            batch, self.waiting = self.waiting[: self.size], self.waiting[self.size :]
            reqs = [r for r, _, _ in batch]
            outputs, first = await loop.run_in_executor(
                self.executor, hf_generate, self.hf, reqs, self.pad_id
            )
            end = time.perf_counter()
            for (_, timing, future), tokens in zip(batch, outputs, strict=True):
                timing.first, timing.end, timing.tokens = first, end, len(tokens)
                future.set_result(tokens)
        self.busy = False

    def close(self) -> None:
        self.executor.shutdown()


async def static_closed_loop(
    batcher: StaticBatcher, requests: Sequence[Request], concurrency: int
) -> tuple[Run, list[list[int]]]:
    """``concurrency`` clients at once against the static batcher: batches of ``concurrency``
    requests, the next batch when the last returned (what a closed loop gives it)."""
    timings = [Timing(0.0) for _ in requests]
    outputs: list[list[int]] = [[] for _ in requests]
    started = time.perf_counter()
    for start in range(0, len(requests), concurrency):
        now = time.perf_counter()
        chunk = range(start, min(len(requests), start + concurrency))
        for i in chunk:
            timings[i].arrival = now
        results = await asyncio.gather(*(batcher(requests[i], timings[i]) for i in chunk))
        for i, tokens in zip(chunk, results, strict=True):
            outputs[i] = tokens
    return Run(time.perf_counter() - started, timings), outputs


async def static_open_loop(
    batcher: StaticBatcher, requests: Sequence[Request], arrivals: Sequence[float]
) -> Run:
    started = time.perf_counter()

    async def send(request: Request, offset: float) -> Timing:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))
        timing = Timing(time.perf_counter())
        await batcher(request, timing)
        return timing

    timings = await asyncio.gather(*(send(r, a) for r, a in zip(requests, arrivals, strict=True)))
    return Run(time.perf_counter() - started, list(timings))


# --- the raw decode step ------------------------------------------------------------------------


def decode_step_limit(
    model: GenerationModel, batch_size: int, context: int, steps: int, *, block_size: int = 16
) -> float:
    """Seconds per decode step of the bare model: ``batch_size`` sequences of ``context``
    cached tokens, one new token each, through the same paged forward the engine calls (best
    of ``steps`` after one warm-up step), on a worker thread of its own, as the engine runs its
    forward (on this shared 2-core machine the same forward timed on the main thread, beside
    the event loop, ran 2-3x slower)."""
    with ThreadPoolExecutor(1, thread_name_prefix="decode-limit") as executor:
        return executor.submit(
            _decode_step_limit, model, batch_size, context, steps, block_size
        ).result()


def _decode_step_limit(
    model: GenerationModel, batch_size: int, context: int, steps: int, block_size: int
) -> float:
    per_seq = -(-(context + 1) // block_size)
    cache = PagedKVCache(
        model.config,
        num_blocks=batch_size * per_seq,
        block_size=block_size,
        dtype=model.dtype,
        device=model.device,
    )
    tables = torch.arange(batch_size * per_seq, dtype=torch.long).reshape(batch_size, per_seq)
    positions = torch.full((batch_size,), context, dtype=torch.long)
    slots = tables[:, context // block_size] * block_size + context % block_size
    rng = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch_size,), generator=rng)
    device = model.device
    batch = ForwardBatch(
        input_ids=ids.to(device),
        positions=positions.to(device),
        slot_mapping=slots.to(device),
        query_start=tuple(range(batch_size + 1)),
        context_lens=(context + 1,) * batch_size,
        block_tables=tables.to(device),
        logits_indices=torch.arange(batch_size).to(device),
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = float("inf")
    with torch.inference_mode():
        for i in range(steps + 1):
            sync()
            began = time.perf_counter()
            logits = model.model(batch, cache)
            logits.argmax(-1).cpu()
            sync()
            if i:
                best = min(best, time.perf_counter() - began)
    return best


def plot_generation_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Latency (p50 and p99 request latency, p50 TTFT) against output tokens/s, one line per
    contender, points labelled by concurrency or arrival rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("latency_p50_s", "latency_p99_s", "ttft_p50_s")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharex=True)
    for name, points in curves.items():  # in load order: concurrency or arrival rate
        if not points:
            continue
        xs = [p["output_tokens_per_s"] for p in points]
        for ax, key in zip(axes, keys, strict=True):
            ys = [p[key] for p in points]
            ax.plot(xs, ys, marker="o", label=name)
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.annotate(str(p.get("label", "")), (x, y), fontsize=7)
    for ax, key in zip(axes, keys, strict=True):
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(key.replace("_s", " (s)").replace("_", " "))
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct generation: latency vs throughput")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
