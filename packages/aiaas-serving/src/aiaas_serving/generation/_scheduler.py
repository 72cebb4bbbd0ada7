"""The generation scheduler: plans each engine step, runs nothing.

Every step it plans, within a per-step token budget (``max_step_tokens``):

1. one token for every running sequence that is decoding, most urgent first; when the KV cache
   has no block for a sequence's next token, the least urgent running sequence (lowest aged
   priority, newest first) is *preempted*: its blocks are freed and it goes back to the waiting
   queue, to be recomputed later by prefilling its prompt and the tokens it generated so far;
2. the next prefill chunk of every running sequence whose prompt is partly computed (chunked
   prefill: a long prompt takes a few steps and never stalls the others' decoding);
3. newly admitted waiting sequences, most urgent first, while the budget, ``max_num_seqs`` and
   the free blocks allow (admission allocates the whole prompt's blocks, reusing cached prefix
   blocks). The queue head that does not fit blocks the ones behind it (no overtaking).

Urgency is the runtime's rule: ``priority + waited seconds * aging``; since every sequence ages
at the same rate, the static key ``arrival * aging - priority`` orders them for good.

A sequence that could never fit the pool alone is refused at submit (:meth:`Scheduler.check_fits`),
so a preempted sequence always fits again once the others finish: no deadlock, and every
accepted sequence finishes. Expired waiting sequences leave the queue with their blocks freed.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Final

from aiaas_serving.generation._blocks import BlockManager

__all__ = ["ScheduledChunk", "SchedulePlan", "Scheduler", "Sequence"]

WAITING: Final = 0
RUNNING: Final = 1
FINISHED: Final = 2

_counter = itertools.count()


class Sequence:
    """One request's tokens and its place in the scheduler (owned by the engine's loop).

    ``token_ids`` is the prompt followed by the generated tokens; ``num_computed`` of them have
    their keys and values in the cache. A running sequence always has at least one token to
    compute: its next step feeds ``token_ids[num_computed:]`` (one token when decoding).
    """

    __slots__ = (
        "arrival",
        "deadline",
        "key",
        "max_len",
        "num_computed",
        "num_prompt",
        "preemptions",
        "priority",
        "seq_id",
        "state",
        "token_ids",
    )

    def __init__(
        self,
        prompt_token_ids: list[int],
        *,
        max_len: int,
        priority: int = 0,
        arrival: float = 0.0,
        deadline: float | None = None,
        seq_id: int | None = None,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.seq_id = next(_counter) if seq_id is None else seq_id
        self.token_ids = prompt_token_ids
        self.num_prompt = len(prompt_token_ids)
        self.max_len = max_len  # prompt plus the most tokens it may generate
        self.num_computed = 0
        self.priority = priority
        self.arrival = arrival
        self.deadline = deadline
        self.state: int = WAITING
        self.key = 0.0
        self.preemptions = 0

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt

    @property
    def pending(self) -> int:
        """Tokens still to compute before the next sample."""
        return len(self.token_ids) - self.num_computed

    def __repr__(self) -> str:
        return (
            f"Sequence(id={self.seq_id}, tokens={len(self.token_ids)}, "
            f"computed={self.num_computed}, state={self.state})"
        )


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """One sequence's share of a step: ``token_ids[start:start + num_tokens]`` are computed;
    ``samples`` when that reaches its last token (a new token is sampled after the step)."""

    seq: Sequence
    start: int
    num_tokens: int
    samples: bool


@dataclass(slots=True)
class SchedulePlan:
    """What one step runs: decodes first, then prefill chunks; and who left the running set."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    expired: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)
    cached_tokens: dict[int, int] = field(default_factory=dict)  # seq_id -> prefix hit tokens
    num_tokens: int = 0


class Scheduler:
    """Plans engine steps over a :class:`BlockManager` (see the module docs)."""

    def __init__(
        self,
        blocks: BlockManager,
        *,
        max_num_seqs: int,
        max_step_tokens: int,
        aging: float = 1.0,
    ) -> None:
        if max_num_seqs < 1 or max_step_tokens < max_num_seqs:
            raise ValueError(
                f"need max_num_seqs >= 1 and max_step_tokens >= max_num_seqs (every running "
                f"sequence decodes each step), got {max_num_seqs} and {max_step_tokens}"
            )
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_step_tokens = max_step_tokens
        self.aging = aging
        self._waiting: list[tuple[float, int, Sequence]] = []
        self._num_waiting = 0
        self.running: list[Sequence] = []
        self.preemptions = 0

    # --- membership ---------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.running) or self._num_waiting > 0

    def check_fits(self, max_len: int) -> bool:
        """Whether a sequence that may grow to ``max_len`` tokens fits the pool alone."""
        return self.blocks.blocks_for(max_len) <= self.blocks.num_blocks

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence (its ``arrival`` and ``priority`` set its place)."""
        seq.key = seq.arrival * self.aging - seq.priority
        seq.state = WAITING
        heapq.heappush(self._waiting, (seq.key, seq.seq_id, seq))
        self._num_waiting += 1

    def abort(self, seq: Sequence) -> None:
        """Take ``seq`` out (cancelled, expired, failed, finished) and free its blocks."""
        if seq.state == FINISHED:
            return
        if seq.state == WAITING:
            self._num_waiting -= 1  # its heap entry is skipped when it surfaces
        else:
            self.running.remove(seq)
        seq.state = FINISHED
        self.blocks.free(seq.seq_id)

    def _head(self) -> Sequence | None:
        while self._waiting:
            seq = self._waiting[0][2]
            if seq.state == WAITING:
                return seq
            heapq.heappop(self._waiting)
        return None

    def _preempt(self, seq: Sequence, plan: SchedulePlan) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.seq_id)
        seq.num_computed = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.add(seq)
        plan.preempted.append(seq)

    # --- planning -----------------------------------------------------------------------

    def schedule(self, now: float) -> SchedulePlan:
        """Plan one step at time ``now`` (the clock of the sequences' ``deadline``)."""
        plan = SchedulePlan()
        budget = self.max_step_tokens
        blocks = self.blocks
        running = self.running
        running.sort(key=_urgency)  # most urgent first, oldest first on ties
        scheduled: set[int] = set()
        for seq in [s for s in running if s.pending == 1]:
            if seq.state != RUNNING:  # preempted meanwhile, as a less urgent one's victim
                continue
            grow = len(seq.token_ids)
            while not blocks.can_append(seq.seq_id, grow):
                victim = running[-1]  # the least urgent, newest: never one scheduled already
                self._preempt(victim, plan)
                if victim is seq:
                    break
            if seq.state == RUNNING:
                blocks.append_slots(seq.seq_id, grow)
                plan.chunks.append(ScheduledChunk(seq, seq.num_computed, 1, True))
                scheduled.add(seq.seq_id)
                budget -= 1
        for seq in running:
            if budget <= 0:
                break
            if seq.seq_id in scheduled:
                continue
            n = min(seq.pending, budget)
            plan.chunks.append(ScheduledChunk(seq, seq.num_computed, n, n == seq.pending))
            budget -= n
        if not plan.preempted:  # no admission while the pool is short for those running
            budget = self._admit(plan, budget, now)
        plan.num_tokens = self.max_step_tokens - budget
        return plan

    def _admit(self, plan: SchedulePlan, budget: int, now: float) -> int:
        blocks = self.blocks
        watermark = blocks.num_blocks // 100  # 1 % spare for those running to grow
        while budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self._head()
            if seq is None:
                break
            if seq.deadline is not None and seq.deadline <= now:
                heapq.heappop(self._waiting)
                self._num_waiting -= 1
                seq.state = FINISHED
                plan.expired.append(seq)
                continue
            if not blocks.can_allocate(seq.token_ids, reserve=watermark if self.running else 0):
                break
            heapq.heappop(self._waiting)
            self._num_waiting -= 1
            cached = blocks.allocate(seq.seq_id, seq.token_ids)
            seq.num_computed = cached
            seq.state = RUNNING
            self.running.append(seq)
            plan.admitted.append(seq)
            plan.cached_tokens[seq.seq_id] = cached
            n = min(seq.pending, budget)
            plan.chunks.append(ScheduledChunk(seq, seq.num_computed, n, n == seq.pending))
            budget -= n
        return budget

    def expire_waiting(self, now: float) -> list[Sequence]:
        """Take every waiting sequence whose deadline passed out of the queue (its outcome is
        the caller's); O(waiting)."""
        gone = [
            s
            for _, _, s in self._waiting
            if s.state == WAITING and s.deadline is not None and s.deadline <= now
        ]
        for seq in gone:
            seq.state = FINISHED
            self._num_waiting -= 1
        return gone

    def complete(self, chunk: ScheduledChunk) -> None:
        """Record that ``chunk`` ran: its tokens are now in the cache."""
        seq = chunk.seq
        seq.num_computed = chunk.start + chunk.num_tokens
        self.blocks.mark_computed(seq.seq_id, seq.token_ids, seq.num_computed)


def _urgency(seq: Sequence) -> tuple[float, int]:
    return seq.key, seq.seq_id
