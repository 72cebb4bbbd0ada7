"""Tiny random-initialised Llama models with a small byte-level tokenizer, for engine tests.

The tokenizer is a real ``tokenizers`` byte-level BPE without merges, wrapped in
:class:`GenerationTokenizer`: ids 0-255 are the UTF-8 bytes, 256 is end-of-sequence (257-259
are spare special tokens). Its incremental detokenizer holds back incomplete multi-byte
characters like it does half a BPE piece.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from aiaas_serving.generation import (
    GenerationModel,
    GenerationTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

EOS = 256
VOCAB = 260


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in character for each byte value (byte-level BPE's alphabet)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_tokenizer(eos_token_ids: Sequence[int] = (EOS,)) -> GenerationTokenizer:
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|eos|>", "<|spare1|>", "<|spare2|>", "<|spare3|>"])
    return GenerationTokenizer(backend, eos_token_ids=eos_token_ids)


def tiny_config(**overrides: object) -> LlamaConfig:
    fields: dict[str, object] = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 128,
        "eos_token_ids": (EOS,),
    }
    fields.update(overrides)
    return LlamaConfig(**fields)  # type: ignore[arg-type]


def tiny_model(seed: int = 0, *, sharpen: float = 8.0, **overrides: object) -> GenerationModel:
    """A random model whose logits are far apart (``sharpen`` scales the output head), so
    greedy choices never hinge on rounding."""
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    model = LlamaForCausalLM.random(config, seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return GenerationModel(
        "tiny", config, model, byte_tokenizer(), torch.float32, torch.device("cpu")
    )


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: on a shared, loaded 2-core machine, thread barriers of
    a tiny model cost far more than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def greedy_alone(tiny: GenerationModel, prompt: Sequence[int], max_tokens: int) -> list[int]:
    """The reference: a plain greedy loop over the dense forward (no cache, no engine)."""
    tokens = list(prompt)
    out: list[int] = []
    with torch.inference_mode(), one_thread():
        for _ in range(max_tokens):
            logits = tiny.model.forward_dense(torch.tensor([tokens]))
            token = int(logits[0, -1].argmax())
            out.append(token)
            if token == EOS:
                break
            tokens.append(token)
    return out


__all__ = [
    "EOS",
    "VOCAB",
    "byte_tokenizer",
    "greedy_alone",
    "one_thread",
    "tiny_config",
    "tiny_model",
]
