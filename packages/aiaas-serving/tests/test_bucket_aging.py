"""Aging across buckets (``BatchPolicy.age_window``): which queued requests join a batch.

Ordering, not timings: the event loop's clock is replaced by a fake one the test moves, and the
toy model's forward calls wait on gates, so every batch is formed at a known time from a known
queue. Each batch "takes" one unit of the fake clock.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from toy import ToyAdapter, reference, wait_started

from aiaas_serving import BatchPolicy, RequestHandle, Runtime

BUCKETS = (8, 16, 24, 32, 40, 48, 56, 64)


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@contextmanager
def fake_clock() -> Iterator[FakeClock]:
    """The running loop's ``time()`` (the runtime's clock) made a fake one, for this block.

    The tests set no timers (no deadlines), so only the runtime reads it.
    """
    loop = asyncio.get_running_loop()
    clock = FakeClock(loop.time())
    loop.time = clock  # type: ignore[method-assign]
    try:
        yield clock
    finally:
        del loop.time


def stepped(steps: int) -> tuple[ToyAdapter, list[threading.Event]]:
    gates = [threading.Event() for _ in range(steps)]
    return ToyAdapter(max_length=64, gates=gates), gates


async def test_a_batch_leaves_out_requests_much_fresher_than_its_head() -> None:
    adapter, gates = stepped(4)
    policy = BatchPolicy(max_batch_size=8, buckets=(4, 64), max_delay=0.0, age_window=0.5)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        with fake_clock() as clock:
            blocker = model.enqueue([1])
            await wait_started(adapter)  # the device is busy with it until gates[0] opens
            oldest = model.enqueue([1, 2])  # t = 0
            clock.now += 9.0
            half = model.enqueue([2, 3])  # t = 9: it will have waited 11 of the oldest's 20
            clock.now += 3.0
            fresh = model.enqueue([3, 4])  # t = 12: it will have waited 8 of the oldest's 20
            clock.now += 3.0
            urgent = model.enqueue([4, 5], priority=8)  # t = 15, but 8 levels more urgent
            clock.now += 5.0
            gates[0].set()  # t = 20: the next batch is formed now
            await wait_started(adapter)
            assert await blocker == reference([1])
            assert adapter.batches[1] == (3, 2)  # the oldest, the half-as-old and the urgent one
            assert [oldest.done(), half.done(), urgent.done(), fresh.done()] == [False] * 4
            clock.now += 1.0
            gates[1].set()
            await wait_started(adapter)
            assert [await oldest, await half, await urgent] == [
                reference([1, 2]),
                reference([2, 3]),
                reference([4, 5]),
            ]
            assert adapter.batches[2] == (1, 2)  # the fresh one: this bucket's next batch
            gates[2].set()
            assert await fresh == reference([3, 4])


@pytest.mark.parametrize(("window", "size"), [(1.0, 3), (0.0, 1)])
async def test_the_window_bounds_take_everything_or_only_the_heads_equals(
    window: float, size: int
) -> None:
    adapter, gates = stepped(3)
    policy = BatchPolicy(max_batch_size=8, max_delay=0.0, age_window=window)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        with fake_clock() as clock:
            blocker = model.enqueue([1])
            await wait_started(adapter)
            handles = []
            for _ in range(3):
                handles.append(model.enqueue([1, 2]))
                clock.now += 1.0
            gates[0].set()
            await wait_started(adapter)
            assert adapter.batches[1] == (size, 2)
            gates[1].set()
            gates[2].set()
            assert (
                await asyncio.gather(blocker, *handles)
                == [reference([1])] + [reference([1, 2])] * 3
            )


async def test_requests_within_one_batch_time_of_the_head_always_join() -> None:
    gates = [threading.Event() for _ in range(3)]
    gates[0].set()  # the first batch runs freely: it teaches the runtime its batch time
    adapter = ToyAdapter(max_length=64, gates=gates, delay=0.05)
    policy = BatchPolicy(max_batch_size=8, max_delay=0.0, age_window=0.0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        assert await model.submit([9]) == reference([9])  # a batch of about 50 ms
        adapter.started.clear()
        with fake_clock() as clock:
            blocker = model.enqueue([1])
            await wait_started(adapter)
            head = model.enqueue([1, 2])
            clock.now += 0.01  # well within one batch time of the head
            close = model.enqueue([2, 3])
            clock.now += 5.0  # far beyond it
            late = model.enqueue([3, 4])
            clock.now += 1.0
            gates[1].set()
            gates[2].set()
            assert await asyncio.gather(blocker, head, close, late) == [
                reference([1]),
                reference([1, 2]),
                reference([2, 3]),
                reference([3, 4]),
            ]
            assert adapter.batches[2:] == [(2, 2), (1, 2)]


async def test_a_burst_admitted_at_once_stays_one_full_batch() -> None:
    adapter, gates = stepped(2)
    policy = BatchPolicy(max_batch_size=16, max_delay=0.0, age_window=0.0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        with fake_clock() as clock:
            blocker = model.enqueue([1])
            await wait_started(adapter)
            burst = [model.enqueue([5] * 3) for _ in range(12)]
            clock.now += 30.0
            gates[0].set()
            gates[1].set()
            await asyncio.gather(blocker, *burst)
            assert adapter.batches[1:] == [(12, 3)]


async def closed_loop(
    window: float, clients: int, steps: int, *, busy: float = 0.0, max_batch_size: int = 64
) -> tuple[list[tuple[int, float]], list[tuple[int, int]]]:
    """``clients`` closed-loop clients, each asking again as soon as it is answered, for a token
    length drawn uniformly from 1-64 each time (seeded), over ``steps`` batches; a batch takes
    ``0.05 + size * padded length / 64`` clock units (compute grows with padded tokens).
    Returns each answered request's (length, latency) and each batch's (size, padded length)."""
    rng = random.Random(3)  # noqa: S311 - a reproducible workload, not a secret
    adapter, gates = stepped(steps + 1)
    policy = BatchPolicy(
        max_batch_size=max_batch_size, buckets=BUCKETS, max_delay=0.0, age_window=window
    )
    latencies: list[tuple[int, float]] = []
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        with fake_clock() as clock:

            def ask() -> tuple[int, RequestHandle[list[float]], float]:
                length = rng.randint(1, 8) if rng.random() < busy else rng.randint(1, 64)
                return length, model.enqueue([1] * length), clock.now

            blocker = model.enqueue([1])
            await wait_started(adapter)
            pending = [ask() for _ in range(clients)]
            for step in range(steps):
                size, padded = adapter.batches[step]
                clock.now += 0.05 + size * padded / 64  # batch `step` ends; the next one starts
                gates[step].set()
                await wait_started(adapter)  # the next batch runs: this one is settled
                still: list[tuple[int, RequestHandle[list[float]], float]] = []
                for length, handle, arrival in pending:
                    if handle.done():
                        assert await handle == reference([1] * length)
                        latencies.append((length, clock.now - arrival))
                        still.append(ask())
                    else:
                        still.append((length, handle, arrival))
                pending = still
            for gate in gates:
                gate.set()
            await blocker
            await asyncio.gather(*(handle for _, handle, _ in pending))
    return latencies, adapter.batches[1 : steps + 1]


def settled(latencies: list[tuple[int, float]], sparse: bool = False) -> list[float]:
    """Latencies past the start-up (the first quarter), only those beyond 8 tokens if sparse."""
    return [lat for n, lat in latencies[len(latencies) // 4 :] if n > 8 or not sparse]


async def test_aging_across_buckets_evens_out_waits_on_a_uniform_mix() -> None:
    windowed, batches = await closed_loop(0.5, 32, 120)
    unwindowed, _ = await closed_loop(1.0, 32, 120)
    ours, before = settled(windowed), settled(unwindowed)
    # the same mean (the clients' own loop sets it), but the slowest request now waits about
    # 1.5x the mean where taking whole buckets let it wait about twice the mean
    assert statistics.fmean(ours) == pytest.approx(statistics.fmean(before), rel=0.05)
    assert max(ours) <= 1.65 * statistics.fmean(ours)
    assert max(before) >= 1.8 * statistics.fmean(before)
    assert statistics.fmean(size for size, _ in batches) >= 3  # still batched by length


async def test_a_sparse_bucket_is_served_in_turn_while_a_busy_bucket_stays_full() -> None:
    # 60 % of requests land in the first bucket (1-8 tokens): it always holds a full batch
    windowed, batches = await closed_loop(0.5, 40, 120, busy=0.6, max_batch_size=8)
    unwindowed, _ = await closed_loop(1.0, 40, 120, busy=0.6, max_batch_size=8)
    ours, before = settled(windowed, sparse=True), settled(unwindowed, sparse=True)
    assert max(ours) <= 1.5 * statistics.fmean(settled(windowed))
    assert max(before) >= 1.9 * statistics.fmean(settled(unwindowed))
    busy = [size for size, padded in batches if padded == 8]
    assert len(busy) >= 20
    assert busy == [8] * len(busy)  # every batch of the busy bucket full
