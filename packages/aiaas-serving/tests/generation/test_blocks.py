"""The KV block manager: allocation, reference counts, prefix caching, LRU eviction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from aiaas_serving.generation import BlockManager
from aiaas_serving.generation._blocks import prefix_block_hashes


def test_allocate_append_free_round_trip() -> None:
    blocks = BlockManager(8, 4)
    assert blocks.num_free_blocks == 8
    assert blocks.allocate("a", [1, 2, 3, 4, 5]) == 0  # nothing cached yet
    assert len(blocks.block_table("a")) == 2
    assert blocks.num_free_blocks == 6
    assert blocks.num_used_blocks == 2
    assert blocks.append_slots("a", 8) == []  # still fits the 2 blocks
    new = blocks.append_slots("a", 9)
    assert len(new) == 1
    assert blocks.block_table("a")[-1] == new[0]
    blocks.free("a")
    assert blocks.num_free_blocks == 8
    assert not blocks.has("a")
    blocks.free("a")  # freeing twice is a no-op
    blocks.check_invariants()


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 1"):
        BlockManager(0, 4)
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        BlockManager(4, True)


def test_allocation_errors_say_what_to_do() -> None:
    blocks = BlockManager(2, 4)
    with pytest.raises(ValueError, match="at least one token"):
        blocks.allocate("a", [])
    assert not blocks.can_allocate(list(range(9)))
    with pytest.raises(ValueError, match="check can_allocate first"):
        blocks.allocate("a", list(range(9)))
    blocks.allocate("a", [1, 2, 3])
    with pytest.raises(ValueError, match="already holds blocks"):
        blocks.allocate("a", [1])
    blocks.allocate("b", [7])
    assert not blocks.can_append("a", 5)
    with pytest.raises(ValueError, match="check can_append first"):
        blocks.append_slots("a", 5)
    blocks.check_invariants()


def test_identical_prefixes_share_computed_full_blocks() -> None:
    blocks = BlockManager(16, 4)
    prompt = list(range(10))  # two full blocks and a partial one
    assert blocks.allocate("a", prompt) == 0
    # not computed yet: a second sequence must not read blocks nobody has written
    assert blocks.allocate("b", prompt) == 0
    blocks.mark_computed("a", prompt, 10)
    assert blocks.num_cached_blocks == 2
    assert blocks.allocate("c", [*prompt[:8], 99, 98]) == 8
    table_a, table_c = blocks.block_table("a"), blocks.block_table("c")
    assert table_c[:2] == table_a[:2]
    assert table_c[2] != table_a[2]
    assert blocks.ref_count(table_a[0]) == 2
    assert blocks.prefix_hits == 8
    assert blocks.prefix_queries == 30
    # a different first block changes every chained hash after it
    assert blocks.allocate("d", [100, *prompt[1:]]) == 0
    blocks.check_invariants()


def test_the_last_prompt_token_is_always_computed() -> None:
    blocks = BlockManager(8, 4)
    prompt = list(range(8))  # exactly two full blocks
    blocks.allocate("a", prompt)
    blocks.mark_computed("a", prompt, 8)
    # the whole prompt is cached, but its last token must run to give logits: only 1 block hit
    assert blocks.allocate("b", prompt) == 4
    assert blocks.block_table("b")[1] != blocks.block_table("a")[1]
    blocks.check_invariants()


def test_freed_cached_blocks_are_reused_then_evicted_lru() -> None:
    blocks = BlockManager(4, 2)
    first, second = [1, 2, 3], [5, 6, 7]
    blocks.allocate("a", first)
    blocks.mark_computed("a", first, 3)
    blocks.free("a")
    blocks.allocate("b", second)
    blocks.mark_computed("b", second, 3)
    blocks.free("b")
    assert blocks.num_free_blocks == 4  # cached unreferenced blocks count as free
    assert blocks.num_cached_blocks == 2
    assert blocks.allocate("a2", first) == 2  # the cached block of "a" comes back
    blocks.free("a2")
    # take the whole pool: the cached blocks are evicted, least recently used first
    blocks.allocate("big", list(range(100, 107)))
    assert blocks.num_cached_blocks == 0
    assert blocks.num_free_blocks == 0
    blocks.free("big")
    blocks.allocate("a3", first)
    assert blocks.block_table("a3") != []
    blocks.mark_computed("a3", first, 3)
    blocks.free("a3")
    assert blocks.num_cached_blocks == 1
    blocks.reset_prefix_cache()
    assert blocks.num_cached_blocks == 0
    assert blocks.num_free_blocks == 4
    assert blocks.allocate("a4", first) == 0
    blocks.check_invariants()


def test_lru_keeps_the_most_recently_used_prefix() -> None:
    blocks = BlockManager(4, 2)
    old, recent = [1, 2, 3], [4, 5, 6]
    for name, prompt in (("old", old), ("recent", recent)):
        blocks.allocate(name, prompt)
        blocks.mark_computed(name, prompt, 3)
        blocks.free(name)
    assert blocks.num_cached_blocks == 2
    blocks.allocate("y", [8])  # plain free blocks go first: nothing evicted
    blocks.allocate("z", [7])
    assert blocks.num_cached_blocks == 2
    blocks.allocate("w", [6])  # now a cached block goes: the least recently used ("old")
    assert blocks.num_cached_blocks == 1
    for name in ("y", "z", "w"):
        blocks.free(name)
    assert blocks.allocate("recent2", recent) == 2
    assert blocks.allocate("old2", old) == 0
    blocks.check_invariants()


def test_prefix_caching_off_never_shares() -> None:
    blocks = BlockManager(8, 2, prefix_caching=False)
    prompt = [1, 2, 3, 4, 5]
    blocks.allocate("a", prompt)
    blocks.mark_computed("a", prompt, 5)
    assert blocks.allocate("b", prompt) == 0
    assert blocks.num_cached_blocks == 0
    blocks.free("a")
    blocks.free("b")
    assert blocks.num_free_blocks == 8


def test_decode_blocks_are_cached_too() -> None:
    blocks = BlockManager(8, 2)
    tokens = [1, 2, 3]
    blocks.allocate("a", tokens)
    blocks.mark_computed("a", tokens, 3)
    tokens.append(4)  # a generated token fills block 1
    blocks.append_slots("a", 4)
    blocks.mark_computed("a", tokens, 4)
    assert blocks.num_cached_blocks == 2
    blocks.free("a")
    # a preempted sequence recomputing prompt + generated tokens finds them
    assert blocks.allocate("a", [*tokens, 5]) == 4


def test_duplicate_content_is_registered_once() -> None:
    blocks = BlockManager(8, 2)
    prompt = [1, 2, 3, 4, 5]
    blocks.allocate("a", prompt)
    blocks.allocate("b", prompt)  # both computing the same prefix at once
    blocks.mark_computed("a", prompt, 5)
    blocks.mark_computed("b", prompt, 5)
    assert blocks.num_cached_blocks == 2
    tokens = [*prompt, 6]
    blocks.append_slots("b", 6)
    blocks.mark_computed("b", tokens, 6)  # chains from b's unregistered duplicate block
    assert blocks.num_cached_blocks == 3
    blocks.free("a")
    blocks.free("b")
    assert blocks.num_free_blocks == 8
    assert blocks.allocate("c", [*tokens, 7]) == 6
    blocks.check_invariants()


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 8))
def test_prefix_hashes_name_whole_prefixes(tokens: list[int], size: int) -> None:
    hashes = prefix_block_hashes(tokens, size)
    assert len(hashes) == len(tokens) // size
    longer = prefix_block_hashes([*tokens, 1, 2, 3], size)
    assert longer[: len(hashes)] == hashes
    if hashes:
        changed = [tokens[0] + 1, *tokens[1:]]
        assert prefix_block_hashes(changed, size)[-1] != hashes[-1]


class BlockMachine(RuleBasedStateMachine):
    """Random allocate / compute / append / free over shared prompt prefixes."""

    sequences = Bundle("sequences")

    def __init__(self) -> None:
        super().__init__()
        self.blocks = BlockManager(12, 3)
        self.tokens: dict[int, list[int]] = {}
        self.next_id = 0

    @rule(
        target=sequences,
        base=st.sampled_from([(1, 2, 3, 4, 5, 6, 7), (1, 2, 3, 9, 9), (5, 5, 5, 5, 5, 5)]),
        cut=st.integers(1, 7),
        tail=st.lists(st.integers(0, 9), max_size=4),
    )
    def allocate(self, base: tuple[int, ...], cut: int, tail: list[int]) -> int:
        tokens = [*base[:cut], *tail]
        seq = self.next_id
        self.next_id += 1
        if self.blocks.can_allocate(tokens):
            free_before = self.blocks.num_free_blocks
            cached = self.blocks.allocate(seq, tokens)
            assert cached % 3 == 0
            assert cached < len(tokens)
            assert self.blocks.num_free_blocks <= free_before
            self.tokens[seq] = tokens
        return seq

    @rule(seq=sequences, progress=st.integers(0, 8))
    def compute(self, seq: int, progress: int) -> None:
        if seq in self.tokens:
            tokens = self.tokens[seq]
            self.blocks.mark_computed(seq, tokens, min(len(tokens), progress))

    @rule(seq=sequences, token=st.integers(0, 9))
    def append(self, seq: int, token: int) -> None:
        tokens = self.tokens.get(seq)
        if tokens is None:
            return
        self.blocks.mark_computed(seq, tokens, len(tokens))
        if self.blocks.can_append(seq, len(tokens) + 1):
            tokens.append(token)
            self.blocks.append_slots(seq, len(tokens))
            assert len(self.blocks.block_table(seq)) == -(-len(tokens) // 3)

    @rule(seq=consumes(sequences))
    def free(self, seq: int) -> None:
        self.blocks.free(seq)
        self.tokens.pop(seq, None)

    @precondition(lambda self: not self.tokens)
    @rule()
    def all_free(self) -> None:
        assert self.blocks.num_free_blocks == self.blocks.num_blocks

    @invariant()
    def consistent(self) -> None:
        self.blocks.check_invariants()
        assert self.blocks.num_free_blocks + self.blocks.num_used_blocks == self.blocks.num_blocks
        assert self.blocks.prefix_hits <= self.blocks.prefix_queries

    def teardown(self) -> None:
        for seq in list(self.tokens):
            self.blocks.free(seq)
        assert self.blocks.num_free_blocks == self.blocks.num_blocks
        self.blocks.check_invariants()


TestBlockMachine = BlockMachine.TestCase
TestBlockMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
