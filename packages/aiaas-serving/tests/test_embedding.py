"""The sentence-embedding adapter on the real all-MiniLM-L6-v2 files.

Embeddings must match sentence-transformers, loaded offline from the same files (cosine >=
0.9999), and a batched result must equal the same input run alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from aiaas_core import ConfigError
from aiaas_serving import (
    BatchPolicy,
    BertConfig,
    InputTooLarge,
    InvalidInput,
    Runtime,
    SentenceEmbeddingAdapter,
    load_bert_encoder,
)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world",
    "A man is playing a guitar on a stage in front of a small crowd.",
    "Ünïcödé façade — naïve café, 東京 and Zürich.",
    "",
    "Batching pays on a CPU only when a batch groups similar lengths. " * 3,
    "a very long input that sentence-transformers truncates at 256 tokens " * 30,
    "What is the capital of France?",
]


@pytest.fixture(scope="module")
def reference(minilm_dir):
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(SENTENCES, convert_to_numpy=True)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_embeddings_match_sentence_transformers_and_batching_changes_nothing(
    minilm, reference
) -> None:
    async with Runtime(device="cpu") as runtime:
        model = await runtime.add_model("minilm", minilm, policy=BatchPolicy(buckets=(256,)))
        batched = await asyncio.gather(*(model.submit(s) for s in SENTENCES))
        alone = [await model.submit(s) for s in SENTENCES]
    assert runtime.metrics.histogram("aiaas_serving_batch_size", model="minilm").max > 1
    for ours, single, theirs in zip(batched, alone, reference, strict=True):
        assert ours.shape == (384,)
        assert ours.dtype == np.float32
        assert cosine(ours, theirs) >= 0.9999
        np.testing.assert_allclose(ours, single, atol=1e-5)
        assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5  # normalised (2_Normalize)


def test_the_shipped_folder_is_read_as_sentence_transformers_would(minilm, minilm_dir) -> None:
    assert (minilm_dir / "modules.json").is_file()
    assert not (minilm_dir / "2_Normalize").exists()  # named, absent: normalised anyway
    assert minilm.normalize
    assert minilm.pooling == "mean"
    assert minilm.max_length == 256
    assert minilm.dimensions == 384
    ids = minilm.tokenize("hello world")
    assert ids[0] == 101
    assert ids[-1] == 102
    assert len(ids) == 4
    assert minilm.cost(minilm.prepare(SENTENCES[6])) == 256  # truncated like the reference
    assert minilm.dummy_item(5) == [101, 100, 100, 100, 102]
    assert minilm.dummy_item(1) == [101]
    with pytest.raises(InvalidInput, match="must be a string"):
        minilm.prepare(b"bytes")


def test_strict_length_refuses_what_would_be_truncated(minilm_dir) -> None:
    adapter = SentenceEmbeddingAdapter.from_directory(minilm_dir, truncate=False, max_length=16)
    assert len(adapter.prepare("short text")) == 4
    with pytest.raises(InputTooLarge, match="at most 16"):
        adapter.prepare("word " * 40)


def _tiny_bert(folder, minilm_dir, *, pooling=None, extra_weights=None, drop=None, **config):
    """A small random BERT folder with the real tokenizer: fast to load."""
    folder.mkdir()
    settings = {
        "model_type": "bert",
        "vocab_size": 30522,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "max_position_embeddings": 64,
        **config,
    }
    (folder / "config.json").write_text(json.dumps(settings))
    shutil.copy(minilm_dir / "tokenizer.json", folder / "tokenizer.json")
    gen = torch.Generator().manual_seed(1)
    names = {
        "embeddings.word_embeddings.weight": (30522, 8),
        "embeddings.position_embeddings.weight": (64, 8),
        "embeddings.token_type_embeddings.weight": (2, 8),
        "embeddings.LayerNorm.weight": (8,),
        "embeddings.LayerNorm.bias": (8,),
        "pooler.dense.weight": (8, 8),
    }
    for part, shape in {
        "attention.self.query": (8, 8),
        "attention.self.key": (8, 8),
        "attention.self.value": (8, 8),
        "attention.output.dense": (8, 8),
        "attention.output.LayerNorm": (8, 8),
        "intermediate.dense": (16, 8),
        "output.dense": (8, 16),
        "output.LayerNorm": (8, 8),
    }.items():
        names[f"bert.encoder.layer.0.{part}.weight"] = shape if "LayerNorm" not in part else (8,)
        names[f"bert.encoder.layer.0.{part}.bias"] = (shape[0],)
    names.update(extra_weights or {})
    for name in drop or ():
        names.pop(name)
    tensors = {name: torch.randn(shape, generator=gen) for name, shape in names.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


def test_pooling_modes_from_the_pooling_config(tmp_path, minilm_dir) -> None:
    cls_dir = _tiny_bert(tmp_path / "cls", minilm_dir, pooling={"pooling_mode_cls_token": True})
    max_dir = _tiny_bert(tmp_path / "max", minilm_dir, pooling={"pooling_mode_max_tokens": True})
    cls = SentenceEmbeddingAdapter.from_directory(cls_dir)
    top = SentenceEmbeddingAdapter.from_directory(max_dir, normalize=True)
    assert (cls.pooling, cls.normalize, cls.max_length) == ("cls", False, 64)
    assert top.pooling == "max"
    items = [cls.prepare("two words"), cls.prepare("a few more words here")]
    batch = cls.collate(items, 7)
    with torch.inference_mode():
        hidden = cls.encoder(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(cls.forward(batch), hidden[:, 0])
        pooled = top.forward(top.collate(items, 7))
    assert torch.allclose(pooled.norm(dim=1), torch.ones(2))
    bad = _tiny_bert(tmp_path / "bad", minilm_dir, pooling={"pooling_mode_weightedmean_tokens": 1})
    with pytest.raises(ValueError, match="not supported"):
        SentenceEmbeddingAdapter.from_directory(bad)
    with pytest.raises(ValueError, match="pooling must be"):
        SentenceEmbeddingAdapter(cls.encoder, cls.tokenizer, max_length=8, pooling="sum")
    with pytest.raises(ValueError, match="max_length must be between 2 and 64"):
        SentenceEmbeddingAdapter(cls.encoder, cls.tokenizer, max_length=65)


def test_weight_loading_refuses_incomplete_or_unknown_checkpoints(tmp_path, minilm_dir) -> None:
    ok = load_bert_encoder(_tiny_bert(tmp_path / "ok", minilm_dir), dtype=torch.float64)
    assert next(ok.parameters()).dtype == torch.float64
    assert not any(p.requires_grad for p in ok.parameters())
    missing = _tiny_bert(
        tmp_path / "missing", minilm_dir, drop=["bert.encoder.layer.0.output.dense.bias"]
    )
    with pytest.raises(ValueError, match="missing weights"):
        load_bert_encoder(missing)
    unknown = _tiny_bert(tmp_path / "unknown", minilm_dir, extra_weights={"decoder.w": (2,)})
    with pytest.raises(ValueError, match="does not know"):
        load_bert_encoder(unknown)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_bert_encoder(empty)
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        SentenceEmbeddingAdapter.from_directory(empty)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "gpt2"}, "not a BERT encoder"),
        ({"position_embedding_type": "relative_key"}, "absolute position"),
        ({"hidden_size": 9}, "multiple of num_attention_heads"),
        ({"hidden_act": "swish"}, "not supported"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be an integer >= 1"),
    ],
)
def test_bert_config_validation(tmp_path, config, message) -> None:
    path = tmp_path / "config.json"
    base = {
        "vocab_size": 10,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
    }
    path.write_text(json.dumps({**base, **config}))
    with pytest.raises(ValueError, match=message):
        BertConfig.from_file(path)


def test_a_missing_model_package_is_a_clear_configuration_error(monkeypatch) -> None:
    import importlib.metadata

    from aiaas_serving import minilm_model_dir

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ConfigError, match=r"pip install 'aiaas-serving\[minilm\]'"):
        minilm_model_dir()
