"""Properties over random arrival patterns, with a tiny deterministic torch model.

Whatever the arrivals, priorities, cancellations, deadlines and poison inputs: every accepted
request gets exactly one outcome, no batch exceeds the size or token limits or mixes buckets, and
every result equals the model's result for that input run alone.
"""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from toy import POISON, ToyAdapter, alone, reference

from aiaas_serving import (
    BatchPolicy,
    Cancelled,
    DeadlineExceeded,
    InputTooLarge,
    ModelError,
    Overloaded,
    Runtime,
)
from aiaas_serving._policy import bucket_index

FATES = ("keep", "keep", "keep", "cancel", "deadline", "poison")

arrivals = st.lists(
    st.tuples(
        st.sampled_from((0, 0, 0, 1, 2)),  # gap before arrival: same tick, or 1-2 ms later
        st.integers(0, 30),  # length (the model takes at most 24)
        st.integers(-2, 2),  # priority
        st.sampled_from(FATES),
    ),
    min_size=1,
    max_size=40,
)
policies = st.builds(
    BatchPolicy,
    max_batch_size=st.integers(1, 8),
    max_batch_tokens=st.one_of(st.none(), st.integers(8, 64)),
    buckets=st.sampled_from((None, (4, 8, 16), (12,), (2, 3, 5, 8, 13, 21))),
    pad_to=st.sampled_from(("longest", "bucket")),
    max_queue=st.integers(4, 64),
    aging=st.sampled_from((0.0, 1.0, 100.0)),
    max_delay=st.sampled_from((0.0, 0.001, 1.0)),
)


def tokens_for(index: int, length: int, fate: str) -> list[int]:
    tokens = [(index * 7 + k) % 12 + 1 for k in range(length)]
    if fate == "poison" and tokens:
        tokens[length // 2] = POISON
    return tokens


async def run(pattern, policy, delay):
    adapter = ToyAdapter(max_length=24, delay=delay)
    accepted = []  # (tokens, fate, handle)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        loop = asyncio.get_running_loop()
        for index, (gap, length, priority, fate) in enumerate(pattern):
            if gap:
                await asyncio.sleep(gap / 1000)
            tokens = tokens_for(index, length, fate)
            try:
                handle = model.enqueue(
                    tokens,
                    priority=priority,
                    timeout=0.001 * (1 + index % 3) if fate == "deadline" else None,
                )
            except (InputTooLarge, Overloaded):
                continue
            if fate == "cancel":
                loop.call_later(0.001 * (index % 3), handle.cancel)
            accepted.append((tokens, fate, handle))
    # the runtime drained on exit: every accepted request must already have its outcome
    return adapter, runtime, accepted


@given(pattern=arrivals, policy=policies, delay=st.sampled_from((0.0, 0.001)))
def test_every_request_gets_one_outcome_and_batches_keep_the_limits(pattern, policy, delay):
    adapter, runtime, accepted = asyncio.run(run(pattern, policy, delay))
    outcomes = {"ok": 0, "model_error": 0, "cancelled": 0, "deadline_exceeded": 0}
    for tokens, fate, handle in accepted:
        future = handle._req.future
        assert handle.done()
        assert future.done()
        error = None if future.cancelled() else future.exception()
        if error is None:
            assert fate != "poison" or POISON not in tokens
            assert future.result() == reference(tokens) == alone(adapter, tokens)
            outcomes["ok"] += 1
        elif isinstance(error, ModelError):
            assert POISON in tokens  # only a poisoned input fails, whatever its batch
            outcomes["model_error"] += 1
        elif isinstance(error, Cancelled):
            assert fate == "cancel"
            outcomes["cancelled"] += 1
        else:
            assert isinstance(error, DeadlineExceeded)
            assert fate == "deadline"
            outcomes["deadline_exceeded"] += 1
        if fate == "keep":
            assert error is None  # nothing else may fail a healthy, patient request
    metrics = runtime.metrics
    for outcome, count in outcomes.items():
        assert metrics.counter("aiaas_serving_requests_total", model="toy", outcome=outcome) == (
            count
        )
    assert sum(outcomes.values()) == len(accepted)

    buckets = policy.resolved_buckets(24)
    for lengths, padded in adapter.collated:
        assert 1 <= len(lengths) <= policy.max_batch_size
        if policy.max_batch_tokens is not None and len(lengths) > 1:
            assert padded * len(lengths) <= policy.max_batch_tokens
        assert padded >= max(lengths)
        if buckets is not None:
            assert len({bucket_index(buckets, n) for n in lengths}) == 1  # one bucket per batch
            if policy.pad_to == "bucket":
                assert padded == buckets[bucket_index(buckets, lengths[0])]
            else:
                assert padded == max(lengths)
        else:
            assert padded == max(lengths)
