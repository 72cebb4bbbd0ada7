"""The paged KV cache: fixed-size blocks of keys and values, preallocated once."""

from __future__ import annotations

import torch

from aiaas_serving.generation._config import LlamaConfig
from aiaas_serving.generation._errors import KVCacheBudgetTooSmall, ModelConfigInvalid

__all__ = ["PagedKVCache"]


class PagedKVCache:
    """Every layer's keys and values in ``num_blocks`` blocks of ``block_size`` token slots.

    One tensor ``[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]`` is allocated
    at construction and never again; :attr:`key_caches` and :attr:`value_caches` are per-layer
    views ``[num_blocks, block_size, num_kv_heads, head_dim]``. A token's slot is
    ``block_id * block_size + offset``. Which blocks are free is the engine's business: the cache
    only stores.
    """

    def __init__(
        self,
        config: LlamaConfig,
        *,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        checked: tuple[tuple[str, object], ...] = (
            ("num_blocks", num_blocks),
            ("block_size", block_size),
        )
        for name, value in checked:
            if not _positive_int(value):
                raise ModelConfigInvalid(
                    f"{name} must be a positive integer, got {value!r}",
                    problems=[f"{name}={value!r}"],
                )
        if not dtype.is_floating_point:
            raise ModelConfigInvalid(f"the KV cache dtype must be a floating type, got {dtype}")
        self.config = config
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.dtype = dtype
        self.device = torch.device(device)
        self.storage = torch.zeros(
            (
                config.num_layers,
                2,
                num_blocks,
                block_size,
                config.num_kv_heads,
                config.head_dim,
            ),
            dtype=dtype,
            device=self.device,
        )
        self.key_caches: tuple[torch.Tensor, ...] = tuple(
            self.storage[layer, 0] for layer in range(config.num_layers)
        )
        self.value_caches: tuple[torch.Tensor, ...] = tuple(
            self.storage[layer, 1] for layer in range(config.num_layers)
        )

    @property
    def num_slots(self) -> int:
        """Token slots in the whole pool (``num_blocks * block_size``)."""
        return self.num_blocks * self.block_size

    @property
    def nbytes(self) -> int:
        """The pool's size in bytes."""
        return self.storage.numel() * self.storage.element_size()

    @staticmethod
    def bytes_per_block(config: LlamaConfig, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block takes across every layer, keys and values together."""
        if not _positive_int(block_size):
            raise ModelConfigInvalid(f"block_size must be a positive integer, got {block_size!r}")
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * element

    @classmethod
    def blocks_for_budget(
        cls,
        config: LlamaConfig,
        memory_bytes: int,
        block_size: int,
        dtype: torch.dtype,
    ) -> int:
        """How many whole blocks fit in ``memory_bytes``; at least one or an error."""
        per_block = cls.bytes_per_block(config, block_size, dtype)
        budget: object = memory_bytes
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ModelConfigInvalid(f"memory_bytes must be an integer, got {memory_bytes!r}")
        blocks = memory_bytes // per_block if memory_bytes > 0 else 0
        if blocks < 1:
            raise KVCacheBudgetTooSmall(
                f"a KV cache budget of {memory_bytes} bytes holds no block: one block of "
                f"{block_size} tokens takes {per_block} bytes for this model in {dtype}; "
                "raise the budget or lower the block size"
            )
        return blocks

    def __repr__(self) -> str:
        return (
            f"PagedKVCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
            f"dtype={self.dtype}, device={self.device}, bytes={self.nbytes})"
        )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
