"""The plain-torch Llama over the paged KV cache equals transformers' Llama, logit for logit."""

from __future__ import annotations

import random
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch
import transformers

from aiaas_serving.generation import (
    ForwardBatch,
    KVCacheBudgetTooSmall,
    LlamaConfig,
    LlamaForCausalLM,
    ModelArchitectureUnsupported,
    ModelConfigInvalid,
    ModelFileInvalid,
    PagedKVCache,
)

# Max |ours - transformers| over every logit compared, fp32. Observed ~1e-6 on these tiny models.
TOLERANCE = 2e-5
VOCAB = 96


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible test data, not security


@dataclass(frozen=True)
class Shape:
    heads: int
    kv_heads: int
    tied: bool
    theta: float
    hidden: int = 32
    bias: bool = False


SHAPES = [
    Shape(heads=4, kv_heads=4, tied=False, theta=10000.0),  # MHA (group ratio 1)
    Shape(heads=4, kv_heads=2, tied=True, theta=500000.0),  # ratio 2, tied
    Shape(heads=8, kv_heads=2, tied=False, theta=100000.0, hidden=64),  # ratio 4
    Shape(heads=4, kv_heads=1, tied=True, theta=10000.0, bias=True),  # MQA, biases
]


def _hf_model(shape: Shape, seed: int = 0) -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=shape.hidden,
        intermediate_size=2 * shape.hidden + 8,
        num_hidden_layers=2,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        rope_theta=shape.theta,
        tie_word_embeddings=shape.tied,
        attention_bias=shape.bias,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation="eager")
    with torch.no_grad():
        # transformers initialises norms to 1 and biases to 0: perturb them so they count.
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _ours(hf: transformers.LlamaForCausalLM) -> LlamaForCausalLM:
    config = LlamaConfig.from_hf_dict(hf.config.to_dict())
    model = LlamaForCausalLM(config)
    model.load_hf_state_dict(hf.state_dict())
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"h{s.heads}kv{s.kv_heads}")
def pair(request: pytest.FixtureRequest) -> tuple[transformers.LlamaForCausalLM, LlamaForCausalLM]:
    hf = _hf_model(request.param)
    return hf, _ours(hf)


_REFERENCES: weakref.WeakKeyDictionary[
    transformers.LlamaForCausalLM, dict[tuple[int, ...], torch.Tensor]
] = weakref.WeakKeyDictionary()


def _reference(hf: transformers.LlamaForCausalLM, tokens: Sequence[int]) -> torch.Tensor:
    """transformers' logits for every position of ``tokens`` (memoised per live model)."""
    memo = _REFERENCES.setdefault(hf, {})
    key = tuple(tokens)
    if key not in memo:
        with torch.inference_mode():
            memo[key] = hf(torch.tensor([list(tokens)])).logits[0].float()
    return memo[key]


class PagedRunner:
    """Feeds sequences through the paged forward in scheduled chunks, like an engine would.

    Blocks come from a shuffled free list, so block tables are scrambled and interleaved between
    sequences. Returns the logits of every token (logits_indices = all new tokens).
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        *,
        block_size: int,
        seed: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.cache = PagedKVCache(
            model.config, num_blocks=160 // block_size + 16, block_size=block_size, dtype=dtype
        )
        self.free = list(range(self.cache.num_blocks))
        _rng(seed).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.done: dict[int, int] = {}

    def step(self, work: Sequence[tuple[int, Sequence[int]]]) -> list[torch.Tensor]:
        """Run one forward: ``work`` is (sequence id, its new tokens) pairs."""
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_start = [0]
        context_lens: list[int] = []
        for seq, tokens in work:
            table = self.tables.setdefault(seq, [])
            start = self.done.get(seq, 0)
            for offset, token in enumerate(tokens):
                position = start + offset
                if position // self.block_size >= len(table):
                    table.append(self.free.pop())
                ids.append(token)
                positions.append(position)
                slots.append(
                    table[position // self.block_size] * self.block_size
                    + position % self.block_size
                )
            self.done[seq] = start + len(tokens)
            query_start.append(len(ids))
            context_lens.append(self.done[seq])
        width = max(len(self.tables[seq]) for seq, _ in work) + 1  # extra padding column
        tables = torch.zeros((len(work), width), dtype=torch.long)
        for row, (seq, _) in enumerate(work):
            tables[row, : len(self.tables[seq])] = torch.tensor(self.tables[seq])
        batch = ForwardBatch(
            input_ids=torch.tensor(ids),
            positions=torch.tensor(positions),
            slot_mapping=torch.tensor(slots),
            query_start=tuple(query_start),
            context_lens=tuple(context_lens),
            block_tables=tables,
            logits_indices=torch.arange(len(ids)),
        )
        with torch.inference_mode():
            logits = self.model(batch, self.cache)
        assert logits.dtype == torch.float32
        assert logits.shape == (len(ids), VOCAB)
        return [logits[query_start[i] : query_start[i + 1]] for i in range(len(work))]


def _sequences(count: int, seed: int) -> list[list[int]]:
    rng = _rng(seed)
    return [[rng.randrange(VOCAB) for _ in range(rng.randint(5, 40))] for _ in range(count)]


def _run_schedule(
    model: LlamaForCausalLM, sequences: list[list[int]], chunk_sizes: Sequence[int], block_size: int
) -> list[torch.Tensor]:
    """All sequences in every step, each taking its next chunk (cycling ``chunk_sizes``)."""
    runner = PagedRunner(model, block_size=block_size, seed=len(sequences) * 31 + block_size)
    got: list[list[torch.Tensor]] = [[] for _ in sequences]
    cursor = [0] * len(sequences)
    step = 0
    while any(c < len(s) for c, s in zip(cursor, sequences, strict=True)):
        work = []
        for index, tokens in enumerate(sequences):
            if cursor[index] < len(tokens):
                size = chunk_sizes[(step + index) % len(chunk_sizes)]
                work.append((index, tokens[cursor[index] : cursor[index] + size]))
        _rng(step).shuffle(work)  # sequence order in a batch must not matter
        for (index, chunk), logits in zip(work, runner.step(work), strict=True):
            got[index].append(logits)
            cursor[index] += len(chunk)
        step += 1
    return [torch.cat(parts) for parts in got]


def _max_diff(
    ours: list[torch.Tensor], hf: transformers.LlamaForCausalLM, sequences: list[list[int]]
) -> float:
    return max(
        float((o - _reference(hf, s)).abs().max()) for o, s in zip(ours, sequences, strict=True)
    )


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize(
    "chunk_sizes",
    [(1000,), (7,), (3, 5, 1), (1,)],
    ids=["one-shot", "chunks-of-7", "mixed-chunks", "token-by-token"],
)
def test_paged_forward_matches_transformers(
    pair: tuple[transformers.LlamaForCausalLM, LlamaForCausalLM],
    block_size: int,
    chunk_sizes: tuple[int, ...],
) -> None:
    hf, ours = pair
    sequences = _sequences(3, seed=len(chunk_sizes))
    diff = _max_diff(_run_schedule(ours, sequences, chunk_sizes, block_size), hf, sequences)
    print(f"max abs diff vs transformers: {diff:.3g}")
    assert diff < TOLERANCE


def test_prefill_then_decode_matches_transformers(
    pair: tuple[transformers.LlamaForCausalLM, LlamaForCausalLM],
) -> None:
    """Prefill whole prompts, then decode token by token, prompts of different lengths."""
    hf, ours = pair
    sequences = _sequences(4, seed=7)
    prompts = [len(s) // 2 for s in sequences]
    runner = PagedRunner(ours, block_size=4, seed=3)
    got = [
        [logits]
        for logits in runner.step(
            [(i, s[:p]) for i, (s, p) in enumerate(zip(sequences, prompts, strict=True))]
        )
    ]
    for position in range(max(len(s) for s in sequences)):
        work = [
            (i, [s[position]]) for i, s in enumerate(sequences) if prompts[i] <= position < len(s)
        ]
        if work:
            for (index, _), logits in zip(work, runner.step(work), strict=True):
                got[index].append(logits)
    diff = _max_diff([torch.cat(parts) for parts in got], hf, sequences)
    print(f"max abs diff vs transformers: {diff:.3g}")
    assert diff < TOLERANCE


def test_forward_decode_from_device_tensors_matches_transformers(
    pair: tuple[transformers.LlamaForCausalLM, LlamaForCausalLM],
) -> None:
    """The graph-capturable decode entry point: fixed-width block tables, tensor lengths."""
    hf, ours = pair
    sequences = _sequences(3, seed=11)
    runner = PagedRunner(ours, block_size=4, seed=5)
    runner.step([(i, s[:-1]) for i, s in enumerate(sequences)])
    width = 12  # wider than any table: the padding columns are masked
    tables = torch.zeros((3, width), dtype=torch.long)
    slots = []
    for i, tokens in enumerate(sequences):
        position = len(tokens) - 1
        if position // 4 >= len(runner.tables[i]):
            runner.tables[i].append(runner.free.pop())
        tables[i, : len(runner.tables[i])] = torch.tensor(runner.tables[i])
        slots.append(runner.tables[i][position // 4] * 4 + position % 4)
    with torch.inference_mode():
        logits = ours.forward_decode(
            torch.tensor([s[-1] for s in sequences]),
            torch.tensor([len(s) - 1 for s in sequences]),
            torch.tensor(slots),
            tables,
            torch.tensor([len(s) for s in sequences]),
            cache=runner.cache,
        )
    assert logits.shape == (3, VOCAB)
    for row, tokens in enumerate(sequences):
        assert float((logits[row] - _reference(hf, tokens)[-1]).abs().max()) < TOLERANCE


def test_logits_indices_select_rows_in_order() -> None:
    hf = _hf_model(SHAPES[1])
    ours = _ours(hf)
    tokens = [5, 9, 11, 2, 40, 41]
    cache = PagedKVCache(ours.config, num_blocks=4, block_size=4)
    batch = ForwardBatch(
        input_ids=torch.tensor(tokens),
        positions=torch.arange(6),
        slot_mapping=torch.tensor([12, 13, 14, 15, 4, 5]),
        query_start=(0, 6),
        context_lens=(6,),
        block_tables=torch.tensor([[3, 1]]),
        logits_indices=torch.tensor([5, 0, 3]),
    )
    with torch.inference_mode():
        logits = ours(batch, cache)
    reference = _reference(hf, tokens)[[5, 0, 3]]
    assert float((logits - reference).abs().max()) < TOLERANCE


@pytest.mark.parametrize("shape", SHAPES[:3], ids=["mha", "gqa2", "gqa4"])
def test_forward_dense_matches_transformers_with_left_padding(shape: Shape) -> None:
    hf = _hf_model(shape, seed=1)
    ours = _ours(hf)
    rows = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12]]
    length = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    with torch.inference_mode():
        dense = ours.forward_dense(ids, mask)
        plain = ours.forward_dense(ids[:1])
    assert dense.shape == (3, length, VOCAB)
    for row, tokens in enumerate(rows):
        reference = _reference(hf, tokens)
        assert float((dense[row, length - len(tokens) :] - reference).abs().max()) < TOLERANCE
    assert float((plain[0] - _reference(hf, rows[0])).abs().max()) < TOLERANCE


def test_random_model_loads_into_transformers_and_agrees() -> None:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        rope_theta=20000.0,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    ours = LlamaForCausalLM.random(config, seed=5)
    again = LlamaForCausalLM.random(config, seed=5)
    assert all(
        torch.equal(a, b) for a, b in zip(ours.parameters(), again.parameters(), strict=True)
    )
    assert not any(p.requires_grad for p in ours.parameters())
    assert not ours.training
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=20000.0,
            max_position_embeddings=64,
            tie_word_embeddings=False,
        )
    ).eval()
    missing, unexpected = hf.load_state_dict(ours.hf_state_dict(), strict=False)
    assert not unexpected
    assert not missing
    tokens = [1, 7, 33, 95, 0, 12]
    with torch.inference_mode():
        dense = ours.forward_dense(torch.tensor([tokens]))[0]
    assert float((dense - _reference(hf, tokens)).abs().max()) < TOLERANCE


def test_bfloat16_model_runs_the_paged_forward() -> None:
    hf = _hf_model(SHAPES[2])
    ours = _ours(hf).to(torch.bfloat16)
    runner = PagedRunner(ours, block_size=4, seed=0, dtype=torch.bfloat16)
    tokens = [4, 8, 15, 16, 23, 42]
    (logits,) = runner.step([(0, tokens)])
    assert logits.dtype == torch.float32
    # bf16 keeps the argmax on a tiny model; the values are close to fp32.
    assert float((logits - _reference(hf, tokens)).abs().max()) < 0.1


# -- config, cache and loading errors ----------------------------------------------------------


def _config(**overrides: object) -> LlamaConfig:
    values: dict[str, object] = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 8,
    }
    values.update(overrides)
    return LlamaConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"num_heads": 6, "num_kv_heads": 4}, "multiple of num_kv_heads"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": True}, "num_layers must be a positive integer"),
        ({"head_dim": 7}, "head_dim must be even"),
        ({"rope_theta": float("nan")}, "rope_theta must be a positive finite number"),
        ({"rms_norm_eps": -1.0}, "rms_norm_eps"),
        ({"bos_token_id": 64}, "bos_token_id"),
        ({"eos_token_ids": [2]}, "eos_token_ids"),
        ({"eos_token_ids": (2, -1)}, "eos_token_ids"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    ],
)
def test_config_rejects_invalid_values(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ModelConfigInvalid, match=fragment) as caught:
        _config(**overrides)
    assert caught.value.code == "MODEL_CONFIG_INVALID"
    assert caught.value.problems


def test_config_from_hf_dict_reads_the_variants() -> None:
    base = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    plain = LlamaConfig.from_hf_dict({**base, "rope_theta": 5e5, "eos_token_id": [1, 2]})
    assert (plain.num_kv_heads, plain.head_dim, plain.rope_theta) == (4, 8, 5e5)
    assert plain.eos_token_ids == (1, 2)
    v5 = LlamaConfig.from_hf_dict(
        {**base, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "eos_token_id": 3}
    )
    assert (v5.rope_theta, v5.eos_token_ids) == (1e6, (3,))
    qwen = LlamaConfig.from_hf_dict({**base, "model_type": "qwen2", "sliding_window": 16})
    assert (qwen.attention_bias, qwen.attention_output_bias) == (True, False)
    assert qwen.max_position_embeddings == 2048  # use_sliding_window off
    mistral = LlamaConfig.from_hf_dict({**base, "model_type": "mistral", "sliding_window": 16})
    assert mistral.max_position_embeddings == 16


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        ({"model_type": "gpt2"}, ModelArchitectureUnsupported, "gpt2"),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 8.0}},
            ModelArchitectureUnsupported,
            "rope type 'yarn'",
        ),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            ModelConfigInvalid,
            "lacks low_freq_factor, high_freq_factor",
        ),
        ({"mlp_bias": True}, ModelArchitectureUnsupported, "mlp_bias"),
        ({"hidden_size": None}, ModelConfigInvalid, "hidden_size"),
        ({"rope_parameters": "fast"}, ModelConfigInvalid, "rope_parameters"),
    ],
)
def test_config_from_hf_dict_refuses(
    data: dict[str, object], error: type[Exception], fragment: str
) -> None:
    base: dict[str, object] = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    with pytest.raises(error, match=fragment):
        LlamaConfig.from_hf_dict({**base, **data})
    with pytest.raises(ModelConfigInvalid, match="lacks 'vocab_size'"):
        LlamaConfig.from_hf_dict({k: v for k, v in base.items() if k != "vocab_size"})
    with pytest.raises(ModelConfigInvalid, match="JSON object"):
        LlamaConfig.from_hf_dict([1, 2])  # type: ignore[arg-type]


def test_kv_cache_layout_and_budget() -> None:
    config = _config()
    per_block = PagedKVCache.bytes_per_block(config, 16, torch.float32)
    assert per_block == 2 * 2 * 16 * 2 * 8 * 4
    assert PagedKVCache.bytes_per_block(config, 16, torch.bfloat16) == per_block // 2
    assert PagedKVCache.blocks_for_budget(config, 10 * per_block + 5, 16, torch.float32) == 10
    cache = PagedKVCache(config, num_blocks=10, block_size=16)
    assert cache.nbytes == 10 * per_block
    assert cache.num_slots == 160
    assert config.num_query_groups == 2
    with pytest.raises(ModelConfigInvalid, match="block_size must be a positive integer"):
        PagedKVCache.bytes_per_block(config, 0, torch.float32)
    assert len(cache.key_caches) == len(cache.value_caches) == 2
    assert cache.key_caches[1].shape == (10, 16, 2, 8)
    cache.value_caches[0].fill_(1.0)
    assert float(cache.key_caches[0].sum()) == 0.0  # separate storage
    assert "num_blocks=10" in repr(cache)
    with pytest.raises(KVCacheBudgetTooSmall, match="holds no block") as caught:
        PagedKVCache.blocks_for_budget(config, per_block - 1, 16, torch.float32)
    assert caught.value.code == "KV_CACHE_BUDGET_TOO_SMALL"
    with pytest.raises(KVCacheBudgetTooSmall):
        PagedKVCache.blocks_for_budget(config, -5, 16, torch.float32)
    with pytest.raises(ModelConfigInvalid, match="block_size"):
        PagedKVCache(config, num_blocks=4, block_size=0)
    with pytest.raises(ModelConfigInvalid, match="num_blocks"):
        PagedKVCache(config, num_blocks=True, block_size=4)
    with pytest.raises(ModelConfigInvalid, match="floating"):
        PagedKVCache(config, num_blocks=4, block_size=4, dtype=torch.int8)
    with pytest.raises(ModelConfigInvalid, match="memory_bytes"):
        PagedKVCache.blocks_for_budget(config, 1.5e9, 16, torch.float32)  # type: ignore[arg-type]


def test_forward_refuses_a_mismatched_cache() -> None:
    model = LlamaForCausalLM.random(_config(), seed=0)
    batch = ForwardBatch(
        input_ids=torch.tensor([1]),
        positions=torch.tensor([0]),
        slot_mapping=torch.tensor([0]),
        query_start=(0, 1),
        context_lens=(1,),
        block_tables=torch.tensor([[0]]),
        logits_indices=torch.tensor([0]),
    )
    half = PagedKVCache(model.config, num_blocks=2, block_size=4, dtype=torch.float16)
    with torch.inference_mode(), pytest.raises(ModelConfigInvalid, match="must match the model"):
        model(batch, half)
    other = PagedKVCache(_config(num_layers=3), num_blocks=2, block_size=4)
    with torch.inference_mode(), pytest.raises(ModelConfigInvalid, match="another model config"):
        model(batch, other)


def test_load_hf_state_dict_names_every_problem() -> None:
    model = LlamaForCausalLM(_config())
    state = LlamaForCausalLM.random(_config(), seed=1).hf_state_dict()
    before = model.model.norm.weight.clone()
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 3)
    state["model.layers.2.input_layernorm.weight"] = torch.ones(32)
    with pytest.raises(ModelFileInvalid) as caught:
        model.load_hf_state_dict(state)
    message = str(caught.value)
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in message
    assert "has shape (3, 3), expected (16, 32)" in message
    assert "beyond num_layers=2" in message
    assert caught.value.code == "MODEL_FILE_INVALID"
    assert torch.equal(model.model.norm.weight, before)  # nothing copied on failure
