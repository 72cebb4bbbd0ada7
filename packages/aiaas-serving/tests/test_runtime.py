"""The runtime's scheduling, admission, deadlines, cancellation and drain."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from toy import ToyAdapter, reference, wait_started

from aiaas_serving import (
    BatchPolicy,
    Cancelled,
    DeadlineExceeded,
    ExecutionOptions,
    InputTooLarge,
    InvalidInput,
    ModelError,
    ModelNotFound,
    Overloaded,
    Runtime,
    ShuttingDown,
)

REQUESTS = "aiaas_serving_requests_total"
REJECTIONS = "aiaas_serving_rejections_total"


def gated(**options) -> tuple[ToyAdapter, threading.Event]:
    gate = threading.Event()
    return ToyAdapter(gate=gate, **options), gate


async def test_submit_returns_the_models_result_for_each_input() -> None:
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", ToyAdapter())
        inputs = [[1, 2, 3], [4], [5, 6, 7, 8, 9], []]
        results = await asyncio.gather(*(model.submit(x) for x in inputs))
        assert results == [reference(x) for x in inputs]
        assert await runtime.submit("toy", [7, 7]) == reference([7, 7])
        assert runtime.models == ("toy",)


async def test_a_request_at_an_idle_device_runs_alone_and_batches_grow_while_busy() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=8))
        first = asyncio.ensure_future(model.submit([1, 2]))
        await wait_started(adapter)  # dispatched at once, alone: the device is now busy
        assert adapter.batches == [(1, 2)]
        rest = [asyncio.ensure_future(model.submit([3, 4])) for _ in range(5)]
        await asyncio.sleep(0)  # admitted while busy: they wait, nothing new runs
        assert runtime.model_info("toy").queued == 5
        gate.set()
        assert await first == reference([1, 2])
        assert await asyncio.gather(*rest) == [reference([3, 4])] * 5
        assert adapter.batches == [(1, 2), (5, 2)]


async def test_requests_admitted_in_one_loop_tick_share_a_batch() -> None:
    adapter = ToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=32))
        await asyncio.gather(*(model.submit([5] * 3) for _ in range(10)))
        assert adapter.batches == [(10, 3)]


async def test_batches_respect_size_and_padded_token_budget() -> None:
    adapter, gate = gated()
    policy = BatchPolicy(max_batch_size=4, max_batch_tokens=24, buckets=(64,))
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        lengths = [2, 3, 10, 2, 2, 2, 2, 2, 2, 12]
        futures = [asyncio.ensure_future(model.submit([1] * n)) for n in lengths]
        await asyncio.sleep(0)
        gate.set()
        await blocker
        results = await asyncio.gather(*futures)
        assert results == [reference([1] * n) for n in lengths]
        for size, padded in adapter.batches:
            assert size <= 4
            assert size * padded <= 24 or size == 1
        # arrival order, padded to the longest: [2,3] | [10,2] | [2,2,2,2] | [2,12]
        assert adapter.batches[1:] == [(2, 3), (2, 10), (4, 2), (2, 12)]


async def test_a_batch_never_mixes_padding_buckets_and_pads_to_its_longest() -> None:
    adapter, gate = gated()
    policy = BatchPolicy(max_batch_size=16, buckets=(4, 8, 16))
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        lengths = [1, 7, 2, 12, 3, 8, 16, 5]
        futures = [asyncio.ensure_future(model.submit([2] * n)) for n in lengths]
        await asyncio.sleep(0)
        gate.set()
        await blocker
        assert await asyncio.gather(*futures) == [reference([2] * n) for n in lengths]
        assert sorted(adapter.batches[1:]) == [(2, 16), (3, 3), (3, 8)]
        info = runtime.model_info("toy")
        assert info.buckets == (4, 8, 16, 64)
        assert not info.pad_to_bucket


async def test_pad_to_bucket_gives_stable_shapes() -> None:
    adapter = ToyAdapter()
    policy = BatchPolicy(buckets=(8, 32), pad_to="bucket")
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        assert await model.submit([3] * 5) == reference([3] * 5)
        assert await model.submit([3] * 9) == reference([3] * 9)
        assert adapter.batches == [(1, 8), (1, 32)]
        assert model.info().pad_to_bucket


async def test_higher_priority_runs_first() -> None:
    adapter, gate = gated()
    order: list[int] = []
    policy = BatchPolicy(max_batch_size=1, aging=0.0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)

        async def run(tag: int, priority: int) -> None:
            await model.submit([tag], priority=priority)
            order.append(tag)

        tasks = [
            asyncio.ensure_future(run(tag, prio))
            for tag, prio in ((2, 0), (3, 5), (4, -1), (5, 5), (6, 1))
        ]
        await asyncio.sleep(0)
        gate.set()
        await blocker
        await asyncio.gather(*tasks)
        assert order == [3, 5, 6, 2, 4]  # by priority, then arrival


async def test_aging_lets_an_old_low_priority_request_overtake() -> None:
    adapter, gate = gated()
    order: list[str] = []
    policy = BatchPolicy(max_batch_size=1, aging=1000.0)  # a level per millisecond of waiting
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)

        async def run(tag: str, priority: int) -> None:
            await model.submit([2], priority=priority)
            order.append(tag)

        old = asyncio.ensure_future(run("old-low", 0))
        await asyncio.sleep(0.05)  # 50 ms of waiting is worth 50 priority levels here
        new = asyncio.ensure_future(run("new-high", 10))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(blocker, old, new)
        assert order == ["old-low", "new-high"]


async def test_full_bucket_goes_before_a_fresh_partial_one_unless_overdue() -> None:
    adapter, gate = gated()
    policy = BatchPolicy(max_batch_size=3, buckets=(4, 64), max_delay=60.0, aging=0.0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        long_one = asyncio.ensure_future(model.submit([1] * 40))  # oldest, alone in its bucket
        short = [asyncio.ensure_future(model.submit([1, 2])) for _ in range(3)]  # a full bucket
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(blocker, long_one, *short)
        assert adapter.batches[1:] == [(3, 2), (1, 40)]

    adapter, gate = gated()
    policy = BatchPolicy(max_batch_size=3, buckets=(4, 64), max_delay=0.0, aging=0.0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        long_one = asyncio.ensure_future(model.submit([1] * 40))
        short = [asyncio.ensure_future(model.submit([1, 2])) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(blocker, long_one, *short)
        assert adapter.batches[1:] == [(1, 40), (3, 2)]  # overdue at once: oldest first


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_queue=3))
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        queued = [model.enqueue([2]) for _ in range(3)]
        with pytest.raises(Overloaded) as caught:
            model.enqueue([3])
        err = caught.value
        assert err.status == 429
        assert err.code == "MODEL_OVERLOADED"
        assert err.model == "toy"
        assert int(err.headers["Retry-After"]) >= 1
        assert "3 requests are queued" in err.message
        with pytest.raises(Overloaded):  # all or none: 2 more cannot fit
            runtime.enqueue_many("toy", [[1], [2]])
        assert runtime.model_info("toy").queued == 3
        gate.set()
        await running
        assert [await h for h in queued] == [reference([2])] * 3
        metrics = runtime.metrics
        assert metrics.counter(REJECTIONS, model="toy", reason="overloaded") == 2


async def test_inputs_that_can_never_fit_are_refused_at_once() -> None:
    adapter = ToyAdapter(max_length=None)
    policy = BatchPolicy(buckets=(8, 16), max_batch_tokens=12)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=policy)
        with pytest.raises(InputTooLarge, match=r"17 tokens long.*at most 16") as too_long:
            model.enqueue([1] * 17)
        assert too_long.value.status == 413
        assert too_long.value.code == "INPUT_TOO_LARGE"
        with pytest.raises(InputTooLarge, match=r"13 padded tokens.*budget of 12"):
            model.enqueue([1] * 13)
        assert await model.submit([1] * 12) == reference([1] * 12)
        assert adapter.batches == [(1, 12)]  # nothing else ever reached the model
        assert runtime.metrics.counter(REJECTIONS, model="toy", reason="input_too_large") == 2

    policy = BatchPolicy(buckets=(8, 16), max_batch_tokens=12, pad_to="bucket")
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", ToyAdapter(max_length=None), policy=policy)
        with pytest.raises(InputTooLarge, match="16 padded tokens"):
            model.enqueue([1] * 9)  # its bucket pads it to 16


async def test_bad_inputs_are_refused_with_typed_errors() -> None:
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", ToyAdapter(max_length=8))
        with pytest.raises(InvalidInput, match="list of token ids") as invalid:
            model.enqueue("text")
        assert invalid.value.status == 422
        assert invalid.value.model == "toy"
        with pytest.raises(InvalidInput, match=r"rejected the input: token ids must be in \[0, 64"):
            model.enqueue([99])
        with pytest.raises(InputTooLarge, match="at most 8"):
            model.enqueue([1] * 9)
        with pytest.raises(ModelNotFound, match=r"no model named 'nope'.*served: toy") as missing:
            runtime.enqueue("nope", [1])
        assert missing.value.status == 404
        with pytest.raises(TypeError, match="priority must be an int"):
            model.enqueue([1], priority=1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="timeout must be a number"):
            model.enqueue([1], timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="deadline must be"):
            model.enqueue([1], deadline=float("nan"))
        with pytest.raises(ValueError, match="either deadline"):
            model.enqueue([1], deadline=time.monotonic() + 1, timeout=1)
        counter = runtime.metrics.counter
        assert counter(REJECTIONS, model="toy", reason="invalid_input") == 2
        assert counter(REJECTIONS, model="toy", reason="input_too_large") == 1


async def test_unexpected_prepare_failures_become_model_errors() -> None:
    class Broken(ToyAdapter):
        def prepare(self, inputs):
            raise KeyError("internal detail")

    class BadCost(ToyAdapter):
        def cost(self, item):
            return -1

    async with Runtime(device="cpu") as runtime:
        broken = await runtime.add_model("broken", Broken())
        with pytest.raises(ModelError, match="could not prepare") as caught:
            broken.enqueue([1])
        assert "internal detail" not in caught.value.message
        assert isinstance(caught.value.__cause__, KeyError)
        bad = await runtime.add_model("bad-cost", BadCost())
        with pytest.raises(ModelError, match="cost must be an int"):
            bad.enqueue([1])


async def test_a_deadline_already_past_is_refused_before_queueing() -> None:
    adapter = ToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        with pytest.raises(DeadlineExceeded) as caught:
            model.enqueue([1], deadline=time.monotonic() - 1)
        assert caught.value.status == 504
        assert caught.value.code == "DEADLINE_EXCEEDED"
        with pytest.raises(DeadlineExceeded):
            model.enqueue([1], timeout=0)
        assert adapter.batches == []
        metrics = runtime.metrics
        assert metrics.counter(REJECTIONS, model="toy", reason="deadline_exceeded") == 2


async def test_a_deadline_passing_in_the_queue_fails_before_any_compute() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        doomed = model.enqueue([5, 5, 5], timeout=0.02)
        kept = model.enqueue([6])
        with pytest.raises(DeadlineExceeded, match="before it ran"):
            await doomed  # answered at its deadline, while the device is still busy
        assert runtime.model_info("toy").queued == 1
        gate.set()
        await running
        assert await kept == reference([6])
        assert adapter.batches == [(1, 1), (1, 1)]  # the expired request never ran
        assert runtime.metrics.counter(REQUESTS, model="toy", outcome="deadline_exceeded") == 1


async def test_a_deadline_passing_while_running_discards_the_result() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        doomed = model.enqueue([1], timeout=0.3)
        await wait_started(adapter)
        with pytest.raises(DeadlineExceeded, match="while it was running"):
            await doomed
        gate.set()
        assert await model.submit([2]) == reference([2])
        metrics = runtime.metrics
        assert metrics.counter(REQUESTS, model="toy", outcome="deadline_exceeded") == 1
        assert metrics.counter(REQUESTS, model="toy", outcome="ok") == 1


async def test_due_requests_are_dropped_when_a_batch_is_formed() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        doomed = model.enqueue([2], timeout=0.01)
        kept = model.enqueue([3])
        # Block the loop past the deadline, so its timer cannot run, and let the first batch
        # finish meanwhile: the next batch is formed before the timer fires.
        time.sleep(0.03)  # noqa: ASYNC251 - blocking the loop on purpose
        gate.set()
        time.sleep(0.05)  # noqa: ASYNC251
        await running
        assert await kept == reference([3])
        with pytest.raises(DeadlineExceeded):
            await doomed
        assert (1, 1) in adapter.batches
        assert sum(size for size, _ in adapter.batches) == 2


async def test_cancelling_the_caller_removes_a_queued_request() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        caller = asyncio.ensure_future(model.submit([9, 9]))
        await asyncio.sleep(0)
        assert runtime.model_info("toy").queued == 1
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert runtime.model_info("toy").queued == 0
        gate.set()
        await running
        assert adapter.batches == [(1, 1)]
        assert runtime.metrics.counter(REQUESTS, model="toy", outcome="cancelled") == 1


async def test_a_cancelled_running_request_has_its_result_discarded() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        handle = model.enqueue([4])
        other = model.enqueue([5])
        await wait_started(adapter)
        assert handle.cancel() is True
        assert handle.cancel() is False  # an outcome is taken only once
        assert handle.done()
        with pytest.raises(Cancelled) as caught:
            await handle
        assert caught.value.code == "REQUEST_CANCELLED"
        assert caught.value.status == 499
        gate.set()
        assert await other == reference([5])
        counter = runtime.metrics.counter
        assert counter(REQUESTS, model="toy", outcome="cancelled") == 1
        assert counter(REQUESTS, model="toy", outcome="ok") == 1


async def test_a_cancellation_storm_keeps_memory_bounded_and_loses_nothing() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_queue=5000))
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        kept = []
        for round_ in range(10):
            handles = [model.enqueue([round_ % 10 + 1]) for _ in range(400)]
            for i, h in enumerate(handles):
                if i % 100:
                    h.cancel()
                else:
                    kept.append(h)
            heap_entries = sum(len(heap) for heap in runtime._models["toy"].queue._heaps)
            assert heap_entries <= 2 * len(kept) + 64  # compacted, not growing with the storm
        gate.set()
        await running
        results = [await h for h in kept]
        assert results == [reference([(i // 4) % 10 + 1]) for i in range(len(kept))]
        counter = runtime.metrics.counter
        assert counter(REQUESTS, model="toy", outcome="cancelled") == 3960
        assert counter(REQUESTS, model="toy", outcome="ok") == 41


async def test_overload_tenfold_rejects_at_once_and_stays_bounded() -> None:
    adapter = ToyAdapter(delay=0.002)
    limit = 50
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model(
            "toy", adapter, policy=BatchPolicy(max_queue=limit, max_batch_size=16)
        )
        accepted, refused = [], 0
        for _ in range(10):  # ten times what the queue holds, as fast as the loop can go
            for _ in range(limit):
                try:
                    accepted.append(model.enqueue([2, 3]))
                except Overloaded:
                    refused += 1
            assert runtime.model_info("toy").queued <= limit
            await asyncio.sleep(0)
        results = [await h for h in accepted]
        assert results == [reference([2, 3])] * len(accepted)
        assert refused > 0
        assert len(accepted) + refused == 10 * limit
        assert runtime.metrics.counter(REJECTIONS, model="toy", reason="overloaded") == refused


async def test_a_deadline_the_queue_cannot_meet_is_refused_at_admission() -> None:
    adapter = ToyAdapter(delay=0.05)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model(
            "toy", adapter, policy=BatchPolicy(max_batch_size=1, max_queue=100)
        )
        assert await model.submit([1, 2]) == reference([1, 2])  # measures seconds per request
        queued = [model.enqueue([3]) for _ in range(20)]  # >= 20 x 50 ms of work ahead
        with pytest.raises(Overloaded) as caught:
            model.enqueue([4], timeout=0.2)
        assert caught.value.status == 429
        assert "within its deadline" in str(caught.value)
        assert float(caught.value.headers["Retry-After"]) >= 1
        patient = model.enqueue([4], timeout=600)  # a deadline the queue can meet
        no_deadline = model.enqueue([5])  # and no deadline at all: admitted as before
        assert [await h for h in queued] == [reference([3])] * 20
        assert await patient == reference([4])
        assert await no_deadline == reference([5])
        counter = runtime.metrics.counter
        assert counter(REJECTIONS, model="toy", reason="deadline_unreachable") == 1
        # on an idle queue the same short deadline is admitted and served
        assert await model.submit([6], timeout=5) == reference([6])


async def test_drain_finishes_every_accepted_request_then_refuses() -> None:
    adapter = ToyAdapter(delay=0.005)
    runtime = Runtime(device="cpu")
    model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=4))
    handles = [model.enqueue([i % 10 + 1] * (i % 7)) for i in range(30)]
    closing = asyncio.ensure_future(runtime.aclose())
    await asyncio.sleep(0)
    assert not runtime.accepting
    with pytest.raises(ShuttingDown) as caught:
        model.enqueue([1])
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == "1"
    await closing
    assert [await h for h in handles] == [reference([i % 10 + 1] * (i % 7)) for i in range(30)]
    assert runtime.metrics.counter(REQUESTS, model="toy", outcome="ok") == 30
    await runtime.aclose()  # idempotent
    with pytest.raises(ShuttingDown):
        await runtime.add_model("late", ToyAdapter())


async def test_drain_with_a_grace_period_fails_what_is_left() -> None:
    adapter, gate = gated()
    runtime = Runtime(device="cpu")
    model = await runtime.add_model("toy", adapter)
    running = model.enqueue([1])
    await wait_started(adapter)
    queued = [model.enqueue([2]) for _ in range(3)]
    await runtime.aclose(grace=0.05)
    for handle in (running, *queued):
        with pytest.raises(ShuttingDown, match="shut down before this request ran"):
            await handle
    gate.set()
    counter = runtime.metrics.counter
    assert counter(REQUESTS, model="toy", outcome="shutting_down") == 4


async def test_closing_an_unused_runtime_and_binding_rules() -> None:
    runtime = Runtime(device="cpu")
    await runtime.aclose()
    assert not runtime.accepting

    other = Runtime(device="cpu")
    await other.add_model("toy", ToyAdapter())

    def elsewhere() -> None:
        async def use() -> None:
            other.enqueue("toy", [1])

        asyncio.run(use())

    with pytest.raises(RuntimeError, match="another event loop"):
        await asyncio.to_thread(elsewhere)
    await other.aclose()


async def test_add_model_validates_its_arguments() -> None:
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("toy", ToyAdapter())
        with pytest.raises(ValueError, match="already served"):
            await runtime.add_model("toy", ToyAdapter())
        with pytest.raises(ValueError, match="non-empty string"):
            await runtime.add_model(" ", ToyAdapter())
        with pytest.raises(TypeError, match="no prepare"):
            await runtime.add_model("x", object())
        with pytest.raises(ValueError, match="padding to buckets needs"):
            await runtime.add_model(
                "y", ToyAdapter(max_length=None), policy=BatchPolicy(pad_to="bucket")
            )
        with pytest.raises(ValueError, match="CUDA is not available"):
            await runtime.add_model("z", ToyAdapter(), execution=ExecutionOptions(device="cuda"))
        with pytest.raises(ModelNotFound):
            runtime.model_info("missing")
        assert runtime.model("toy").name == "toy"


async def test_warm_up_runs_every_bucket_before_serving() -> None:
    adapter = ToyAdapter(max_length=32)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model(
            "toy",
            adapter,
            policy=BatchPolicy(max_batch_size=4, max_batch_tokens=64),
            execution=ExecutionOptions(warmup=True),
        )
        assert adapter.batches == [(4, 16), (2, 32)]
        assert adapter.device == torch.device("cpu")

        class NoDummy(ToyAdapter):
            dummy_item = None

        with pytest.raises(ValueError, match="dummy_item"):
            await runtime.add_model("nodummy", NoDummy(), execution=ExecutionOptions(warmup=True))
        with pytest.raises(ValueError, match="warm-up needs buckets"):
            await runtime.add_model(
                "nolength", ToyAdapter(max_length=None), execution=ExecutionOptions(warmup=True)
            )


async def test_models_on_one_device_share_its_worker() -> None:
    first, gate = gated()
    second = ToyAdapter()
    async with Runtime(device="cpu") as runtime:
        a = await runtime.add_model("a", first)
        b = await runtime.add_model("b", second, policy=BatchPolicy(max_batch_size=8))
        blocker = asyncio.ensure_future(a.submit([1]))
        await wait_started(first)
        pending = [asyncio.ensure_future(b.submit([2, 2])) for _ in range(3)]
        await asyncio.sleep(0)
        assert second.batches == []  # the device is busy with model a
        gate.set()
        await blocker
        assert await asyncio.gather(*pending) == [reference([2, 2])] * 3
        assert second.batches == [(3, 2)]
        assert {runtime.model_info(n).device for n in ("a", "b")} == {"cpu"}


async def test_submit_many_is_all_or_none_and_cancels_the_rest_on_failure() -> None:
    adapter = ToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        assert await model.submit_many([[1], [2, 3]]) == [reference([1]), reference([2, 3])]
        assert await model.submit_many([]) == []
        with pytest.raises(InvalidInput):
            await model.submit_many([[1], "bad"])
        assert runtime.model_info("toy").queued == 0
        with pytest.raises(ModelError):
            await model.submit_many([[13], [4]])  # 13 poisons the model (see toy.py)


async def test_the_fullest_bucket_goes_first_unless_priority_says_otherwise() -> None:
    async def run(submissions):
        adapter, gate = gated()
        policy = BatchPolicy(max_batch_size=8, buckets=(4, 8, 64), max_delay=60.0, aging=0.0)
        async with Runtime(device="cpu") as runtime:
            model = await runtime.add_model("toy", adapter, policy=policy)
            blocker = asyncio.ensure_future(model.submit([1]))
            await wait_started(adapter)
            futures = [
                asyncio.ensure_future(model.submit([1] * n, priority=p)) for n, p in submissions
            ]
            await asyncio.sleep(0)
            gate.set()
            await asyncio.gather(blocker, *futures)
            return adapter.batches[1:]

    # oldest first would run the 2-request bucket first; the 3-request bucket is fuller
    assert await run([(7, 0), (7, 0), (2, 0), (2, 0), (2, 0)]) == [(3, 2), (2, 7)]
    # a request one priority level more urgent goes first, even from a sparser bucket
    assert await run([(7, 1), (2, 0), (2, 0), (2, 0)]) == [(1, 7), (3, 2)]


async def test_handles_describe_their_request_and_errors_keep_their_model() -> None:
    from aiaas_core import ValidationError

    class Picky(ToyAdapter):
        def prepare(self, inputs):
            if inputs == "core":
                raise ValidationError("a plain aiaas validation error")
            if inputs == "named":
                raise InvalidInput("named elsewhere", model="other")
            return super().prepare(inputs)

    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("picky", Picky())
        handle = model.enqueue([1, 2, 3], priority=7)
        assert (handle.model, handle.cost, handle.priority) == ("picky", 3, 7)
        assert await handle == reference([1, 2, 3])
        with pytest.raises(ValidationError, match="plain aiaas"):
            model.enqueue("core")
        with pytest.raises(InvalidInput) as caught:
            model.enqueue("named")
        assert caught.value.model == "other"  # an adapter's own attribution is kept
        counter = runtime.metrics.counter
        assert counter(REJECTIONS, model="picky", reason="invalid_input") == 2

        class NoForward:
            max_length = None

            def prepare(self, inputs):
                return inputs

            cost = collate = move_to = prepare

        with pytest.raises(TypeError, match="neither forward"):
            await runtime.add_model("no-forward", NoForward())


async def test_closing_while_a_model_loads_refuses_that_model() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate, max_length=16)
    runtime = Runtime(device="cpu")
    loading = asyncio.ensure_future(
        runtime.add_model("slow", adapter, execution=ExecutionOptions(warmup=True))
    )
    await wait_started(adapter)  # warm-up is running on the device thread
    closing = asyncio.ensure_future(runtime.aclose())
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(ShuttingDown, match="while the model was loading"):
        await loading
    await closing
    assert runtime.models == ()


async def test_the_event_loop_stays_responsive_while_a_batch_runs() -> None:
    adapter, gate = gated()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        running = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        ticks = 0
        for _ in range(20):  # the loop keeps running other work while the device computes
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 20
        assert not running.done()
        gate.set()
        assert await running == reference([1])
