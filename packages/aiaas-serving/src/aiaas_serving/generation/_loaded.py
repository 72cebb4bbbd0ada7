"""A loaded generation model: the network, its tokenizer and where it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from aiaas_serving.generation._config import LlamaConfig
from aiaas_serving.generation._errors import ModelConfigInvalid
from aiaas_serving.generation._model import LlamaForCausalLM
from aiaas_serving.generation._tokenizer import GenerationTokenizer

__all__ = ["GenerationModel", "finish_model", "runtime_device"]


@dataclass(frozen=True, slots=True)
class GenerationModel:
    """A model ready to generate: in eval mode, gradients off, on ``device`` in ``dtype``.

    ``name`` is what the serving layer calls it (e.g. ``SmolLM2-135M-Instruct``).
    """

    name: str
    config: LlamaConfig
    model: LlamaForCausalLM = field(repr=False)
    tokenizer: GenerationTokenizer = field(repr=False)
    dtype: torch.dtype
    device: torch.device

    @property
    def max_context(self) -> int:
        """The most tokens (prompt and generated together) one sequence may hold."""
        return self.config.max_position_embeddings


def runtime_device(device: torch.device | str) -> torch.device:
    """``device`` as a :class:`torch.device`, with a clear error for a bad spelling."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelConfigInvalid(
            f"{device!r} is not a torch device: use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc


def finish_model(
    model: LlamaForCausalLM, *, dtype: torch.dtype, device: torch.device
) -> LlamaForCausalLM:
    """Move ``model`` to ``device``/``dtype`` for inference (eval, no gradients)."""
    if not dtype.is_floating_point:
        raise ModelConfigInvalid(f"the model dtype must be a floating type, got {dtype}")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
