"""SyncRuntime: the blocking facade for threads."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest
from toy import StreamingToyAdapter, ToyAdapter, reference, running_sums

from aiaas_serving import BatchPolicy, InvalidInput, Overloaded, ShuttingDown, SyncRuntime


def test_blocking_submit_from_many_threads_batches_their_requests() -> None:
    adapter = ToyAdapter(delay=0.005)
    with SyncRuntime(device="cpu") as runtime:
        runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=16))
        inputs = [[i % 12 + 1] * (1 + i % 5) for i in range(40)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda x: runtime.submit("toy", x), inputs))
        assert results == [reference(x) for x in inputs]
        assert any(size > 1 for size, _ in adapter.batches)
        assert runtime.submit_many("toy", [[1], [2]]) == [reference([1]), reference([2])]
        assert runtime.model_info("toy").queued == 0
        ok = runtime.metrics.counter("aiaas_serving_requests_total", model="toy", outcome="ok")
        assert ok == 42
        with pytest.raises(InvalidInput):
            runtime.submit("toy", "not tokens")


def test_cancelling_a_future_withdraws_the_request() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate)
    with SyncRuntime(device="cpu") as runtime:
        runtime.add_model("toy", adapter, policy=BatchPolicy(max_queue=1))
        running = runtime.submit_future("toy", [1])
        assert adapter.started.wait(5)
        queued = runtime.submit_future("toy", [2])
        for _ in range(1000):  # submit_future returns before the loop admits the request
            if runtime.model_info("toy").queued:
                break
            time.sleep(0.002)
        with pytest.raises(Overloaded):  # the queue (1) is full while the device is busy
            runtime.submit("toy", [3])
        assert queued.cancel() or queued.cancelled()
        with pytest.raises(CancelledError):
            queued.result(5)
        gate.set()
        assert running.result(5) == reference([1])
        assert runtime.submit("toy", [4]) == reference([4])
        counter = runtime.metrics.counter
        assert counter("aiaas_serving_requests_total", model="toy", outcome="cancelled") == 1
        assert adapter.batches == [(1, 1), (1, 1)]


def test_sync_streams_and_close_drains() -> None:
    runtime = SyncRuntime(device="cpu")
    runtime.add_model("gen", StreamingToyAdapter())
    assert list(runtime.stream("gen", [1, 2, 3])) == running_sums([1, 2, 3])
    chunks = runtime.stream("gen", [5, 5, 5])
    assert next(chunks) == 5
    chunks.close()  # leaving early withdraws the request
    runtime.add_model("toy", ToyAdapter(delay=0.01))
    pending = [runtime.submit_future("toy", [i + 1]) for i in range(5)]
    runtime.close()
    assert [f.result(0) for f in pending] == [reference([i + 1]) for i in range(5)]
    runtime.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        runtime.submit("toy", [1])
    assert not runtime.runtime.accepting


def test_calling_from_the_loop_thread_is_refused() -> None:
    with SyncRuntime(device="cpu") as runtime:
        runtime.add_model("toy", ToyAdapter())

        async def inside():
            with pytest.raises(RuntimeError, match="from another thread"):
                runtime.submit("toy", [1])
            return True

        assert asyncio.run_coroutine_threadsafe(inside(), runtime.loop).result(5)


def test_close_with_grace_fails_what_cannot_finish() -> None:
    gate = threading.Event()
    runtime = SyncRuntime(device="cpu")
    runtime.add_model("toy", ToyAdapter(gate=gate))
    running = runtime.submit_future("toy", [1])
    queued = runtime.submit_future("toy", [2])
    runtime.close(grace=0.05)
    gate.set()
    for future in (running, queued):
        with pytest.raises(ShuttingDown):
            future.result(5)
