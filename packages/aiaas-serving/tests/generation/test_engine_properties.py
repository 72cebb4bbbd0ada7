"""Engine properties under random load: exact streams, no leak, reproducible seeds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from engine_kit import greedy_alone, one_thread, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiaas_serving import Cancelled
from aiaas_serving.generation import (
    EngineOptions,
    GenerationEngine,
    GenerationModel,
    SamplingParams,
)

MAX_TOKENS = 12
_TINY = tiny_model(1)
_REFERENCE: dict[tuple[int, ...], list[int]] = {}

PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _reference(prompt: list[int]) -> list[int]:
    key = tuple(prompt)
    if key not in _REFERENCE:
        _REFERENCE[key] = greedy_alone(_TINY, prompt, MAX_TOKENS)
    return _REFERENCE[key]


_prompt = st.builds(
    lambda base, length, tail: [(base + i) % 200 for i in range(length)] + tail,
    st.sampled_from([0, 0, 50]),  # often the same start: shared prefixes
    st.integers(1, 30),
    st.lists(st.integers(0, 255), max_size=4),
)
_request = st.fixed_dictionaries(
    {
        "prompt": _prompt,
        "max_tokens": st.integers(1, MAX_TOKENS),
        "priority": st.integers(0, 2),
        "delay": st.sampled_from([0, 0, 0, 1, 3]),  # event loop turns before it arrives
        "cancel_after": st.one_of(st.none(), st.integers(0, 6)),  # deltas, then cancel
    }
)


async def _run(
    tiny: GenerationModel, options: EngineOptions, requests: list[dict[str, object]]
) -> tuple[GenerationEngine, list[tuple[list[int], object]]]:
    engine = GenerationEngine(tiny, options)
    async with engine:

        async def one(spec: dict[str, object]) -> tuple[list[int], object]:
            for _ in range(int(spec["delay"])):  # type: ignore[call-overload]
                await asyncio.sleep(0.001)
            params = SamplingParams(temperature=0.0, max_tokens=int(spec["max_tokens"]))  # type: ignore[call-overload]
            stream = engine.generate(spec["prompt"], params, priority=int(spec["priority"]))  # type: ignore[arg-type, call-overload]
            tokens: list[int] = []
            cancel_after = spec["cancel_after"]
            try:
                async for delta in stream:
                    tokens.extend(delta.token_ids)
                    if cancel_after is not None and len(tokens) >= int(cancel_after):  # type: ignore[call-overload]
                        stream.cancel()
                outcome: object = await stream.result()
            except Cancelled as exc:
                outcome = exc
            return tokens, outcome

        outcomes = await asyncio.gather(*(one(spec) for spec in requests))
        for _ in range(200):  # cancelled ones free their blocks at the next step
            if engine.num_free_blocks == engine.num_blocks:
                break
            await asyncio.sleep(0.005)
    return engine, list(outcomes)


@PROPERTY
@given(
    requests=st.lists(_request, min_size=1, max_size=8),
    block_size=st.sampled_from([1, 2, 4, 8]),
    spare_blocks=st.integers(0, 3),
    max_num_seqs=st.integers(2, 6),
    budget_extra=st.integers(0, 24),
)
def test_streams_are_exact_and_nothing_leaks_under_any_load(
    requests: list[dict[str, object]],
    block_size: int,
    spare_blocks: int,
    max_num_seqs: int,
    budget_extra: int,
) -> None:
    # a pool just large enough for the longest request alone: preemption storms
    longest = max(len(r["prompt"]) + int(r["max_tokens"]) for r in requests)  # type: ignore[arg-type, call-overload]
    options = EngineOptions(
        num_blocks=-(-longest // block_size) + spare_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_step_tokens=max_num_seqs + budget_extra,
    )
    engine, outcomes = asyncio.run(_run(_TINY, options, requests))
    for spec, (tokens, outcome) in zip(requests, outcomes, strict=True):
        want = _reference(spec["prompt"])[: int(spec["max_tokens"])]  # type: ignore[arg-type, call-overload]
        if isinstance(outcome, Cancelled):
            assert spec["cancel_after"] is not None
            assert tokens == want[: len(tokens)]  # never a lost or duplicated token
        else:
            assert tokens == want
            assert list(outcome.token_ids) == want  # type: ignore[attr-defined]
    assert engine.num_free_blocks == engine.num_blocks
    assert engine.num_running == 0
    assert engine.num_waiting == 0
    engine.blocks.check_invariants()


@PROPERTY
@given(
    seeds=st.lists(st.integers(0, 2**31), min_size=1, max_size=4, unique=True),
    crowd=st.integers(0, 4),
    temperature=st.sampled_from([0.7, 1.0, 1.3]),
)
def test_seeded_requests_repeat_their_tokens_in_any_batch(
    seeds: list[int], crowd: int, temperature: float
) -> None:
    options = EngineOptions(num_blocks=128, block_size=4, max_num_seqs=8, max_step_tokens=32)
    prompt = [10, 20, 30, 40]

    def params(seed: int | None) -> SamplingParams:
        return SamplingParams(temperature=temperature, top_p=0.9, seed=seed, max_tokens=8)

    async def alone(seed: int) -> tuple[int, ...]:
        async with GenerationEngine(_TINY, options) as engine:
            return (await engine.generate(prompt, params(seed)).result()).token_ids

    async def together() -> list[tuple[int, ...]]:
        async with GenerationEngine(_TINY, options) as engine:
            noise = [engine.generate([i + 1, i + 2], params(None)) for i in range(crowd)]
            mine = [engine.generate(prompt, params(seed)) for seed in seeds]
            await asyncio.gather(*(s.result() for s in noise))
            return [(await s.result()).token_ids for s in mine]

    expected = [asyncio.run(alone(seed)) for seed in seeds]
    assert asyncio.run(together()) == expected
