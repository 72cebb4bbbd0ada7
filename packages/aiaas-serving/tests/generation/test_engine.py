"""The async generation engine on tiny random Llama models: outputs, stops, errors, metrics."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import attrs
import pytest
import torch
from engine_kit import EOS, byte_tokenizer, greedy_alone, one_thread, tiny_model
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiaas_serving import (
    Cancelled,
    DeadlineExceeded,
    InMemoryMetrics,
    InputTooLarge,
    InvalidInput,
    ModelError,
    Overloaded,
    ShuttingDown,
)
from aiaas_serving.generation import (
    ContextLengthExceeded,
    EngineOptions,
    GenerationDelta,
    GenerationEngine,
    GenerationModel,
    GenerationStream,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=10)
SMALL = EngineOptions(num_blocks=64, block_size=4, max_num_seqs=8, max_step_tokens=16)


@pytest.fixture(scope="module")
def tiny() -> GenerationModel:
    return tiny_model(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


async def _drain(stream: GenerationStream) -> list[GenerationDelta]:
    return [delta async for delta in stream]


async def _until_free(engine: GenerationEngine) -> None:
    for _ in range(200):
        if engine.num_free_blocks == engine.num_blocks and not engine.num_running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"blocks still held: {engine.num_free_blocks}/{engine.num_blocks}")


async def test_concurrent_greedy_requests_match_each_alone(tiny: GenerationModel) -> None:
    prompts = [[1, 2, 3, 4, 5], list(range(10, 45)), [7, 7, 7], list(range(100, 120))]
    metrics = InMemoryMetrics()
    async with GenerationEngine(tiny, SMALL, metrics=metrics) as engine:
        streams = [engine.generate(p, GREEDY) for p in prompts]
        results = await asyncio.gather(*(s.result() for s in streams))
        await _until_free(engine)
        stats = engine.stats()
    for prompt, result in zip(prompts, results, strict=True):
        assert list(result.token_ids) == greedy_alone(tiny, prompt, 10)
        assert result.finish_reason == "length"
        assert result.prompt_tokens == len(prompt)
        assert result.completion_tokens == 10
        assert result.text == tiny.tokenizer.decode(result.token_ids)
        assert result.logprobs is None
    # the 35-token prompt was prefilled in chunks of the 16-token budget
    assert stats.steps >= 12
    assert stats.generated_tokens == 40
    assert stats.tokens == sum(map(len, prompts)) + 4 * 9
    labels = {"model": "tiny"}
    ttft = metrics.histogram("aiaas_serving_generation_time_to_first_token_seconds", **labels)
    assert ttft is not None
    assert ttft.count == 4
    itl = metrics.histogram("aiaas_serving_generation_inter_token_seconds", **labels)
    assert itl is not None
    assert itl.count == 36
    assert metrics.counter("aiaas_serving_generation_tokens_total", **labels) == 40
    assert metrics.counter("aiaas_serving_generation_prompt_tokens_total", **labels) == 63
    assert metrics.counter("aiaas_serving_requests_total", model="tiny", outcome="ok") == 4
    assert metrics.gauge("aiaas_serving_generation_kv_blocks_free", **labels) == 64
    assert metrics.gauge("aiaas_serving_generation_kv_blocks_used", **labels) == 0
    assert metrics.gauge("aiaas_serving_generation_running_sequences", **labels) == 0
    assert metrics.gauge("aiaas_serving_generation_waiting_sequences", **labels) == 0


async def test_stream_deltas_add_up_to_the_result(tiny: GenerationModel) -> None:
    async with GenerationEngine(tiny, SMALL) as engine:
        stream = engine.generate([40, 41, 42], replace(GREEDY, logprobs=2))
        deltas = await _drain(stream)
        result = await stream.result()
        assert [d async for d in stream] == []  # iterating a finished stream ends again
    assert tuple(t for d in deltas for t in d.token_ids) == result.token_ids
    assert "".join(d.text for d in deltas) == result.text
    assert [d.finish_reason for d in deltas] == [None] * 9 + ["length"]
    assert result.logprobs is not None
    assert len(result.logprobs) == 10
    for delta, logprob in zip(deltas, result.logprobs, strict=True):
        assert delta.logprobs == (logprob,)
        assert logprob.token_id == delta.token_ids[0]
        assert len(logprob.top) == 2
        assert logprob.top[0][0] == logprob.token_id  # greedy: the chosen one is the likeliest
        assert logprob.logprob <= 0.0


async def test_stop_strings_are_never_emitted(tiny: GenerationModel) -> None:
    prompt = [65, 66, 67]
    reference = greedy_alone(tiny, prompt, 10)
    text = tiny.tokenizer.decode(reference)
    stop = text[4:6]
    expected = text[: text.find(stop)]
    async with GenerationEngine(tiny, SMALL) as engine:
        stream = engine.generate(prompt, replace(GREEDY, stop=(stop, "never-there")))
        deltas = await _drain(stream)
        result = await stream.result()
    assert result.finish_reason == "stop"
    assert result.text == expected
    assert "".join(d.text for d in deltas) == expected
    assert all(stop not in d.text for d in deltas)
    assert deltas[-1].finish_reason == "stop"
    assert list(result.token_ids) == reference[: len(result.token_ids)]


async def test_a_held_back_stop_prefix_is_released_at_the_end(tiny: GenerationModel) -> None:
    prompt = [65, 66, 67]
    reference = greedy_alone(tiny, prompt, 10)
    text = tiny.tokenizer.decode(reference)
    # a stop string that starts like the completion's end but goes on: it never matches
    stop = text[-1] + "\x00never"
    async with GenerationEngine(tiny, SMALL) as engine:
        result = await engine.generate(prompt, replace(GREEDY, stop=(stop,))).result()
    assert result.finish_reason == "length"
    assert result.text == text


async def test_stop_token_ids_and_eos_end_with_stop(tiny: GenerationModel) -> None:
    prompt = [30, 31, 32, 33]
    reference = greedy_alone(tiny, prompt, 10)
    async with GenerationEngine(tiny, SMALL) as engine:
        result = await engine.generate(
            prompt, replace(GREEDY, stop_token_ids=(reference[2],))
        ).result()
    assert result.finish_reason == "stop"
    assert list(result.token_ids) == reference[:3]
    assert result.text == tiny.tokenizer.decode(reference[:2])

    ends = replace(tiny, tokenizer=byte_tokenizer(eos_token_ids=(reference[3],)))
    async with GenerationEngine(ends, SMALL) as engine:
        stopped = await engine.generate(prompt, GREEDY).result()
        ignored = await engine.generate(prompt, replace(GREEDY, ignore_eos=True)).result()
    assert stopped.finish_reason == "stop"
    assert list(stopped.token_ids) == reference[:4]
    assert stopped.text == tiny.tokenizer.decode(reference[:3])
    assert ignored.finish_reason == "length"
    assert list(ignored.token_ids) == reference


async def test_max_tokens_none_fills_the_context(tiny: GenerationModel) -> None:
    options = attrs.evolve(SMALL, max_model_len=24)
    async with GenerationEngine(tiny, options) as engine:
        result = await engine.generate(
            list(range(20)), SamplingParams(temperature=0.0, max_tokens=None)
        ).result()
    assert result.finish_reason == "length"
    assert result.completion_tokens == 4
    # a KV pool smaller than the context bounds what max_tokens=None may generate
    async with GenerationEngine(tiny, attrs.evolve(SMALL, num_blocks=6)) as engine:
        bounded = await engine.generate(
            list(range(20)), SamplingParams(temperature=0.0, max_tokens=None)
        ).result()
        with pytest.raises(InputTooLarge, match="whole pool"):
            engine.generate(list(range(25)), SamplingParams(max_tokens=None))
    assert bounded.completion_tokens == 4


async def test_context_length_is_checked_at_generate(tiny: GenerationModel) -> None:
    metrics = InMemoryMetrics()
    async with GenerationEngine(
        tiny, attrs.evolve(SMALL, max_model_len=32), metrics=metrics
    ) as engine:
        with pytest.raises(ContextLengthExceeded) as info:
            engine.generate(list(range(32)), GREEDY)
        error = info.value
        assert error.code == "CONTEXT_LENGTH_EXCEEDED"
        assert error.status == 400
        assert error.limit == 32
        assert "maximum context length is 32 tokens" in str(error)
        assert isinstance(error, InputTooLarge)
        with pytest.raises(ContextLengthExceeded, match=r"requested 33 tokens \(25 in the prompt"):
            engine.generate(list(range(25)), SamplingParams(max_tokens=8))
        engine.generate(list(range(24)), SamplingParams(max_tokens=8)).cancel()  # exactly fits
    assert (
        metrics.counter("aiaas_serving_rejections_total", model="tiny", reason="input_too_large")
        == 2
    )


async def test_a_request_larger_than_the_whole_pool_is_refused(tiny: GenerationModel) -> None:
    async with GenerationEngine(tiny, attrs.evolve(SMALL, num_blocks=3)) as engine:
        with pytest.raises(InputTooLarge, match="more than the engine's whole pool") as info:
            engine.generate(list(range(8)), SamplingParams(max_tokens=5))
        assert info.value.code == "KV_CACHE_EXCEEDED"
        result = await engine.generate(list(range(8)), SamplingParams(max_tokens=4)).result()
        assert result.completion_tokens == 4


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([], "at least one token"),
        ([1, 260], r"token ids must be in \[0, 260\)"),
        ([-1], r"token ids must be in \[0, 260\)"),
        ("hello", "not text"),
        ([1.5], "integer token ids"),
        ([None], "integer token ids"),
    ],
)
async def test_bad_prompts_are_refused(tiny: GenerationModel, prompt: Any, message: str) -> None:
    async with GenerationEngine(tiny, SMALL) as engine:
        with pytest.raises(InvalidInput, match=message):
            engine.generate(prompt, GREEDY)
        with pytest.raises(TypeError, match="priority must be an int"):
            engine.generate([1], GREEDY, priority=1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="params must be a SamplingParams"):
            engine.generate([1], {"max_tokens": 3})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="either deadline"):
            engine.generate([1], GREEDY, deadline=1.0, timeout=1.0)


def test_options_are_validated(tiny: GenerationModel) -> None:
    with pytest.raises(ValueError, match="not both"):
        EngineOptions(num_blocks=4, kv_cache_bytes=1 << 20)
    with pytest.raises(ValueError, match="max_step_tokens"):
        EngineOptions(max_num_seqs=8, max_step_tokens=4)
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        EngineOptions(block_size=0)
    with pytest.raises(ValueError, match="aging must be a finite number"):
        EngineOptions(aging=math.inf)
    with pytest.raises(ValueError, match="exceeds the model's context length"):
        GenerationEngine(tiny, EngineOptions(max_model_len=1000))
    engine = GenerationEngine(tiny, EngineOptions(kv_cache_bytes=1 << 20, block_size=8))
    per_block = 2 * 2 * 8 * 2 * 8 * 4
    assert engine.num_blocks == (1 << 20) // per_block
    assert engine.max_model_len == 128


async def test_overloaded_when_the_waiting_queue_is_full(tiny: GenerationModel) -> None:
    metrics = InMemoryMetrics()
    options = attrs.evolve(SMALL, max_waiting=2)
    async with GenerationEngine(tiny, options, metrics=metrics) as engine:
        first = engine.generate([1, 2], GREEDY)
        second = engine.generate([3, 4], GREEDY)
        with pytest.raises(Overloaded, match="waiting queue is full") as info:
            engine.generate([5, 6], GREEDY)
        assert info.value.retry_after is not None
        assert info.value.status == 429
        await first.result()
        await second.result()
        later = await engine.generate([5, 6], GREEDY).result()  # room again
        assert later.completion_tokens == 10
    assert metrics.counter("aiaas_serving_rejections_total", model="tiny", reason="overloaded") == 1


async def test_deadlines_fail_waiting_and_running_requests(tiny: GenerationModel) -> None:
    metrics = InMemoryMetrics()
    options = attrs.evolve(SMALL, max_num_seqs=1, max_step_tokens=8)
    async with GenerationEngine(tiny, options, metrics=metrics) as engine:
        runner = engine.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=100))
        waiter = engine.generate([4, 5], GREEDY, timeout=0.0)
        with pytest.raises(DeadlineExceeded, match="deadline passed"):
            await waiter.result()
        with pytest.raises(DeadlineExceeded):
            await _drain(waiter)
        assert (await runner.result()).completion_tokens == 100
        slow = engine.generate(
            [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=120), timeout=0.005
        )
        deltas: list[GenerationDelta] = []

        async def consume() -> None:
            async for delta in slow:
                deltas.append(delta)  # noqa: PERF401 -- kept when the deadline interrupts

        with pytest.raises(DeadlineExceeded):
            await consume()
        assert len(deltas) < 120
        await _until_free(engine)
        past = engine.generate([9], GREEDY, deadline=time.monotonic() - 1.0)
        with pytest.raises(DeadlineExceeded):
            await past.result()
    assert (
        metrics.counter("aiaas_serving_requests_total", model="tiny", outcome="deadline_exceeded")
        == 3
    )


async def test_cancelling_mid_stream_frees_the_blocks(tiny: GenerationModel) -> None:
    async with GenerationEngine(tiny, SMALL) as engine:
        other = engine.generate([50, 51, 52], GREEDY)
        stream = engine.generate(list(range(30)), SamplingParams(temperature=0.0, max_tokens=80))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                break
        assert engine.num_free_blocks < engine.num_blocks
        assert stream.cancel()
        assert not stream.cancel()  # one outcome only
        with pytest.raises(Cancelled):
            await stream.result()
        with pytest.raises(Cancelled):
            await _drain(stream)
        assert stream.done()
        assert list((await other.result()).token_ids) == greedy_alone(tiny, [50, 51, 52], 10)
        await _until_free(engine)


async def test_a_dropped_stream_is_cancelled(tiny: GenerationModel) -> None:
    metrics = InMemoryMetrics()
    async with GenerationEngine(tiny, SMALL, metrics=metrics) as engine:
        stream = engine.generate(list(range(30)), SamplingParams(temperature=0.0, max_tokens=80))
        async for _ in stream:
            break
        del stream
        gc.collect()
        await _until_free(engine)
        async with engine.generate([1, 2], SamplingParams(max_tokens=80)) as scoped:
            async for _ in scoped:
                break
        await _until_free(engine)
    assert metrics.counter("aiaas_serving_requests_total", model="tiny", outcome="cancelled") == 2


async def test_cancelling_the_awaiting_task_cancels_the_request(tiny: GenerationModel) -> None:
    async with GenerationEngine(tiny, SMALL) as engine:
        stream = engine.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=100))
        task = asyncio.ensure_future(stream.result())
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.done()
        await _until_free(engine)
        iterating = engine.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=120))
        consumer = asyncio.ensure_future(_drain(iterating))
        await asyncio.sleep(0.001)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        with pytest.raises(Cancelled):
            await iterating.result()


async def test_aclose_drains_every_accepted_request(tiny: GenerationModel) -> None:
    engine = GenerationEngine(tiny, SMALL)
    with pytest.raises(ShuttingDown, match="not running"):
        engine.generate([1], GREEDY)
    await engine.start()
    await engine.start()  # idempotent
    streams = [engine.generate([i, i + 1], GREEDY) for i in range(5)]
    closing = asyncio.ensure_future(engine.aclose())
    await asyncio.sleep(0)
    assert not engine.accepting
    with pytest.raises(ShuttingDown):
        engine.generate([1], GREEDY)
    await closing
    results = [await s.result() for s in streams]
    assert all(r.completion_tokens == 10 for r in results)
    await engine.aclose()  # again: no-op
    with pytest.raises(ShuttingDown, match="closed"):
        await engine.start()


async def test_aclose_with_grace_fails_what_is_left(tiny: GenerationModel) -> None:
    engine = GenerationEngine(tiny, attrs.evolve(SMALL, max_model_len=128))
    await engine.start()
    stream = engine.generate([1, 2], SamplingParams(temperature=0.0, max_tokens=120))
    await engine.aclose(grace=0.0)
    with pytest.raises(ShuttingDown, match="shut down before"):
        await stream.result()


class FlakyForward:
    """A real model whose forward raises on the calls listed in ``fail_on`` (fault injection)."""

    def __init__(self, model: torch.nn.Module, fail_on: set[int]) -> None:
        self.model = model
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self, batch: Any, cache: Any) -> torch.Tensor:
        self.calls += 1
        if self.calls in self.fail_on:
            raise RuntimeError("injected fault: device lost")
        return self.model(batch, cache)  # type: ignore[no-any-return]


async def test_a_failing_forward_fails_its_step_and_serving_goes_on(
    tiny: GenerationModel, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = replace(tiny, model=FlakyForward(tiny.model, {2}))  # type: ignore[arg-type]
    metrics = InMemoryMetrics()
    async with GenerationEngine(flaky, SMALL, metrics=metrics) as engine:
        first = engine.generate([1, 2, 3], GREEDY)
        await asyncio.sleep(0)
        with pytest.raises(ModelError, match="the model failed while generating") as info:
            await first.result()
        assert "injected fault" not in str(info.value)  # the model's text stays server-side
        assert isinstance(info.value.__cause__, RuntimeError)
        await _until_free(engine)
        again = await engine.generate([1, 2, 3], GREEDY).result()
    assert list(again.token_ids) == greedy_alone(tiny, [1, 2, 3], 10)
    assert "the forward of model 'tiny' failed" in caplog.text
    assert metrics.counter("aiaas_serving_requests_total", model="tiny", outcome="model_error") == 1


class PoisonRows:
    """A real model whose logits turn NaN for sequences whose last input token is 255."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, batch: Any, cache: Any) -> torch.Tensor:
        logits: torch.Tensor = self.model(batch, cache)
        poisoned = batch.input_ids[batch.logits_indices] == 255
        return logits.masked_fill(poisoned.unsqueeze(1), math.nan)


async def test_a_request_whose_sampling_fails_fails_alone(tiny: GenerationModel) -> None:
    poison = replace(tiny, model=PoisonRows(tiny.model))  # type: ignore[arg-type]
    async with GenerationEngine(poison, SMALL) as engine:
        bad = engine.generate([1, 255], SamplingParams(max_tokens=5, seed=1))
        good = engine.generate([1, 2], replace(GREEDY, max_tokens=5))
        good_sampled = engine.generate([3, 4], SamplingParams(max_tokens=5, seed=3))
        with pytest.raises(ModelError, match="failed while sampling"):
            await bad.result()
        assert list((await good.result()).token_ids) == greedy_alone(tiny, [1, 2], 5)
        assert (await good_sampled.result()).completion_tokens == 5
        await _until_free(engine)


class FailingDetokenizer:
    """The real detokenizer, raising on one token id (fault injection)."""

    def __init__(self, inner: Any, bad: int) -> None:
        self.inner = inner
        self.bad = bad

    def push(self, token_id: int) -> str:
        if token_id == self.bad:
            raise UnicodeError("injected fault: undecodable token")
        return str(self.inner.push(token_id))

    def flush(self) -> str:
        return str(self.inner.flush())


class TokenizerFailingOn:
    def __init__(self, inner: Any, bad: int) -> None:
        self.inner = inner
        self.bad = bad
        self.eos_token_ids = inner.eos_token_ids

    def detokenizer(self) -> FailingDetokenizer:
        return FailingDetokenizer(self.inner.detokenizer(), self.bad)


async def test_a_request_whose_text_cannot_be_decoded_fails_alone(tiny: GenerationModel) -> None:
    bad = greedy_alone(tiny, [1, 2, 3], 3)[2]
    broken = replace(tiny, tokenizer=TokenizerFailingOn(tiny.tokenizer, bad))  # type: ignore[arg-type]
    async with GenerationEngine(broken, SMALL) as engine:
        failing = engine.generate([1, 2, 3], GREEDY)
        others = [engine.generate([i, i], replace(GREEDY, max_tokens=3)) for i in (40, 41)]
        with pytest.raises(ModelError, match="failed while decoding its output"):
            await failing.result()
        for stream in others:
            assert (await stream.result()).completion_tokens == 3
        await _until_free(engine)


async def test_prefix_caching_reuses_a_shared_prompt(tiny: GenerationModel) -> None:
    system = list(range(60, 100))  # 40 shared tokens
    metrics = InMemoryMetrics()
    async with GenerationEngine(tiny, SMALL, metrics=metrics) as engine:
        first = await engine.generate([*system, 1], GREEDY).result()
        second = await engine.generate([*system, 2], GREEDY).result()
        stats = engine.stats()
    assert first.cached_prompt_tokens == 0
    assert second.cached_prompt_tokens == 40
    assert list(second.token_ids) == greedy_alone(tiny, [*system, 2], 10)
    assert stats.prefix_cache_hits == 40
    assert metrics.counter("aiaas_serving_generation_prefix_cache_hits_total", model="tiny") == 40
    assert (
        metrics.counter("aiaas_serving_generation_prefix_cache_queries_total", model="tiny") == 82
    )
    async with GenerationEngine(tiny, attrs.evolve(SMALL, prefix_caching=False)) as engine:
        await engine.generate([*system, 1], GREEDY).result()
        uncached = await engine.generate([*system, 2], GREEDY).result()
    assert uncached.cached_prompt_tokens == 0
    assert uncached.token_ids == second.token_ids


async def test_a_seed_gives_the_same_tokens_alone_and_in_a_batch(tiny: GenerationModel) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, seed=1234, max_tokens=12)
    async with GenerationEngine(tiny, SMALL) as engine:
        alone = await engine.generate([5, 6, 7], params).result()
        crowd = [
            # unseeded neighbours (different draws every run); ignore_eos keeps them running
            engine.generate(
                [i, i + 3], SamplingParams(temperature=0.8, max_tokens=12, ignore_eos=True)
            )
            for i in range(5)
        ]
        mine = engine.generate([5, 6, 7], params)
        others = await asyncio.gather(*(s.result() for s in crowd))
        batched = await mine.result()
        different = await engine.generate([5, 6, 7], replace(params, seed=99)).result()
    assert batched.token_ids == alone.token_ids
    assert different.token_ids != alone.token_ids
    assert all(r.completion_tokens == 12 for r in others)


async def test_priorities_order_admission(tiny: GenerationModel) -> None:
    options = attrs.evolve(SMALL, max_num_seqs=1, max_step_tokens=8, aging=0.0)
    finished: list[str] = []
    async with GenerationEngine(tiny, options) as engine:

        async def run(name: str, priority: int) -> None:
            await engine.generate([1, 2], GREEDY, priority=priority).result()
            finished.append(name)

        await asyncio.gather(run("low", 0), run("high", 5), run("mid", 2))
    assert finished == ["high", "mid", "low"]


async def test_preemption_storm_keeps_every_stream_exact(tiny: GenerationModel) -> None:
    metrics = InMemoryMetrics()
    options = EngineOptions(num_blocks=12, block_size=4, max_num_seqs=6, max_step_tokens=16)
    prompts = [list(range(i * 7, i * 7 + 9)) for i in range(6)]
    async with GenerationEngine(tiny, options, metrics=metrics) as engine:
        streams = [
            engine.generate(p, SamplingParams(temperature=0.0, max_tokens=30)) for p in prompts
        ]
        outputs = await asyncio.gather(*(_drain(s) for s in streams))
        stats = engine.stats()
        await _until_free(engine)
    assert stats.preemptions > 0
    assert metrics.counter("aiaas_serving_generation_preemptions_total", model="tiny") > 0
    for prompt, deltas in zip(prompts, outputs, strict=True):
        tokens = [t for d in deltas for t in d.token_ids]
        assert tokens == greedy_alone(tiny, prompt, 30)


async def test_each_request_gets_a_span_with_step_events(tiny: GenerationModel) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    options = attrs.evolve(SMALL, max_step_tokens=8)
    async with GenerationEngine(tiny, options, tracer=tracer) as engine:
        await engine.generate(list(range(20)), GREEDY, request_id="req-1").result()
        stream = engine.generate([1], GREEDY)
        stream.cancel()
        with pytest.raises(Cancelled):
            await stream.result()
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    ok = next(
        s for s in spans if s.attributes and s.attributes["aiaas_serving.request_id"] == "req-1"
    )
    assert ok.attributes is not None
    assert ok.attributes["aiaas_serving.generation.completion_tokens"] == 10
    assert ok.attributes["aiaas_serving.generation.finish_reason"] == "length"
    events = [e.name for e in ok.events]
    assert events[0] == "admitted"
    assert events.count("prefill") == 2  # 20 prompt tokens in chunks of 8: 8, 8, then 4
    assert "first_token" in events
    failed = next(s for s in spans if s is not ok)
    assert not failed.status.is_ok
    provider.shutdown()


def test_engine_is_importable_without_touching_the_top_level_lazily() -> None:
    from aiaas_serving import generation

    for name in (
        "BlockManager",
        "EngineOptions",
        "GenerationDelta",
        "GenerationEngine",
        "GenerationResult",
        "GenerationStream",
        "SamplingParams",
        "Scheduler",
    ):
        assert name in generation.__all__
    assert generation.__all__ == sorted(generation.__all__)


async def test_eos_text_is_never_emitted(tiny: GenerationModel) -> None:
    first = greedy_alone(tiny, [9, 9], 1)[0]
    model = replace(tiny, tokenizer=byte_tokenizer(eos_token_ids=(first,)))
    async with GenerationEngine(model, SMALL) as engine:
        result = await engine.generate([9, 9], GREEDY).result()
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 1
    assert result.text == ""
    assert EOS == 256
