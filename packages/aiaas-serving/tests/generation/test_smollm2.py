"""The real model: our SmolLM2-135M-Instruct equals transformers' reading of the same GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from aiaas_serving.generation import ForwardBatch, GenerationModel, PagedKVCache

# Max |ours - transformers| over every logit of the prompt set (fp32 on CPU). Observed: 0 (the
# same float32 ops in the same order); the bound leaves room for other BLAS builds, not for a bug.
LOGIT_TOLERANCE = 2e-3
BLOCK_SIZE = 16

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [
        {"role": "system", "content": "Tu es un assistant concis."},
        {"role": "user", "content": "Écris un haïku sur l'été à Zürich. 東京も!"},
    ],
]


@pytest.fixture(scope="module")
def hf_model(smollm2_path: Path) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_path.parent, gguf_file=smollm2_path.name, dtype=torch.float32
    )
    return model.eval()


def _prefill(
    model: GenerationModel, cache: PagedKVCache, ids: list[int], blocks: list[int]
) -> torch.Tensor:
    """All positions' logits of ``ids`` in one paged forward over ``blocks`` (in that order)."""
    slots = [blocks[p // BLOCK_SIZE] * BLOCK_SIZE + p % BLOCK_SIZE for p in range(len(ids))]
    batch = ForwardBatch(
        input_ids=torch.tensor(ids),
        positions=torch.arange(len(ids)),
        slot_mapping=torch.tensor(slots),
        query_start=(0, len(ids)),
        context_lens=(len(ids),),
        block_tables=torch.tensor([blocks]),
        logits_indices=torch.arange(len(ids)),
    )
    with torch.inference_mode():
        return model.model(batch, cache)


def _decode(
    model: GenerationModel, cache: PagedKVCache, token: int, position: int, blocks: list[int]
) -> torch.Tensor:
    batch = ForwardBatch(
        input_ids=torch.tensor([token]),
        positions=torch.tensor([position]),
        slot_mapping=torch.tensor(
            [blocks[position // BLOCK_SIZE] * BLOCK_SIZE + position % BLOCK_SIZE]
        ),
        query_start=(0, 1),
        context_lens=(position + 1,),
        block_tables=torch.tensor([blocks]),
        logits_indices=torch.tensor([0]),
    )
    with torch.inference_mode():
        return model.model(batch, cache)[0]


def test_config_of_the_real_model(smollm2: GenerationModel) -> None:
    config = smollm2.config
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert (config.vocab_size, config.max_position_embeddings, config.rope_theta) == (
        49152,
        8192,
        100000.0,
    )
    assert config.tie_word_embeddings
    assert smollm2.max_context == 8192
    assert not any(p.requires_grad for p in smollm2.model.parameters())


def test_logits_match_transformers(smollm2: GenerationModel, hf_model: Any) -> None:
    cache = PagedKVCache(smollm2.config, num_blocks=8, block_size=BLOCK_SIZE)
    worst = 0.0
    for messages in PROMPTS:
        ids = smollm2.tokenizer.encode(smollm2.tokenizer.apply_chat_template(messages))
        blocks = [7, 2, 5, 0, 3][: -(-len(ids) // BLOCK_SIZE)]  # scrambled
        ours = _prefill(smollm2, cache, ids, blocks)
        with torch.inference_mode():
            theirs = hf_model(torch.tensor([ids])).logits[0].float()
        worst = max(worst, float((ours - theirs).abs().max()))
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))
    print(f"SmolLM2 fp32 max abs logit diff vs transformers: {worst:.3g}")
    assert worst < LOGIT_TOLERANCE


def test_greedy_generation_answers_like_transformers(
    smollm2: GenerationModel, hf_model: Any
) -> None:
    tokenizer = smollm2.tokenizer
    prompt = tokenizer.apply_chat_template(PROMPTS[0])
    ids = tokenizer.encode(prompt)
    cache = PagedKVCache(smollm2.config, num_blocks=6, block_size=BLOCK_SIZE)
    blocks = [4, 1, 5, 0]
    generated = [int(_prefill(smollm2, cache, ids, blocks)[-1].argmax())]
    detok = tokenizer.detokenizer()
    stream = [detok.push(generated[0])]
    while generated[-1] not in tokenizer.eos_token_ids and len(generated) < 12:
        logits = _decode(smollm2, cache, generated[-1], len(ids) + len(generated) - 1, blocks)
        generated.append(int(logits.argmax()))
        stream.append(detok.push(generated[-1]))
    stream.append(detok.flush())
    with torch.inference_mode():
        reference = hf_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=list(tokenizer.eos_token_ids),
            pad_token_id=tokenizer.eos_token_ids[0],
        )[0, len(ids) :].tolist()
    assert generated == reference
    assert generated[-1] in tokenizer.eos_token_ids
    assert tokenizer.decode(generated) == "The capital of France is Paris."
    assert "".join(stream) == "The capital of France is Paris."
