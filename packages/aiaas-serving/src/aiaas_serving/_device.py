"""Running batches on a device, off the event loop, with failure isolation.

Each device gets one worker thread; every batch of every model placed on that device runs there
under ``torch.inference_mode``. A batch that raises is bisected: the halves run again, and so on
down to single requests, so only the requests that fail on their own fail. A CUDA out-of-memory
error splits the batch the same way and reports the size that failed, so the runtime lowers that
model's batch limit.

On CUDA, host tensors are staged through pinned memory (torch's caching host allocator) and
copied with ``non_blocking=True``; outputs come back the same way with one stream
synchronisation per batch. Optional autocast (bf16/fp16) and CUDA graphs: one graph per batch
signature (padded batch size x padded length), captured on first use or at warm-up, replayed
after copying the batch into its static inputs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import attrs
import torch

from aiaas_serving._errors import ModelError
from aiaas_serving._policy import ExecutionOptions
from aiaas_serving._queue import DONE, Request

__all__ = ["DeviceWorker", "ModelRunner", "resolve_device"]

logger = logging.getLogger("aiaas_serving")

_DTYPES: Final = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` is the first CUDA device when one is present, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"device {spec!r} is not a torch device string ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} was asked for but CUDA is not available here")
        if getattr(device, "index", None) is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA (or other accelerator) out of memory, or a host allocation failure."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError))


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    return obj


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _signature(obj: Any) -> tuple[Any, ...]:
    return tuple((tuple(t.shape), t.dtype) for t in _tensors(obj))


def graph_batch_size(count: int, limit: int) -> int:
    """Batch size a CUDA graph is captured for: the next power of two, at most ``limit``."""
    size = 1
    while size < count:
        size *= 2
    return max(count, min(size, limit))


class _AdapterContractError(RuntimeError):
    pass


@attrs.define
class BatchReport:
    """What happened to one dispatched batch (filled on the device thread)."""

    outcomes: list[tuple[Request, Any, BaseException | None]] = attrs.Factory(list)
    forwards: int = 0
    error_splits: int = 0
    oom_splits: int = 0
    oom_at: int | None = None  # smallest batch size that ran out of memory
    oom_tokens: int | None = None  # and the fewest padded tokens that did
    seconds: float = 0.0


class _CudaGraphs:
    """CUDA graphs keyed by batch signature, sharing one memory pool. Past ``limit`` graphs
    (padding to the longest makes shapes many), new shapes run eagerly instead."""

    limit: Final = 512

    def __init__(self, device: torch.device, forward: Callable[[Any], Any]) -> None:
        self._device = device
        self._forward = forward
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, batch: Any) -> Any:
        key = _signature(batch)
        entry = self._graphs.get(key)
        if entry is None and len(self._graphs) >= self.limit:
            return self._forward(batch)
        if entry is None:
            static_in = _map_tensors(batch, lambda t: t.clone())
            side = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(2):  # lazy initialisation (cuBLAS workspaces) before capture
                    self._forward(static_in)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self._forward(static_in)
            entry = (graph, static_in, static_out)
            self._graphs[key] = entry
        else:
            for dst, src in zip(_tensors(entry[1]), _tensors(batch), strict=True):
                dst.copy_(src, non_blocking=True)
        entry[0].replay()
        return entry[2]


class ModelRunner:
    """Runs one model's batches on its device (always called on the device's worker thread)."""

    def __init__(
        self,
        name: str,
        adapter: Any,
        device: torch.device,
        options: ExecutionOptions,
        *,
        max_batch_size: int,
        max_batch_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.device = device
        self.options = options
        self.streaming = callable(getattr(adapter, "forward_stream", None)) and not callable(
            getattr(adapter, "forward", None)
        )
        self._cuda = device.type == "cuda"
        self._pin = self._cuda and options.pin_memory
        self._autocast_dtype = _DTYPES[options.autocast] if options.autocast else None
        self._dummy: Callable[[int], Any] | None = getattr(adapter, "dummy_item", None)
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._graphs: _CudaGraphs | None = None
        if options.cuda_graphs and self._cuda and not self.streaming:
            self._graphs = _CudaGraphs(device, self._forward)

    @property
    def graphs(self) -> int:
        return len(self._graphs) if self._graphs is not None else 0

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _forward(self, batch: Any) -> Any:
        with self._autocast():
            return self.adapter.forward(batch)

    def _to_device(self, batch: Any) -> Any:
        device = self.device
        if device.type == "cpu":
            return _map_tensors(batch, lambda t: t if t.device.type == "cpu" else t.cpu())
        pin = self._pin

        def move(t: torch.Tensor) -> torch.Tensor:
            if t.device == device:
                return t
            if pin and t.device.type == "cpu" and not t.is_pinned():
                t = t.pin_memory()  # torch's caching host allocator: reused, event-guarded
            return t.to(device, non_blocking=True)

        return _map_tensors(batch, move)

    def _to_host(self, outputs: Any) -> Any:
        if not self._cuda:
            return outputs
        # non_blocking device-to-host copies land in pinned memory; one sync for them all.
        host = _map_tensors(
            outputs, lambda t: t.to("cpu", non_blocking=True) if t.device.type != "cpu" else t
        )
        torch.cuda.current_stream(self.device).synchronize()
        return host

    def _fit(self, length: int) -> int:
        """The most requests of ``length`` one batch may hold (size limit and token budget)."""
        fit = self._max_batch_size
        if self._max_batch_tokens is not None:
            fit = max(1, min(fit, self._max_batch_tokens // max(1, length)))
        return fit

    def _padded_items(self, items: Sequence[Any], padded_length: int) -> Sequence[Any]:
        if self._graphs is None or self._dummy is None:
            return items
        size = graph_batch_size(len(items), self._fit(padded_length))
        if size == len(items):
            return items
        filler = self._dummy(padded_length)
        return [*items, *([filler] * (size - len(items)))]

    def run(self, items: Sequence[Any], padded_length: int) -> Sequence[Any]:
        """collate, copy, forward, copy back, split: one result per item."""
        adapter = self.adapter
        batch = adapter.collate(self._padded_items(items, padded_length), padded_length)
        try:
            with torch.inference_mode():
                on_device = self._to_device(batch)
                if self._graphs is not None:
                    outputs = self._graphs.run(on_device)
                else:
                    outputs = self._forward(on_device)
                host = self._to_host(outputs)
        finally:
            if self._cuda:
                # Pinned staging buffers must not be reused while a copy may still be in
                # flight, even when the forward failed half-way.
                with contextlib.suppress(Exception):
                    torch.cuda.current_stream(self.device).synchronize()
        results: Sequence[Any] = adapter.split(host, items)
        if len(results) != len(items):
            raise _AdapterContractError(
                f"adapter split returned {len(results)} results for {len(items)} inputs"
            )
        return results

    def stream(
        self,
        items: Sequence[Any],
        padded_length: int,
        emit: Callable[[list[tuple[int, Any]]], None],
        seen: set[int],
    ) -> None:
        """Run a streaming batch, emitting each step's chunks; ``seen`` collects the indexes
        that got at least one chunk (kept when the stream fails half-way)."""
        batch = self.adapter.collate(items, padded_length)
        with torch.inference_mode():
            on_device = self._to_device(batch)
            steps = self.adapter.forward_stream(on_device, items)
        while True:
            with torch.inference_mode(), self._autocast():
                try:
                    step = next(steps)
                except StopIteration:
                    break
            pairs = [(i, chunk) for i, chunk in step.items() if 0 <= i < len(items)]
            if pairs:
                seen.update(i for i, _ in pairs)
                emit(pairs)

    def warm_up(self, buckets: Sequence[int]) -> int:
        """Run every bucket once (and, with CUDA graphs, every graph batch size): batches run."""
        if self._dummy is None:
            raise ValueError(
                f"model {self.name!r}: warm-up needs the adapter's dummy_item(length) method"
            )
        runs = 0
        for length in buckets:
            fit = self._fit(length)
            sizes = {fit}
            if self._graphs is not None:
                size = 1
                while size < fit:
                    sizes.add(size)
                    size *= 2
            for size in sorted(sizes):
                items = [self._dummy(length)] * size
                if self.streaming:
                    self.stream(items, length, lambda _pairs: None, set())
                else:
                    self.run(items, length)
                runs += 1
        return runs


def _padded_length(reqs: Sequence[Request], bucket_length: int | None) -> int:
    if bucket_length is not None:
        return bucket_length
    return max((r.cost for r in reqs), default=0)


def _model_error(name: str, exc: BaseException, *, oom: bool) -> ModelError:
    if oom:
        err = ModelError(
            f"model {name!r} ran out of memory on this input even when run alone; "
            "send a shorter input",
            model=name,
            code="MODEL_OUT_OF_MEMORY",
        )
    else:
        err = ModelError(
            f"model {name!r} failed on this input (the rest of its batch was not affected)",
            model=name,
        )
    err.__cause__ = exc
    return err


def execute(
    runner: ModelRunner,
    reqs: list[Request],
    bucket_length: int | None,
    emit: Callable[[list[tuple[Request, Any]]], None] | None = None,
) -> BatchReport:
    """Run ``reqs`` as one batch, isolating failures by bisection (device thread)."""
    report = BatchReport()
    started = time.perf_counter()
    _execute(runner, reqs, bucket_length, report, emit)
    report.seconds = time.perf_counter() - started
    return report


def _execute(
    runner: ModelRunner,
    reqs: list[Request],
    bucket_length: int | None,
    report: BatchReport,
    emit: Callable[[list[tuple[Request, Any]]], None] | None,
) -> None:
    live = [r for r in reqs if r.state != DONE]  # cancelled or expired meanwhile: skip
    if not live:
        return
    report.forwards += 1
    delivered: set[int] = set()
    try:
        if runner.streaming:
            assert emit is not None

            def push(pairs: list[tuple[int, Any]]) -> None:
                emit([(live[i], chunk) for i, chunk in pairs])

            runner.stream(
                [r.item for r in live], _padded_length(live, bucket_length), push, delivered
            )
            report.outcomes.extend((r, None, None) for r in live)
        else:
            results = runner.run([r.item for r in live], _padded_length(live, bucket_length))
            report.outcomes.extend((r, res, None) for r, res in zip(live, results, strict=True))
        return
    except Exception as exc:  # noqa: BLE001 - any model failure is isolated, never propagated
        failure: BaseException = exc
    oom = is_out_of_memory(failure)
    if oom and runner.device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    if runner.streaming and delivered:
        # A stream cannot be replayed once chunks went out: those requests fail, the rest rerun.
        for i, r in enumerate(live):
            if i in delivered:
                report.outcomes.append((r, None, _model_error(runner.name, failure, oom=oom)))
        rest = [r for i, r in enumerate(live) if i not in delivered]
        if rest:
            _execute(runner, rest, bucket_length, report, emit)
        return
    if len(live) == 1:
        logger.warning(
            "model %r failed on one request (%s); failing that request alone",
            runner.name,
            type(failure).__name__,
            exc_info=failure,
        )
        report.outcomes.append((live[0], None, _model_error(runner.name, failure, oom=oom)))
        return
    if oom:
        report.oom_splits += 1
        report.oom_at = len(live) if report.oom_at is None else min(report.oom_at, len(live))
        tokens = _padded_length(live, bucket_length) * len(live)
        report.oom_tokens = tokens if report.oom_tokens is None else min(report.oom_tokens, tokens)
    else:
        report.error_splits += 1
    half = len(live) // 2
    _execute(runner, live[:half], bucket_length, report, emit)
    _execute(runner, live[half:], bucket_length, report, emit)


class DeviceWorker:
    """One device: its worker thread and the models placed on it (state owned by the loop)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"aiaas-serving-{device}"
        )
        self.busy = False
        self.dispatch_scheduled = False
        self.models: list[Any] = []

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=False)
