"""The step planner: decode first, chunked prefill, admission, preemption, priorities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiaas_serving.generation import BlockManager, Scheduler
from aiaas_serving.generation._scheduler import FINISHED, RUNNING, WAITING, Sequence


def _seq(
    n: int,
    *,
    start: int = 0,
    priority: int = 0,
    arrival: float = 0.0,
    deadline: float | None = None,
) -> Sequence:
    return Sequence(
        list(range(start, start + n)),
        max_len=10_000,
        priority=priority,
        arrival=arrival,
        deadline=deadline,
    )


def _run_step(scheduler: Scheduler, now: float = 0.0, token: int = 7) -> list[tuple[int, int]]:
    """Plan a step and 'run' it: every sampling sequence gets ``token``."""
    plan = scheduler.schedule(now)
    for chunk in plan.chunks:
        scheduler.complete(chunk)
        if chunk.samples:
            chunk.seq.token_ids.append(token)
    return [(c.seq.seq_id, c.num_tokens) for c in plan.chunks]


def test_construction_is_validated() -> None:
    blocks = BlockManager(8, 4)
    with pytest.raises(ValueError, match="max_step_tokens >= max_num_seqs"):
        Scheduler(blocks, max_num_seqs=8, max_step_tokens=4)
    with pytest.raises(ValueError, match="at least one prompt token"):
        Sequence([], max_len=4)


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode() -> None:
    scheduler = Scheduler(BlockManager(64, 4), max_num_seqs=4, max_step_tokens=8)
    short = _seq(3, arrival=0.0)
    scheduler.add(short)
    assert _run_step(scheduler) == [(short.seq_id, 3)]  # prefilled, first token sampled
    long = _seq(20, start=100, arrival=1.0)
    scheduler.add(long)
    steps = [_run_step(scheduler, 1.0) for _ in range(3)]
    # every step: the short sequence decodes one token, the long prompt takes the rest
    assert steps == [
        [(short.seq_id, 1), (long.seq_id, 7)],
        [(short.seq_id, 1), (long.seq_id, 7)],
        [(short.seq_id, 1), (long.seq_id, 6)],
    ]
    assert long.num_generated == 1  # sampled once its last chunk ran
    assert short.num_generated == 4
    assert _run_step(scheduler, 1.0) == [(short.seq_id, 1), (long.seq_id, 1)]


def test_max_num_seqs_and_the_budget_bound_admission() -> None:
    scheduler = Scheduler(BlockManager(64, 4), max_num_seqs=2, max_step_tokens=4)
    seqs = [_seq(2, start=10 * i, arrival=float(i)) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    plan = scheduler.schedule(0.0)
    assert [s.seq_id for s in plan.admitted] == [seqs[0].seq_id, seqs[1].seq_id]
    assert plan.num_tokens == 4
    assert scheduler.num_running == 2
    assert scheduler.num_waiting == 1
    assert seqs[2].state == WAITING


def test_admission_waits_for_free_blocks_and_the_head_is_not_overtaken() -> None:
    scheduler = Scheduler(BlockManager(4, 4), max_num_seqs=8, max_step_tokens=64)
    big = _seq(12, arrival=0.0)
    scheduler.add(big)
    _run_step(scheduler)  # 3 of the 4 blocks
    wide = _seq(8, start=50, arrival=1.0)  # needs 2 blocks: waits
    small = _seq(2, start=80, arrival=2.0)  # would fit, but queues behind the head
    scheduler.add(wide)
    scheduler.add(small)
    plan = scheduler.schedule(3.0)
    assert plan.admitted == []
    assert scheduler.num_waiting == 2
    scheduler.abort(big)
    assert scheduler.blocks.num_free_blocks == 4
    plan = scheduler.schedule(3.0)
    assert [s.seq_id for s in plan.admitted] == [wide.seq_id, small.seq_id]


def test_preemption_frees_the_least_urgent_newest_and_recomputes_it_later() -> None:
    blocks = BlockManager(4, 2)
    scheduler = Scheduler(blocks, max_num_seqs=4, max_step_tokens=16)
    old = _seq(4, arrival=0.0)
    new = _seq(4, start=20, arrival=1.0)
    scheduler.add(old)
    scheduler.add(new)
    _run_step(scheduler, 1.0)  # both prefilled: 2 blocks each, the pool is full
    assert blocks.num_free_blocks == 0
    plan = scheduler.schedule(1.0)  # old needs a block for its 5th token: new is preempted
    assert plan.preempted == [new]
    assert new.state == WAITING
    assert new.num_computed == 0
    assert [c.seq for c in plan.chunks] == [old]
    assert scheduler.preemptions == 1
    for chunk in plan.chunks:
        scheduler.complete(chunk)
        chunk.seq.token_ids.append(9)
    scheduler.abort(old)
    plan = scheduler.schedule(2.0)
    assert plan.admitted == [new]
    # recomputed: the prompt and the token it had generated, then it samples its next one;
    # its first block was still in the prefix cache (the tail was evicted first)
    assert plan.cached_tokens[new.seq_id] == 2
    assert [(c.seq, c.start, c.num_tokens, c.samples) for c in plan.chunks] == [(new, 2, 3, True)]


def test_the_least_urgent_sequence_preempts_itself_and_comes_back() -> None:
    blocks = BlockManager(3, 2)
    scheduler = Scheduler(blocks, max_num_seqs=2, max_step_tokens=8)
    urgent = _seq(1, priority=5, arrival=0.0)
    low = _seq(4, start=40, arrival=0.0)
    scheduler.add(urgent)
    scheduler.add(low)
    _run_step(scheduler)
    assert scheduler.num_running == 2
    plan = scheduler.schedule(0.0)  # low needs a third block for its 5th token: none is free
    assert plan.preempted == [low]
    assert [c.seq for c in plan.chunks] == [urgent]
    for chunk in plan.chunks:
        scheduler.complete(chunk)
        chunk.seq.token_ids.append(1)
    scheduler.abort(urgent)
    plan = scheduler.schedule(1.0)
    assert plan.admitted == [low]
    assert scheduler.check_fits(6)
    assert not scheduler.check_fits(7)


def test_priority_and_aging_order_admission() -> None:
    scheduler = Scheduler(BlockManager(64, 4), max_num_seqs=1, max_step_tokens=8, aging=1.0)
    low_old = _seq(2, priority=0, arrival=0.0)
    high_new = _seq(2, start=10, priority=1, arrival=0.5)  # a level up, 0.5 s younger
    scheduler.add(low_old)
    scheduler.add(high_new)
    assert scheduler.schedule(1.0).admitted == [high_new]
    scheduler2 = Scheduler(BlockManager(64, 4), max_num_seqs=1, max_step_tokens=8, aging=1.0)
    low_older = _seq(2, priority=0, arrival=0.0)
    high_later = _seq(2, start=10, priority=1, arrival=2.0)  # waited 2 s less: aging wins
    scheduler2.add(low_older)
    scheduler2.add(high_later)
    assert scheduler2.schedule(3.0).admitted == [low_older]


def test_expired_waiting_sequences_leave_without_running() -> None:
    scheduler = Scheduler(BlockManager(8, 4), max_num_seqs=4, max_step_tokens=8)
    late = _seq(2, deadline=1.0)
    fine = _seq(2, start=10, deadline=10.0)
    scheduler.add(late)
    scheduler.add(fine)
    plan = scheduler.schedule(2.0)
    assert plan.expired == [late]
    assert late.state == FINISHED
    assert plan.admitted == [fine]
    assert scheduler.num_waiting == 0
    gone = _seq(2, start=30, deadline=3.0)
    scheduler.add(gone)
    assert scheduler.expire_waiting(5.0) == [gone]
    assert scheduler.num_waiting == 0
    assert not scheduler.has_work() or scheduler.num_running == 1


def test_abort_frees_blocks_in_every_state() -> None:
    blocks = BlockManager(8, 2)
    scheduler = Scheduler(blocks, max_num_seqs=4, max_step_tokens=8)
    running, waiting = _seq(3), _seq(3, start=10, arrival=5.0)
    scheduler.add(running)
    _run_step(scheduler)
    scheduler.add(waiting)
    scheduler.abort(waiting)
    scheduler.abort(running)
    scheduler.abort(running)  # twice: no-op
    assert running.state == FINISHED
    assert blocks.num_free_blocks == 8
    assert not scheduler.has_work()
    assert scheduler.schedule(0.0).chunks == []


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(
            st.integers(1, 12),  # prompt length
            st.integers(1, 8),  # tokens to generate
            st.integers(0, 2),  # priority
            st.integers(0, 6),  # arrival step
        ),
        min_size=1,
        max_size=10,
    ),
    num_blocks=st.integers(10, 14),  # the longest sequence (20 tokens) fits alone
    budget=st.integers(4, 16),
    prefix=st.booleans(),
)
def test_every_sequence_finishes_within_the_budget_and_nothing_leaks(
    requests: list[tuple[int, int, int, int]], num_blocks: int, budget: int, prefix: bool
) -> None:
    blocks = BlockManager(num_blocks, 2, prefix_caching=prefix)
    scheduler = Scheduler(blocks, max_num_seqs=4, max_step_tokens=budget, aging=0.5)
    pending = sorted(enumerate(requests), key=lambda r: r[1][3])
    want: dict[int, int] = {}
    seqs: list[Sequence] = []
    step = 0
    while pending or scheduler.has_work():
        while pending and pending[0][1][3] <= step:
            index, (length, out, priority, _) = pending.pop(0)
            seq = Sequence(
                [1 + (index + i) % 3 for i in range(length)],  # shared prefixes
                max_len=length + out,
                priority=priority,
                arrival=float(step),
            )
            assert scheduler.check_fits(seq.max_len)
            want[seq.seq_id] = out
            seqs.append(seq)
            scheduler.add(seq)
        plan = scheduler.schedule(float(step))
        assert plan.num_tokens <= budget
        assert sum(c.num_tokens for c in plan.chunks) == plan.num_tokens
        assert len({c.seq.seq_id for c in plan.chunks}) == len(plan.chunks)
        if scheduler.num_running:
            assert plan.chunks, "running sequences must make progress"
        for chunk in plan.chunks:
            seq = chunk.seq
            assert seq.state == RUNNING
            assert chunk.start == seq.num_computed
            table = blocks.block_table(seq.seq_id)
            assert len(table) * 2 >= chunk.start + chunk.num_tokens
            scheduler.complete(chunk)
            if chunk.samples:
                seq.token_ids.append(step % 5)
                if seq.num_generated == want[seq.seq_id]:
                    scheduler.abort(seq)
        blocks.check_invariants()
        step += 1
        assert step < 2000, "no progress: deadlock"
    assert all(s.state == FINISHED for s in seqs)
    assert all(s.num_generated == want[s.seq_id] for s in seqs)
    assert blocks.num_free_blocks == num_blocks
