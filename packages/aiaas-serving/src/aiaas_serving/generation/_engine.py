"""The async generation engine: continuous batching over a paged KV cache, streamed.

One :class:`GenerationEngine` serves one model. ``generate`` admits a request (or refuses it at
once with a typed error) and returns a :class:`GenerationStream` of :class:`GenerationDelta`.
The engine loop, a task on the event loop, repeats steps: the :class:`Scheduler` plans (every
running sequence's next token plus prefill chunks within the token budget), one worker thread
builds the :class:`ForwardBatch`, runs the model and samples under ``torch.inference_mode``, and
the loop turns the sampled tokens into text deltas (detokenised incrementally, stop strings held
back until they cannot match), finishing requests on EOS, a stop string or their token limit.

Every accepted request ends exactly once: its result, or :class:`DeadlineExceeded`,
:class:`Cancelled`, :class:`ModelError` (its step failed; the others go on) or
:class:`ShuttingDown` (``aclose(grace=...)`` ran out). A cancelled stream, or one the consumer
dropped (garbage collected), frees its KV blocks at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import random
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, Protocol

import torch
from opentelemetry import trace

from aiaas_serving._errors import (
    Cancelled,
    DeadlineExceeded,
    InputTooLarge,
    InvalidInput,
    ModelError,
    Overloaded,
    ShuttingDown,
)
from aiaas_serving._metrics import InMemoryMetrics, ServingMetrics
from aiaas_serving._served import _resolve_deadline
from aiaas_serving._version import package_version
from aiaas_serving.generation._batch import ForwardBatch
from aiaas_serving.generation._blocks import BlockManager
from aiaas_serving.generation._kv_cache import PagedKVCache
from aiaas_serving.generation._loaded import GenerationModel
from aiaas_serving.generation._request import (
    _END,
    EngineOptions,
    EngineStats,
    FinishReason,
    GenerationDelta,
    GenerationResult,
    _Request,
    _Step,
    _StepOutput,
)
from aiaas_serving.generation._sampling import SamplingParams, TokenLogprob, sample
from aiaas_serving.generation._scheduler import RUNNING, SchedulePlan, Scheduler
from aiaas_serving.generation._scheduler import Sequence as _Seq
from aiaas_serving.generation._tokenizer import GenerationTokenizer

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["ContextLengthExceeded", "GenerationEngine", "GenerationStream"]

logger = logging.getLogger("aiaas_serving")


_TTFT: Final = "aiaas_serving_generation_time_to_first_token_seconds"
_ITL: Final = "aiaas_serving_generation_inter_token_seconds"
_GENERATED: Final = "aiaas_serving_generation_tokens_total"
_PROMPT: Final = "aiaas_serving_generation_prompt_tokens_total"
_RUNNING: Final = "aiaas_serving_generation_running_sequences"
_WAITING: Final = "aiaas_serving_generation_waiting_sequences"
_USED: Final = "aiaas_serving_generation_kv_blocks_used"
_FREE: Final = "aiaas_serving_generation_kv_blocks_free"
_PREEMPTIONS: Final = "aiaas_serving_generation_preemptions_total"
_HITS: Final = "aiaas_serving_generation_prefix_cache_hits_total"
_QUERIES: Final = "aiaas_serving_generation_prefix_cache_queries_total"
_STEP: Final = "aiaas_serving_generation_step_seconds"
_STEP_TOKENS: Final = "aiaas_serving_generation_step_tokens"
_REQUESTS: Final = "aiaas_serving_requests_total"
_REJECTIONS: Final = "aiaas_serving_rejections_total"

_DEFAULT_KV_BYTES: Final = 256 * 2**20


class ContextLengthExceeded(InputTooLarge):
    """The prompt plus ``max_tokens`` exceed the model's context length (OpenAI's 400
    ``context_length_exceeded``); ``tokens`` is what was asked for, ``limit`` the context."""

    code = "CONTEXT_LENGTH_EXCEEDED"
    status = 400
    title = "Context length exceeded"


class _Forward(Protocol):
    def __call__(self, batch: ForwardBatch, cache: PagedKVCache) -> torch.Tensor: ...


class GenerationStream:
    """The deltas of one request, as an async iterator; or ``await stream.result()``.

    Iterating yields each :class:`GenerationDelta` as it is produced and raises the request's
    error, if it failed. :meth:`cancel` (or ``aclose``, leaving ``async with stream``, or
    dropping the last reference) withdraws it: its KV blocks are freed at the next step.
    """

    def __init__(self, engine: GenerationEngine, req: _Request, request_id: str) -> None:
        self._engine = engine
        self._req = req
        self.request_id = request_id
        weakref.finalize(self, engine._cancel_soon, req)

    @property
    def prompt_tokens(self) -> int:
        return self._req.seq.num_prompt

    def done(self) -> bool:
        """Whether the request has its outcome."""
        return self._req.done

    def cancel(self) -> bool:
        """Withdraw the request; False when it already had its outcome."""
        return self._engine._cancel(self._req)

    async def result(self) -> GenerationResult:
        """The finished completion (whatever deltas were not iterated are included).

        Cancelling the task that awaits it cancels the request."""
        try:
            return await asyncio.shield(self._req.future)
        except asyncio.CancelledError:
            self.cancel()
            raise

    def __aiter__(self) -> AsyncIterator[GenerationDelta]:
        return self

    async def __anext__(self) -> GenerationDelta:
        req = self._req
        while not req.deltas:
            loop = asyncio.get_running_loop()
            req.waiter = loop.create_future()
            try:
                await req.waiter
            except asyncio.CancelledError:
                self.cancel()  # the consumer went away: so does the request
                raise
            finally:
                req.waiter = None
        item = req.deltas.popleft()
        if item is _END:
            req.deltas.appendleft(_END)  # iterating again ends again
            if req.error is not None:
                raise req.error
            raise StopAsyncIteration
        assert isinstance(item, GenerationDelta)
        return item

    async def aclose(self) -> None:
        """Cancel the request unless it already finished."""
        self.cancel()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()


class GenerationEngine:
    """Continuous-batching generation for one model (see the module docs).

    ``model`` is an ``aiaas_serving.generation.GenerationModel`` (name, config, model,
    tokenizer, dtype, device). Metrics go to ``metrics`` (default: in-memory, see
    :attr:`metrics`); one span per request to ``tracer`` (default: the global provider's).
    """

    def __init__(
        self,
        model: GenerationModel,
        options: EngineOptions | None = None,
        *,
        metrics: ServingMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.options = options = options if options is not None else EngineOptions()
        self.model = model
        config = model.config
        limit = int(config.max_position_embeddings)
        if options.max_model_len is not None and options.max_model_len > limit:
            raise ValueError(
                f"max_model_len ({options.max_model_len}) exceeds the model's context length "
                f"({limit} tokens); lower it or leave it None"
            )
        self.max_model_len = options.max_model_len or limit
        self.name: str = model.name
        self.device = torch.device(model.device)
        num_blocks = options.num_blocks
        if num_blocks is None:
            num_blocks = PagedKVCache.blocks_for_budget(
                config,
                options.kv_cache_bytes or _DEFAULT_KV_BYTES,
                options.block_size,
                model.dtype,
            )
        self.cache = PagedKVCache(
            config,
            num_blocks=num_blocks,
            block_size=options.block_size,
            dtype=model.dtype,
            device=self.device,
        )
        self.blocks = BlockManager(
            num_blocks, options.block_size, prefix_caching=options.prefix_caching
        )
        self.scheduler = Scheduler(
            self.blocks,
            max_num_seqs=options.max_num_seqs,
            max_step_tokens=options.max_step_tokens,
            aging=options.aging,
        )
        self._metrics: ServingMetrics = metrics if metrics is not None else InMemoryMetrics()
        self._tracer = (
            tracer if tracer is not None else trace.get_tracer("aiaas_serving", package_version())
        )
        self._labels = {"model": self.name}
        self._eos = frozenset(int(t) for t in model.tokenizer.eos_token_ids)
        self._vocab = int(config.vocab_size)
        self._forward: _Forward = model.model
        self._max_blocks = -(-self.max_model_len // options.block_size)
        self._table = torch.zeros((options.max_num_seqs, self._max_blocks), dtype=torch.long)
        self._free_rows = list(range(options.max_num_seqs - 1, -1, -1))
        self._requests: dict[int, _Request] = {}
        self._reap: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._state = "new"
        self._steps = 0
        self._tokens = 0
        self._generated = 0
        self._schedule_s = 0.0
        self._forward_s = 0.0
        self._sample_s = 0.0
        self._post_s = 0.0
        self._pinned = self.device.type == "cuda"

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def metrics(self) -> ServingMetrics:
        return self._metrics

    @property
    def tokenizer(self) -> GenerationTokenizer:
        """The model's tokenizer (encode prompts with it; ``token_text`` for logprobs)."""
        return self.model.tokenizer

    @property
    def num_blocks(self) -> int:
        """Blocks in the KV pool."""
        return self.blocks.num_blocks

    @property
    def num_free_blocks(self) -> int:
        """KV blocks free now (cached unreferenced prefix blocks count as free)."""
        return self.blocks.num_free_blocks

    @property
    def num_running(self) -> int:
        return self.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    @property
    def accepting(self) -> bool:
        return self._state == "open"

    def stats(self) -> EngineStats:
        """Cumulative step timings and counts (for benchmarks and debugging)."""
        return EngineStats(
            steps=self._steps,
            tokens=self._tokens,
            generated_tokens=self._generated,
            preemptions=self.scheduler.preemptions,
            schedule_seconds=self._schedule_s,
            forward_seconds=self._forward_s,
            sample_seconds=self._sample_s,
            postprocess_seconds=self._post_s,
            prefix_cache_hits=self.blocks.prefix_hits,
            prefix_cache_queries=self.blocks.prefix_queries,
        )

    async def start(self) -> None:
        """Start the engine loop on the running event loop (``async with`` does this)."""
        if self._state != "new":
            if self._state == "open":
                return
            raise ShuttingDown("the engine was closed; build a new one", model=self.name)
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aiaas-generate-{self.name}")
        self._wake = asyncio.Event()
        self._state = "open"
        self._task = self._loop.create_task(self._run(), name=f"aiaas-generate-{self.name}")
        self._gauges()

    async def __aenter__(self) -> GenerationEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self, *, grace: float | None = None) -> None:
        """Drain, then stop: refuse new requests (:class:`ShuttingDown`), finish every accepted
        one, stop the loop and the worker thread. With ``grace`` (seconds), requests still
        without an outcome when it runs out fail with :class:`ShuttingDown`."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "draining"
        assert self._task is not None
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            for req in list(self._requests.values()):
                self._fail(
                    req,
                    ShuttingDown(
                        "the engine shut down before this request finished", model=self.name
                    ),
                    "shutting_down",
                )
            self._wake.set()
            await self._task
        finally:
            self._state = "closed"
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    # --- admission ----------------------------------------------------------------------

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams | None = None,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> GenerationStream:
        """Admit a request and return its stream, or raise at once.

        Raises :class:`ShuttingDown` (not started, draining or closed), :class:`InvalidInput`
        (empty prompt, token ids out of the vocabulary), :class:`ContextLengthExceeded` (prompt
        plus ``max_tokens`` over ``max_model_len``; with ``max_tokens=None`` the completion may
        fill the context, or the KV pool when that is smaller), :class:`InputTooLarge` (the
        sequence could never fit the KV pool, code ``KV_CACHE_EXCEEDED``),
        :class:`Overloaded` (waiting queue full). ``deadline`` is a ``time.monotonic()`` value,
        ``timeout`` seconds from now (not both).
        """
        if self._state != "open":
            self._metrics.inc(_REJECTIONS, 1, {**self._labels, "reason": "shutting_down"})
            raise ShuttingDown(
                "the generation engine is not running (not started, or shutting down)",
                model=self.name,
            )
        loop = self._loop
        assert loop is not None
        assert self._wake is not None
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int (higher runs sooner), got {priority!r}")
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        prompt = self._check_prompt(prompt_token_ids)
        limit = self.max_model_len
        if len(prompt) >= limit or (
            params.max_tokens is not None and len(prompt) + params.max_tokens > limit
        ):
            self._metrics.inc(_REJECTIONS, 1, {**self._labels, "reason": "input_too_large"})
            completion = params.max_tokens if params.max_tokens is not None else 1
            raise ContextLengthExceeded(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {len(prompt) + completion} tokens ({len(prompt)} in the prompt, "
                f"{completion} for the completion). Please reduce the prompt or max_tokens.",
                model=self.name,
                tokens=len(prompt) + completion,
                limit=limit,
            )
        pool = self.num_blocks * self.options.block_size
        if params.max_tokens is not None:
            max_new = params.max_tokens
        else:  # up to the context, or to what the KV pool holds when that is less
            max_new = max(min(limit, pool) - len(prompt), 1)
        max_len = len(prompt) + max_new
        if not self.scheduler.check_fits(max_len):
            self._metrics.inc(_REJECTIONS, 1, {**self._labels, "reason": "input_too_large"})
            raise InputTooLarge(
                f"the request needs up to {max_len} tokens ({len(prompt)} prompt + {max_new} "
                f"completion) of KV cache, more than the engine's whole pool "
                f"({self.num_blocks * self.options.block_size} tokens); lower max_tokens or "
                f"give the engine a larger KV cache",
                model=self.name,
                tokens=max_len,
                limit=self.num_blocks * self.options.block_size,
                code="KV_CACHE_EXCEEDED",
            )
        if self.scheduler.num_waiting >= self.options.max_waiting:
            self._metrics.inc(_REJECTIONS, 1, {**self._labels, "reason": "overloaded"})
            raise Overloaded(
                f"the model's waiting queue is full ({self.options.max_waiting} requests); "
                "retry later",
                model=self.name,
                retry_after=1.0,
            )
        now = loop.time()
        at = _resolve_deadline(now, deadline, timeout)
        seq = _Seq(prompt, max_len=max_len, priority=priority, arrival=now, deadline=at)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
        rid = request_id if request_id is not None else f"gen-{seq.seq_id}"
        span = self._tracer.start_span(
            "aiaas_serving.generate",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "aiaas_serving.model": self.name,
                "aiaas_serving.request_id": rid,
                "aiaas_serving.generation.prompt_tokens": len(prompt),
                "aiaas_serving.generation.max_tokens": max_new,
                "aiaas_serving.priority": priority,
            },
        )
        req = _Request(
            seq,
            params,
            max_new=max_new,
            generator=generator,
            detok=self.tokenizer.detokenizer(),
            future=loop.create_future(),
            span=span,
        )
        self._requests[seq.seq_id] = req
        self.scheduler.add(seq)
        if at is not None:
            req.timer = loop.call_at(at, self._expire, req)
        self._metrics.set(_WAITING, self.scheduler.num_waiting, self._labels)
        self._wake.set()
        return GenerationStream(self, req, rid)

    def _check_prompt(self, prompt_token_ids: Sequence[int]) -> list[int]:
        if isinstance(prompt_token_ids, (str, bytes)):
            raise InvalidInput(
                "the prompt must be a sequence of token ids, not text: tokenize it first",
                model=self.name,
            )
        try:
            prompt = [operator.index(t) for t in prompt_token_ids]
        except TypeError as exc:
            raise InvalidInput(
                "the prompt must be a sequence of integer token ids", model=self.name
            ) from exc
        if not prompt:
            raise InvalidInput("the prompt must hold at least one token", model=self.name)
        if min(prompt) < 0 or max(prompt) >= self._vocab:
            raise InvalidInput(
                f"prompt token ids must be in [0, {self._vocab}) for this model", model=self.name
            )
        return prompt

    # --- outcomes -----------------------------------------------------------------------

    def _settle(self, req: _Request) -> bool:
        if req.done:
            return False
        req.done = True
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        self._reap.append(req)
        if self._wake is not None:
            self._wake.set()
        return True

    def _succeed(self, req: _Request, reason: FinishReason) -> None:
        if not self._settle(req):
            return
        req.finish_reason = reason
        seq = req.seq
        tokens = tuple(seq.token_ids[seq.num_prompt :])
        result = GenerationResult(
            text="".join(req.text),
            token_ids=tokens,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt,
            completion_tokens=len(tokens),
            logprobs=tuple(req.logprobs) if req.logprobs is not None else None,
            cached_prompt_tokens=max(req.cached, 0),
        )
        if not req.future.done():
            req.future.set_result(result)
        req.push(_END)
        span = req.span
        if span.is_recording():
            span.set_attribute("aiaas_serving.generation.completion_tokens", len(tokens))
            span.set_attribute("aiaas_serving.generation.finish_reason", reason)
            span.set_attribute("aiaas_serving.generation.cached_tokens", max(req.cached, 0))
            span.set_attribute("aiaas_serving.generation.preemptions", seq.preemptions)
        span.end()
        self._metrics.inc(_REQUESTS, 1, {**self._labels, "outcome": "ok"})

    def _fail(self, req: _Request, error: BaseException, outcome: str) -> bool:
        if not self._settle(req):
            return False
        req.error = error
        if not req.future.done():
            req.future.set_exception(error)
            req.future.exception()  # retrieved: a caller that left must not log "never retrieved"
        req.push(_END)
        span = req.span
        if span.is_recording():
            span.set_status(trace.StatusCode.ERROR, outcome)
            span.set_attribute("aiaas_serving.outcome", outcome)
        span.end()
        self._metrics.inc(_REQUESTS, 1, {**self._labels, "outcome": outcome})
        return True

    def _expire(self, req: _Request) -> None:
        req.timer = None
        self._fail(
            req,
            DeadlineExceeded("the request's deadline passed before it finished", model=self.name),
            "deadline_exceeded",
        )

    def _cancel(self, req: _Request) -> bool:
        return self._fail(req, Cancelled("the request was cancelled", model=self.name), "cancelled")

    def _cancel_soon(self, req: _Request) -> None:
        """The stream was garbage collected (any thread): cancel on the loop."""
        loop = self._loop
        if req.done or loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._cancel, req)

    def _release(self, req: _Request) -> None:
        """Take a settled request out of the scheduler (its blocks freed) and the tables."""
        self.scheduler.abort(req.seq)
        self._requests.pop(req.seq.seq_id, None)
        self._drop_row(req)

    def _drop_row(self, req: _Request) -> None:
        if req.row >= 0:
            self._free_rows.append(req.row)
            req.row = -1
            req.synced = 0

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._steps_loop()
        except Exception as exc:  # pragma: no cover - a bug in the engine itself
            logger.exception("the generation engine of model %r stopped on an error", self.name)
            self._state = "broken"
            for req in list(self._requests.values()):
                error = ModelError("the generation engine failed", model=self.name)
                error.__cause__ = exc
                self._fail(req, error, "model_error")

    async def _steps_loop(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        executor = self._executor
        assert wake is not None
        assert executor is not None
        scheduler = self.scheduler
        while True:
            self._reap_settled()
            if not scheduler.has_work():
                self._gauges()
                if self._state != "open" and not self._requests:
                    return
                wake.clear()
                await wake.wait()
                continue
            began = time.perf_counter()
            plan = scheduler.schedule(loop.time())
            self._after_plan(plan)
            if not plan.chunks:
                # nothing fits right now (only expired or settled ones left): wait for news
                self._reap_settled()
                if scheduler.has_work() and not scheduler.num_running:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 0.05)
                continue
            step = self._prepare(plan)
            self._schedule_s += time.perf_counter() - began
            output = await loop.run_in_executor(executor, self._execute, step)
            began = time.perf_counter()
            self._process(plan, step, output)
            self._post_s += time.perf_counter() - began

    def _reap_settled(self) -> None:
        reap = self._reap
        if reap:
            self._reap = []
            for req in reap:
                self._release(req)

    def _after_plan(self, plan: SchedulePlan) -> None:
        for seq in plan.expired:
            req = self._requests.get(seq.seq_id)
            if req is not None:
                self._expire(req)
        for seq in plan.preempted:
            req = self._requests[seq.seq_id]
            self._drop_row(req)
            if req.span.is_recording():
                req.span.add_event("preempted", {"computed_tokens": len(seq.token_ids)})
            self._metrics.inc(_PREEMPTIONS, 1, self._labels)
        for seq in plan.admitted:
            req = self._requests[seq.seq_id]
            req.row = self._free_rows.pop()
            req.synced = 0
            cached = plan.cached_tokens.get(seq.seq_id, 0)
            if req.cached < 0:
                req.cached = cached
                self._metrics.inc(_QUERIES, seq.num_prompt, self._labels)
                self._metrics.inc(_HITS, cached, self._labels)
            if req.span.is_recording():
                req.span.add_event("admitted", {"cached_tokens": cached})

    def _prepare(self, plan: SchedulePlan) -> _Step:
        """The step's inputs as flat lists (block tables synced into the persistent table)."""
        requests = self._requests
        table = self._table
        size = self.options.block_size
        input_ids: list[int] = []
        query_start = [0]
        starts: list[int] = []
        context_lens: list[int] = []
        rows: list[int] = []
        sample_rows: list[int] = []
        params: list[SamplingParams] = []
        generators: list[torch.Generator] = []
        width = 1
        for index, chunk in enumerate(plan.chunks):
            seq = chunk.seq
            req = requests[seq.seq_id]
            blocks = self.blocks.block_table(seq.seq_id)
            if len(blocks) > req.synced:
                table[req.row, req.synced : len(blocks)] = torch.tensor(blocks[req.synced :])
                req.synced = len(blocks)
            end = chunk.start + chunk.num_tokens
            input_ids.extend(seq.token_ids[chunk.start : end])
            query_start.append(len(input_ids))
            starts.append(chunk.start)
            context_lens.append(end)
            rows.append(req.row)
            width = max(width, -(-end // size))
            if chunk.samples:
                sample_rows.append(index)
                params.append(req.params)
                generators.append(req.generator)
            elif req.span.is_recording():
                req.span.add_event("prefill", {"tokens": chunk.num_tokens, "start": chunk.start})
        return _Step(
            input_ids,
            query_start,
            starts,
            context_lens,
            rows,
            width,
            sample_rows,
            params,
            generators,
        )

    def _build(self, step: _Step) -> ForwardBatch:
        """The step's :class:`ForwardBatch`: one ``torch.tensor`` per field, no Python loop."""
        device = self.device
        size = self.options.block_size
        lens = torch.tensor(
            [b - a for a, b in zip(step.query_start, step.query_start[1:], strict=False)],
            dtype=torch.long,
        )
        num = len(step.rows)
        owner = torch.repeat_interleave(torch.arange(num), lens)
        offset = torch.tensor(step.starts, dtype=torch.long) - torch.tensor(
            step.query_start[:-1], dtype=torch.long
        )
        positions = torch.arange(len(step.input_ids)) + offset[owner]
        tables = self._table[torch.tensor(step.rows, dtype=torch.long), : step.width]
        slots = tables[owner, positions // size] * size + positions % size
        logits_indices = torch.tensor(
            [step.query_start[i + 1] - 1 for i in step.sample_rows], dtype=torch.long
        )
        input_ids = torch.tensor(step.input_ids, dtype=torch.long)
        if device.type != "cpu":
            input_ids, positions, slots, tables, logits_indices = (
                (t.pin_memory() if self._pinned else t).to(device, non_blocking=True)
                for t in (input_ids, positions, slots, tables, logits_indices)
            )
        return ForwardBatch(
            input_ids=input_ids,
            positions=positions,
            slot_mapping=slots,
            query_start=tuple(step.query_start),
            context_lens=tuple(step.context_lens),
            block_tables=tables,
            logits_indices=logits_indices,
        )

    def _execute(self, step: _Step) -> _StepOutput:
        """Worker thread: build the batch, run the forward, sample (failures isolated)."""
        rows = len(step.sample_rows)
        tokens: list[int | None] = [None] * rows
        logprobs: list[TokenLogprob | None] = [None] * rows
        errors: list[BaseException | None] = [None] * rows
        began = time.perf_counter()
        with torch.inference_mode():
            try:
                batch = self._build(step)
                built = time.perf_counter()
                logits = self._forward(batch, self.cache)
            except Exception as exc:  # noqa: BLE001 -- the step's sequences fail, serving goes on
                now = time.perf_counter()
                return _StepOutput(tokens, logprobs, errors, exc, 0.0, now - began, 0.0)
            forwarded = time.perf_counter()
            if rows:
                try:
                    out = sample(logits, step.params, step.generators)
                    for i, o in enumerate(out):
                        tokens[i], logprobs[i] = o.token_id, o.logprob
                except Exception:  # noqa: BLE001 -- isolate the failing rows one by one
                    for i in range(rows):
                        try:
                            (o,) = sample(logits[i : i + 1], [step.params[i]], [step.generators[i]])
                            tokens[i], logprobs[i] = o.token_id, o.logprob
                        except Exception as exc:  # noqa: BLE001
                            errors[i] = exc
            sampled = time.perf_counter()
        return _StepOutput(
            tokens, logprobs, errors, None, built - began, forwarded - built, sampled - forwarded
        )

    def _process(self, plan: SchedulePlan, step: _Step, output: _StepOutput) -> None:
        """Event loop: record what ran, turn sampled tokens into deltas, finish requests."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self._steps += 1
        self._tokens += len(step.input_ids)
        self._schedule_s += output.build_seconds
        self._forward_s += output.forward_seconds
        self._sample_s += output.sample_seconds
        metrics = self._metrics
        labels = self._labels
        metrics.observe(
            _STEP, output.build_seconds + output.forward_seconds + output.sample_seconds, labels
        )
        metrics.observe(_STEP_TOKENS, len(step.input_ids), labels)
        requests = self._requests
        if output.forward_error is not None:
            logger.error(
                "the forward of model %r failed; failing the %d sequence(s) of that step",
                self.name,
                len(plan.chunks),
                exc_info=output.forward_error,
            )
            for chunk in plan.chunks:
                req = requests.get(chunk.seq.seq_id)
                if req is not None:
                    failed = ModelError("the model failed while generating", model=self.name)
                    failed.__cause__ = output.forward_error
                    self._fail(req, failed, "model_error")
            self._gauges()
            return
        prompt_tokens = 0
        row = 0
        for chunk in plan.chunks:
            req = requests.get(chunk.seq.seq_id)
            seq = chunk.seq
            if req is None or req.done or seq.state != RUNNING:
                row += chunk.samples
                continue
            self.scheduler.complete(chunk)
            if chunk.start < seq.num_prompt:
                prompt_tokens += min(chunk.num_tokens, seq.num_prompt - chunk.start)
            if not chunk.samples:
                continue
            token, logprob, error = output.tokens[row], output.logprobs[row], output.errors[row]
            row += 1
            if error is not None or token is None:
                logger.error("sampling failed for a request of model %r", self.name, exc_info=error)
                failure = ModelError("the model failed while sampling", model=self.name)
                failure.__cause__ = error
                self._fail(req, failure, "model_error")
                continue
            try:
                self._accept_token(req, token, logprob, now)
            except Exception as exc:  # e.g. the detokenizer: this request fails alone
                logger.error(
                    "turning a token into text failed for a request of model %r",
                    self.name,
                    exc_info=exc,
                )
                failure = ModelError("the model failed while decoding its output", model=self.name)
                failure.__cause__ = exc
                self._fail(req, failure, "model_error")
        if prompt_tokens:
            metrics.inc(_PROMPT, prompt_tokens, labels)
        self._gauges()

    def _accept_token(
        self, req: _Request, token: int, logprob: TokenLogprob | None, now: float
    ) -> None:
        seq = req.seq
        params = req.params
        seq.token_ids.append(token)
        self._generated += 1
        self._metrics.inc(_GENERATED, 1, self._labels)
        if req.first_token_at == 0.0:
            req.first_token_at = now
            self._metrics.observe(_TTFT, now - seq.arrival, self._labels)
            if req.span.is_recording():
                req.span.add_event("first_token")
        else:
            self._metrics.observe(_ITL, now - req.last_token_at, self._labels)
        req.last_token_at = now
        if req.logprobs is not None and logprob is not None:
            req.logprobs.append(logprob)
        lp = (logprob,) if logprob is not None and req.logprobs is not None else None
        finish: FinishReason | None = None
        if (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids:
            text = req.buffer + req.detok.flush()
            req.buffer = ""
            finish = "stop"
        else:
            buffer = req.buffer + req.detok.push(token)
            stop_at = params.find_stop(buffer) if params.stop else -1
            if stop_at >= 0:
                text, req.buffer, finish = buffer[:stop_at], "", "stop"
            elif seq.num_generated >= req.max_new or len(seq.token_ids) >= self.max_model_len:
                text, req.buffer, finish = buffer + req.detok.flush(), "", "length"
            else:
                hold = params.held_back(buffer) if params.stop else 0
                text, req.buffer = buffer[: len(buffer) - hold], buffer[len(buffer) - hold :]
        if text:
            req.text.append(text)
        req.push(GenerationDelta((token,), text, lp, finish))
        if finish is not None:
            self._succeed(req, finish)

    def _gauges(self) -> None:
        metrics = self._metrics
        labels = self._labels
        metrics.set(_RUNNING, self.scheduler.num_running, labels)
        metrics.set(_WAITING, self.scheduler.num_waiting, labels)
        metrics.set(_USED, self.blocks.num_used_blocks, labels)
        metrics.set(_FREE, self.blocks.num_free_blocks, labels)
