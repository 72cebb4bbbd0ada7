"""Device selection and the execution path pieces that run on a CPU.

The CUDA-only branches (pinned staging, non-blocking copies, CUDA graphs) are exercised by
benchmarks/serving/gpu_check.py on a machine with a GPU.
"""

from __future__ import annotations

import pytest
import torch
from toy import ToyAdapter, reference

from aiaas_serving import BatchPolicy, ExecutionOptions, Runtime
from aiaas_serving._device import (
    ModelRunner,
    graph_batch_size,
    is_out_of_memory,
    resolve_device,
)


def test_auto_picks_cuda_only_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device string"):
        resolve_device("toaster:3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_graph_batch_sizes_are_powers_of_two_within_the_limit() -> None:
    assert [graph_batch_size(n, 32) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
    assert graph_batch_size(20, 24) == 24
    assert graph_batch_size(30, 24) == 30  # never below the real count


def test_out_of_memory_errors_are_recognised() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_cpu_runner_moves_stray_device_tensors_home_and_applies_autocast() -> None:
    adapter = ToyAdapter()
    runner = ModelRunner(
        "toy", adapter, torch.device("cpu"), ExecutionOptions(autocast="bf16"), max_batch_size=4
    )
    assert runner.graphs == 0
    assert runner.run([[1, 2], [3]], 2) == [reference([1, 2]), reference([3])]
    moved = runner._to_device({"a": [torch.ones(1)], "b": (torch.zeros(1), "meta")})
    assert moved["b"][1] == "meta"
    assert runner._to_host("anything") == "anything"


async def test_autocast_on_cpu_runs_a_bf16_forward() -> None:
    class Probe(ToyAdapter):
        def forward(self, batch):
            probe = torch.ones(2, 2) @ torch.ones(2, 2)
            self.dtype_seen = probe.dtype
            return super().forward(batch)

    adapter = Probe()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("toy", adapter, execution=ExecutionOptions(autocast="bf16"))
        assert await model.submit([1, 2]) == reference([1, 2])
    assert adapter.dtype_seen == torch.bfloat16


async def test_cuda_graph_option_is_ignored_on_a_cpu() -> None:
    adapter = ToyAdapter()
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model(
            "toy",
            adapter,
            policy=BatchPolicy(max_batch_size=4),
            execution=ExecutionOptions(cuda_graphs=True),
        )
        info = model.info()
        assert not info.pad_to_bucket  # "auto" pads to buckets only when graphs are in use
        assert await model.submit([1, 2, 3]) == reference([1, 2, 3])
        assert adapter.batches == [(1, 3)]
