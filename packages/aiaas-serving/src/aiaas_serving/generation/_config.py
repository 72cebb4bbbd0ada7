"""The shape of a Llama-family decoder: what the model, its cache and its loaders agree on.

Rotary-embedding scaling (:class:`RopeScaling`) rescales the default inverse frequencies
``theta ** (-2i / head_dim)`` (:func:`rope_inverse_frequencies`), as transformers computes them:

* ``linear`` (position interpolation): every frequency divided by ``factor``;
* ``dynamic`` (dynamic NTK): transformers raises the base only once a sequence runs past
  ``max_position_embeddings``; this engine never does, so within it the frequencies are the
  default ones;
* ``llama3`` (Llama 3.1/3.2): frequencies whose wavelength exceeds
  ``original_max_position_embeddings / low_freq_factor`` divided by ``factor``, those below
  ``original_max_position_embeddings / high_freq_factor`` kept, the band between blended;
* ``frequency_factors``: each frequency divided by its own factor -- llama.cpp's
  ``rope_freqs.weight`` tensor, how a GGUF file carries Llama 3.1's ``llama3`` scaling.

The arithmetic runs in float32 in the order transformers uses, so the tables agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import torch

from aiaas_serving.generation._errors import ModelArchitectureUnsupported, ModelConfigInvalid

__all__ = ["ROPE_TYPES", "LlamaConfig", "RopeScaling", "rope_inverse_frequencies"]

_SUPPORTED_HF_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
ROPE_TYPES: Final = ("dynamic", "frequency_factors", "linear", "llama3")


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """How a checkpoint scales its rotary embeddings (``LlamaConfig.rope_scaling``).

    ``rope_type`` is one of ``"linear"``, ``"dynamic"``, ``"llama3"`` and
    ``"frequency_factors"``. ``factor`` applies to the first three; ``low_freq_factor``,
    ``high_freq_factor`` and ``original_max_position_embeddings`` to ``"llama3"``;
    ``frequency_factors`` (one positive factor per rotated pair, ``head_dim / 2`` of them) to
    ``"frequency_factors"``. Invalid values raise :class:`ModelConfigInvalid` listing every
    problem at once.
    """

    rope_type: str
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    frequency_factors: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.rope_type not in ROPE_TYPES:
            problems.append(
                f"rope_type must be one of {', '.join(ROPE_TYPES)}, got {self.rope_type!r}"
            )
        numbers = ["low_freq_factor", "high_freq_factor"] if self.rope_type == "llama3" else []
        if self.rope_type in {"linear", "dynamic", "llama3"}:
            numbers.insert(0, "factor")
        for name in numbers:
            value = getattr(self, name)
            if not _is_positive_number(value):
                problems.append(
                    f"rope scaling {name} must be a positive finite number, got {value!r}"
                )
        if "factor" in numbers and _is_positive_number(self.factor) and self.factor < 1:
            problems.append(f"rope scaling factor must be at least 1, got {self.factor!r}")
        if (
            self.rope_type == "llama3"
            and _is_positive_number(self.low_freq_factor)
            and _is_positive_number(self.high_freq_factor)
            and self.high_freq_factor <= self.low_freq_factor
        ):
            problems.append(
                f"rope scaling high_freq_factor ({self.high_freq_factor!r}) must exceed "
                f"low_freq_factor ({self.low_freq_factor!r})"
            )
        original: object = self.original_max_position_embeddings
        if self.rope_type == "llama3" and (
            isinstance(original, bool) or not isinstance(original, int) or original < 1
        ):
            problems.append(
                "rope scaling original_max_position_embeddings must be a positive integer, "
                f"got {original!r}"
            )
        factors: object = self.frequency_factors
        if self.rope_type == "frequency_factors":
            if (
                not isinstance(factors, tuple)
                or not factors
                or not all(_is_positive_number(value) for value in factors)
            ):
                problems.append(
                    "rope frequency_factors must be a non-empty tuple of positive finite "
                    f"numbers, got {_summary(factors)}"
                )
        elif factors != ():
            problems.append(
                f"rope frequency_factors apply only to rope_type 'frequency_factors', not "
                f"{self.rope_type!r}"
            )
        if problems:
            raise ModelConfigInvalid(
                "invalid rope scaling: " + "; ".join(problems), problems=problems
            )


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """The hyper-parameters of a Llama-family decoder (SmolLM2, Llama 2/3, Mistral, Qwen2 shapes).

    ``num_kv_heads`` below ``num_heads`` is grouped-query attention (``num_heads`` must be a
    multiple of it). ``eos_token_ids`` lists every token that ends a generation.
    ``attention_bias`` adds biases to the query/key/value projections (Qwen2, and Llama with
    ``attention_bias``), ``attention_output_bias`` to the output projection. ``rope_scaling``
    (:class:`RopeScaling`) scales the rotary embedding (Llama 3.1/3.2's ``llama3``, ``linear``,
    ``dynamic``); ``None`` is the plain one. Invalid values raise :class:`ModelConfigInvalid`
    listing every problem at once.
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
    rope_scaling: RopeScaling | None = None

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
        scaling: object = self.rope_scaling
        head_dim: object = self.head_dim
        if scaling is not None and not isinstance(scaling, RopeScaling):
            problems.append(f"rope_scaling must be a RopeScaling or None, got {scaling!r}")
        elif (
            isinstance(scaling, RopeScaling)
            and scaling.rope_type == "frequency_factors"
            and isinstance(head_dim, int)
            and len(scaling.frequency_factors) * 2 != head_dim
        ):
            problems.append(
                f"rope_scaling has {len(scaling.frequency_factors)} frequency factors; a "
                f"head_dim of {head_dim} rotates {head_dim // 2} frequencies"
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

        Reads ``rope_theta`` and the rope scaling top-level (``rope_scaling``) or from
        ``rope_parameters`` (transformers 5). Rope types other than ``default``, ``linear``,
        ``dynamic`` and ``llama3`` raise :class:`ModelArchitectureUnsupported`, as does a
        ``model_type`` outside llama/mistral/qwen2.
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
        max_positions = data.get("max_position_embeddings", 2048)
        values["rope_theta"], values["rope_scaling"] = _rope(data, max_positions)
        values["rms_norm_eps"] = data.get("rms_norm_eps", 1e-6)
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


_HF_ROPE_TYPES: Final = frozenset({"default", *ROPE_TYPES} - {"frequency_factors"})
_LLAMA3_KEYS: Final = ("factor", "low_freq_factor", "high_freq_factor")


def _rope(data: Mapping[str, Any], max_positions: object) -> tuple[Any, RopeScaling | None]:
    """``rope_theta`` and the scaling of a config, from ``rope_parameters`` or ``rope_scaling``."""
    theta = data.get("rope_theta")
    scaling: RopeScaling | None = None
    for key in ("rope_parameters", "rope_scaling"):
        params = data.get(key)
        if not params:
            continue
        if not isinstance(params, Mapping):
            raise ModelConfigInvalid(f"{key} must be an object, got {params!r}")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in _HF_ROPE_TYPES:
            raise ModelArchitectureUnsupported(
                f"rope type {rope_type!r} ({key}) is not supported: this engine runs "
                f"{', '.join(sorted(_HF_ROPE_TYPES))}"
            )
        partial = params.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0))
        if partial != 1.0:
            raise ModelArchitectureUnsupported(
                f"partial_rotary_factor {partial!r} is not supported: only full rotary "
                "embeddings are"
            )
        theta = params.get("rope_theta", theta)
        if rope_type == "default":
            continue
        required = ("factor", *(_LLAMA3_KEYS[1:] if rope_type == "llama3" else ()))
        missing = [name for name in required if params.get(name) is None]
        if missing:
            raise ModelConfigInvalid(
                f"{key} of rope type {rope_type!r} lacks {', '.join(missing)}",
                problems=[f"{key}.{name} is required" for name in missing],
            )
        values: dict[str, Any] = {name: params[name] for name in required}
        if rope_type == "llama3":
            # transformers' default for the pre-training context: the top-level value, else
            # max_position_embeddings.
            values["original_max_position_embeddings"] = params.get(
                "original_max_position_embeddings",
                data.get("original_max_position_embeddings", max_positions),
            )
        scaling = RopeScaling(rope_type, **values)
    return (10000.0 if theta is None else theta), scaling


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """The ``head_dim / 2`` inverse frequencies (float32, CPU) of ``config``'s rotary embedding."""
    dim = config.head_dim
    inv_freq = 1.0 / (
        config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    )
    scaling = config.rope_scaling
    if scaling is None or scaling.rope_type == "dynamic":
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    if scaling.rope_type == "frequency_factors":  # LlamaConfig checked there are dim / 2
        return inv_freq / torch.tensor(scaling.frequency_factors, dtype=torch.float32)
    return _llama3(inv_freq, scaling)


def _llama3(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    factor = scaling.factor
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    context = scaling.original_max_position_embeddings
    wavelength = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are stretched by the factor, short ones kept ...
    scaled = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    # ... and the band between blends the two linearly in context / wavelength.
    blend = (context / wavelength - low) / (high - low)
    smoothed = (1 - blend) * scaled / factor + blend * scaled
    between = ~(wavelength < context / high) * ~(wavelength > context / low)
    return torch.where(between, smoothed, scaled)


def _is_positive_number(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def _summary(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
