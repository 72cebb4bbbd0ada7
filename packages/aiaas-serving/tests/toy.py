"""A tiny, deterministic, real torch model and adapter for runtime tests.

The model sums small-integer float64 embeddings of its tokens: results are exact, so "batched
equals unbatched" is checked with ``==``, whatever the grouping and padding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from aiaas_serving import InputTooLarge, InvalidInput

POISON = 13  # a token that makes the model fail (whatever batch it is in)


class SumModel(torch.nn.Module):
    def __init__(self, vocab: int = 64, dim: int = 4) -> None:
        super().__init__()
        weights = torch.arange(vocab * dim, dtype=torch.float64).reshape(vocab, dim) % 7
        self.embedding = torch.nn.Embedding.from_pretrained(weights, freeze=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.embedding(ids) * mask.unsqueeze(-1)).sum(1)


def alone(adapter: ToyAdapter, tokens: list[int]) -> list[float]:
    """The adapter's model run on this one input, unbatched and unpadded."""
    with torch.inference_mode():
        ids = torch.tensor([tokens], dtype=torch.long).reshape(1, len(tokens))
        mask = torch.ones((1, len(tokens)), dtype=torch.float64)
        return adapter.model(ids, mask)[0].tolist()


def reference(tokens: Sequence[int]) -> list[float]:
    """The model's answer for one input, computed without torch batching."""
    dim = 4
    return [float(sum((t * dim + d) % 7 for t in tokens)) for d in range(dim)]


class ToyAdapter:
    """Token lists in, a 4-vector out. Records every batch; can block, fail or 'run out of
    memory' on demand."""

    def __init__(
        self,
        *,
        max_length: int | None = 64,
        oom_above: int | None = None,
        delay: float = 0.0,
        gate: threading.Event | None = None,
        gates: Sequence[threading.Event] = (),
    ) -> None:
        self.model = SumModel()
        self._max_length = max_length
        self.oom_above = oom_above
        self.delay = delay
        self.gate = gate
        self.gates = list(gates)  # forward call i waits on gates[i]
        self.batches: list[tuple[int, int]] = []  # (size, padded length) of each forward
        self.collated: list[tuple[list[int], int]] = []  # (item lengths, padded) per collate
        self.started = threading.Event()
        self.device: torch.device | None = None
        self.lock = threading.Lock()

    @property
    def max_length(self) -> int | None:
        return self._max_length

    def prepare(self, inputs: Any) -> list[int]:
        if not isinstance(inputs, list) or not all(isinstance(t, int) for t in inputs):
            raise InvalidInput("input must be a list of token ids")
        if any(not 0 <= t < 64 for t in inputs):
            raise ValueError("token ids must be in [0, 64)")
        if self._max_length is not None and len(inputs) > self._max_length:
            raise InputTooLarge(f"at most {self._max_length} tokens")
        return list(inputs)

    def cost(self, item: list[int]) -> int:
        return len(item)

    def collate(self, items: Sequence[list[int]], padded_length: int) -> dict[str, torch.Tensor]:
        assert all(len(i) <= padded_length for i in items)
        with self.lock:
            self.collated.append(([len(i) for i in items], padded_length))
        ids = torch.zeros((len(items), padded_length), dtype=torch.long)
        mask = torch.zeros((len(items), padded_length), dtype=torch.float64)
        for row, item in enumerate(items):
            ids[row, : len(item)] = torch.tensor(item, dtype=torch.long)
            mask[row, : len(item)] = 1
        return {"ids": ids, "mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = batch["ids"]
        with self.lock:
            call = len(self.batches)
            self.batches.append((ids.shape[0], ids.shape[1]))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if call < len(self.gates):
            assert self.gates[call].wait(10), f"test gate {call} never opened"
        if self.delay:
            time.sleep(self.delay)
        assert torch.is_inference_mode_enabled()
        if self.oom_above is not None and ids.shape[0] > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if bool(((ids == POISON) & (batch["mask"] > 0)).any()):
            raise ValueError("poisoned input reached the model")
        return self.model(ids, batch["mask"])

    def split(self, outputs: torch.Tensor, items: Sequence[list[int]]) -> list[list[float]]:
        return [outputs[i].tolist() for i in range(len(items))]

    def move_to(self, device: torch.device) -> None:
        self.device = device
        self.model.to(device)

    def dummy_item(self, length: int) -> list[int]:
        return [1] * length


class CharAdapter(ToyAdapter):
    """Strings in (one token per character), for the HTTP endpoint tests."""

    dimensions = 4

    def prepare(self, inputs: Any) -> list[int]:
        if not isinstance(inputs, str):
            raise InvalidInput("input must be a string")
        return super().prepare([ord(c) % 64 for c in inputs])


async def wait_started(adapter: ToyAdapter, limit: float = 5.0) -> None:
    """Wait (off the loop) until the adapter's forward has begun."""
    import asyncio

    assert await asyncio.to_thread(adapter.started.wait, limit), "no batch started"
    adapter.started.clear()


class StreamingToyAdapter:
    """A streaming toy: item i yields, at step k, the running sum of its first k+1 tokens.

    A POISON token makes the step that reaches it fail (after earlier chunks went out).
    """

    def __init__(self, *, max_length: int | None = 32, gate: threading.Event | None = None) -> None:
        self._max_length = max_length
        self.gate = gate  # held after the first step, when given
        self.runs: list[list[int]] = []  # the item lengths of each forward_stream call
        self.device: torch.device | None = None

    @property
    def max_length(self) -> int | None:
        return self._max_length

    def prepare(self, inputs: Any) -> list[int]:
        if not isinstance(inputs, list):
            raise InvalidInput("input must be a list of token ids")
        return list(inputs)

    def cost(self, item: list[int]) -> int:
        return len(item)

    def collate(self, items: Sequence[list[int]], padded_length: int) -> torch.Tensor:
        ids = torch.zeros((len(items), padded_length), dtype=torch.long)
        for row, item in enumerate(items):
            ids[row, : len(item)] = torch.tensor(item, dtype=torch.long)
        return ids

    def forward_stream(self, batch: torch.Tensor, items: Sequence[list[int]]):
        self.runs.append([len(i) for i in items])
        sums = torch.cumsum(batch, dim=1)
        for step in range(batch.shape[1]):
            if any(len(item) > step and item[step] == POISON for item in items):
                raise ValueError("poison reached the stream")
            yield {i: int(sums[i, step]) for i, item in enumerate(items) if len(item) > step}
            if step == 0 and self.gate is not None:
                assert self.gate.wait(10), "test gate never opened"

    def move_to(self, device: torch.device) -> None:
        self.device = device

    def dummy_item(self, length: int) -> list[int]:
        return [1] * length


def running_sums(tokens: Sequence[int]) -> list[int]:
    total, out = 0, []
    for t in tokens:
        total += t
        out.append(total)
    return out
