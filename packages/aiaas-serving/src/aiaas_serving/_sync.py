"""A blocking facade over :class:`Runtime` for callers without an event loop.

:class:`SyncRuntime` runs its own event loop on a background thread and hosts a :class:`Runtime`
there; every method may be called from any thread (never from that loop's own thread). The
caller's context variables (its OpenTelemetry span, its aiaas request context) travel with each
request, so batch spans link to the caller's span as they do for async callers.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from aiaas_serving._runtime import Runtime
from aiaas_serving._served import ModelInfo

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from aiaas_serving._metrics import ServingMetrics
    from aiaas_serving._policy import BatchPolicy, ExecutionOptions

__all__ = ["SyncRuntime"]

T = TypeVar("T")
_DONE = object()


async def _in_context(context: contextvars.Context, coro: Coroutine[Any, Any, T]) -> T:
    for var, value in context.items():  # this task runs on a copy: nothing leaks back
        var.set(value)
    return await coro


class SyncRuntime:
    """Blocking ``submit`` for threads; ``close()`` (or ``with``) drains and stops."""

    def __init__(
        self,
        *,
        metrics: ServingMetrics | None = None,
        tracer_provider: TracerProvider | None = None,
        device: str = "auto",
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="aiaas-serving-loop", daemon=True)
        self._runtime = Runtime(metrics=metrics, tracer_provider=tracer_provider, device=device)
        self._closed = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def runtime(self) -> Runtime:
        """The async runtime underneath (use it only from its loop: :attr:`loop`)."""
        return self._runtime

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def metrics(self) -> ServingMetrics:
        return self._runtime.metrics

    def _start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncRuntime is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "SyncRuntime methods block: call them from another thread, or use the async "
                "Runtime (SyncRuntime.runtime) on this loop"
            )
        wrapped = _in_context(contextvars.copy_context(), coro)
        return asyncio.run_coroutine_threadsafe(wrapped, self._loop)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = self._start(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # a timed-out or interrupted wait withdraws the request
            raise

    def add_model(
        self,
        name: str,
        adapter: Any,
        *,
        policy: BatchPolicy | None = None,
        execution: ExecutionOptions | None = None,
    ) -> None:
        """Place and warm ``adapter`` as ``name`` (blocks until ready)."""
        self._call(self._runtime.add_model(name, adapter, policy=policy, execution=execution))

    def model_info(self, name: str) -> ModelInfo:
        return self._call(self._info(name))

    async def _info(self, name: str) -> ModelInfo:
        return self._runtime.model_info(name)

    def submit(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run one input and return its result (raises the request's typed error)."""
        return self._call(
            self._runtime.submit(
                model, inputs, priority=priority, deadline=deadline, timeout=timeout
            )
        )

    def submit_future(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Future[Any]:
        """Admit one input and return a ``concurrent.futures.Future`` of its result;
        cancelling the future withdraws the request."""
        return self._start(
            self._runtime.submit(
                model, inputs, priority=priority, deadline=deadline, timeout=timeout
            )
        )

    def submit_many(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Admit all inputs (all or none) and return their results in order."""
        return self._call(
            self._runtime.submit_many(
                model, list(inputs), priority=priority, deadline=deadline, timeout=timeout
            )
        )

    def stream(
        self,
        model: str,
        inputs: Any,
        *,
        priority: int = 0,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        """Admit one input now; iterate over its chunks (closing the iterator cancels it)."""
        stream = self._call(
            self._open_stream(model, inputs, priority=priority, deadline=deadline, timeout=timeout)
        )
        return self._iterate(stream)

    async def _open_stream(self, model: str, inputs: Any, **options: Any) -> Any:
        return self._runtime.stream(model, inputs, **options)

    def _iterate(self, stream: Any) -> Iterator[Any]:
        try:
            while True:
                chunk = self._call(self._next(stream))
                if chunk is _DONE:
                    return
                yield chunk
        finally:
            if not self._closed:
                self._call(stream.aclose())

    @staticmethod
    async def _next(stream: Any) -> Any:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return _DONE

    def close(self, grace: float | None = None) -> None:
        """Drain (finish every accepted request; see :meth:`Runtime.aclose` for ``grace``),
        then stop the loop and its thread."""
        if self._closed:
            return
        try:
            self._call(self._runtime.aclose(grace=grace))
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
