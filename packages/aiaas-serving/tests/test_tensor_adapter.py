"""TensorAdapter: any nn.Module over variable-length or fixed-size tensors."""

from __future__ import annotations

import asyncio

import pytest
import torch

from aiaas_serving import InputTooLarge, InvalidInput, Runtime, TensorAdapter


class MaskedMean(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 2, dtype=torch.float64)
        torch.nn.init.constant_(self.proj.weight, 0.5)
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(x.dtype)
        return self.proj((x * weights).sum(1) / weights.sum(1).clamp(min=1))


class PerPosition(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


async def test_sequences_of_any_length_batch_and_match_the_module_alone() -> None:
    module = MaskedMean()
    adapter = TensorAdapter(module, feature_shape=(3,), dtype=torch.float64, max_length=16)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (1, 5, 9, 16)]
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("mean", adapter)
        results = await asyncio.gather(*(model.submit(x) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            expected = module(x.unsqueeze(0), torch.ones(1, x.shape[0], dtype=torch.bool))[0]
            torch.testing.assert_close(result, expected)
        with pytest.raises(InputTooLarge, match="17 long"):
            model.enqueue(torch.zeros(17, 3))
        with pytest.raises(InvalidInput, match=r"shape \(length, 3\)"):
            model.enqueue(torch.zeros(4, 2))
        with pytest.raises(InvalidInput, match="not a tensor of numbers"):
            model.enqueue("text")


async def test_fixed_size_inputs_and_trimmed_per_position_outputs() -> None:
    fixed = TensorAdapter(torch.nn.Linear(4, 1), sequence=False, feature_shape=(4,))
    assert fixed.max_length == 1
    assert fixed.cost(fixed.prepare([1.0, 2.0, 3.0, 4.0])) == 1
    positions = TensorAdapter(PerPosition(), pass_mask=False, trim=True, dtype=torch.long)
    async with Runtime(device="cpu") as runtime:
        linear = await runtime.add_model("linear", fixed)
        out = await asyncio.gather(linear.submit([1.0, 0, 0, 0]), linear.submit([0, 1.0, 0, 0]))
        assert [o.shape for o in out] == [torch.Size([1]), torch.Size([1])]
        with pytest.raises(InvalidInput, match=r"shape \(4,\)"):
            linear.enqueue([1.0, 2.0])
        doubled = await runtime.add_model("double", positions)
        short, long = await asyncio.gather(doubled.submit([1, 2]), doubled.submit([3, 4, 5, 6]))
        assert short.tolist() == [2, 4]
        assert long.tolist() == [6, 8, 10, 12]
        with pytest.raises(InvalidInput, match="1-D sequence"):
            doubled.enqueue([[1, 2]])


def test_dummy_items_and_validation() -> None:
    adapter = TensorAdapter(torch.nn.Identity(), feature_shape=(2,), pad_value=-1)
    assert adapter.dummy_item(3).shape == (3, 2)
    assert float(adapter.dummy_item(3)[0, 0]) == -1
    assert TensorAdapter(torch.nn.Identity(), sequence=False, feature_shape=(5,)).dummy_item(
        9
    ).shape == (5,)
    with pytest.raises(ValueError, match="max_length"):
        TensorAdapter(torch.nn.Identity(), max_length=0)
    with pytest.raises(TypeError, match="one tensor"):
        adapter.split((torch.zeros(1),), [torch.zeros(1, 2)])
