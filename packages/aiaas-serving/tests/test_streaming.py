"""Streaming adapters: chunks as they come, failures isolated, early exits cancel."""

from __future__ import annotations

import asyncio
import threading

import pytest
from toy import POISON, StreamingToyAdapter, ToyAdapter, reference, running_sums

from aiaas_serving import BatchPolicy, ExecutionOptions, ModelError, Runtime


async def test_stream_yields_each_chunk_and_submit_gathers_them() -> None:
    adapter = StreamingToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("gen", adapter)
        assert runtime.model_info("gen").streaming
        chunks = [chunk async for chunk in model.stream([3, 1, 4, 1, 5])]
        assert chunks == running_sums([3, 1, 4, 1, 5])
        assert await model.submit([2, 7]) == running_sums([2, 7])
        assert await model.submit([]) == []


async def test_concurrent_streams_share_batches_and_each_gets_its_own_chunks() -> None:
    adapter = StreamingToyAdapter()
    inputs = [[1, 2, 3], [4, 5], [6], [7, 8, 9]]
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("gen", adapter, policy=BatchPolicy(buckets=(32,)))

        async def consume(tokens):
            return [chunk async for chunk in model.stream(tokens)]

        results = await asyncio.gather(*(consume(x) for x in inputs))
        assert results == [running_sums(x) for x in inputs]
        assert adapter.runs == [[3, 2, 1, 3]]


async def test_a_stream_failure_fails_the_streams_that_got_chunks_and_reruns_the_rest() -> None:
    adapter = StreamingToyAdapter()
    poisoned = [1, 2, POISON, 4]  # fails at step 2, after two chunks of every stream
    healthy = [5, 6, 7]
    short = [8]  # finished before the failure
    empty: list[int] = []  # no chunk yet when the batch fails: it is run again, and succeeds
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("gen", adapter, policy=BatchPolicy(buckets=(32,)))
        streams = [model.stream(x) for x in (poisoned, healthy, short, empty)]

        async def consume(stream):
            got: list[int] = []
            try:
                async for chunk in stream:
                    got.append(chunk)  # noqa: PERF401 - keep what came before a failure
            except ModelError as exc:
                return got, exc
            return got, None

        (p_chunks, p_err), (h_chunks, h_err), (s_chunks, s_err), rerun = await asyncio.gather(
            *(consume(s) for s in streams)
        )
        assert rerun == ([], None)
        assert adapter.runs[-1] == [0]  # the rerun held only the request without chunks
        assert p_chunks == running_sums(poisoned)[:2]
        assert isinstance(p_err, ModelError)
        # the healthy stream had chunks out too: it cannot be replayed, so it fails as well
        assert h_chunks == running_sums(healthy)[:2]
        assert isinstance(h_err, ModelError)
        # a stream's end is the generator's end: the short one had its chunk, then the batch
        # failed, so it fails too (its caller saw a chunk it cannot trust to be complete)
        assert s_chunks == [8]
        assert isinstance(s_err, ModelError)

        # a stream that fails before any chunk is isolated by bisection like a batch
        streams = [model.stream(x) for x in ([POISON, 1], [2, 3], [4])]
        outcomes = await asyncio.gather(*(consume(s) for s in streams))
        assert outcomes[0][0] == []
        assert isinstance(outcomes[0][1], ModelError)
        assert outcomes[1] == (running_sums([2, 3]), None)
        assert outcomes[2] == (running_sums([4]), None)


async def test_leaving_a_stream_early_cancels_its_request() -> None:
    gate = threading.Event()
    adapter = StreamingToyAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("gen", adapter)
        async with model.stream([1, 1, 1, 1]) as stream:
            first = await stream.__anext__()
            assert first == 1
        assert stream.handle.done()
        gate.set()  # the generator runs on; its later chunks are discarded
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        assert await model.submit([2, 2]) == [2, 4]
        counter = runtime.metrics.counter
        assert counter("aiaas_serving_requests_total", model="gen", outcome="cancelled") == 1


async def test_cancelling_a_task_waiting_on_a_stream_cancels_the_request() -> None:
    adapter = StreamingToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("gen", adapter)
        stream = model.stream([1, 2])
        waiter = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert stream.handle.done()


async def test_a_non_streaming_model_streams_one_chunk() -> None:
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", ToyAdapter())
        assert [chunk async for chunk in model.stream([1, 2])] == [reference([1, 2])]


async def test_streaming_models_warm_up_too() -> None:
    adapter = StreamingToyAdapter(max_length=16)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model(
            "gen",
            adapter,
            policy=BatchPolicy(max_batch_size=2),
            execution=ExecutionOptions(warmup=True),
        )
        assert adapter.runs == [[16, 16]]
