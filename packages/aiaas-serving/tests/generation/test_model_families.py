"""The model families issue 14 names, checked against transformers on tiny random models.

Llama 3.1/3.2 rope scaling (``llama3``), ``linear`` and ``dynamic`` scaling, Qwen2 (attention
biases, its own GGUF architecture), Mistral, and Llama 2 / Mistral GGUF files whose tokenizer is
sentencepiece BPE ("llama": scores, ``▁`` for spaces, ``<0x..>`` byte fallback, BOS added).
Everything is built in ``tmp_path``: transformers models saved as Hugging Face folders, and
GGUF files written with the ``gguf`` package the way llama.cpp's converter writes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf_kit import GGUF_NAMES
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from aiaas_serving.generation import (
    LlamaConfig,
    LlamaForCausalLM,
    ModelArchitectureUnsupported,
    ModelConfigInvalid,
    ModelFileInvalid,
    RopeScaling,
    load_gguf,
    load_hf_folder,
)
from aiaas_serving.generation._config import rope_inverse_frequencies
from aiaas_serving.generation._tokenizer import tokenizer_from_gguf_metadata

TOLERANCE = 2e-5  # fp32 logits, as the other reference checks

# -- a sentencepiece ("llama") vocabulary, as a Llama 2 / Mistral GGUF file carries one ------------

PIECES = [
    *"▁etaohnsrldicTH1230é中文",
    *["▁t", "he", "▁the", "▁a", "in", "▁in", "er", "on", "▁on", "▁T", "▁The", "ll", "▁he"],
    *["hell", "▁hell", "12", "▁1", "é▁", "中文", "▁▁", "▁▁▁▁"],
]
SPM_TOKENS = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *PIECES]
SPM_TOKENS.append("<|user|>")
# llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
SPM_TYPES = [2, 3, 3, *[6] * 256, *[1] * len(PIECES), 4]
SPM_SCORES = [0.0, 0.0, 0.0, *[0.0] * 256, *(-float(rank) for rank in range(len(PIECES))), 0.0]
SPM_METADATA: dict[str, Any] = {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": SPM_TOKENS,
    "tokenizer.ggml.scores": SPM_SCORES,
    "tokenizer.ggml.token_type": SPM_TYPES,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
}

# -- a byte-level BPE vocabulary with Qwen2's pre-tokenizer and chat tokens -----------------------

BYTE_TOKENS = list(cast("Callable[[], dict[int, str]]", bytes_to_unicode)().values())
QWEN_MERGED = ["Ġt", "he", "Ġthe", "ĠT", "ĠThe", "12", "in", "Ġin"]
QWEN_TOKENS = [*BYTE_TOKENS, *QWEN_MERGED, "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ T", "ĠT he", "1 2", "i n", "Ġ in"]
QWEN_TYPES = [1] * (len(QWEN_TOKENS) - 3) + [3, 3, 3]
QWEN_METADATA: dict[str, Any] = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "qwen2",
    "tokenizer.ggml.tokens": QWEN_TOKENS,
    "tokenizer.ggml.merges": QWEN_MERGES,
    "tokenizer.ggml.token_type": QWEN_TYPES,
    "tokenizer.ggml.bos_token_id": len(QWEN_TOKENS) - 3,
    "tokenizer.ggml.eos_token_id": len(QWEN_TOKENS) - 1,
    "tokenizer.ggml.padding_token_id": len(QWEN_TOKENS) - 3,
    "tokenizer.ggml.add_bos_token": False,
}

TEXTS = [
    "the hell",
    " the",
    "  the  ",
    "The 123 é中文 😀",
    "hello\nworld\n\n",
    "",
    " ",
    "<|user|> the <s> x <unk>",
    "tea\t1203",
    "中文",
    "Ünïcödé ☃ 🎉🎉 naïve",
    "12345 67 0.5",
    "the\u00a0the",
]

SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
}
PROMPT_LENGTH = 110  # past the 64-token pre-training context of the scaled configs below

LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
LINEAR = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
DYNAMIC = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}


def _hf_model(kind: str, **extra: Any) -> Any:
    """A random-initialised transformers model of ``kind`` (llama, qwen2, mistral)."""
    classes: dict[str, tuple[Any, Any]] = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }
    config_class, model_class = classes[kind]
    vocab = len(QWEN_TOKENS) if kind == "qwen2" else len(SPM_TOKENS)
    config = config_class(vocab_size=vocab, bos_token_id=1, eos_token_id=2, **SHAPE, **extra)
    torch.manual_seed(7)
    return model_class(config).eval()


def _prompt(vocab: int, *, seed: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (1, PROMPT_LENGTH), generator=generator)


def _greedy(logits_of: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor) -> list[int]:
    tokens = ids
    for _ in range(8):
        with torch.inference_mode():
            step = logits_of(tokens)[0, -1].argmax()
        tokens = torch.cat((tokens, step.view(1, 1)), dim=1)
    return tokens[0, ids.shape[1] :].tolist()


def _assert_agrees(ours: LlamaForCausalLM, theirs: Any, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        difference = float((ours.forward_dense(ids) - theirs(ids).logits).abs().max())
    assert difference < TOLERANCE
    assert _greedy(ours.forward_dense, ids) == _greedy(lambda x: theirs(x).logits, ids)
    return difference


# -- rope scaling: the inverse frequencies themselves ------------------------------------------


@pytest.mark.parametrize("params", [LLAMA3, LINEAR, DYNAMIC], ids=["llama3", "linear", "dynamic"])
def test_inverse_frequencies_equal_transformers_bit_for_bit(params: dict[str, Any]) -> None:
    hf = transformers.LlamaConfig(vocab_size=32, rope_parameters=dict(params), **SHAPE)
    theirs, attention_factor = ROPE_INIT_FUNCTIONS[params["rope_type"]](hf, "cpu")
    data = json.loads(hf.to_json_string())
    ours = rope_inverse_frequencies(LlamaConfig.from_hf_dict(data))
    assert attention_factor == 1.0
    assert torch.equal(ours, theirs)
    plain = rope_inverse_frequencies(LlamaConfig.from_hf_dict({**data, "rope_parameters": None}))
    if params["rope_type"] == "dynamic":  # within max_position_embeddings: the default ones
        assert torch.equal(ours, plain)
    else:
        assert not torch.equal(ours, plain)


def test_llama3_scaling_blends_the_middle_band() -> None:
    config = LlamaConfig.from_hf_dict({**_shape_dict(), "rope_parameters": dict(LLAMA3)})
    assert config.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 64)
    plain = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    ratio = (plain / rope_inverse_frequencies(config)).tolist()
    # Wavelengths 6.3 (< 64/4: kept), 19.9 and 62.8 (between: blended), then >= 199 (/ 8).
    assert ratio[0] == 1.0
    assert 1.0 < ratio[1] < ratio[2] < 8.0
    assert ratio[3:] == pytest.approx([8.0] * 5)


def _shape_dict(**extra: Any) -> dict[str, Any]:
    return {"vocab_size": 64, **SHAPE, **extra}


# -- Hugging Face folders: Llama 3.x / linear / dynamic rope, Qwen2, Mistral ---------------------


def _save(tmp_path: Path, hf: Any, name: str) -> Path:
    folder = tmp_path / name
    hf.save_pretrained(folder)
    metadata = QWEN_METADATA if hf.config.model_type == "qwen2" else SPM_METADATA
    tokenizer = tokenizer_from_gguf_metadata(metadata)
    (folder / "tokenizer.json").write_text(tokenizer.backend.to_str(), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("llama", {"rope_parameters": LLAMA3}),
        ("llama", {"rope_scaling": {"type": "linear", "factor": 4.0}, "rope_theta": 10000.0}),
        ("llama", {"rope_parameters": DYNAMIC}),
        ("llama", {"rope_parameters": {**LLAMA3, "rope_theta": 500000.0}, "head_dim": 32}),
        ("qwen2", {"rope_theta": 1000000.0}),
        ("mistral", {"sliding_window": None, "rope_theta": 1000000.0}),
        ("mistral", {"sliding_window": 120}),
    ],
    ids=["llama3", "linear", "dynamic", "llama3.2-shape", "qwen2", "mistral", "mistral-window"],
)
def test_hf_folder_matches_transformers(tmp_path: Path, kind: str, extra: dict[str, Any]) -> None:
    hf = _hf_model(kind, **extra)
    loaded = load_hf_folder(_save(tmp_path, hf, kind))
    config = loaded.config
    ids = _prompt(config.vocab_size)
    _assert_agrees(loaded.model, hf, ids)
    scaling = config.rope_scaling
    assert scaling is None or scaling.rope_type in {"llama3", "linear", "dynamic"}
    assert config.attention_bias == (kind == "qwen2")
    if scaling is not None and scaling.rope_type != "dynamic":
        # The scaling is what makes the two agree: without it the logits part ways.
        unscaled = LlamaForCausalLM(LlamaConfig(**{**_fields(config), "rope_scaling": None}))
        unscaled.load_hf_state_dict(loaded.model.hf_state_dict())
        with torch.inference_mode():
            gap = (unscaled.forward_dense(ids) - hf(ids).logits).abs().max()
        assert float(gap) > 1e-3


def _fields(config: LlamaConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LlamaConfig.__dataclass_fields__}


# -- GGUF files: sentencepiece Llama 2 / Mistral, Qwen2, rope scaling -----------------------------

_GGUF_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of a llama query/key projection."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def llama_cpp_rope_factors(params: Mapping[str, Any], head_dim: int) -> list[float]:
    """The ``rope_freqs`` tensor llama.cpp's converter writes for ``llama3`` rope scaling."""
    base, factor = params["rope_theta"], params["factor"]
    low, high = params["low_freq_factor"], params["high_freq_factor"]
    context = params["original_max_position_embeddings"]
    factors: list[float] = []
    for freq in (1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))).tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def write_gguf(
    path: Path,
    hf: Any,
    *,
    architecture: str = "llama",
    name: str = "tiny",
    tokenizer: Mapping[str, Any] = SPM_METADATA,
    scaling: tuple[str, float | None] | None = None,
    rope_freqs: list[float] | None = None,
) -> Path:
    """``hf``'s weights and shape, and ``tokenizer``, as llama.cpp's converter writes them."""
    config = hf.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(scaling[0]))
        if scaling[1] is not None:
            writer.add_rope_scaling_factor(scaling[1])
    writer.add_tokenizer_model(tokenizer["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in tokenizer:
        writer.add_tokenizer_pre(tokenizer["tokenizer.ggml.pre"])
    writer.add_token_list(tokenizer["tokenizer.ggml.tokens"])
    if "tokenizer.ggml.scores" in tokenizer:
        writer.add_token_scores(tokenizer["tokenizer.ggml.scores"])
    writer.add_token_types(tokenizer["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.merges" in tokenizer:
        writer.add_token_merges(tokenizer["tokenizer.ggml.merges"])
    writer.add_bos_token_id(tokenizer["tokenizer.ggml.bos_token_id"])
    writer.add_eos_token_id(tokenizer["tokenizer.ggml.eos_token_id"])
    if "tokenizer.ggml.unknown_token_id" in tokenizer:
        writer.add_unk_token_id(tokenizer["tokenizer.ggml.unknown_token_id"])
    if "tokenizer.ggml.padding_token_id" in tokenizer:
        writer.add_pad_token_id(tokenizer["tokenizer.ggml.padding_token_id"])
    writer.add_add_bos_token(tokenizer.get("tokenizer.ggml.add_bos_token", True))
    writer.add_add_eos_token(False)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    for key, tensor in hf.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        values = tensor.detach().float().numpy()
        if key.startswith("model.layers."):
            _, _, layer, rest = key.split(".", 3)
            target = f"blk.{layer}.{GGUF_NAMES[rest]}"
            if architecture == "llama" and ".attn_q." in target:
                values = _permute(values, heads)
            elif architecture == "llama" and ".attn_k." in target:
                values = _permute(values, kv_heads)
        else:
            target = _GGUF_GLOBAL[key]
        writer.add_tensor(target, np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _transformers_gguf(path: Path) -> tuple[Any, Any]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model: Any = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return tokenizer, model.eval()


@pytest.mark.parametrize(
    ("kind", "architecture", "name", "tokenizer"),
    [
        ("llama", "llama", "tiny-llama-2", SPM_METADATA),
        # llama.cpp writes Mistral as 'llama'; transformers reads it as Llama (the same maths
        # without a sliding window), and the source is a transformers Mistral model.
        ("mistral", "llama", "tiny-mistral", SPM_METADATA),
        ("qwen2", "qwen2", "tiny-qwen2", QWEN_METADATA),
    ],
    ids=["llama2-sentencepiece", "mistral-sentencepiece", "qwen2"],
)
def test_gguf_matches_transformers_on_the_same_file(
    tmp_path: Path, kind: str, architecture: str, name: str, tokenizer: Mapping[str, Any]
) -> None:
    source = _hf_model(kind, **({"sliding_window": None} if kind == "mistral" else {}))
    path = write_gguf(
        tmp_path / f"{name}.gguf", source, architecture=architecture, name=name, tokenizer=tokenizer
    )
    ours = load_gguf(path)
    their_tokenizer, theirs = _transformers_gguf(path)
    expected = transformers.LlamaForCausalLM if kind == "mistral" else type(source)
    assert type(theirs) is expected
    assert ours.config.attention_bias == (kind == "qwen2")
    assert not ours.config.attention_output_bias
    for text in TEXTS:
        ids = ours.tokenizer.encode(text, add_special_tokens=True)
        assert ids == their_tokenizer.encode(text), text
        assert ours.tokenizer.decode(ids) == their_tokenizer.decode(ids, skip_special_tokens=True)
    if kind != "qwen2":
        assert ours.tokenizer.encode("the", add_special_tokens=True)[0] == 1  # BOS, as llama.cpp
    text_ids = ours.tokenizer.encode(" ".join(TEXTS), add_special_tokens=True)
    prompt = torch.tensor([text_ids[:PROMPT_LENGTH]])
    _assert_agrees(ours.model, theirs, prompt)
    _assert_agrees(ours.model, source, _prompt(ours.config.vocab_size))


def test_gguf_llama3_rope_freqs_match_the_scaled_reference(tmp_path: Path) -> None:
    """llama.cpp writes Llama 3.1's scaling as a rope_freqs tensor; transformers' GGUF loader
    drops it, so the reference is the transformers model the file was made from."""
    source = _hf_model("llama", rope_parameters=dict(LLAMA3))
    factors = llama_cpp_rope_factors(LLAMA3, 16)
    path = write_gguf(tmp_path / "llama-3.1.gguf", source, rope_freqs=factors)
    loaded = load_gguf(path)
    scaling = loaded.config.rope_scaling
    assert scaling is not None
    assert scaling.rope_type == "frequency_factors"
    assert scaling.frequency_factors == pytest.approx(factors, rel=1e-6)
    assert "rope_freqs.weight" not in loaded.model.hf_state_dict()
    _assert_agrees(loaded.model, source, _prompt(loaded.config.vocab_size))


def test_gguf_linear_rope_scaling_matches_the_scaled_reference(tmp_path: Path) -> None:
    source = _hf_model("llama", rope_parameters=dict(LINEAR))
    loaded = load_gguf(write_gguf(tmp_path / "linear.gguf", source, scaling=("linear", 4.0)))
    assert loaded.config.rope_scaling == RopeScaling("linear", factor=4.0)
    _assert_agrees(loaded.model, source, _prompt(loaded.config.vocab_size))


def test_gguf_rope_scaling_problems(tmp_path: Path) -> None:
    source = _hf_model("llama")
    no_factor = write_gguf(tmp_path / "no-factor.gguf", source, scaling=("linear", None))
    with pytest.raises(ModelFileInvalid, match="linear rope scaling without a factor"):
        load_gguf(no_factor)
    both = write_gguf(tmp_path / "both.gguf", source, scaling=("linear", 2.0), rope_freqs=[1.0] * 8)
    with pytest.raises(ModelArchitectureUnsupported, match="combines linear rope scaling"):
        load_gguf(both)
    longrope = write_gguf(tmp_path / "longrope.gguf", source, scaling=("longrope", 2.0))
    with pytest.raises(ModelArchitectureUnsupported, match="rope scaling 'longrope'") as caught:
        load_gguf(longrope)
    assert caught.value.code == "MODEL_ARCHITECTURE_UNSUPPORTED"
    short = write_gguf(tmp_path / "short.gguf", source, rope_freqs=[1.0] * 5)
    with pytest.raises(ModelFileInvalid, match="5 frequency factors; a head_dim of 16") as bad:
        load_gguf(short)
    assert bad.value.code == "MODEL_FILE_INVALID"
    negative = write_gguf(tmp_path / "negative.gguf", source, rope_freqs=[1.0] * 7 + [-2.0])
    with pytest.raises(ModelFileInvalid, match="positive finite numbers"):
        load_gguf(negative)
    falcon = write_gguf(tmp_path / "falcon.gguf", source, architecture="falcon")
    with pytest.raises(
        ModelArchitectureUnsupported, match=r"'llama' \(SmolLM2, Llama 2/3, Mistral\) and 'qwen2'"
    ):
        load_gguf(falcon)


# -- hostile and edge input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rope", "error", "fragment"),
    [
        ({"rope_type": "yarn", "factor": 4.0}, ModelArchitectureUnsupported, "'yarn'"),
        ({"rope_type": "longrope", "factor": 4.0}, ModelArchitectureUnsupported, "'longrope'"),
        ({"rope_type": "banana"}, ModelArchitectureUnsupported, "rope type 'banana'"),
        ({"rope_type": "frequency_factors"}, ModelArchitectureUnsupported, "'frequency_factors'"),
        ({"rope_type": "linear"}, ModelConfigInvalid, "lacks factor"),
        ({"rope_type": "linear", "factor": 0.5}, ModelConfigInvalid, "at least 1"),
        ({"rope_type": "dynamic", "factor": "big"}, ModelConfigInvalid, "positive finite"),
        ({"rope_type": "linear", "factor": float("inf")}, ModelConfigInvalid, "positive finite"),
        ({**LLAMA3, "low_freq_factor": 4.0}, ModelConfigInvalid, "must exceed low_freq_factor"),
        ({**LLAMA3, "original_max_position_embeddings": 0}, ModelConfigInvalid, "positive int"),
        (
            {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5},
            ModelArchitectureUnsupported,
            "partial_rotary_factor",
        ),
    ],
)
def test_hf_rope_problems_are_clear_errors(
    rope: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    for key in ("rope_parameters", "rope_scaling"):
        with pytest.raises(error, match=fragment) as caught:
            LlamaConfig.from_hf_dict(_shape_dict(**{key: rope}))
        code = getattr(caught.value, "code", None)
        assert code in {"MODEL_ARCHITECTURE_UNSUPPORTED", "MODEL_CONFIG_INVALID"}


def test_llama3_defaults_its_original_context_as_transformers() -> None:
    rope = {k: v for k, v in LLAMA3.items() if k != "original_max_position_embeddings"}
    top_level = LlamaConfig.from_hf_dict(
        _shape_dict(rope_parameters=rope, original_max_position_embeddings=32)
    )
    assert top_level.rope_scaling is not None
    assert top_level.rope_scaling.original_max_position_embeddings == 32
    fallback = LlamaConfig.from_hf_dict(_shape_dict(rope_parameters=rope))
    assert fallback.rope_scaling is not None
    assert fallback.rope_scaling.original_max_position_embeddings == 128


def test_rope_scaling_and_config_validation() -> None:
    with pytest.raises(ModelConfigInvalid, match="rope_type must be one of") as caught:
        RopeScaling("yarn")
    assert caught.value.code == "MODEL_CONFIG_INVALID"
    with pytest.raises(ModelConfigInvalid, match="apply only to rope_type 'frequency_factors'"):
        RopeScaling("linear", factor=2.0, frequency_factors=(1.0,))
    with pytest.raises(ModelConfigInvalid, match="non-empty tuple"):
        RopeScaling("frequency_factors")
    with pytest.raises(ModelConfigInvalid, match=r"got \[1\.0\]"):
        RopeScaling("frequency_factors", frequency_factors=[1.0])  # type: ignore[arg-type]
    long_list = tuple([1.0] * 40 + [math.nan])
    with pytest.raises(ModelConfigInvalid, match=r"\.\.\.$"):
        RopeScaling("frequency_factors", frequency_factors=long_list)
    base = _fields(LlamaConfig.from_hf_dict(_shape_dict()))
    with pytest.raises(ModelConfigInvalid, match="rope_scaling must be a RopeScaling"):
        LlamaConfig(**{**base, "rope_scaling": {"rope_type": "linear"}})
    with pytest.raises(ModelConfigInvalid, match="3 frequency factors; a head_dim of 16"):
        LlamaConfig(
            **{
                **base,
                "rope_scaling": RopeScaling("frequency_factors", frequency_factors=(1.0,) * 3),
            }
        )
    ok = LlamaConfig(
        **{**base, "rope_scaling": RopeScaling("frequency_factors", frequency_factors=(2.0,) * 8)}
    )
    plain = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    assert torch.equal(rope_inverse_frequencies(ok), plain / 2.0)


def test_gguf_tokenizer_problems() -> None:
    without_scores = {k: v for k, v in SPM_METADATA.items() if k != "tokenizer.ggml.scores"}
    with pytest.raises(ModelFileInvalid, match=r"needs tokenizer\.ggml\.scores") as caught:
        tokenizer_from_gguf_metadata(without_scores)
    assert caught.value.code == "MODEL_FILE_INVALID"
    for scores in (SPM_SCORES[:-1], [*SPM_SCORES[:-1], "x"], [*SPM_SCORES[:-1], math.nan]):
        with pytest.raises(ModelFileInvalid, match="lacks them or they are malformed"):
            tokenizer_from_gguf_metadata({**SPM_METADATA, "tokenizer.ggml.scores": scores})
    with pytest.raises(ModelFileInvalid, match=r"tokenizer\.ggml\.tokens \(a list of strings\)"):
        tokenizer_from_gguf_metadata({**SPM_METADATA, "tokenizer.ggml.tokens": [1, 2]})
    with pytest.raises(ModelFileInvalid, match="must be a list of 'left right'"):
        tokenizer_from_gguf_metadata({**SPM_METADATA, "tokenizer.ggml.merges": "▁ t"})
    no_merges = {k: v for k, v in QWEN_METADATA.items() if k != "tokenizer.ggml.merges"}
    with pytest.raises(ModelFileInvalid, match=r"lacks tokenizer\.ggml\.merges"):
        tokenizer_from_gguf_metadata(no_merges)


def test_sentencepiece_tokenizer_flags_and_merges() -> None:
    tokenizer = tokenizer_from_gguf_metadata(SPM_METADATA)
    the = SPM_TOKENS.index("▁the")
    assert tokenizer.encode("the the", add_special_tokens=True) == [1, the, the]
    assert tokenizer.encode("the", add_special_tokens=False) == [the]
    assert tokenizer.decode([1, the, the]) == "the the"
    assert tokenizer.decode([1, the], skip_special_tokens=False) == "<s> the"
    assert tokenizer.eos_token_ids == (2,)
    assert tokenizer.bos_token_id == 1
    # Characters no piece spells fall back to their UTF-8 bytes, and stream back whole.
    ids = tokenizer.encode("ж", add_special_tokens=False)
    assert [SPM_TOKENS[i] for i in ids] == ["▁", "<0xD0>", "<0xB6>"]
    stream = tokenizer.detokenizer()
    assert [stream.push(i) for i in ids] == ["", "", "ж"]
    plain = tokenizer_from_gguf_metadata(
        {
            **SPM_METADATA,
            "tokenizer.ggml.add_bos_token": False,
            "tokenizer.ggml.add_eos_token": True,
            "tokenizer.ggml.add_space_prefix": False,
        }
    )
    assert plain.encode("the", add_special_tokens=True) == [
        SPM_TOKENS.index("t"),
        SPM_TOKENS.index("he"),
        2,
    ]
    assert plain.decode(plain.encode(" the")) == " the"
    # Merges stated in the file win over the ones the scores imply.
    merged = tokenizer_from_gguf_metadata({**SPM_METADATA, "tokenizer.ggml.merges": ["h e"]})
    assert merged.encode("the", add_special_tokens=False) == [
        SPM_TOKENS.index("▁"),
        SPM_TOKENS.index("t"),
        SPM_TOKENS.index("he"),
    ]
