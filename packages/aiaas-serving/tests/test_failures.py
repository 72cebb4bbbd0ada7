"""Failure isolation: poison inputs fail alone; out-of-memory splits batches and lowers limits."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
import torch
from toy import POISON, ToyAdapter, reference, wait_started

from aiaas_serving import BatchPolicy, ExecutionOptions, ModelError, Runtime

SPLITS = "aiaas_serving_batch_splits_total"


async def fill_behind_blocker(model, adapter, gate, inputs):
    """Queue ``inputs`` while a first request holds the device, then let everything run."""
    blocker = asyncio.ensure_future(model.submit([1]))
    await wait_started(adapter)
    handles = [model.enqueue(x) for x in inputs]
    gate.set()
    await blocker
    return handles


async def test_poison_inputs_fail_alone_and_the_rest_of_the_batch_succeeds(caplog) -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate)
    inputs = [[i % 12 + 1, 2] for i in range(16)]
    inputs[3] = [POISON, 1]
    inputs[11] = [5, POISON]
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=16))
        with caplog.at_level(logging.WARNING, logger="aiaas_serving"):
            handles = await fill_behind_blocker(model, adapter, gate, inputs)
            for i, handle in enumerate(handles):
                if i in (3, 11):
                    with pytest.raises(ModelError) as caught:
                        await handle
                    err = caught.value
                    assert err.code == "MODEL_ERROR"
                    assert err.status == 500
                    assert "poison" not in err.message  # the model's text stays server-side
                    assert isinstance(err.__cause__, ValueError)
                else:
                    assert await handle == reference(inputs[i])
        assert "failing that request alone" in caplog.text
        counter = runtime.metrics.counter
        assert counter("aiaas_serving_requests_total", model="toy", outcome="model_error") == 2
        assert counter("aiaas_serving_requests_total", model="toy", outcome="ok") == 15
        assert counter(SPLITS, model="toy", reason="error") >= 2
        # bisection: the full batch, then halves down to the two singletons
        assert adapter.batches[1] == (16, 2)
        assert (1, 2) in adapter.batches
        assert runtime.model_info("toy").max_batch_size == 16  # errors do not lower limits


async def test_out_of_memory_above_a_size_splits_retries_and_lowers_the_limit() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate, oom_above=5)
    inputs = [[i % 12 + 1] * 3 for i in range(20)]
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=20))
        handles = await fill_behind_blocker(model, adapter, gate, inputs)
        assert [await h for h in handles] == [reference(x) for x in inputs]
        info = runtime.model_info("toy")
        assert info.max_batch_size == 5  # 20 and 10 ran out of memory, 5 did not
        assert runtime.metrics.counter(SPLITS, model="toy", reason="oom") >= 3
        gauge = runtime.metrics.gauge("aiaas_serving_effective_max_batch_size", model="toy")
        assert gauge == info.max_batch_size
        # later batches respect the lowered limit: nothing above it runs again
        before = len(adapter.batches)
        gate.clear()
        more = await fill_behind_blocker(model, adapter, gate, inputs)
        assert [await h for h in more] == [reference(x) for x in inputs]
        assert all(size <= info.max_batch_size for size, _ in adapter.batches[before:])


async def test_the_batch_limit_recovers_step_by_step_after_out_of_memory() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate, oom_above=8)
    policy = BatchPolicy(max_batch_size=16, max_batch_tokens=1024)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model(
            "toy", adapter, policy=policy, execution=ExecutionOptions(oom_recovery_batches=2)
        )
        handles = await fill_behind_blocker(model, adapter, gate, [[2, 2]] * 16)
        for h in handles:
            await h
        lowered = runtime.model_info("toy")
        assert lowered.max_batch_size == 8
        assert lowered.max_batch_tokens == 16  # half the padded tokens of the failing batch
        for _ in range(4):
            await model.submit([3])
        raised = runtime.model_info("toy")
        assert 8 < raised.max_batch_size <= 16
        assert raised.max_batch_tokens is not None
        assert raised.max_batch_tokens > 16


async def test_a_single_request_that_runs_out_of_memory_fails_alone() -> None:
    adapter = ToyAdapter(oom_above=0)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter)
        with pytest.raises(ModelError) as caught:
            await model.submit([1, 2])
        assert caught.value.code == "MODEL_OUT_OF_MEMORY"
        assert "out of memory" in caught.value.message
        assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


async def test_an_adapter_breaking_its_contract_fails_its_requests_not_the_runtime() -> None:
    class ShortSplit(ToyAdapter):
        def split(self, outputs, items):
            return super().split(outputs, items)[:-1]

    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("short", ShortSplit())
        with pytest.raises(ModelError):
            await model.submit([1])
        healthy = await runtime.add_model("healthy", ToyAdapter())
        assert await healthy.submit([2]) == reference([2])


async def test_cancelled_requests_are_skipped_when_a_failing_batch_is_bisected() -> None:
    gates = [threading.Event(), threading.Event()]
    adapter = ToyAdapter(gates=gates)
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, policy=BatchPolicy(max_batch_size=8))
        blocker = asyncio.ensure_future(model.submit([1]))
        await wait_started(adapter)
        handles = [model.enqueue([POISON if i == 0 else 2]) for i in range(4)]
        gates[0].set()
        await blocker
        await wait_started(adapter)  # the batch of four is in forward, held by gates[1]
        handles[1].cancel()  # withdrawn mid-batch: the bisection must not rerun it
        gates[1].set()
        with pytest.raises(ModelError):
            await handles[0]
        assert [await h for h in handles[2:]] == [reference([2])] * 2
        assert adapter.batches[1] == (4, 1)
        # halves of the three live requests: [poison] alone, then [2, 2]
        assert sorted(adapter.batches[2:]) == [(1, 1), (2, 1)]
