"""One engine step's model input: the new tokens of several sequences, flattened.

The scheduler plans a step (which sequences run, how many of their tokens, which cache blocks
they own); the engine turns that plan into a :class:`ForwardBatch`; the model runs it over the
paged KV cache and returns the logits of the tokens that sample this step. Nothing here knows
about requests, priorities or sampling.

Layout, for ``S`` sequences and ``T`` new tokens in all::

    input_ids       int64 [T]   the new tokens, sequence after sequence
    positions       int64 [T]   each token's absolute position in its sequence (0-based)
    slot_mapping    int64 [T]   cache slot of each token: block_id * block_size + offset
    query_start     S + 1 ints  sequence i's tokens are input_ids[query_start[i]:query_start[i+1]]
    context_lens    S ints      tokens in the cache for sequence i after this step (the new ones
                                included): its last new token sits at position context_lens[i] - 1
    block_tables    int64 [S, max_blocks]  sequence i's physical blocks in order; only the first
                                ceil(context_lens[i] / block_size) entries are meaningful (the rest
                                are padding, 0)
    logits_indices  int64 [R]   indices into the T tokens whose logits the model returns (the last
                                new token of each sequence that samples this step), in order

A decoding sequence contributes one token; a prefilling sequence a chunk of its prompt (whose
earlier part, if any, is already in the cache: ``context_lens[i] - chunk`` tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ForwardBatch"]


@dataclass(frozen=True, slots=True)
class ForwardBatch:
    """The flattened input of one forward over the paged KV cache (see the module docs)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    query_start: tuple[int, ...]
    context_lens: tuple[int, ...]
    block_tables: torch.Tensor
    logits_indices: torch.Tensor

    @property
    def num_sequences(self) -> int:
        """How many sequences this step runs."""
        return len(self.context_lens)

    @property
    def num_tokens(self) -> int:
        """How many new tokens this step runs (all sequences together)."""
        return int(self.input_ids.shape[0])

    def query_len(self, index: int) -> int:
        """How many new tokens sequence ``index`` contributes."""
        return self.query_start[index + 1] - self.query_start[index]
