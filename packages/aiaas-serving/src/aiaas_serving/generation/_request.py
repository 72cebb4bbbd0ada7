"""Generation requests: the engine's options and values, and a request's state.

:class:`EngineOptions` configures a :class:`~aiaas_serving.generation.GenerationEngine`
(``_engine``); it hands out :class:`GenerationDelta` and :class:`GenerationResult` through a
``GenerationStream`` (``_engine``, beside the engine it calls back), and reports
:class:`EngineStats`. ``_Request`` is one accepted request's state, owned by the event loop;
``_Step`` and ``_StepOutput`` carry one engine step's inputs and outputs between the loop and
the worker thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import torch

from aiaas_serving._policy import _non_negative_float, _optional_positive_int, _positive_int
from aiaas_serving.generation._sampling import SamplingParams, TokenLogprob
from aiaas_serving.generation._scheduler import Sequence as _Seq

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "EngineOptions",
    "EngineStats",
    "GenerationDelta",
    "GenerationResult",
]

FinishReason = Literal["stop", "length"]


# --- options and values -------------------------------------------------------------------


@attrs.frozen
class EngineOptions:
    """How a :class:`GenerationEngine` sizes its cache and schedules.

    - ``block_size``: tokens per KV cache block.
    - ``num_blocks`` or ``kv_cache_bytes`` (not both): the KV pool, in blocks or as a memory
      budget; neither means a 256 MiB budget.
    - ``max_num_seqs``: most sequences running (decoding or prefilling) at once.
    - ``max_step_tokens``: token budget of one step (decodes plus prefill chunks); at least
      ``max_num_seqs``, so every running sequence decodes each step.
    - ``max_waiting``: bound on the waiting queue; beyond it :class:`Overloaded` at once.
    - ``prefix_caching``: share the blocks of identical prompt prefixes.
    - ``aging``: priority levels a waiting request gains per second (the runtime's rule).
    - ``max_model_len``: longest sequence (prompt plus completion); default the model's
      ``max_position_embeddings``, never more.
    """

    block_size: int = attrs.field(default=16, validator=_positive_int)
    num_blocks: int | None = attrs.field(default=None, validator=_optional_positive_int)
    kv_cache_bytes: int | None = attrs.field(default=None, validator=_optional_positive_int)
    max_num_seqs: int = attrs.field(default=64, validator=_positive_int)
    max_step_tokens: int = attrs.field(default=512, validator=_positive_int)
    max_waiting: int = attrs.field(default=1024, validator=_positive_int)
    prefix_caching: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    aging: float = attrs.field(default=1.0, validator=_non_negative_float)
    max_model_len: int | None = attrs.field(default=None, validator=_optional_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.num_blocks is not None and self.kv_cache_bytes is not None:
            raise ValueError("give num_blocks or kv_cache_bytes, not both")
        if self.max_step_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_step_tokens ({self.max_step_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}): every running sequence decodes one token per step"
            )


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """What one step added to a stream: new token ids, their new text (possibly empty while
    held back), their logprobs (when asked for) and, on the last delta, the finish reason."""

    token_ids: tuple[int, ...]
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A finished request: its whole completion and usage."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None
    cached_prompt_tokens: int


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Cumulative step timings (seconds) and counts since the engine started.

    ``schedule_seconds`` is planning plus batch building (the engine's own overhead);
    ``forward_seconds`` the model's forward; ``sample_seconds`` sampling;
    ``postprocess_seconds`` detokenising and delivering on the event loop.
    """

    steps: int
    tokens: int
    generated_tokens: int
    preemptions: int
    schedule_seconds: float
    forward_seconds: float
    sample_seconds: float
    postprocess_seconds: float
    prefix_cache_hits: int
    prefix_cache_queries: int


# --- requests -------------------------------------------------------------------------------

_END: Final = object()


class _Request:
    """One accepted request's state, owned by the event loop."""

    __slots__ = (
        "buffer",
        "cached",
        "deltas",
        "detok",
        "done",
        "error",
        "finish_reason",
        "first_token_at",
        "future",
        "generator",
        "last_token_at",
        "logprobs",
        "max_new",
        "params",
        "row",
        "seq",
        "span",
        "synced",
        "text",
        "timer",
        "waiter",
    )

    def __init__(
        self,
        seq: _Seq,
        params: SamplingParams,
        *,
        max_new: int,
        generator: torch.Generator,
        detok: Any,
        future: asyncio.Future[GenerationResult],
        span: Span,
    ) -> None:
        self.seq = seq
        self.params = params
        self.max_new = max_new
        self.generator = generator
        self.detok = detok
        self.future = future
        self.span = span
        self.buffer = ""  # text held back: it could begin a stop string
        self.text: list[str] = []
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.deltas: deque[GenerationDelta | object] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.error: BaseException | None = None
        self.finish_reason: FinishReason | None = None
        self.cached = -1  # prompt tokens found in the prefix cache (first admission)
        self.first_token_at = 0.0
        self.last_token_at = 0.0
        self.row = -1
        self.synced = 0
        self.timer: asyncio.TimerHandle | None = None

    def push(self, item: GenerationDelta | object) -> None:
        self.deltas.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# --- one step ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    input_ids: list[int]
    query_start: list[int]
    starts: list[int]
    context_lens: list[int]
    rows: list[int]
    width: int
    sample_rows: list[int]  # chunk indices that sample, in order
    params: list[SamplingParams]
    generators: list[torch.Generator]


@dataclass(slots=True)
class _StepOutput:
    tokens: list[int | None]
    logprobs: list[TokenLogprob | None]
    errors: list[BaseException | None]
    forward_error: BaseException | None
    build_seconds: float
    forward_seconds: float
    sample_seconds: float
