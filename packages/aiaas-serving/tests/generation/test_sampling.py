"""Sampling parameters (validation) and the batched sampler."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_serving import InvalidInput
from aiaas_serving.generation import InvalidSamplingParams, SamplingParams
from aiaas_serving.generation._sampling import sample


def _gen(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"max_tokens": 0}, "max_tokens", "max_tokens must be an integer >= 1"),
        ({"max_tokens": 2.5}, "max_tokens", "max_tokens must be an integer >= 1"),
        ({"max_tokens": True}, "max_tokens", "max_tokens must be an integer >= 1"),
        ({"temperature": -0.1}, "temperature", "temperature must be a number from 0 to 2"),
        ({"temperature": 2.01}, "temperature", "temperature must be a number from 0 to 2"),
        ({"temperature": math.nan}, "temperature", "temperature must be a number from 0 to 2"),
        ({"temperature": "1"}, "temperature", "temperature must be a number from 0 to 2"),
        ({"top_p": 0.0}, "top_p", r"top_p must be a number in \(0, 1\]"),
        ({"top_p": 1.5}, "top_p", r"top_p must be a number in \(0, 1\]"),
        ({"top_k": -1}, "top_k", "top_k must be an integer >= 0"),
        ({"seed": 2**64}, "seed", "seed must be an integer"),
        ({"seed": "7"}, "seed", "seed must be an integer"),
        ({"stop": ("a", "b", "c", "d", "e")}, "stop", "stop takes at most 4 strings"),
        ({"stop": ("",)}, "stop", "stop strings must not be empty"),
        ({"stop": (1,)}, "stop", "stop must be a string or a sequence of strings"),
        ({"stop_token_ids": (-1,)}, "stop_token_ids", "stop_token_ids must be a sequence"),
        ({"ignore_eos": 1}, "ignore_eos", "ignore_eos must be True or False"),
        ({"logprobs": 21}, "logprobs", "logprobs must be None or an integer from 0 to 20"),
        ({"logprobs": -1}, "logprobs", "logprobs must be None or an integer from 0 to 20"),
    ],
)
def test_invalid_parameters_are_refused_with_the_param_named(
    kwargs: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(InvalidSamplingParams, match=message) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
    assert info.value.code == "SAMPLING_PARAMS_INVALID"
    assert isinstance(info.value, InvalidInput)


def test_defaults_and_normalisation() -> None:
    params = SamplingParams(stop="END", stop_token_ids=[3, 4], temperature=1)  # type: ignore[arg-type]
    assert params.stop == ("END",)
    assert params.stop_token_ids == (3, 4)
    assert isinstance(params.temperature, float)
    assert not params.greedy
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams(max_tokens=None).max_tokens is None
    with pytest.raises(AttributeError):
        params.top_k = 3  # type: ignore[misc]


def test_stop_helpers() -> None:
    params = SamplingParams(stop=("###", "\nUser:"))
    assert params.find_stop("abc ### d \nUser:") == 4
    assert params.find_stop("nothing") == -1
    assert params.held_back("hello #") == 1
    assert params.held_back("hello ##") == 2
    assert params.held_back("hello\nUs") == 3
    assert params.held_back("hello") == 0
    assert SamplingParams().held_back("anything") == 0


def test_greedy_takes_the_argmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    params = [SamplingParams(temperature=0.0)] * 5
    out = sample(logits, params, [_gen(i) for i in range(5)])
    assert [o.token_id for o in out] == logits.argmax(dim=1).tolist()
    assert all(o.logprob is None for o in out)


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 30)
    for params in (SamplingParams(top_k=1), SamplingParams(top_p=1e-6)):
        out = sample(logits, [params] * 4, [_gen(i) for i in range(4)])
        assert [o.token_id for o in out] == logits.argmax(dim=1).tolist()


def test_top_k_and_top_p_keep_only_likely_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen_k: set[int] = set()
    seen_p: set[int] = set()
    generator = _gen(3)
    for _ in range(300):
        seen_k.add(sample(logits, [SamplingParams(top_k=2)], [generator])[0].token_id)
        seen_p.add(sample(logits, [SamplingParams(top_p=0.7)], [generator])[0].token_id)
    assert seen_k == {0, 1}
    assert seen_p == {0, 1}  # 0.5 + 0.3 covers 0.7; token 2 is past it


def test_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().unsqueeze(0)
    generator = _gen(11)
    counts = [0, 0, 0]
    draws = 3000
    for _ in range(draws):
        counts[sample(logits, [SamplingParams()], [generator])[0].token_id] += 1
    for count, p in zip(counts, probs.tolist(), strict=True):
        assert abs(count / draws - p) < 0.04
    # temperature 0.5 sharpens: the top token becomes more likely
    counts_cold = 0
    for _ in range(1000):
        counts_cold += (
            sample(logits, [SamplingParams(temperature=0.5)], [generator])[0].token_id == 0
        )
    assert counts_cold / 1000 > 0.7


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32),
    others=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.integers(0, 40), st.floats(0.05, 1.0)), max_size=5
    ),
    position=st.integers(0, 5),
)
def test_a_seeded_row_draws_the_same_tokens_whatever_shares_its_batch(
    seed: int, others: list[tuple[float, int, float]], position: int
) -> None:
    torch.manual_seed(seed % 1000)
    vocab = 40
    mine = SamplingParams(temperature=0.9, top_p=0.9, top_k=20, seed=seed)
    own_logits = torch.randn(1, vocab)
    alone_gen = _gen(seed)
    alone = [sample(own_logits, [mine], [alone_gen])[0].token_id for _ in range(4)]
    position = min(position, len(others))
    params = [SamplingParams(temperature=t, top_k=k, top_p=p) for t, k, p in others]
    params.insert(position, mine)
    other_logits = torch.randn(len(others), vocab)
    logits = torch.cat([other_logits[:position], own_logits, other_logits[position:]])
    batch_gen = _gen(seed)
    gens = [_gen(i) for i in range(len(others))]
    gens.insert(position, batch_gen)
    batched = [sample(logits, params, gens)[position].token_id for _ in range(4)]
    assert batched == alone


def test_logprobs_are_the_models_own() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 25)
    params = [
        SamplingParams(temperature=0.0, logprobs=3),
        SamplingParams(temperature=1.5, logprobs=0),
        SamplingParams(temperature=0.0),
    ]
    out = sample(logits, params, [_gen(i) for i in range(3)])
    expected = logits.log_softmax(dim=1)
    first = out[0].logprob
    assert first is not None
    assert first.token_id == out[0].token_id
    assert first.logprob == pytest.approx(expected[0, out[0].token_id].item())
    assert [t for t, _ in first.top] == expected[0].topk(3).indices.tolist()
    assert [lp for _, lp in first.top] == sorted((lp for _, lp in first.top), reverse=True)
    second = out[1].logprob
    assert second is not None
    assert second.top == ()
    assert second.logprob == pytest.approx(expected[1, out[1].token_id].item())
    assert out[2].logprob is None


def test_rows_and_params_must_agree() -> None:
    with pytest.raises(ValueError, match="one SamplingParams and one generator per row"):
        sample(torch.zeros(2, 4), [SamplingParams()], [_gen(0)])


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_logits_raise_naming_the_row(bad: float) -> None:
    logits = torch.zeros(3, 4)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] are not finite"):
        sample(logits, [SamplingParams()] * 3, [_gen(i) for i in range(3)])
    # greedy rows never sample: -inf everywhere but one token is fine
    masked = torch.full((1, 4), -math.inf)
    masked[0, 3] = 0.0
    assert sample(masked, [SamplingParams()], [_gen(0)])[0].token_id == 3


def test_a_draw_at_the_very_top_of_the_distribution_stays_in_range() -> None:
    logits = torch.tensor([[0.0, 0.0, -math.inf]])
    generator = _gen(0)
    tokens = {sample(logits, [SamplingParams()], [generator])[0].token_id for _ in range(200)}
    assert tokens == {0, 1}
