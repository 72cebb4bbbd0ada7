"""Served models as the runtime keeps them, the choice of their next batch, and the handles.

``_Model`` is a served model's state and ``_Batch`` a dispatched batch, both owned by the event
loop; ``_select_batch`` and ``_take_batch`` choose a free device's next batch from the models'
queues (the policy is described in ``_runtime``). Callers hold a :class:`RequestHandle` (await
it, or cancel it), a :class:`ResponseStream` (the chunks of a streamed request) or a
:class:`ServedModel` (a typed handle on one model); :class:`ModelInfo` describes a model. The
scheduler that drives all of them is :class:`~aiaas_serving.Runtime` (``_runtime``), which the
handles reach through the small :class:`_Host` protocol, so this module does not import it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import attrs

from aiaas_serving._errors import ServingError
from aiaas_serving._policy import BatchPolicy, ExecutionOptions
from aiaas_serving._queue import DONE, RUNNING, PendingQueue, Request

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from opentelemetry.trace import Span

    from aiaas_serving._device import DeviceWorker, ModelRunner

__all__ = ["ModelInfo", "RequestHandle", "ResponseStream", "ServedModel"]

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
T = TypeVar("T")

_END: Final = object()  # end-of-stream marker in a stream's chunk queue


class _Host(Protocol):
    """What the handles call on the :class:`~aiaas_serving.Runtime` that made them."""

    def _cancel(self, req: Request) -> bool: ...

    def enqueue(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> RequestHandle[Any]: ...

    async def submit_many(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the requests' deadline, not a wait
    ) -> list[Any]: ...

    def stream(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> ResponseStream[Any]: ...

    def model_info(self, name: str) -> ModelInfo: ...


@attrs.frozen
class ModelInfo:
    """A served model's configuration and live state."""

    name: str
    device: str
    streaming: bool
    buckets: tuple[int, ...] | None
    pad_to_bucket: bool
    max_batch_size: int  # in force now (lowered after out-of-memory errors)
    max_batch_tokens: int | None  # in force now
    queued: int
    policy: BatchPolicy
    execution: ExecutionOptions


class _Model:
    """A served model's state, owned by the event loop."""

    __slots__ = (
        "adapter",
        "buckets",
        "execution",
        "labels",
        "max_batch",
        "max_tokens",
        "name",
        "ok_batches",
        "pad_to_bucket",
        "policy",
        "queue",
        "runner",
        "seconds_per_batch",
        "seconds_per_request",
        "streaming",
        "worker",
    )

    def __init__(
        self,
        *,
        name: str,
        adapter: Any,
        runner: ModelRunner,
        worker: DeviceWorker,
        policy: BatchPolicy,
        execution: ExecutionOptions,
        buckets: tuple[int, ...] | None,
        pad_to_bucket: bool,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.runner = runner
        self.worker = worker
        self.policy = policy
        self.execution = execution
        self.buckets = buckets
        self.pad_to_bucket = pad_to_bucket
        self.streaming = runner.streaming
        self.queue = PendingQueue(len(buckets) if buckets else 1, policy.aging)
        self.max_batch = policy.max_batch_size
        self.max_tokens = policy.max_batch_tokens
        self.ok_batches = 0
        self.seconds_per_request: float | None = None
        self.seconds_per_batch: float | None = None  # mean compute time of a batch (EWMA)
        self.labels = {"model": name}

    def bucket_length(self, bucket: int) -> int | None:
        return self.buckets[bucket] if self.buckets is not None else None

    def fill(self, bucket: int) -> float:
        """How full the bucket's next batch would be (1.0: at the size or token limit)."""
        queued = self.queue.size(bucket)
        fill = queued / self.max_batch
        length = self.bucket_length(bucket)
        budget = self.max_tokens
        if budget is not None and length is not None:
            fill = max(fill, queued * length / budget)
        return min(fill, 1.0)


class _Batch:
    """A dispatched batch, as the loop remembers it until its report comes back."""

    __slots__ = ("model", "padded_length", "reqs", "span", "worker")

    def __init__(
        self,
        worker: DeviceWorker,
        model: _Model,
        reqs: list[Request],
        padded_length: int,
        span: Span,
    ) -> None:
        self.worker = worker
        self.model = model
        self.reqs = reqs
        self.padded_length = padded_length
        self.span = span


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _resolve_deadline(now: float, deadline: object, timeout: object) -> float | None:
    """Absolute deadline on the loop's clock, from a ``time.monotonic()`` deadline or a timeout."""
    if deadline is not None and timeout is not None:
        raise ValueError("pass either deadline (time.monotonic() seconds) or timeout, not both")
    if timeout is not None:
        if not _number(timeout):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        return now + float(timeout)  # type: ignore[arg-type]
    if deadline is not None:
        if not _number(deadline):
            raise TypeError(f"deadline must be a time.monotonic() value, got {deadline!r}")
        return now + (float(deadline) - time.monotonic())  # type: ignore[arg-type]
    return None


@contextmanager
def _input_at(index: int) -> Iterator[None]:
    """A :class:`ServingError` raised inside names the failing input's position (``index``)."""
    try:
        yield
    except ServingError as exc:
        exc.index = index
        raise


def _check_priority(priority: object) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int (higher runs sooner), got {priority!r}")


class RequestHandle(Generic[T]):
    """An accepted request: await it for the result; :meth:`cancel` withdraws it.

    If the task awaiting the handle is cancelled, the request is cancelled with it.
    """

    __slots__ = ("_req", "_runtime")

    def __init__(self, runtime: _Host, req: Request) -> None:
        self._runtime = runtime
        self._req = req

    @property
    def model(self) -> str:
        return str(self._req.model.name)

    @property
    def cost(self) -> int:
        """The adapter's cost for this input (its token length)."""
        return self._req.cost

    @property
    def priority(self) -> int:
        return self._req.priority

    def done(self) -> bool:
        return self._req.state == DONE

    def cancel(self) -> bool:
        """Withdraw the request: removed if queued, result discarded if running.

        Returns False when it already had an outcome. An awaiter gets :class:`Cancelled`.
        """
        return self._runtime._cancel(self._req)

    def __await__(self) -> Generator[Any, None, T]:
        try:
            return (yield from self._req.future.__await__())  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            self.cancel()
            raise


class ResponseStream(Generic[T]):
    """The chunks of one streamed request, as an async iterator.

    Leaving early (``break``, :meth:`aclose`, or ``async with`` exiting) cancels the request.
    A failure after some chunks is raised after them. For a non-streaming model the stream
    holds exactly one chunk: the result.
    """

    __slots__ = ("_finished", "_handle")

    def __init__(self, handle: RequestHandle[Any]) -> None:
        self._handle = handle
        self._finished = False

    @property
    def handle(self) -> RequestHandle[Any]:
        return self._handle

    def __aiter__(self) -> ResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        req = self._handle._req
        queue = req.chunks
        if not isinstance(queue, asyncio.Queue):  # a non-streaming model: one chunk
            self._finished = True
            result: T = await self._handle
            return result
        try:
            chunk = await queue.get()
        except asyncio.CancelledError:
            self._handle.cancel()
            raise
        if chunk is _END:
            self._finished = True
            fut = req.future
            if not fut.cancelled() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
            raise StopAsyncIteration
        return chunk  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            self._handle.cancel()

    async def __aenter__(self) -> ResponseStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ServedModel(Generic[InputT, OutputT]):
    """A typed handle on one model of a runtime (what :meth:`Runtime.add_model` returns)."""

    __slots__ = ("_runtime", "name")

    def __init__(self, runtime: _Host, name: str) -> None:
        self._runtime = runtime
        self.name = name

    def enqueue(
        self,
        inputs: InputT,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> RequestHandle[OutputT]:
        return self._runtime.enqueue(
            self.name, inputs, priority=priority, deadline=deadline, timeout=timeout
        )

    async def submit(
        self,
        inputs: InputT,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the request's deadline, not a wait
    ) -> OutputT:
        result: OutputT = await self._runtime.enqueue(
            self.name, inputs, priority=priority, deadline=deadline, timeout=timeout
        )
        return result

    async def submit_many(
        self,
        inputs: Sequence[InputT],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- the requests' deadline, not a wait
    ) -> list[OutputT]:
        results: list[OutputT] = await self._runtime.submit_many(
            self.name, inputs, priority=priority, deadline=deadline, timeout=timeout
        )
        return results

    def stream(
        self,
        inputs: InputT,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> ResponseStream[Any]:
        return self._runtime.stream(
            self.name, inputs, priority=priority, deadline=deadline, timeout=timeout
        )

    def info(self) -> ModelInfo:
        return self._runtime.model_info(self.name)


# --------------------------------------------------------------------------------------------
# Choosing the next batch (the scheduler's policy, described in ``_runtime``)


def _select_batch(worker: DeviceWorker, now: float) -> tuple[_Model, int] | None:
    """The model and bucket whose batch a free ``worker`` runs next (see ``_runtime``)."""
    best: tuple[float, int, _Model, int, Request] | None = None  # most urgent head
    fullest: tuple[float, float, int, _Model, int] | None = None  # fill, urgency, -seq
    for model in worker.models:
        queue = model.queue
        if not queue.live:
            continue
        aging = model.policy.aging
        for bucket in queue.buckets_in_use():
            head = queue.head(bucket)
            if head is None:  # pragma: no cover - live counts and heaps agree
                continue
            urgency = head.priority + (now - head.arrival) * aging
            if best is None or urgency > best[0] or (urgency == best[0] and head.seq < best[1]):
                best = (urgency, head.seq, model, bucket, head)
            candidate = (model.fill(bucket), urgency, -head.seq, model, bucket)
            if fullest is None or candidate[:3] > fullest[:3]:
                fullest = candidate
    if best is None or fullest is None:
        return None
    urgency, _, model, bucket, head = best
    if now - head.arrival >= model.policy.max_delay:
        return model, bucket  # overdue: no longer passed over for fuller batches
    if fullest[1] > urgency - 1.0:
        return fullest[3], fullest[4]  # the fullest batch, unless a level less urgent
    return model, bucket


def _take_batch(
    model: _Model, bucket: int, now: float, expire: Callable[[Request], None]
) -> list[Request]:
    """Pop the next batch of ``model``'s ``bucket``; ``expire`` fails a head already due."""
    queue = model.queue
    limit = model.max_batch
    budget = model.max_tokens
    fixed = model.bucket_length(bucket) if model.pad_to_bucket else None
    batch: list[Request] = []
    longest = 0
    window = math.inf  # the least urgent key that joins (set by the batch's first request)
    while len(batch) < limit:
        head = queue.head(bucket)
        if head is None:
            break
        if head.deadline is not None and head.deadline <= now:
            expire(head)  # due, its timer not run yet: fail it before any compute
            continue
        if not batch and model.policy.age_window < 1.0 and model.seconds_per_batch:
            # fresher than the head by more than a share of its wait (and a batch time,
            # so that a group admitted together is never split): the bucket's next batch
            policy = model.policy
            spread = max(policy.age_window * (now - head.arrival), model.seconds_per_batch)
            window = head.key + policy.aging * spread
        elif head.key > window:
            break  # too fresh beside the batch's head: it waits for this bucket's next batch
        length = fixed if fixed is not None else max(longest, head.cost)
        if budget is not None and batch and length * (len(batch) + 1) > budget:
            break
        queue.pop(bucket)
        head.state = RUNNING
        head.started = now
        batch.append(head)
        longest = length
    return batch
