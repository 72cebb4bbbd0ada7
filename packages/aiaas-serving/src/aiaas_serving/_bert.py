"""A BERT-family encoder in plain torch, loaded from a local safetensors file.

Enough of BERT to run sentence-embedding checkpoints (all-MiniLM-L6-v2 and its kin) without
``transformers``: absolute position embeddings, post-layer-norm blocks, exact (erf) GELU, and
``scaled_dot_product_attention`` with a key-padding mask. Weight names follow the Hugging Face
``BertModel`` layout, with or without a ``bert.`` prefix; the pooler is not needed and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import attrs
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

__all__ = ["BertConfig", "BertEncoder", "load_bert_encoder"]

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
