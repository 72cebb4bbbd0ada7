"""The KV cache's block manager: which fixed-size blocks each sequence owns, and prefix caching.

The pool is ``num_blocks`` blocks of ``block_size`` token slots. Each sequence owns a *block
table*: its blocks in order (token ``t`` lives in slot ``t % block_size`` of block
``table[t // block_size]``). Blocks carry reference counts, so several sequences can share one.

Prefix caching: once a block is full and its keys and values are computed
(:meth:`BlockManager.mark_computed`), it is registered under a content hash chained with the hash
of the block before it, so the hash names the whole prefix up to that block. A new sequence whose
prompt starts with the same tokens takes those blocks instead of computing them again
(:meth:`BlockManager.allocate` returns how many tokens it found cached). A freed block that holds
a hash stays cached, unreferenced, until the pool needs it: such blocks are evicted least recently
used first. Only full blocks are shared, and a sequence always computes at least its last prompt
token itself, so nobody ever writes into a shared block.

Free blocks are those on the free list plus the cached unreferenced ones (evictable at once).
Every operation is O(blocks it touches); nothing walks the whole pool.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence

__all__ = ["BlockManager", "prefix_block_hashes"]

_ROOT_HASH = hash(("aiaas_serving.generation", "prefix-root"))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def prefix_block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """The chained content hash of each *full* block of ``token_ids``."""
    hashes: list[int] = []
    parent = _ROOT_HASH
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(token_ids[start : start + block_size])))
        hashes.append(parent)
    return hashes


class BlockManager:
    """Allocates the KV cache's blocks to sequences (keyed by any hashable id)."""

    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self._refs = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; LRU first
        self._cached: dict[int, int] = {}  # content hash -> block
        self._tables: dict[Hashable, list[int]] = {}
        self._computed_full: dict[Hashable, int] = {}  # full blocks already hashed, per sequence
        self.prefix_queries = 0  # prompt tokens looked up
        self.prefix_hits = 0  # of which found cached

    # --- accounting ---------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation can take now (free plus cached-unreferenced)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks registered in the prefix cache (referenced or not)."""
        return len(self._cached)

    def ref_count(self, block: int) -> int:
        """How many sequences hold ``block``."""
        return self._refs[block]

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that ``num_tokens`` tokens occupy."""
        return _ceil_div(num_tokens, self.block_size)

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The blocks of ``seq_id`` in order (the live list: do not modify it)."""
        return self._tables[seq_id]

    def has(self, seq_id: Hashable) -> bool:
        """Whether ``seq_id`` holds blocks."""
        return seq_id in self._tables

    # --- allocation ---------------------------------------------------------------------

    def _hits(self, hashes: Sequence[int], num_tokens: int) -> list[int]:
        """Cached blocks for the leading full blocks, leaving the last token to compute."""
        if not self.prefix_caching:
            return []
        usable = (num_tokens - 1) // self.block_size
        hits: list[int] = []
        for block_hash in hashes[:usable]:
            block = self._cached.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def can_allocate(self, token_ids: Sequence[int], *, reserve: int = 0) -> bool:
        """Whether a sequence of ``token_ids`` fits now (plus ``reserve`` spare blocks)."""
        hashes = prefix_block_hashes(token_ids, self.block_size) if self.prefix_caching else []
        return self._fits(token_ids, hashes, reserve)

    def _fits(self, token_ids: Sequence[int], hashes: Sequence[int], reserve: int) -> bool:
        hits = self._hits(hashes, len(token_ids))
        shared = sum(1 for b in hits if self._refs[b] > 0)  # the others come out of the free
        needed = self.blocks_for(len(token_ids)) - shared
        return needed + reserve <= self.num_free_blocks

    def allocate(self, seq_id: Hashable, token_ids: Sequence[int]) -> int:
        """Give ``seq_id`` blocks for ``token_ids``; returns how many leading tokens are cached.

        Raises ``ValueError`` when the sequence already holds blocks or when the pool cannot
        hold it now (check :meth:`can_allocate` first).
        """
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} already holds blocks; free it first")
        if not token_ids:
            raise ValueError("a sequence needs at least one token")
        hashes = prefix_block_hashes(token_ids, self.block_size) if self.prefix_caching else []
        if not self._fits(token_ids, hashes, 0):
            raise ValueError(
                f"the KV cache has {self.num_free_blocks} free blocks; sequence {seq_id!r} "
                f"needs more (check can_allocate first)"
            )
        hits = self._hits(hashes, len(token_ids))
        for block in hits:
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
        table = hits + [self._take() for _ in range(self.blocks_for(len(token_ids)) - len(hits))]
        self._tables[seq_id] = table
        self._computed_full[seq_id] = len(hits)
        cached = len(hits) * self.block_size
        self.prefix_queries += len(token_ids)
        self.prefix_hits += cached
        return cached

    def _take(self) -> int:
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._evictable.popitem(last=False)  # least recently used
            block_hash = self._hash[block]
            if block_hash is not None and self._cached.get(block_hash) == block:
                del self._cached[block_hash]
            self._hash[block] = None
        self._refs[block] = 1
        return block

    def can_append(self, seq_id: Hashable, num_tokens: int) -> bool:
        """Whether ``seq_id`` can grow to ``num_tokens`` tokens now."""
        missing = self.blocks_for(num_tokens) - len(self._tables[seq_id])
        return missing <= self.num_free_blocks

    def append_slots(self, seq_id: Hashable, num_tokens: int) -> list[int]:
        """Grow ``seq_id``'s table to hold ``num_tokens`` tokens; returns the new blocks.

        Raises ``ValueError`` when the pool is short (check :meth:`can_append` first).
        """
        table = self._tables[seq_id]
        missing = self.blocks_for(num_tokens) - len(table)
        if missing <= 0:
            return []
        if missing > self.num_free_blocks:
            raise ValueError(
                f"the KV cache has {self.num_free_blocks} free blocks; sequence {seq_id!r} "
                f"needs {missing} more (check can_append first)"
            )
        new = [self._take() for _ in range(missing)]
        table.extend(new)
        return new

    def mark_computed(self, seq_id: Hashable, token_ids: Sequence[int], num_computed: int) -> None:
        """The first ``num_computed`` tokens of ``seq_id`` (``token_ids``) are in the cache:
        register its newly completed full blocks in the prefix cache."""
        if not self.prefix_caching:
            return
        done = self._computed_full[seq_id]
        full = min(num_computed // self.block_size, len(self._tables[seq_id]))
        if full <= done:
            return
        table = self._tables[seq_id]
        size = self.block_size
        parent = self._hash[table[done - 1]] if done else _ROOT_HASH
        if parent is None:  # the previous block was not registered (a duplicate): recompute
            parent = prefix_block_hashes(token_ids[: done * size], size)[-1]
        for index in range(done, full):
            parent = hash((parent, tuple(token_ids[index * size : (index + 1) * size])))
            block = table[index]
            if parent not in self._cached:
                self._cached[parent] = block
                self._hash[block] = parent
        self._computed_full[seq_id] = full

    def free(self, seq_id: Hashable) -> None:
        """Release every block of ``seq_id`` (no-op when it holds none)."""
        table = self._tables.pop(seq_id, None)
        self._computed_full.pop(seq_id, None)
        if table is None:
            return
        for block in reversed(table):  # the tail is evicted first: its prefix is shared more
            refs = self._refs[block] - 1
            self._refs[block] = refs
            if refs:
                continue
            if self._hash[block] is not None:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def reset_prefix_cache(self) -> None:
        """Forget every cached unreferenced block (they become plain free blocks)."""
        for block in self._evictable:
            block_hash = self._hash[block]
            if block_hash is not None:
                self._cached.pop(block_hash, None)
            self._hash[block] = None
            self._free.append(block)
        self._evictable.clear()

    def check_invariants(self) -> None:
        """Raise ``AssertionError`` when the bookkeeping is inconsistent (for tests)."""
        held: dict[int, int] = {}
        for table in self._tables.values():
            for block in table:
                held[block] = held.get(block, 0) + 1
        for block in range(self.num_blocks):
            assert self._refs[block] == held.get(block, 0), f"block {block}: refcount"
            assert self._refs[block] >= 0
        free = set(self._free)
        assert len(free) == len(self._free), "a block is twice on the free list"
        assert not free & set(self._evictable), "a block is both free and evictable"
        assert not free & held.keys(), "a held block is on the free list"
        assert not set(self._evictable) & held.keys(), "a held block is evictable"
        assert len(free) + len(self._evictable) + len(held) == self.num_blocks
        for block_hash, block in self._cached.items():
            assert self._hash[block] == block_hash
