"""The shape of a Llama-family decoder: what the model, its cache and its loaders agree on."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiaas_serving.generation._errors import ModelArchitectureUnsupported, ModelConfigInvalid

__all__ = ["LlamaConfig"]

_SUPPORTED_HF_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """The hyper-parameters of a Llama-family decoder (SmolLM2, Llama 2/3, Mistral, Qwen2 shapes).

    ``num_kv_heads`` below ``num_heads`` is grouped-query attention (``num_heads`` must be a
    multiple of it). ``eos_token_ids`` lists every token that ends a generation.
    ``attention_bias`` adds biases to the query/key/value projections (Qwen2, and Llama with
    ``attention_bias``), ``attention_output_bias`` to the output projection. Invalid values
    raise :class:`ModelConfigInvalid` listing every problem at once.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    attention_bias: bool = False
    attention_output_bias: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems and self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if not problems and self.head_dim % 2:
            problems.append(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                problems.append(f"{name} must be a positive finite number, got {value!r}")
        problems.extend(
            f"{name} must be a bool, got {getattr(self, name)!r}"
            for name in ("tie_word_embeddings", "attention_bias", "attention_output_bias")
            if not isinstance(getattr(self, name), bool)
        )
        declared: object = self.vocab_size
        vocab = declared if isinstance(declared, int) else 0
        if self.bos_token_id is not None and not _is_token(self.bos_token_id, vocab):
            problems.append(
                f"bos_token_id must be a token id below vocab_size, got {self.bos_token_id!r}"
            )
        eos: object = self.eos_token_ids
        if not isinstance(eos, tuple) or not all(_is_token(token, vocab) for token in eos):
            problems.append(
                "eos_token_ids must be a tuple of token ids below vocab_size, "
                f"got {self.eos_token_ids!r}"
            )
        if problems:
            raise ModelConfigInvalid(
                "invalid Llama configuration: " + "; ".join(problems),
                problems=problems,
            )

    @property
    def num_query_groups(self) -> int:
        """How many query heads share one key/value head (1 = multi-head attention)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any]) -> LlamaConfig:
        """Build a config from a Hugging Face ``config.json`` of a Llama-family model.

        Reads ``rope_theta`` top-level or from ``rope_parameters`` (transformers 5); refuses
        rope scaling other than the default with :class:`ModelArchitectureUnsupported`, as it
        refuses a ``model_type`` outside llama/mistral/qwen2.
        """
        if not isinstance(data, Mapping):
            raise ModelConfigInvalid(
                f"a model config must be a JSON object, got {type(data).__name__}"
            )
        model_type = data.get("model_type", "llama")
        if model_type not in _SUPPORTED_HF_MODEL_TYPES:
            raise ModelArchitectureUnsupported(
                f"model_type {model_type!r} is not supported: this engine runs the Llama "
                f"family ({', '.join(sorted(_SUPPORTED_HF_MODEL_TYPES))})"
            )
        try:
            hidden_size = data["hidden_size"]
            num_heads = data["num_attention_heads"]
            values: dict[str, Any] = {
                "vocab_size": data["vocab_size"],
                "hidden_size": hidden_size,
                "intermediate_size": data["intermediate_size"],
                "num_layers": data["num_hidden_layers"],
                "num_heads": num_heads,
            }
        except KeyError as exc:
            raise ModelConfigInvalid(
                f"the model config lacks {exc.args[0]!r}, which a Llama config must have"
            ) from None
        values["num_kv_heads"] = data.get("num_key_value_heads") or num_heads
        head_dim = data.get("head_dim")
        if head_dim is None and isinstance(hidden_size, int) and isinstance(num_heads, int):
            head_dim = hidden_size // num_heads if num_heads > 0 else 0
        values["head_dim"] = head_dim
        values["rope_theta"] = _rope_theta(data)
        values["rms_norm_eps"] = data.get("rms_norm_eps", 1e-6)
        max_positions = data.get("max_position_embeddings", 2048)
        window = data.get("sliding_window")
        if model_type == "qwen2" and not data.get("use_sliding_window"):
            window = None
        if isinstance(window, int) and isinstance(max_positions, int) and window > 0:
            # Within its window a sliding-window model is a plain causal one: serve only that.
            max_positions = min(max_positions, window)
        values["max_position_embeddings"] = max_positions
        values["tie_word_embeddings"] = bool(data.get("tie_word_embeddings", False))
        if model_type == "qwen2":
            values["attention_bias"] = True
        else:
            # transformers' Llama/Mistral put the bias on all four projections or none.
            values["attention_bias"] = bool(data.get("attention_bias", False))
            values["attention_output_bias"] = values["attention_bias"]
        if data.get("mlp_bias"):
            raise ModelArchitectureUnsupported("mlp_bias=true is not supported by this engine")
        values["bos_token_id"] = data.get("bos_token_id")
        eos = data.get("eos_token_id")
        values["eos_token_ids"] = (
            () if eos is None else tuple(eos) if isinstance(eos, list | tuple) else (eos,)
        )
        return cls(**values)


def _is_token(value: object, vocab_size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < vocab_size


def _rope_theta(data: Mapping[str, Any]) -> Any:
    theta = data.get("rope_theta")
    for key in ("rope_parameters", "rope_scaling"):
        params = data.get(key)
        if not params:
            continue
        if not isinstance(params, Mapping):
            raise ModelConfigInvalid(f"{key} must be an object, got {params!r}")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise ModelArchitectureUnsupported(
                f"rope type {rope_type!r} is not supported: only the default rotary "
                "embedding (no scaling) is"
            )
        theta = params.get("rope_theta", theta)
    return 10000.0 if theta is None else theta
