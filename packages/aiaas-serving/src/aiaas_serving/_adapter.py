"""The model adapter protocol: how any torch model plugs into the runtime.

An adapter turns one caller input into an *item* (``prepare``, on the event loop at admission),
prices it (``cost``: its token length, used for the token budget and the padding buckets),
groups items into a batch of host tensors (``collate``, padded to a length the runtime picks),
runs the batch (``forward``, on the device thread under ``torch.inference_mode``) and splits the
batch output back into one result per item (``split``). The runtime moves every tensor in the
batch to the device and every tensor in the output back to the host, so ``collate`` and ``split``
deal in host tensors and ``forward`` in device tensors.

A text adapter that can either refuse or cut an over-length input takes a :class:`TextInput`
(the text and whether to truncate it) besides a plain string, and says so with a true
``accepts_text_input`` attribute (:class:`~aiaas_serving.SentenceEmbeddingAdapter` does); the
OpenAI endpoint then decides truncation per request instead of leaving it to the adapter's
construction.

A *streaming* adapter has ``forward_stream`` instead of (or beside) ``forward``: a generator that
yields, step after step, a mapping from item index to that step's chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch

__all__ = ["ModelAdapter", "StreamingModelAdapter", "TextInput"]

InputT_contra = TypeVar("InputT_contra", contravariant=True)
ItemT = TypeVar("ItemT")
OutputT_co = TypeVar("OutputT_co", covariant=True)
ChunkT_co = TypeVar("ChunkT_co", covariant=True)


def _text(_inst: object, _attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"TextInput.text must be a string, got {type(value).__name__}")


@attrs.frozen
class TextInput:
    """A text and what to do when it is longer than the model accepts: ``truncate=False``
    refuses it (:class:`~aiaas_serving.InputTooLarge`), ``truncate=True`` embeds its first
    ``max_length`` tokens."""

    text: str = attrs.field(validator=_text)
    truncate: bool = attrs.field(default=False, kw_only=True, converter=bool)


@runtime_checkable
class ModelAdapter(Protocol[InputT_contra, ItemT, OutputT_co]):
    """A batchable model.

    ``max_length`` is the longest item ``cost`` may report (``None``: no limit); the runtime
    derives its default padding buckets from it and refuses longer inputs at once. Optionally an
    adapter has ``dummy_item(length) -> item`` (an item of that cost, for warm-up and CUDA-graph
    padding).
    """

    @property
    def max_length(self) -> int | None: ...

    def prepare(self, inputs: InputT_contra) -> ItemT:
        """Validate and pre-process one input (tokenise it). Raise ``InvalidInput`` or
        ``InputTooLarge`` (or ``ValueError``/``TypeError``) for bad input."""
        ...

    def cost(self, item: ItemT) -> int:
        """The item's token length (>= 0): what padding and the token budget count."""
        ...

    def collate(self, items: Sequence[ItemT], padded_length: int) -> Any:
        """One batch of host tensors (any nesting of dicts, lists and tuples) for ``items``,
        each padded to ``padded_length`` (>= every item's cost)."""
        ...

    def forward(self, batch: Any) -> Any:
        """Run the batch on the device; return tensors (any nesting)."""
        ...

    def split(self, outputs: Any, items: Sequence[ItemT]) -> Sequence[OutputT_co]:
        """One result per item, in order. ``outputs`` may have more rows than items (padding
        rows added for CUDA graphs): use the first ``len(items)``."""
        ...

    def move_to(self, device: torch.device) -> None:
        """Put the model's weights on ``device`` (called once, before any batch)."""
        ...


@runtime_checkable
class StreamingModelAdapter(Protocol[InputT_contra, ItemT, ChunkT_co]):
    """A batchable model whose results arrive in chunks (tokens, frames, partial answers)."""

    @property
    def max_length(self) -> int | None: ...

    def prepare(self, inputs: InputT_contra) -> ItemT: ...

    def cost(self, item: ItemT) -> int: ...

    def collate(self, items: Sequence[ItemT], padded_length: int) -> Any: ...

    def forward_stream(
        self, batch: Any, items: Sequence[ItemT]
    ) -> Iterator[Mapping[int, ChunkT_co]]:
        """Yield, per step, ``{item index: chunk}`` for the items that produced one. An item's
        stream ends when the generator ends. Chunks must be host objects (not device tensors)."""
        ...

    def move_to(self, device: torch.device) -> None: ...
