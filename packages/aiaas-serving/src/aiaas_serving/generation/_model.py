"""A Llama-family decoder in plain torch, run over the paged KV cache.

RMSNorm, rotary position embeddings with the checkpoint's theta, grouped-query attention, a
SwiGLU MLP and a tied or untied LM head -- the shapes of SmolLM2, Llama 2/3, Mistral and Qwen2.
The query/key/value projections are fused into one matmul and the gate/up projections into
another; :meth:`LlamaForCausalLM.load_hf_state_dict` and :meth:`LlamaForCausalLM.hf_state_dict`
translate from and to the Hugging Face (``transformers``) parameter names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812 -- the conventional name
from torch import nn

from aiaas_serving.generation._attention import (
    AttentionPlan,
    dense_attention,
    paged_attention,
    plan_attention,
    plan_decode,
)
from aiaas_serving.generation._batch import ForwardBatch
from aiaas_serving.generation._config import LlamaConfig, rope_inverse_frequencies
from aiaas_serving.generation._errors import ModelConfigInvalid, ModelFileInvalid
from aiaas_serving.generation._kv_cache import PagedKVCache

__all__ = ["LlamaForCausalLM"]

_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")


class _RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # As transformers does: normalise in float32, scale in the runtime dtype.
        as_float = hidden.float()
        normed = as_float * torch.rsqrt(as_float.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(hidden.dtype)


class _Attention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.q_size = config.num_heads * config.head_dim
        self.kv_size = config.num_kv_heads * config.head_dim
        self.qkv_proj = nn.Linear(
            config.hidden_size, self.q_size + 2 * self.kv_size, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=config.attention_output_bias)

    def project(
        self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``[..., H, D]`` and keys ``[..., KV, D]`` with rotary applied, and values."""
        lead = hidden.shape[:-1]
        qkv = self.qkv_proj(hidden)
        qk = qkv[..., : self.q_size + self.kv_size].unflatten(-1, (-1, self.head_dim))
        half = self.head_dim // 2
        rotated = torch.cat((-qk[..., half:], qk[..., :half]), dim=-1)
        qk = qk * cos + rotated * sin
        query = qk[..., : self.num_heads, :]
        key = qk[..., self.num_heads :, :]
        value = qkv[..., self.q_size + self.kv_size :].view(*lead, self.num_kv_heads, -1)
        return query, key, value


class _MLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = torch.split(self.gate_up_proj(hidden), self.intermediate_size, dim=-1)
        out: torch.Tensor = self.down_proj(F.silu(gate) * up)
        return out


class _DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = _Attention(config)
        self.post_attention_layernorm = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = _MLP(config)


class _LlamaBody(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(_DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = _RMSNorm(config.hidden_size, config.rms_norm_eps)


def _rope_tables(config: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[max_position_embeddings, head_dim]`` in float32, as transformers computes them."""
    inv_freq = rope_inverse_frequencies(config)  # the checkpoint's theta and rope scaling
    positions = torch.arange(config.max_position_embeddings, dtype=torch.int64).float()
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


class LlamaForCausalLM(nn.Module):
    """A Llama-family causal LM: :meth:`forward` over the paged KV cache, :meth:`forward_dense`
    without one.

    Build it with :meth:`random` (tests, benchmarks) or through the loaders, which fill it with
    :meth:`load_hf_state_dict`. Run it under ``torch.inference_mode``.
    """

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _LlamaBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = _rope_tables(config)
        # float32 tables; forward() casts the rows it needs to the runtime dtype.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def uninitialized(cls, config: LlamaConfig) -> LlamaForCausalLM:
        """A model whose weights are allocated (float32, CPU) but not initialised.

        For loaders that overwrite every weight: it skips the random initialisation, which
        takes seconds for a 100M-parameter model. Fill it with :meth:`load_hf_state_dict`.
        """
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device="cpu")
        if config.tie_word_embeddings:  # to_empty gives each module its own tensor: re-tie
            model.lm_head.weight = model.model.embed_tokens.weight
        model.rope_cos, model.rope_sin = _rope_tables(config)
        return model

    @classmethod
    def random(
        cls,
        config: LlamaConfig,
        seed: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> LlamaForCausalLM:
        """A model with reproducible random weights (normal, std 0.02; norms near 1).

        The same ``config`` and ``seed`` give the same weights on any machine; in eval mode,
        gradients off. :meth:`hf_state_dict` loads them into ``transformers``' Llama.
        """
        generator = torch.Generator().manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
                else:
                    values = 0.02 * torch.randn(param.shape, generator=generator)
                param.copy_(values)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def load_hf_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy weights named as ``transformers``' ``LlamaForCausalLM`` into this model.

        Every tensor must be present with its exact shape (``lm_head.weight`` may be absent when
        the embeddings are tied); anything missing or misshapen raises
        :class:`ModelFileInvalid` naming it. Unknown extra keys (e.g. rotary buffers) are ignored.
        """
        config = self.config
        problems: list[str] = []

        def take(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
            tensor = state.get(key)
            if tensor is None:
                problems.append(f"missing tensor {key!r}")
                return None
            if tuple(tensor.shape) != shape:
                problems.append(f"tensor {key!r} has shape {tuple(tensor.shape)}, expected {shape}")
                return None
            return tensor

        hidden, head = config.hidden_size, config.head_dim
        q_size, kv_size = config.num_heads * head, config.num_kv_heads * head
        plan: list[tuple[torch.Tensor, list[torch.Tensor | None]]] = []
        body = self.model
        plan.append(
            (
                body.embed_tokens.weight,
                [take("model.embed_tokens.weight", (config.vocab_size, hidden))],
            )
        )
        plan.append((body.norm.weight, [take("model.norm.weight", (hidden,))]))
        if not config.tie_word_embeddings:
            plan.append(
                (self.lm_head.weight, [take("lm_head.weight", (config.vocab_size, hidden))])
            )
        for index, layer in enumerate(body.layers):
            assert isinstance(layer, _DecoderLayer)
            prefix = f"model.layers.{index}."
            attn, mlp = layer.self_attn, layer.mlp
            plan.append(
                (
                    attn.qkv_proj.weight,
                    [
                        take(prefix + "self_attn.q_proj.weight", (q_size, hidden)),
                        take(prefix + "self_attn.k_proj.weight", (kv_size, hidden)),
                        take(prefix + "self_attn.v_proj.weight", (kv_size, hidden)),
                    ],
                )
            )
            if attn.qkv_proj.bias is not None:
                plan.append(
                    (
                        attn.qkv_proj.bias,
                        [
                            take(prefix + "self_attn.q_proj.bias", (q_size,)),
                            take(prefix + "self_attn.k_proj.bias", (kv_size,)),
                            take(prefix + "self_attn.v_proj.bias", (kv_size,)),
                        ],
                    )
                )
            plan.append(
                (attn.o_proj.weight, [take(prefix + "self_attn.o_proj.weight", (hidden, q_size))])
            )
            if attn.o_proj.bias is not None:
                plan.append((attn.o_proj.bias, [take(prefix + "self_attn.o_proj.bias", (hidden,))]))
            inter = config.intermediate_size
            plan.append(
                (
                    mlp.gate_up_proj.weight,
                    [
                        take(prefix + "mlp.gate_proj.weight", (inter, hidden)),
                        take(prefix + "mlp.up_proj.weight", (inter, hidden)),
                    ],
                )
            )
            plan.append(
                (mlp.down_proj.weight, [take(prefix + "mlp.down_proj.weight", (hidden, inter))])
            )
            for norm in ("input_layernorm", "post_attention_layernorm"):
                target = getattr(layer, norm).weight
                plan.append((target, [take(prefix + norm + ".weight", (hidden,))]))
        for key in state:
            match = _LAYER_KEY.fullmatch(key)
            if match and int(match.group(1)) >= config.num_layers:
                problems.append(
                    f"tensor {key!r} belongs to a layer beyond num_layers={config.num_layers}"
                )
        if problems:
            shown = "; ".join(problems[:8])
            more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
            raise ModelFileInvalid(
                f"the weights do not match the model config: {shown}{more}", problems=problems
            )
        with torch.no_grad():
            for target, parts in plan:
                tensors = [part for part in parts if part is not None]
                source = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)
                target.copy_(source)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under ``transformers``' ``LlamaForCausalLM`` names (copies)."""
        config = self.config
        q_size = config.num_heads * config.head_dim
        kv_size = config.num_kv_heads * config.head_dim
        out: dict[str, torch.Tensor] = {
            "model.embed_tokens.weight": self.model.embed_tokens.weight.detach().clone(),
            "model.norm.weight": self.model.norm.weight.detach().clone(),
            "lm_head.weight": self.lm_head.weight.detach().clone(),
        }
        for index, layer in enumerate(self.model.layers):
            assert isinstance(layer, _DecoderLayer)
            prefix = f"model.layers.{index}."
            attn = layer.self_attn
            sizes = [q_size, kv_size, kv_size]
            for name, part in zip(
                ("q_proj", "k_proj", "v_proj"),
                torch.split(attn.qkv_proj.weight.detach(), sizes),
                strict=True,
            ):
                out[f"{prefix}self_attn.{name}.weight"] = part.clone()
            if attn.qkv_proj.bias is not None:
                for name, part in zip(
                    ("q_proj", "k_proj", "v_proj"),
                    torch.split(attn.qkv_proj.bias.detach(), sizes),
                    strict=True,
                ):
                    out[f"{prefix}self_attn.{name}.bias"] = part.clone()
            out[prefix + "self_attn.o_proj.weight"] = attn.o_proj.weight.detach().clone()
            if attn.o_proj.bias is not None:
                out[prefix + "self_attn.o_proj.bias"] = attn.o_proj.bias.detach().clone()
            gate, up = torch.split(layer.mlp.gate_up_proj.weight.detach(), config.intermediate_size)
            out[prefix + "mlp.gate_proj.weight"] = gate.clone()
            out[prefix + "mlp.up_proj.weight"] = up.clone()
            out[prefix + "mlp.down_proj.weight"] = layer.mlp.down_proj.weight.detach().clone()
            for norm in ("input_layernorm", "post_attention_layernorm"):
                out[f"{prefix}{norm}.weight"] = getattr(layer, norm).weight.detach().clone()
        return out

    # -- running ----------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The runtime dtype of the weights."""
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device the weights live on."""
        return self.model.embed_tokens.weight.device

    def _rope(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos = self.rope_cos[positions].to(dtype).unsqueeze(-2)
        sin = self.rope_sin[positions].to(dtype).unsqueeze(-2)
        return cos, sin

    def forward(self, batch: ForwardBatch, cache: PagedKVCache) -> torch.Tensor:
        """Run one engine step: store the new tokens' keys/values, return sampling logits.

        Writes each new token's keys and values into ``cache`` at ``batch.slot_mapping``,
        attends it causally over its sequence's cached context, and returns float32 logits
        ``[len(batch.logits_indices), vocab_size]`` in ``logits_indices`` order.
        """
        device = self._check_cache(cache)
        return self._run(
            input_ids=batch.input_ids.to(device, non_blocking=True),
            positions=batch.positions.to(device, non_blocking=True),
            slot_mapping=batch.slot_mapping.to(device, non_blocking=True),
            plan=plan_attention(batch, cache.block_size, device),
            cache=cache,
            logits_indices=batch.logits_indices.to(device, non_blocking=True),
        )

    def forward_decode(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        *,
        cache: PagedKVCache,
    ) -> torch.Tensor:
        """One decode token per sequence, from device tensors only: logits ``[D, vocab]``.

        The same computation as :meth:`forward` on a batch of ``D`` decode tokens, but every
        input is a tensor already on the model's device (``block_tables`` ``[D, max_blocks]``,
        ``context_lens`` ``[D]`` int64) and nothing waits on the host: with fixed shapes it can
        be captured in a CUDA graph and replayed with new values copied into the same tensors.
        """
        self._check_cache(cache)
        return self._run(
            input_ids=input_ids,
            positions=positions,
            slot_mapping=slot_mapping,
            plan=plan_decode(block_tables, context_lens, cache.block_size),
            cache=cache,
            logits_indices=None,
        )

    def _check_cache(self, cache: PagedKVCache) -> torch.device:
        device, dtype = self.device, self.dtype
        if cache.dtype != dtype or cache.device != device:
            raise ModelConfigInvalid(
                f"the KV cache ({cache.dtype} on {cache.device}) must match the model "
                f"({dtype} on {device}): build it with the model's dtype and device"
            )
        if cache.config.num_layers != self.config.num_layers or (
            cache.config.num_kv_heads,
            cache.config.head_dim,
        ) != (self.config.num_kv_heads, self.config.head_dim):
            raise ModelConfigInvalid("the KV cache was built for another model config")
        return device

    def _run(
        self,
        *,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        slot_mapping: torch.Tensor,
        plan: AttentionPlan,
        cache: PagedKVCache,
        logits_indices: torch.Tensor | None,
    ) -> torch.Tensor:
        cos, sin = self._rope(positions, self.dtype)
        hidden = self.model.embed_tokens(input_ids)
        for index, layer in enumerate(self.model.layers):
            assert isinstance(layer, _DecoderLayer)
            attn = layer.self_attn
            query, key, value = attn.project(layer.input_layernorm(hidden), cos, sin)
            attended = paged_attention(
                query,
                key,
                value,
                key_cache=cache.key_caches[index],
                value_cache=cache.value_caches[index],
                slot_mapping=slot_mapping,
                plan=plan,
            )
            hidden = hidden + attn.o_proj(attended)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if logits_indices is not None:
            hidden = hidden.index_select(0, logits_indices)
        logits: torch.Tensor = self.lm_head(self.model.norm(hidden))
        return logits.float()

    def forward_dense(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, L, vocab]`` (float32) of a whole batch, without a cache.

        ``attention_mask`` (``[B, L]``, 1 = token, 0 = padding) supports left padding: a
        token's position counts only the real tokens before it, and padding is never attended.
        Logits at padding positions are meaningless.
        """
        device, dtype = self.device, self.dtype
        input_ids = input_ids.to(device)
        batch, length = input_ids.shape
        mask: torch.Tensor | None = None
        if attention_mask is None:
            positions = torch.arange(length, device=device).expand(batch, length)
        else:
            real = attention_mask.to(device=device, dtype=torch.bool)
            positions = (real.long().cumsum(-1) - 1).clamp_min(0)
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
            eye = torch.eye(length, dtype=torch.bool, device=device)
            # Padding keys are never attended; each query may see itself so no row is empty.
            mask = ((causal & real[:, None, :]) | eye).unsqueeze(1)
        cos, sin = self._rope(positions, dtype)
        hidden = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            assert isinstance(layer, _DecoderLayer)
            attn = layer.self_attn
            query, key, value = attn.project(layer.input_layernorm(hidden), cos, sin)
            hidden = hidden + attn.o_proj(dense_attention(query, key, value, mask))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits: torch.Tensor = self.lm_head(self.model.norm(hidden))
        return logits.float()
