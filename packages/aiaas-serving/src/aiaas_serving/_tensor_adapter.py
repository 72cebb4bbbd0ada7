"""A ready adapter for any ``torch.nn.Module`` over tensors.

Each input is a tensor (or anything ``torch.as_tensor`` takes): a sequence of shape
``(length, *feature_shape)`` when ``sequence=True`` (the length is its cost and is padded), or a
fixed-size sample of shape ``feature_shape`` otherwise (cost 1). The module receives the padded
batch, and for sequences a boolean mask of real positions: ``module(inputs, mask)`` (or
``module(inputs)`` with ``pass_mask=False``). Row ``i`` of its output is input ``i``'s result
(trimmed to the input's length with ``trim=True``, for per-position outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from aiaas_serving._errors import InputTooLarge, InvalidInput

__all__ = ["TensorAdapter"]


class TensorAdapter:
    """Serve ``module`` with dynamic batching over tensor inputs."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        sequence: bool = True,
        feature_shape: Sequence[int] = (),
        dtype: torch.dtype | None = None,
        max_length: int | None = None,
        pad_value: float = 0,
        pass_mask: bool = True,
        trim: bool = False,
    ) -> None:
        if max_length is not None and (isinstance(max_length, bool) or max_length < 1):
            raise ValueError(f"max_length must be None or an integer >= 1, got {max_length!r}")
        self.module = module
        self.sequence = sequence
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.dtype = dtype
        self._max_length = max_length if sequence else 1
        self.pad_value = pad_value
        self.pass_mask = pass_mask
        self.trim = trim

    @property
    def max_length(self) -> int | None:
        return self._max_length

    def prepare(self, inputs: Any) -> torch.Tensor:
        try:
            tensor = torch.as_tensor(inputs, dtype=self.dtype)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInput(f"the input is not a tensor of numbers ({exc})") from None
        expected = self.feature_shape
        shape = tuple(tensor.shape)
        if self.sequence:
            if tensor.dim() != 1 + len(expected) or shape[1:] != expected:
                wanted = ", ".join(["length", *map(str, expected)])
                raise InvalidInput(
                    f"expected a sequence of shape ({wanted}), got {shape}"
                    if expected
                    else f"expected a 1-D sequence, got shape {shape}"
                )
            if self._max_length is not None and shape[0] > self._max_length:
                raise InputTooLarge(
                    f"the input is {shape[0]} long; at most {self._max_length} is accepted"
                )
        elif shape != expected:
            raise InvalidInput(f"expected an input of shape {expected}, got {shape}")
        return tensor.detach().to("cpu").contiguous()

    def cost(self, item: torch.Tensor) -> int:
        return int(item.shape[0]) if self.sequence else 1

    def collate(self, items: Sequence[torch.Tensor], padded_length: int) -> dict[str, torch.Tensor]:
        if not self.sequence:
            return {"inputs": torch.stack(list(items))}
        first = items[0]
        inputs = torch.full(
            (len(items), padded_length, *first.shape[1:]), self.pad_value, dtype=first.dtype
        )
        mask = torch.zeros((len(items), padded_length), dtype=torch.bool)
        for i, item in enumerate(items):
            n = item.shape[0]
            inputs[i, :n] = item
            mask[i, :n] = True
        return {"inputs": inputs, "mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        if self.sequence and self.pass_mask:
            return self.module(batch["inputs"], batch["mask"])
        return self.module(batch["inputs"])

    def split(self, outputs: Any, items: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"TensorAdapter expects the module to return one tensor, got {type(outputs)}"
            )
        if self.trim and self.sequence:
            return [outputs[i, : item.shape[0]].clone() for i, item in enumerate(items)]
        return [outputs[i].clone() for i in range(len(items))]

    def move_to(self, device: torch.device) -> None:
        self.module.to(device)
        self.module.eval()

    def dummy_item(self, length: int) -> torch.Tensor:
        """An all-padding input of ``length`` (warm-up and CUDA-graph padding rows)."""
        shape = (length, *self.feature_shape) if self.sequence else self.feature_shape
        return torch.full(shape, self.pad_value, dtype=self.dtype)
