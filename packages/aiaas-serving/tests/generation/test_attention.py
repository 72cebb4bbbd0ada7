"""Paged attention's decode groups: any split equals a plain per-sequence attention.

The reference keeps every sequence's keys and values in a dense tensor of its own and attends
with an explicit softmax (GQA by repeating the key heads); the paged side stores the same keys
through scrambled block tables and runs :func:`paged_attention` with the plan the model uses.
"""

from __future__ import annotations

import math
import random
from itertools import combinations, pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_serving.generation import ForwardBatch
from aiaas_serving.generation._attention import (
    GROUP_COST_SLOTS,
    decode_groups,
    paged_attention,
    plan_attention,
)

TOLERANCE = 1e-5


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible test data, not security


def _reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``query`` ``[L, H, D]`` over ``keys``/``values`` ``[C, KV, D]``, the last ``L`` of the
    ``C`` positions causal: ``[L, H * D]``, computed in float64."""
    length, heads, dim = query.shape
    context, kv_heads, _ = keys.shape
    repeat = heads // kv_heads
    k = keys.double().repeat_interleave(repeat, dim=1).transpose(0, 1)  # [H, C, D]
    v = values.double().repeat_interleave(repeat, dim=1).transpose(0, 1)
    q = query.double().transpose(0, 1)  # [H, L, D]
    scores = q @ k.transpose(1, 2) / math.sqrt(dim)
    positions = torch.arange(context - length, context)
    allowed = torch.arange(context)[None, :] <= positions[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v  # [H, L, D]
    return out.transpose(0, 1).reshape(length, heads * dim).float()


def _run(
    *,
    heads: int,
    kv_heads: int,
    block_size: int,
    work: list[tuple[int, int]],
    group_cost: int,
    seed: int,
) -> None:
    """``work``: (cached tokens, new tokens) per sequence, in batch order."""
    rng = _rng(seed)
    generator = torch.Generator().manual_seed(seed)
    dim = 8
    per_seq = [-(-(cached + new) // block_size) for cached, new in work]
    num_blocks = sum(per_seq) + 3
    free = list(range(num_blocks))
    rng.shuffle(free)  # scrambled, interleaved block tables
    key_cache = torch.zeros(num_blocks, block_size, kv_heads, dim)
    value_cache = torch.zeros_like(key_cache)
    width = max(per_seq) + 1  # a padding column the plan must ignore
    tables = torch.zeros((len(work), width), dtype=torch.long)
    full_keys, full_values, queries = [], [], []
    slots: list[int] = []
    query_start = [0]
    context_lens = []
    for row, ((cached, new), count) in enumerate(zip(work, per_seq, strict=True)):
        table = [free.pop() for _ in range(count)]
        tables[row, :count] = torch.tensor(table)
        context = cached + new
        keys = torch.randn(context, kv_heads, dim, generator=generator)
        values = torch.randn(context, kv_heads, dim, generator=generator)
        for position in range(cached):  # what earlier steps stored
            block, offset = divmod(position, block_size)
            key_cache[table[block], offset] = keys[position]
            value_cache[table[block], offset] = values[position]
        slots.extend(
            table[p // block_size] * block_size + p % block_size for p in range(cached, context)
        )
        full_keys.append(keys)
        full_values.append(values)
        queries.append(torch.randn(new, heads, dim, generator=generator))
        query_start.append(query_start[-1] + new)
        context_lens.append(context)
    total = query_start[-1]
    batch = ForwardBatch(
        input_ids=torch.zeros(total, dtype=torch.long),
        positions=torch.zeros(total, dtype=torch.long),
        slot_mapping=torch.tensor(slots),
        query_start=tuple(query_start),
        context_lens=tuple(context_lens),
        block_tables=tables,
        logits_indices=torch.arange(total),
    )
    plan = plan_attention(batch, block_size, torch.device("cpu"), group_cost=group_cost)
    new_keys = torch.cat([k[c:] for k, (c, _) in zip(full_keys, work, strict=True)])
    new_values = torch.cat([v[c:] for v, (c, _) in zip(full_values, work, strict=True)])
    with torch.inference_mode():
        out = paged_attention(
            torch.cat(queries),
            new_keys,
            new_values,
            key_cache=key_cache,
            value_cache=value_cache,
            slot_mapping=batch.slot_mapping,
            plan=plan,
        )
    assert out.shape == (total, heads * dim)
    for row in range(len(work)):
        expected = _reference(queries[row], full_keys[row], full_values[row])
        got = out[query_start[row] : query_start[row + 1]]
        assert float((got - expected).abs().max()) < TOLERANCE, f"sequence {row} of {work}"


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (9, 3), (8, 1)])
@pytest.mark.parametrize("group_cost", [0, 16, GROUP_COST_SLOTS, 10**9])
def test_ragged_decode_equals_per_sequence_attention(
    heads: int, kv_heads: int, group_cost: int
) -> None:
    """Decode tokens of ragged contexts, split every way from one call per sequence (cost 0)
    to a single padded call (a huge cost), each equal to the per-sequence reference."""
    rng = _rng(heads * 31 + kv_heads + group_cost % 97)
    work = [(rng.randint(0, 90), 1) for _ in range(12)]
    _run(heads=heads, kv_heads=kv_heads, block_size=4, work=work, group_cost=group_cost, seed=1)


@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_mixed_decode_and_prefill_chunks(block_size: int) -> None:
    """Decode tokens interleaved with fresh prompts and chunks over a cached prefix."""
    work = [(40, 1), (0, 9), (5, 1), (17, 6), (0, 1), (63, 1), (2, 30), (33, 1)]
    for group_cost in (0, GROUP_COST_SLOTS, 10**9):
        _run(
            heads=6,
            kv_heads=2,
            block_size=block_size,
            work=work,
            group_cost=group_cost,
            seed=block_size,
        )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    work=st.lists(
        st.tuples(st.integers(0, 70), st.sampled_from([1, 1, 1, 2, 5])), min_size=1, max_size=10
    ),
    block_size=st.sampled_from([1, 2, 4, 16]),
    ratio=st.sampled_from([1, 2, 3]),
    group_cost=st.sampled_from([0, 8, GROUP_COST_SLOTS, 10**9]),
    seed=st.integers(0, 2**16),
)
def test_any_batch_equals_the_reference(
    work: list[tuple[int, int]], block_size: int, ratio: int, group_cost: int, seed: int
) -> None:
    _run(
        heads=2 * ratio,
        kv_heads=2,
        block_size=block_size,
        work=work,
        group_cost=group_cost,
        seed=seed,
    )


def _cost(groups: list[list[int]], lengths: list[int], block_size: int, group_cost: int) -> int:
    return sum(
        group_cost + len(g) * -(-max(lengths[i] for i in g) // block_size) * block_size
        for g in groups
    )


def _brute_force(lengths: list[int], block_size: int, group_cost: int) -> int:
    """The cheapest split into runs of the sorted lengths, by trying every cut."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = -1
    for count in range(len(order)):
        for cuts in combinations(range(1, len(order)), count):
            bounds = [0, *cuts, len(order)]
            groups = [order[a:b] for a, b in pairwise(bounds)]
            cost = _cost(groups, lengths, block_size, group_cost)
            best = cost if best < 0 else min(best, cost)
    return best


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=9),
    block_size=st.sampled_from([1, 4, 16]),
    group_cost=st.sampled_from([0, 1, 16, 64, 500]),
)
def test_decode_groups_is_an_optimal_partition(
    lengths: list[int], block_size: int, group_cost: int
) -> None:
    groups = decode_groups(lengths, block_size, group_cost)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(lengths)))  # every sequence exactly once
    assert all(groups)  # no empty group
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest)  # shortest contexts first
    assert _cost(groups, lengths, block_size, group_cost) == _brute_force(
        lengths, block_size, group_cost
    )


def test_decode_groups_extremes() -> None:
    lengths = [100, 600, 350, 101, 599, 20]
    assert decode_groups([], 16) == []
    assert len(decode_groups(lengths, 16, 10**9)) == 1  # one padded call
    # free calls: every distinct block count alone (equal block counts never need a split)
    assert sorted(map(sorted, decode_groups(lengths, 16, 0))) == [[0, 3], [1, 4], [2], [5]]
    # the default keeps far-apart lengths apart
    groups = decode_groups(lengths, 16)
    assert not any({5, 1} <= set(g) for g in groups)
