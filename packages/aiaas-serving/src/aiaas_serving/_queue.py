"""Pending requests of one model: a heap per padding bucket, ordered by aged priority.

A request's urgency at time ``t`` is ``priority + (t - arrival) * aging``. Because every request
of a model ages at the same rate, the order between two requests never changes, so a static heap
key ``arrival * aging - priority`` (lower is more urgent; admission order breaks ties) orders each
bucket for good. Removing a request (cancelled, expired) marks it and leaves the heap entry to be
skipped later; the heaps are compacted when dead entries outnumber live ones, so a cancellation
storm never grows memory without bound.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.trace import SpanContext

__all__ = ["DONE", "QUEUED", "RUNNING", "PendingQueue", "Request"]

QUEUED: Final = 0
RUNNING: Final = 1
DONE: Final = 2

_COMPACT_MIN_DEAD: Final = 64


class Request:
    """One accepted request, owned by the event loop (a device thread reads ``state`` only)."""

    __slots__ = (
        "arrival",
        "bucket",
        "chunks",
        "cost",
        "deadline",
        "delivered",
        "future",
        "item",
        "key",
        "link",
        "model",
        "priority",
        "seq",
        "started",
        "state",
        "timer",
    )

    def __init__(
        self,
        *,
        model: Any,
        item: Any,
        cost: int,
        bucket: int,
        priority: int,
        arrival: float,
        deadline: float | None,
        future: asyncio.Future[Any],
        link: SpanContext | None,
    ) -> None:
        self.model = model
        self.item = item
        self.cost = cost
        self.bucket = bucket
        self.priority = priority
        self.arrival = arrival
        self.deadline = deadline
        self.future = future
        self.link = link
        self.state = QUEUED
        self.seq = 0
        self.key = 0.0
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # streaming models: a list gathers chunks for submit(), a queue feeds stream()
        self.chunks: list[Any] | asyncio.Queue[Any] | None = None
        self.delivered = False


class PendingQueue:
    """Queued requests of one model, split by bucket."""

    __slots__ = ("_dead", "_heaps", "_live", "_seq", "aging", "live")

    def __init__(self, buckets: int, aging: float) -> None:
        self._heaps: list[list[tuple[float, int, Request]]] = [[] for _ in range(buckets)]
        self._live = [0] * buckets
        self._dead = 0
        self._seq = 0
        self.aging = aging
        self.live = 0

    def push(self, req: Request) -> None:
        self._seq += 1
        req.seq = self._seq
        req.key = req.arrival * self.aging - req.priority
        heapq.heappush(self._heaps[req.bucket], (req.key, req.seq, req))
        self._live[req.bucket] += 1
        self.live += 1

    def discard(self, req: Request) -> None:
        """Account for a queued request that left without running (its state already set)."""
        self._live[req.bucket] -= 1
        self.live -= 1
        self._dead += 1
        if self._dead >= _COMPACT_MIN_DEAD and self._dead > self.live:
            self._compact()

    def _compact(self) -> None:
        for i, heap in enumerate(self._heaps):
            kept = [entry for entry in heap if entry[2].state == QUEUED]
            heapq.heapify(kept)
            self._heaps[i] = kept
        self._dead = 0

    def size(self, bucket: int) -> int:
        return self._live[bucket]

    def buckets_in_use(self) -> list[int]:
        return [i for i, n in enumerate(self._live) if n]

    def head(self, bucket: int) -> Request | None:
        """The most urgent live request of ``bucket`` (dropping dead entries on the way)."""
        heap = self._heaps[bucket]
        while heap:
            req = heap[0][2]
            if req.state == QUEUED:
                return req
            heapq.heappop(heap)
            self._dead -= 1
        return None

    def pop(self, bucket: int) -> Request:
        """Remove and return the head found by :meth:`head` (call that first)."""
        req = heapq.heappop(self._heaps[bucket])[2]
        self._live[bucket] -= 1
        self.live -= 1
        return req

    def drain(self) -> list[Request]:
        """Remove every live request (most urgent first within each bucket)."""
        out: list[Request] = []
        for i, heap in enumerate(self._heaps):
            out.extend(entry[2] for entry in sorted(heap) if entry[2].state == QUEUED)
            self._heaps[i] = []
            self._live[i] = 0
        self.live = 0
        self._dead = 0
        return out
