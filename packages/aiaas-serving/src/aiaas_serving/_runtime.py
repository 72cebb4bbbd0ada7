"""The async dynamic-batching runtime.

One :class:`Runtime` hosts named models. ``submit`` admits a request (or refuses it at once),
queues it in its model's padding bucket, and returns its result when its batch has run. The
scheduler is work-conserving: when a device is idle, whatever is queued is dispatched at once;
while it is busy, requests accumulate, so batches grow exactly as fast as load does.

Choosing the next batch for a free device: the *fullest* bucket of every model on that device
(queued requests against the batch size or token budget) goes first, so batches are as large as
the load allows; but the most urgent request (aged priority) goes first instead when it is a whole
priority level more urgent than that bucket's head, or has waited ``max_delay`` already. The batch
then takes that bucket's most urgent requests up to the batch size and token budget (padded
tokens), leaving out those much fresher than its head (``BatchPolicy.age_window``): aging across
buckets, so that a sparse bucket's requests are served within about one batch of each other
bucket and waits stay close to arrival order (see :class:`BatchPolicy`).

Admission: a model's queue holds at most ``max_queue`` requests; a group admitted together
(``enqueue_many``) must fit beside what is queued, except that an empty queue takes any group,
so a group larger than ``max_queue`` is served when the model is idle instead of never. A request
with a deadline is refused (``Overloaded``, reason ``deadline_unreachable``) when the work queued
ahead of it, at the model's measured seconds per request, would outlast that deadline: it gets a
429 at once instead of a 504 after waiting its whole deadline.
``aenqueue_many`` prepares (tokenises) the inputs in a worker thread, so a large input never
holds up the event loop.

Outcomes: every accepted request ends exactly once, with its result or a typed error; results of
requests that were cancelled or timed out while their batch ran are discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ConcurrentFuture
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from opentelemetry import trace
from opentelemetry.context import Context

from aiaas_core import AiaasError
from aiaas_serving._device import (
    BatchReport,
    DeviceWorker,
    ModelRunner,
    execute,
    resolve_device,
)
from aiaas_serving._errors import (
    Cancelled,
    DeadlineExceeded,
    InputTooLarge,
    InvalidInput,
    ModelError,
    ModelNotFound,
    Overloaded,
    ServingError,
    ShuttingDown,
)
from aiaas_serving._metrics import InMemoryMetrics, ServingMetrics
from aiaas_serving._policy import BatchPolicy, ExecutionOptions, bucket_index
from aiaas_serving._queue import DONE, QUEUED, RUNNING, Request
from aiaas_serving._served import (
    _END,
    ModelInfo,
    RequestHandle,
    ResponseStream,
    ServedModel,
    _Batch,
    _check_priority,
    _input_at,
    _Model,
    _resolve_deadline,
    _select_batch,
    _take_batch,
)
from aiaas_serving._version import package_version

if TYPE_CHECKING:
    import torch
    from opentelemetry.trace import TracerProvider

    from aiaas_serving._adapter import ModelAdapter, StreamingModelAdapter

__all__ = ["Runtime"]

logger = logging.getLogger("aiaas_serving")

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
ChunkT = TypeVar("ChunkT")
T = TypeVar("T")

_OPEN: Final = "open"
_DRAINING: Final = "draining"
_CLOSED: Final = "closed"
_UNSET: Final = object()  # "no item given" marker of _prepare
_EWMA: Final = 0.2

_Q_DEPTH: Final = "aiaas_serving_queue_depth"
_EFFECTIVE: Final = "aiaas_serving_effective_max_batch_size"
_REQUESTS: Final = "aiaas_serving_requests_total"
_REJECTIONS: Final = "aiaas_serving_rejections_total"
_BATCHES: Final = "aiaas_serving_batches_total"
_TOKENS: Final = "aiaas_serving_tokens_total"
_SPLITS: Final = "aiaas_serving_batch_splits_total"
_BATCH_SIZE: Final = "aiaas_serving_batch_size"
_PADDED: Final = "aiaas_serving_batch_padded_tokens"
_EFFICIENCY: Final = "aiaas_serving_padding_efficiency"
_WAIT: Final = "aiaas_serving_queue_wait_seconds"
_COMPUTE: Final = "aiaas_serving_compute_seconds"


class Runtime:
    """Hosts named models and batches their requests on their devices.

    Use it as ``async with Runtime() as runtime:`` (or call :meth:`aclose`), add models with
    :meth:`add_model`, then :meth:`submit`. All methods must be called from the event loop the
    runtime first ran on; :class:`SyncRuntime` serves callers without one.

    ``metrics`` defaults to an :class:`InMemoryMetrics` (see :attr:`metrics`); traces go through
    the OpenTelemetry API (``tracer_provider``, default the global one): one span per batch,
    linked to the spans current at each of its requests' ``submit``.
    """

    def __init__(
        self,
        *,
        metrics: ServingMetrics | None = None,
        tracer_provider: TracerProvider | None = None,
        device: str = "auto",
    ) -> None:
        self._metrics: ServingMetrics = metrics if metrics is not None else InMemoryMetrics()
        self._tracer = trace.get_tracer("aiaas_serving", package_version(), tracer_provider)
        self._default = ExecutionOptions(device=device)
        self._models: dict[str, _Model] = {}
        self._workers: dict[str, DeviceWorker] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _OPEN
        self._outstanding = 0
        self._drained: asyncio.Event | None = None
        self._running: dict[DeviceWorker, list[Request]] = {}
        self._loading: set[str] = set()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def metrics(self) -> ServingMetrics:
        return self._metrics

    @property
    def accepting(self) -> bool:
        """True until :meth:`aclose` starts draining."""
        return self._state == _OPEN

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._models)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this Runtime runs on another event loop; call it from that loop "
                "(or use SyncRuntime from threads)"
            )
        return loop

    @overload
    async def add_model(
        self,
        name: str,
        adapter: ModelAdapter[InputT, Any, OutputT],
        *,
        policy: BatchPolicy | None = None,
        execution: ExecutionOptions | None = None,
    ) -> ServedModel[InputT, OutputT]: ...

    @overload
    async def add_model(
        self,
        name: str,
        adapter: StreamingModelAdapter[InputT, Any, ChunkT],
        *,
        policy: BatchPolicy | None = None,
        execution: ExecutionOptions | None = None,
    ) -> ServedModel[InputT, list[ChunkT]]: ...

    async def add_model(
        self,
        name: str,
        adapter: Any,
        *,
        policy: BatchPolicy | None = None,
        execution: ExecutionOptions | None = None,
    ) -> ServedModel[Any, Any]:
        """Place ``adapter`` on its device (moving weights, warming up buckets) and serve it
        as ``name``. The moving and warm-up run on the device thread; the loop stays free."""
        loop = self._bind()
        if not isinstance(name, str) or not name.strip():  # type: ignore[redundant-expr]
            raise ValueError(f"model name must be a non-empty string, got {name!r}")
        if name in self._models or name in self._loading:
            raise ValueError(f"a model named {name!r} is already served by this runtime")
        if self._state != _OPEN:
            raise ShuttingDown("the runtime is shutting down and takes no new models")
        for method in ("prepare", "cost", "collate", "move_to"):
            if not callable(getattr(adapter, method, None)):
                raise TypeError(f"adapter for {name!r} has no {method}() method")
        if not callable(getattr(adapter, "forward", None)) and not callable(
            getattr(adapter, "forward_stream", None)
        ):
            raise TypeError(f"adapter for {name!r} has neither forward() nor forward_stream()")
        policy = policy if policy is not None else BatchPolicy()
        execution = execution if execution is not None else self._default
        device = resolve_device(execution.device)
        max_length = adapter.max_length
        buckets = policy.resolved_buckets(max_length)
        graphs = execution.cuda_graphs and device.type == "cuda"
        pad_to_bucket = policy.pad_to == "bucket" or (policy.pad_to == "auto" and graphs)
        if pad_to_bucket and buckets is None:
            raise ValueError(
                f"model {name!r}: padding to buckets needs BatchPolicy.buckets or an adapter "
                "with a max_length"
            )
        self._loading.add(name)
        try:
            return await self._place(
                loop,
                name,
                adapter,
                policy=policy,
                execution=execution,
                device=device,
                buckets=buckets,
                pad_to_bucket=pad_to_bucket,
            )
        finally:
            self._loading.discard(name)

    async def _place(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        adapter: Any,
        *,
        policy: BatchPolicy,
        execution: ExecutionOptions,
        device: torch.device,
        buckets: tuple[int, ...] | None,
        pad_to_bucket: bool,
    ) -> ServedModel[Any, Any]:
        max_length = adapter.max_length
        key = str(device)
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = DeviceWorker(device)
        runner = ModelRunner(
            name,
            adapter,
            device,
            execution,
            max_batch_size=policy.max_batch_size,
            max_batch_tokens=policy.max_batch_tokens,
        )
        await loop.run_in_executor(worker.executor, adapter.move_to, device)
        warmup = execution.warmup if execution.warmup is not None else device.type == "cuda"
        has_dummy = callable(getattr(adapter, "dummy_item", None))
        if warmup and (has_dummy or execution.warmup):
            lengths = buckets if buckets is not None else ((max_length,) if max_length else ())
            if not lengths:
                raise ValueError(
                    f"model {name!r}: warm-up needs buckets or an adapter with a max_length"
                )
            runs = await loop.run_in_executor(worker.executor, runner.warm_up, lengths)
            logger.info("model %r warmed up on %s with %d batches", name, device, runs)
        model = _Model(
            name=name,
            adapter=adapter,
            runner=runner,
            worker=worker,
            policy=policy,
            execution=execution,
            buckets=buckets,
            pad_to_bucket=pad_to_bucket,
        )
        if self._state != _OPEN:
            raise ShuttingDown("the runtime began shutting down while the model was loading")
        self._models[name] = model
        worker.models.append(model)
        self._metrics.set(_EFFECTIVE, model.max_batch, model.labels)
        self._metrics.set(_Q_DEPTH, 0, model.labels)
        return ServedModel(self, name)

    def model_info(self, name: str) -> ModelInfo:
        model = self._model(name)
        return ModelInfo(
            name=name,
            device=str(model.worker.device),
            streaming=model.streaming,
            buckets=model.buckets,
            pad_to_bucket=model.pad_to_bucket,
            max_batch_size=model.max_batch,
            max_batch_tokens=model.max_tokens,
            queued=model.queue.live,
            policy=model.policy,
            execution=model.execution,
        )

    def adapter(self, name: str) -> Any:
        """The adapter serving ``name``."""
        return self._model(name).adapter

    def model(self, name: str) -> ServedModel[Any, Any]:
        """A handle on an already-added model."""
        self._model(name)
        return ServedModel(self, name)

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(
                f"no model named {name!r} is served here (served: {known})", model=name
            )
        return model

    async def aclose(self, *, grace: float | None = None) -> None:
        """Drain, then stop: refuse new requests, finish every accepted one, stop the threads.

        With ``grace`` (seconds), requests still without an outcome when it runs out fail with
        :class:`ShuttingDown` (running batches' results are then discarded).
        """
        if self._state == _CLOSED:
            return
        self._state = _DRAINING
        if self._loop is None:
            self._state = _CLOSED
            return
        self._bind()
        if self._drained is None:
            self._drained = asyncio.Event()
        self._check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), grace)
        except TimeoutError:
            self._abandon()
        if self._state != _CLOSED:
            self._state = _CLOSED
            for worker in self._workers.values():
                worker.shutdown()

    def _abandon(self) -> None:
        error = "the runtime shut down before this request ran"
        for model in self._models.values():
            for req in model.queue.drain():
                req.state = RUNNING  # already out of the queue: settle without discarding
                self._fail(req, ShuttingDown(error, model=model.name), "shutting_down")
        for reqs in list(self._running.values()):
            for req in reqs:
                self._fail(req, ShuttingDown(error, model=req.model.name), "shutting_down")

    def _check_drained(self) -> None:
        if (
            self._drained is not None
            and self._outstanding == 0
            and not any(w.busy for w in self._workers.values())
        ):
            self._drained.set()

    # --- admission ------------------------------------------------------------------------

    def enqueue(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> RequestHandle[Any]:
        """Admit one request (or raise at once) and return its handle without waiting.

        ``priority``: higher runs sooner (aged, so lower ones never starve). ``deadline``: a
        ``time.monotonic()`` instant, or ``timeout``: seconds from now; past it the request fails
        with :class:`DeadlineExceeded` (before any compute if it has not started).
        """
        loop = self._bind()
        state = self._model(model)
        _check_priority(priority)
        now = loop.time()
        at = _resolve_deadline(now, deadline, timeout)
        self._admit(state, now, at, 1)
        prepared = self._prepare(state, inputs)
        return RequestHandle(
            self, self._accept(loop, state, prepared, priority=priority, now=now, at=at)
        )

    def enqueue_many(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[RequestHandle[Any]]:
        """Admit several requests all or none: the queue must hold them all (an empty queue
        takes any number) and every input must be valid, else nothing is queued and the error
        is raised (a :class:`ServingError` names the failing input's position in ``index``)."""
        loop = self._bind()
        state = self._model(model)
        _check_priority(priority)
        batch = list(inputs)
        now = loop.time()
        at = _resolve_deadline(now, deadline, timeout)
        self._admit(state, now, at, len(batch))
        prepared = []
        for index, item in enumerate(batch):
            with _input_at(index):
                prepared.append(self._prepare(state, item))
        return [
            RequestHandle(self, self._accept(loop, state, p, priority=priority, now=now, at=at))
            for p in prepared
        ]

    async def aenqueue_many(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the requests' deadline, not a wait
    ) -> list[RequestHandle[Any]]:
        """:meth:`enqueue_many` with the inputs prepared (tokenised) in a worker thread, so the
        event loop keeps answering while a large input is tokenised.

        Admission is checked before preparing (an overloaded model refuses at once, without
        the work) and again after it (the queue may have filled meanwhile); all or none.
        """
        loop = self._bind()
        state = self._model(model)
        _check_priority(priority)
        batch = list(inputs)
        now = loop.time()
        at = _resolve_deadline(now, deadline, timeout)
        self._admit(state, now, at, len(batch))
        adapter = state.adapter
        done: list[Any] = []

        def prepare_all() -> None:
            for item in batch:
                # one at a time: on a failure, len(done) is the failing input's index
                done.append(adapter.prepare(item))  # noqa: PERF401

        failure: BaseException | None = None
        try:
            await loop.run_in_executor(None, prepare_all)
        except Exception as exc:  # noqa: BLE001 -- classified on the loop just below
            failure = exc
        if failure is not None:
            with _input_at(len(done)):
                self._prepare(state, batch[len(done)], failed=failure)
        prepared = []
        for index, item in enumerate(done):
            with _input_at(index):
                prepared.append(self._prepare(state, batch[index], item=item))
        self._admit(state, loop.time(), at, len(batch))
        return [
            RequestHandle(self, self._accept(loop, state, p, priority=priority, now=now, at=at))
            for p in prepared
        ]

    async def submit(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the request's deadline, not a wait
    ) -> Any:
        """Run one input through ``model`` in whatever batch suits, and return its result."""
        return await self.enqueue(
            model, inputs, priority=priority, deadline=deadline, timeout=timeout
        )

    async def submit_many(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the requests' deadline, not a wait
    ) -> list[Any]:
        """Admit all inputs at once (all or none) and return their results in order.

        The first failure is raised after cancelling the others still pending.
        """
        handles = self.enqueue_many(
            model, inputs, priority=priority, deadline=deadline, timeout=timeout
        )
        try:
            return [await h for h in handles]
        except BaseException:
            for h in handles:
                h.cancel()
            raise

    def stream(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> ResponseStream[Any]:
        """Admit one request now and return an async iterator over its chunks."""
        handle = self.enqueue(model, inputs, priority=priority, deadline=deadline, timeout=timeout)
        req = handle._req
        if req.model.streaming:
            req.chunks = asyncio.Queue()
        return ResponseStream(handle)

    def _reject(self, state: _Model, reason: str) -> None:
        self._metrics.inc(_REJECTIONS, 1, {"model": state.name, "reason": reason})

    def _admit(self, state: _Model, now: float, at: float | None, count: int) -> None:
        if self._state != _OPEN:
            self._reject(state, "shutting_down")
            raise ShuttingDown(
                "the runtime is shutting down and accepts no new requests; retry on another "
                "replica",
                model=state.name,
                retry_after=1.0,
            )
        if at is not None and at <= now:
            self._reject(state, "deadline_exceeded")
            raise DeadlineExceeded(
                "the request's deadline had already passed when it arrived", model=state.name
            )
        queued = state.queue.live
        limit = state.policy.max_queue
        if queued and queued + count > limit:
            self._reject(state, "overloaded")
            per = state.seconds_per_request
            wait = max(1.0, (queued + count) * per) if per is not None else 1.0
            raise Overloaded(
                f"model {state.name!r} is overloaded: {queued} requests are queued (limit "
                f"{limit}); retry later",
                model=state.name,
                retry_after=wait,
            )
        per = state.seconds_per_request
        if at is not None and queued and per is not None:
            # A request that would only reach the model after its deadline is refused now (429,
            # retry elsewhere or later) instead of admitted to time out (504) after holding a
            # client and a queue slot for its whole deadline.
            expected = (queued + count) * per
            if now + expected > at:
                self._reject(state, "deadline_unreachable")
                raise Overloaded(
                    f"model {state.name!r} is too busy to serve this request within its deadline"
                    f" ({at - now:.1f} s left, about {expected:.1f} s of queued work ahead);"
                    " retry later or with a longer deadline",
                    model=state.name,
                    retry_after=max(1.0, expected),
                )

    def _prepare(
        self,
        state: _Model,
        inputs: Any,
        *,
        item: Any = _UNSET,
        failed: BaseException | None = None,
    ) -> tuple[Any, int, int]:
        """Prepare ``inputs`` and price the item; ``item`` or ``failed``: what a prepare done
        elsewhere (a worker thread) gave, to price or to classify here."""
        adapter = state.adapter
        try:
            if failed is not None:
                raise failed
            if item is _UNSET:
                item = adapter.prepare(inputs)
        except ServingError as exc:
            reason = "input_too_large" if isinstance(exc, InputTooLarge) else "invalid_input"
            self._reject(state, reason)
            if exc.model is None:
                exc.model = state.name
            raise
        except AiaasError:
            self._reject(state, "invalid_input")
            raise
        except (TypeError, ValueError) as exc:
            self._reject(state, "invalid_input")
            raise InvalidInput(
                f"model {state.name!r} rejected the input: {exc}", model=state.name
            ) from exc
        except Exception as exc:
            self._reject(state, "invalid_input")
            logger.warning("model %r could not prepare an input", state.name, exc_info=exc)
            raise ModelError(
                f"model {state.name!r} could not prepare this input", model=state.name
            ) from exc
        cost = adapter.cost(item)
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
            raise ModelError(
                f"model {state.name!r}: its adapter priced an input at {cost!r} "
                "(cost must be an int >= 0)",
                model=state.name,
            )
        if state.buckets is None:
            bucket = 0
            padded = cost
        else:
            found = bucket_index(state.buckets, cost)
            if found is None:
                self._reject(state, "input_too_large")
                raise InputTooLarge(
                    f"the input is {cost} tokens long; model {state.name!r} accepts at most "
                    f"{state.buckets[-1]}: shorten it",
                    model=state.name,
                    tokens=cost,
                    limit=state.buckets[-1],
                )
            bucket = found
            padded = state.buckets[bucket] if state.pad_to_bucket else cost
        budget = state.policy.max_batch_tokens
        if budget is not None and padded > budget:
            self._reject(state, "input_too_large")
            raise InputTooLarge(
                f"the input needs {padded} padded tokens, more than model {state.name!r}'s "
                f"batch token budget of {budget}: shorten it",
                model=state.name,
            )
        return item, cost, bucket

    def _accept(
        self,
        loop: asyncio.AbstractEventLoop,
        state: _Model,
        prepared: tuple[Any, int, int],
        *,
        priority: int,
        now: float,
        at: float | None,
    ) -> Request:
        item, cost, bucket = prepared
        context = trace.get_current_span().get_span_context()
        req = Request(
            model=state,
            item=item,
            cost=cost,
            bucket=bucket,
            priority=priority,
            arrival=now,
            deadline=at,
            future=loop.create_future(),
            link=context if context.is_valid else None,
        )
        if state.streaming:
            req.chunks = []  # submit(): chunks gathered in a list
        state.queue.push(req)
        self._outstanding += 1
        if at is not None:
            req.timer = loop.call_at(at, self._expire, req)
        worker = state.worker
        if not worker.busy and not worker.dispatch_scheduled:
            worker.dispatch_scheduled = True
            loop.call_soon(self._dispatch, worker)
        return req

    # --- outcomes -------------------------------------------------------------------------

    def _settle(self, req: Request) -> bool:
        """Mark ``req`` done; False when it already was (its outcome is taken)."""
        state = req.state
        if state == DONE:
            return False
        req.state = DONE
        if state == QUEUED:
            req.model.queue.discard(req)
        if req.timer is not None:
            req.timer.cancel()
            req.timer = None
        self._outstanding -= 1
        if self._drained is not None and self._outstanding == 0:
            self._check_drained()
        return True

    def _succeed(self, req: Request, result: Any) -> bool:
        if not self._settle(req):
            return False
        chunks = req.chunks
        if chunks is not None:
            if isinstance(chunks, list):
                result = chunks
            else:
                chunks.put_nowait(_END)
                result = None
        fut = req.future
        if not fut.done():
            fut.set_result(result)
        return True

    def _fail(self, req: Request, error: BaseException, outcome: str) -> bool:
        if not self._settle(req):
            return False
        fut = req.future
        if not fut.done():
            fut.set_exception(error)
            fut.exception()  # mark retrieved: a caller that left must not log "never retrieved"
        if isinstance(req.chunks, asyncio.Queue):
            req.chunks.put_nowait(_END)
        self._metrics.inc(_REQUESTS, 1, {"model": req.model.name, "outcome": outcome})
        return True

    def _expire(self, req: Request) -> None:
        req.timer = None
        running = req.state == RUNNING
        self._fail(
            req,
            DeadlineExceeded(
                "the request's deadline passed while it was running; its result was discarded"
                if running
                else "the request's deadline passed before it ran",
                model=req.model.name,
            ),
            "deadline_exceeded",
        )

    def _cancel(self, req: Request) -> bool:
        return self._fail(
            req, Cancelled("the request was cancelled", model=req.model.name), "cancelled"
        )

    # --- scheduling -----------------------------------------------------------------------

    def _dispatch(self, worker: DeviceWorker) -> None:
        worker.dispatch_scheduled = False
        if worker.busy or self._state == _CLOSED:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while True:
            chosen = _select_batch(worker, now)
            if chosen is None:
                return
            model, bucket = chosen
            reqs = _take_batch(model, bucket, now, self._expire)
            if reqs:
                break
        self._metrics.set(_Q_DEPTH, model.queue.live, model.labels)
        observe = self._metrics.observe
        labels = model.labels
        for req in reqs:
            observe(_WAIT, now - req.arrival, labels)
        fixed = model.bucket_length(bucket) if model.pad_to_bucket else None
        padded_length = fixed if fixed is not None else max(r.cost for r in reqs)
        links = [trace.Link(r.link) for r in reqs if r.link is not None]
        span = self._tracer.start_span(
            "aiaas_serving.batch",
            context=Context(),
            kind=trace.SpanKind.INTERNAL,
            links=links,
            attributes={
                "aiaas_serving.model": model.name,
                "aiaas_serving.device": str(worker.device),
                "aiaas_serving.batch.size": len(reqs),
                "aiaas_serving.batch.padded_length": padded_length,
                "aiaas_serving.batch.padded_tokens": padded_length * len(reqs),
                "aiaas_serving.batch.tokens": sum(r.cost for r in reqs),
            },
        )
        worker.busy = True
        self._running[worker] = reqs
        emit = self._emitter(loop) if model.streaming else None
        future = worker.executor.submit(execute, model.runner, reqs, fixed, emit)
        batch = _Batch(worker, model, reqs, padded_length, span)

        def done(f: ConcurrentFuture[BatchReport]) -> None:
            try:
                loop.call_soon_threadsafe(self._on_done, batch, f)
            except RuntimeError:  # pragma: no cover - the loop closed under a running batch
                logger.warning("a batch of model %r finished after its loop closed", model.name)

        future.add_done_callback(done)

    def _emitter(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[list[tuple[Request, Any]]], None]:
        def emit(pairs: list[tuple[Request, Any]]) -> None:
            loop.call_soon_threadsafe(self._deliver, pairs)  # device thread -> loop, per step

        return emit

    def _deliver(self, pairs: list[tuple[Request, Any]]) -> None:
        for req, chunk in pairs:
            if req.state == DONE:
                continue
            req.delivered = True
            chunks = req.chunks
            if isinstance(chunks, list):
                chunks.append(chunk)
            elif chunks is not None:
                chunks.put_nowait(chunk)

    def _on_done(self, batch: _Batch, future: ConcurrentFuture[BatchReport]) -> None:
        worker, model, reqs, padded_length, span = (
            batch.worker,
            batch.model,
            batch.reqs,
            batch.padded_length,
            batch.span,
        )
        worker.busy = False
        self._running.pop(worker, None)
        error = future.exception()
        if error is None:  # the batch time first: the next batch's age window uses it
            seconds = future.result().seconds
            prev = model.seconds_per_batch
            model.seconds_per_batch = seconds if prev is None else prev + _EWMA * (seconds - prev)
        if self._state != _CLOSED:
            self._dispatch(worker)  # keep the device busy before settling this batch's results
        if error is not None:  # pragma: no cover - execute() isolates every model failure
            report = BatchReport(
                outcomes=[(r, None, ModelError(model=model.name)) for r in reqs], forwards=1
            )
            logger.error("batch of model %r failed outside the model", model.name, exc_info=error)
        else:
            report = future.result()
        self._adjust_limits(model, report)
        ok = failed = 0
        for req, result, err in report.outcomes:
            if err is None:
                ok += self._succeed(req, result)
            else:
                failed += self._fail(req, err, "model_error")
        metrics = self._metrics
        labels = model.labels
        size = len(reqs)
        tokens = sum(r.cost for r in reqs)
        padded = padded_length * size
        if ok:
            metrics.inc(_REQUESTS, ok, {"model": model.name, "outcome": "ok"})
        metrics.inc(_BATCHES, 1, labels)
        metrics.inc(_TOKENS, tokens, labels)
        metrics.observe(_BATCH_SIZE, size, labels)
        metrics.observe(_PADDED, padded, labels)
        if padded:
            metrics.observe(_EFFICIENCY, tokens / padded, labels)
        metrics.observe(_COMPUTE, report.seconds, labels)
        if report.error_splits:
            metrics.inc(_SPLITS, report.error_splits, {"model": model.name, "reason": "error"})
        if report.oom_splits:
            metrics.inc(_SPLITS, report.oom_splits, {"model": model.name, "reason": "oom"})
        per = report.seconds / size
        prev = model.seconds_per_request
        model.seconds_per_request = per if prev is None else prev + _EWMA * (per - prev)
        if span.is_recording():
            span.set_attribute("aiaas_serving.batch.forwards", report.forwards)
            span.set_attribute("aiaas_serving.batch.failed", failed)
            span.set_attribute("aiaas_serving.batch.compute_seconds", report.seconds)
            if report.error_splits or report.oom_splits:
                span.add_event(
                    "aiaas_serving.batch.split",
                    {"error_splits": report.error_splits, "oom_splits": report.oom_splits},
                )
            if failed:
                span.set_status(trace.StatusCode.ERROR, f"{failed} request(s) failed")
        span.end()
        self._check_drained()

    def _adjust_limits(self, model: _Model, report: BatchReport) -> None:
        policy = model.policy
        if report.oom_at is not None:
            model.max_batch = max(1, min(model.max_batch, report.oom_at // 2))
            if model.max_tokens is not None and report.oom_tokens is not None:
                model.max_tokens = max(1, min(model.max_tokens, report.oom_tokens // 2))
            model.ok_batches = 0
            logger.warning(
                "model %r ran out of memory at a batch of %d; its batch limit is now %d",
                model.name,
                report.oom_at,
                model.max_batch,
            )
            self._metrics.set(_EFFECTIVE, model.max_batch, model.labels)
            return
        if model.max_batch >= policy.max_batch_size and model.max_tokens == policy.max_batch_tokens:
            return
        model.ok_batches += 1
        if model.ok_batches < model.execution.oom_recovery_batches:
            return
        model.ok_batches = 0
        model.max_batch = min(policy.max_batch_size, model.max_batch + max(1, model.max_batch // 4))
        if model.max_tokens is not None and policy.max_batch_tokens is not None:
            model.max_tokens = min(
                policy.max_batch_tokens, model.max_tokens + max(1, model.max_tokens // 4)
            )
        self._metrics.set(_EFFECTIVE, model.max_batch, model.labels)
