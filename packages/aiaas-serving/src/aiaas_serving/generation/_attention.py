"""Attention over the paged KV cache, in plain torch.

Per forward, :func:`plan_attention` turns a :class:`ForwardBatch` into an
:class:`AttentionPlan` once (index tensors, masks); every layer then calls
:func:`paged_attention` with it. Decode tokens (query length 1) of all sequences run as ONE
``scaled_dot_product_attention`` call: their keys and values are gathered by block table, padded
to the longest context and the padding masked. Grouped-query attention needs no copy of the
keys: a decode token's ``num_heads`` queries are viewed as ``num_kv_heads`` groups of
``num_heads / num_kv_heads`` "query positions" over the same keys. Prefill chunks run per
sequence, with a causal mask offset by the part of the sequence already cached (or, with nothing
cached, straight over the chunk's own keys with ``is_causal``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 -- the conventional name

from aiaas_serving.generation._batch import ForwardBatch

__all__ = [
    "AttentionPlan",
    "PrefillChunk",
    "dense_attention",
    "paged_attention",
    "plan_attention",
    "plan_decode",
]


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
class AttentionPlan:
    """What every layer's attention needs, computed once per forward.

    ``decode_tokens`` indexes the decode tokens in the flattened batch (``None`` when every
    token is a decode token, in order); ``decode_block_ids`` is ``[D, max_blocks]`` and
    ``decode_mask`` ``[D, 1, 1, max_blocks * block_size]``.
    """

    num_tokens: int
    decode_tokens: torch.Tensor | None
    decode_block_ids: torch.Tensor | None
    decode_mask: torch.Tensor | None
    prefills: tuple[PrefillChunk, ...]


def plan_attention(batch: ForwardBatch, block_size: int, device: torch.device) -> AttentionPlan:
    """Build the per-forward index tensors and masks of ``batch`` (see the module docs)."""
    block_tables = batch.block_tables
    if block_tables.device != device:
        block_tables = block_tables.to(device, non_blocking=True)
    decode_seqs: list[int] = []
    decode_token_idx: list[int] = []
    prefills: list[PrefillChunk] = []
    starts = batch.query_start
    for seq, context_len in enumerate(batch.context_lens):
        start, end = starts[seq], starts[seq + 1]
        query_len = end - start
        if query_len == 1:
            decode_seqs.append(seq)
            decode_token_idx.append(start)
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
    decode_tokens = decode_block_ids = decode_mask = None
    if decode_seqs:
        lens = [batch.context_lens[seq] for seq in decode_seqs]
        max_blocks = -(-max(lens) // block_size)
        if len(decode_seqs) == batch.num_sequences:
            decode_block_ids = block_tables[:, :max_blocks]
        else:
            rows = torch.tensor(decode_seqs, dtype=torch.long, device=device)
            decode_block_ids = block_tables.index_select(0, rows)[:, :max_blocks]
        if len(decode_token_idx) != batch.num_tokens:
            decode_tokens = torch.tensor(decode_token_idx, dtype=torch.long, device=device)
        lens_t = torch.tensor(lens, dtype=torch.long, device=device)
        slots = torch.arange(max_blocks * block_size, device=device)
        decode_mask = (slots[None, :] < lens_t[:, None]).view(len(lens), 1, 1, -1)
    return AttentionPlan(
        num_tokens=batch.num_tokens,
        decode_tokens=decode_tokens,
        decode_block_ids=decode_block_ids,
        decode_mask=decode_mask,
        prefills=tuple(prefills),
    )


def plan_decode(
    block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int
) -> AttentionPlan:
    """The plan of a batch of decode tokens only, one per sequence, from device tensors.

    No host value is read, so the plan (and the forward using it) can run in a CUDA graph.
    """
    count, max_blocks = block_tables.shape
    slots = torch.arange(max_blocks * block_size, device=block_tables.device)
    mask = (slots[None, :] < context_lens[:, None]).view(count, 1, 1, -1)
    return AttentionPlan(
        num_tokens=count,
        decode_tokens=None,
        decode_block_ids=block_tables,
        decode_mask=mask,
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
    groups = num_heads // num_kv_heads
    key_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, key)
    value_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, value)

    decoded: torch.Tensor | None = None
    if plan.decode_block_ids is not None and plan.decode_mask is not None:
        q = query if plan.decode_tokens is None else query.index_select(0, plan.decode_tokens)
        count = q.shape[0]
        q = q.view(count, num_kv_heads, groups, head_dim)
        k = _gather(key_cache, plan.decode_block_ids).view(count, -1, num_kv_heads, head_dim)
        v = _gather(value_cache, plan.decode_block_ids).view(count, -1, num_kv_heads, head_dim)
        decoded = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=plan.decode_mask
        ).reshape(count, num_heads * head_dim)
        if plan.decode_tokens is None:
            return decoded

    out = query.new_empty((num_tokens, num_heads * head_dim))
    if decoded is not None and plan.decode_tokens is not None:
        out.index_copy_(0, plan.decode_tokens, decoded)
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
