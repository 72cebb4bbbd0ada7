"""Attention over the paged KV cache, in plain torch.

Per forward, :func:`plan_attention` turns a :class:`ForwardBatch` into an
:class:`AttentionPlan` once (index tensors, masks); every layer then calls
:func:`paged_attention` with it.

Decode tokens (query length 1) run in a few :class:`DecodeGroup` s, one
``scaled_dot_product_attention`` call each: the group's keys and values are gathered by block
table (one ``index_select`` of whole blocks), cut to the group's longest context, and the
shorter contexts masked. On a CPU the gather and the attention read memory, so their cost is the
number of key slots they touch: one group padded to the batch's longest context wastes up to
half of it on ragged lengths, one call per sequence pays a fixed cost per call. The plan sorts
the sequences by context length and splits them where the padding saved outweighs one more
call (:func:`decode_groups`, an exact dynamic programme over the sorted lengths). Grouped-query
attention needs no copy of the keys: a decode token's ``num_heads`` queries are viewed as
``num_kv_heads`` groups of ``num_heads / num_kv_heads`` "query positions" over the same keys.

Prefill chunks run per sequence, with a causal mask offset by the part of the sequence already
cached (or, with nothing cached, straight over the chunk's own keys with ``is_causal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 -- the conventional name

from aiaas_serving.generation._batch import ForwardBatch

__all__ = [
    "AttentionPlan",
    "DecodeGroup",
    "PrefillChunk",
    "decode_groups",
    "dense_attention",
    "paged_attention",
    "plan_attention",
    "plan_decode",
]

# One more decode group costs about as much as gathering and attending this many key slots
# more (measured on a 2-core CPU with SmolLM2's 3 x 64 KV heads: ~40-60 us per group and layer
# for its gathers, mask and attention call, ~0.7 us per key slot). The split is not sensitive
# to it: within a factor of two either way the padded slots stay within a few percent.
GROUP_COST_SLOTS = 64


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """One sequence's chunk of more than one new token.

    ``start:end`` are its tokens in the flattened batch, ``cached`` how many of its tokens were
    in the cache before this step; ``block_ids`` and ``mask`` are set only when ``cached > 0``.
    """

    start: int
    end: int
    cached: int
    context_len: int
    block_ids: torch.Tensor | None
    mask: torch.Tensor | None


@dataclass(frozen=True, slots=True)
class DecodeGroup:
    """Decode tokens attended in one call: ``G`` sequences of similar context lengths.

    ``tokens`` indexes their tokens in the flattened batch (``None``: the group is every token
    of the batch, in order); ``block_ids`` is ``[G, blocks]``; ``length`` the keys attended
    (the group's longest context, or a fixed width in :func:`plan_decode`); ``mask``
    ``[G, 1, 1, length]`` marks each sequence's real keys, ``None`` when every context is
    ``length`` long.
    """

    tokens: torch.Tensor | None
    block_ids: torch.Tensor
    length: int
    mask: torch.Tensor | None


@dataclass(frozen=True, slots=True)
class AttentionPlan:
    """What every layer's attention needs, computed once per forward."""

    num_tokens: int
    decode: tuple[DecodeGroup, ...]
    prefills: tuple[PrefillChunk, ...]


def decode_groups(
    lengths: Sequence[int], block_size: int, group_cost: int = GROUP_COST_SLOTS
) -> list[list[int]]:
    """Split decode sequences (their context ``lengths``) into groups of similar lengths.

    Returns lists of indices into ``lengths``, shortest contexts first; together they hold
    every index once. The split minimises ``group_cost * groups + sum over
    groups of (size * slots gathered for its longest context)``, exactly (a dynamic programme
    over the lengths sorted; quadratic in the number of distinct block counts).
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    blocks = [-(-lengths[i] // block_size) for i in order]
    # runs of equal block counts never need splitting: group boundaries fall between runs
    ends = [i for i in range(1, len(blocks)) if blocks[i] != blocks[i - 1]]
    ends.append(len(blocks))
    # best[j]: the cheapest split of the first ends[j - 1] sequences (best[0] = nothing)
    best = [0] * (len(ends) + 1)
    cut = [0] * (len(ends) + 1)
    for j in range(1, len(ends) + 1):
        end = ends[j - 1]
        width = blocks[end - 1] * block_size
        choice, cost = 0, -1
        for i in range(j):
            start = ends[i - 1] if i else 0
            candidate = best[i] + group_cost + (end - start) * width
            if cost < 0 or candidate < cost:
                choice, cost = i, candidate
        best[j], cut[j] = cost, choice
    groups: list[list[int]] = []
    j = len(ends)
    while j:
        i = cut[j]
        start = ends[i - 1] if i else 0
        groups.append(order[start : ends[j - 1]])
        j = i
    groups.reverse()
    return groups


def plan_attention(
    batch: ForwardBatch,
    block_size: int,
    device: torch.device,
    *,
    group_cost: int = GROUP_COST_SLOTS,
) -> AttentionPlan:
    """Build the per-forward index tensors and masks of ``batch`` (see the module docs).

    ``group_cost`` trades padding for calls in the decode split (:func:`decode_groups`): ``0``
    attends every decode sequence alone, a huge value all of them in one padded call.
    """
    block_tables = batch.block_tables
    if block_tables.device != device:
        block_tables = block_tables.to(device, non_blocking=True)
    decode_seqs: list[int] = []
    prefills: list[PrefillChunk] = []
    starts = batch.query_start
    for seq, context_len in enumerate(batch.context_lens):
        start, end = starts[seq], starts[seq + 1]
        query_len = end - start
        if query_len == 1:
            decode_seqs.append(seq)
        elif query_len > 1:
            cached = context_len - query_len
            block_ids = mask = None
            if cached > 0:
                num_blocks = -(-context_len // block_size)
                block_ids = block_tables[seq, :num_blocks]
                keys = torch.arange(context_len, device=device)
                queries = torch.arange(cached, context_len, device=device)
                mask = keys[None, :] <= queries[:, None]
            prefills.append(PrefillChunk(start, end, cached, context_len, block_ids, mask))
    lengths = [batch.context_lens[seq] for seq in decode_seqs]
    # every sequence decodes one token: then decode_seqs is range(num_tokens), in order
    all_decode = len(decode_seqs) == batch.num_sequences == batch.num_tokens
    groups: list[DecodeGroup] = []
    for members in decode_groups(lengths, block_size, group_cost):
        members.sort()  # batch order within a group: a whole-batch group needs no reordering
        seqs = [decode_seqs[m] for m in members]
        lens = [lengths[m] for m in members]
        longest = max(lens)
        num_blocks = -(-longest // block_size)
        if all_decode and len(seqs) == batch.num_tokens:
            tokens, block_ids = None, block_tables[:, :num_blocks]
        else:
            rows = torch.tensor(seqs, dtype=torch.long, device=device)
            block_ids = block_tables.index_select(0, rows)[:, :num_blocks]
            tokens = torch.tensor([starts[s] for s in seqs], dtype=torch.long, device=device)
        mask = None
        if min(lens) != longest:
            lens_t = torch.tensor(lens, dtype=torch.long, device=device)
            slots = torch.arange(longest, device=device)
            mask = (slots[None, :] < lens_t[:, None]).view(len(lens), 1, 1, longest)
        groups.append(DecodeGroup(tokens, block_ids, longest, mask))
    return AttentionPlan(
        num_tokens=batch.num_tokens, decode=tuple(groups), prefills=tuple(prefills)
    )


def plan_decode(
    block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int
) -> AttentionPlan:
    """The plan of a batch of decode tokens only, one per sequence, from device tensors.

    One group over the full width of ``block_tables``; no host value is read, so the plan (and
    the forward using it) can run in a CUDA graph.
    """
    count, max_blocks = block_tables.shape
    width = max_blocks * block_size
    slots = torch.arange(width, device=block_tables.device)
    mask = (slots[None, :] < context_lens[:, None]).view(count, 1, 1, width)
    return AttentionPlan(
        num_tokens=count,
        decode=(DecodeGroup(None, block_tables, width, mask),),
        prefills=(),
    )


def paged_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    plan: AttentionPlan,
) -> torch.Tensor:
    """Store ``key``/``value`` at ``slot_mapping`` and attend every new token over its context.

    ``query`` is ``[T, num_heads, head_dim]``, ``key``/``value`` ``[T, num_kv_heads, head_dim]``,
    the caches ``[num_blocks, block_size, num_kv_heads, head_dim]``. Returns ``[T, num_heads *
    head_dim]``.
    """
    num_tokens, num_heads, head_dim = query.shape
    num_kv_heads = key.shape[1]
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, key)
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, value)

    if len(plan.decode) == 1 and plan.decode[0].tokens is None:
        return _decode(query, key_cache, value_cache, plan.decode[0])
    out = query.new_empty((num_tokens, num_heads * head_dim))
    for group in plan.decode:
        assert group.tokens is not None  # only a whole-batch group has none
        q = query.index_select(0, group.tokens)
        out.index_copy_(0, group.tokens, _decode(q, key_cache, value_cache, group))
    for chunk in plan.prefills:
        length = chunk.end - chunk.start
        q = query[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
        if chunk.block_ids is None:
            k = key[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            v = value[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k = _gather(key_cache, chunk.block_ids).view(-1, num_kv_heads, head_dim)
            v = _gather(value_cache, chunk.block_ids).view(-1, num_kv_heads, head_dim)
            k, v = k[: chunk.context_len], v[: chunk.context_len]
            attended = F.scaled_dot_product_attention(
                q,
                k.transpose(0, 1).unsqueeze(0),
                v.transpose(0, 1).unsqueeze(0),
                attn_mask=chunk.mask,
                enable_gqa=True,
            )
        out[chunk.start : chunk.end] = attended[0].transpose(0, 1).reshape(length, -1)
    return out


def _decode(
    query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, group: DecodeGroup
) -> torch.Tensor:
    """One decode group: ``query`` ``[G, num_heads, head_dim]`` -> ``[G, num_heads * head_dim]``."""
    count, num_heads, head_dim = query.shape
    num_kv_heads = key_cache.shape[2]
    q = query.view(count, num_kv_heads, num_heads // num_kv_heads, head_dim)
    k = _gather(key_cache, group.block_ids).view(count, -1, num_kv_heads, head_dim)
    v = _gather(value_cache, group.block_ids).view(count, -1, num_kv_heads, head_dim)
    if k.shape[1] != group.length:
        k, v = k[:, : group.length], v[:, : group.length]
    attended = F.scaled_dot_product_attention(
        q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=group.mask
    )
    return attended.reshape(count, num_heads * head_dim)


def _gather(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """The blocks ``block_ids`` of one layer's cache, copied in order (``[n, block elements]``).

    ``index_select`` over whole flattened blocks copies each block with one memcpy; advanced
    indexing (``cache[block_ids]``) goes element by element and is ~3x slower on CPU.
    """
    return cache.view(cache.shape[0], -1).index_select(0, block_ids.reshape(-1))


def dense_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Causal attention without a cache: ``[B, L, H, D]`` queries -> ``[B, L, H * D]``.

    ``mask``, when given, is the boolean ``[B, 1, L, L]`` allowed-pairs mask (causal and
    padding together); without it the attention is plainly causal.
    """
    batch, length, num_heads, head_dim = query.shape
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    if mask is None:
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return attended.transpose(1, 2).reshape(batch, length, num_heads * head_dim)
