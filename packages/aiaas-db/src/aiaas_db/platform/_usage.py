"""Usage events off the critical path: a bounded buffer drained by batched, idempotent inserts.

A request hands its :class:`UsageEvent` to :meth:`UsageWriter.record`, which only appends to an
in-memory buffer (no I/O, no awaiting) and returns at once. A background task writes the buffer
to ``usage_events`` in batches of up to ``batch_size`` rows, one statement per batch
(``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING``: each event carries its own id, so
a batch retried after an ambiguous failure never counts twice)::

    writer = UsageWriter("postgresql://...")  # or an async connect() callable
    writer.start()  # on the running event loop
    writer.record(UsageEvent(...))  # per request: an append
    stats = await writer.aclose(timeout=10)  # on shutdown: bounded flush

While the database is down requests go on: events stay buffered (up to ``buffer_limit``) and the
writer retries with capped exponential backoff. An event that finds the buffer full is dropped
and counted (:attr:`UsageStats.dropped_buffer_full`); events still buffered when the shutdown
flush runs out of time are counted as :attr:`UsageStats.dropped_shutdown`. Nothing is dropped
silently: ``accepted == written + dropped_* + pending`` at every moment.

:data:`USAGE_EVENT_COLUMNS` is the one list of the ``usage_events`` columns a writer fills; the
seeds use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import attrs

__all__ = ["USAGE_EVENT_COLUMNS", "UsageEvent", "UsageStats", "UsageStatus", "UsageWriter"]

logger = logging.getLogger("aiaas.db.usage")

UsageStatus = Literal["success", "rate_limited", "error"]
_STATUSES: Final = frozenset({"success", "rate_limited", "error"})

#: The ``usage_events`` columns an event fills, in :meth:`UsageEvent.row` order.
USAGE_EVENT_COLUMNS: Final = (
    "usage_event_id",
    "occurred_at",
    "organization_id",
    "api_key_id",
    "model_id",
    "request_id",
    "tokens_consumed",
    "latency_ms",
    "status",
    "error_code",
    "region",
    "cost_usd",
    "prompt_tokens",
    "completion_tokens",
)

_INSERT: Final = (
    f"INSERT INTO usage_events ({', '.join(USAGE_EVENT_COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
    "%s::uuid[], %s::timestamptz[], %s::uuid[], %s::uuid[], %s::uuid[], %s::text[],"
    " %s::bigint[], %s::integer[], %s::text[], %s::text[], %s::text[], %s::numeric[],"
    " %s::bigint[], %s::bigint[])"
    " ON CONFLICT DO NOTHING"
)


def _aware(_inst: object, attribute: attrs.Attribute[Any], value: datetime) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: int | Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _optional_non_negative(
    _inst: object, attribute: attrs.Attribute[Any], value: int | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 or None, got {value!r}")


def _status(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in _STATUSES:
        raise ValueError(f"status must be one of {sorted(_STATUSES)}, got {value!r}")


@attrs.frozen(kw_only=True)
class UsageEvent:
    """One request's usage, shaped like a ``usage_events`` row.

    ``prompt_tokens`` and ``completion_tokens`` split a generation request's tokens (input and
    output); leave them ``None`` for requests that do not split (embeddings). When both are set
    they must add up to ``tokens_consumed``, the figure budgets and rollups count.
    """

    occurred_at: datetime = attrs.field(validator=_aware)
    organization_id: uuid.UUID
    api_key_id: uuid.UUID | None
    model_id: uuid.UUID | None
    request_id: str | None
    tokens_consumed: int = attrs.field(validator=_non_negative)
    latency_ms: int = attrs.field(validator=_non_negative)
    status: UsageStatus = attrs.field(validator=_status)
    error_code: str | None
    region: str
    cost_usd: Decimal = attrs.field(validator=_non_negative)
    usage_event_id: uuid.UUID = attrs.field(factory=uuid.uuid4)
    prompt_tokens: int | None = attrs.field(default=None, validator=_optional_non_negative)
    completion_tokens: int | None = attrs.field(default=None, validator=_optional_non_negative)

    def __attrs_post_init__(self) -> None:
        if (self.status == "success") != (self.error_code is None):
            raise ValueError("error_code is set exactly when status is not 'success'")
        if (
            self.prompt_tokens is not None
            and self.completion_tokens is not None
            and self.prompt_tokens + self.completion_tokens != self.tokens_consumed
        ):
            raise ValueError(
                "prompt_tokens + completion_tokens must equal tokens_consumed, got "
                f"{self.prompt_tokens} + {self.completion_tokens} != {self.tokens_consumed}"
            )

    def row(self) -> tuple[Any, ...]:
        """The values in :data:`USAGE_EVENT_COLUMNS` order."""
        return (
            self.usage_event_id,
            self.occurred_at,
            self.organization_id,
            self.api_key_id,
            self.model_id,
            self.request_id,
            self.tokens_consumed,
            self.latency_ms,
            self.status,
            self.error_code,
            self.region,
            self.cost_usd,
            self.prompt_tokens,
            self.completion_tokens,
        )


@attrs.frozen
class UsageStats:
    """Counts since start: ``accepted == written + dropped_buffer_full + dropped_shutdown +
    pending``."""

    accepted: int
    written: int
    dropped_buffer_full: int
    dropped_shutdown: int
    pending: int
    write_failures: int
    database_up: bool


Connect = Callable[[], Awaitable[Any]]


def dsn_connector(dsn: str, application_name: str) -> Connect:
    """A :data:`Connect` that opens an autocommit ``AsyncConnection`` to ``dsn`` (shared by the
    usage writer and the budget tracker; psycopg is imported on first use)."""

    async def connect() -> Any:
        import psycopg  # noqa: PLC0415 -- keeps `import aiaas_db` cheap

        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=application_name
        )

    return connect


class UsageWriter:
    """Buffers usage events and writes them in batches from a background task.

    ``connect`` is a DSN or an async callable opening a psycopg ``AsyncConnection``
    (autocommit) to the platform database; the writer reconnects after any failure.
    ``on_change`` (optional) is called after every change of the counts, e.g. to update
    metrics (cheaper: read :attr:`stats` when metrics are scraped).
    """

    def __init__(
        self,
        connect: Connect | str,
        *,
        buffer_limit: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_backoff: float = 5.0,
        on_change: Callable[[UsageStats], None] | None = None,
    ) -> None:
        if buffer_limit < 1 or batch_size < 1:
            raise ValueError("buffer_limit and batch_size must be >= 1")
        if flush_interval <= 0 or max_backoff <= 0:
            raise ValueError("flush_interval and max_backoff must be > 0 seconds")
        self._connect = (
            dsn_connector(connect, "aiaas-db usage writer") if isinstance(connect, str) else connect
        )
        self.buffer_limit = buffer_limit
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self._on_change = on_change
        self._buffer: deque[UsageEvent] = deque()
        self._conn: Any = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._accepted = 0
        self._written = 0
        self._dropped_full = 0
        self._dropped_shutdown = 0
        self._failures = 0
        self._database_up = True

    # -- the request side ----------------------------------------------------------------------

    def record(self, event: UsageEvent) -> bool:
        """Buffer ``event`` for writing; ``False`` (and counted) when the buffer is full or the
        writer is closed. Never blocks and never raises for a full buffer."""
        self._accepted += 1
        if self._closing or len(self._buffer) >= self.buffer_limit:
            if self._closing:
                self._dropped_shutdown += 1
            else:
                self._dropped_full += 1
            self._changed()
            return False
        self._buffer.append(event)
        self._idle.clear()
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        self._changed()
        return True

    @property
    def stats(self) -> UsageStats:
        return UsageStats(
            accepted=self._accepted,
            written=self._written,
            dropped_buffer_full=self._dropped_full,
            dropped_shutdown=self._dropped_shutdown,
            pending=len(self._buffer),
            write_failures=self._failures,
            database_up=self._database_up,
        )

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.stats)
            except Exception:
                logger.exception("usage metrics callback failed")

    # -- the writer ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            elif not self._closing and len(self._buffer) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if not self._buffer:
                self._idle.set()
                if self._closing:
                    return
                continue
            if await self._write_batch():
                backoff = 0.0
            else:
                backoff = min(self.max_backoff, max(0.1, backoff * 2))

    async def _write_batch(self) -> bool:
        batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
        columns: list[list[Any]] = [[] for _ in USAGE_EVENT_COLUMNS]
        for e in batch:
            for column, value in zip(columns, e.row(), strict=True):
                column.append(value)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            await self._conn.execute(_INSERT, columns)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the batch, retry later
            self._failures += 1
            if self._database_up:
                logger.warning(
                    "usage events not written (%s); %d buffered, retrying",
                    type(exc).__name__,
                    len(self._buffer),
                )
            self._database_up = False
            await self._drop_connection()
            self._changed()
            return False
        for _ in batch:
            self._buffer.popleft()
        self._written += len(batch)
        if not self._database_up:
            logger.info("usage events are being written again")
        self._database_up = True
        if not self._buffer:
            self._idle.set()
        self._changed()
        return True

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # it is broken already
                logger.debug("closing a broken usage connection failed", exc_info=True)

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bound, not a deadline API
        """Wait until everything buffered so far is written; ``False`` on timeout."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 10.0) -> UsageStats:  # noqa: ASYNC109
        """Stop accepting, write what is buffered (for at most ``timeout`` seconds), then stop;
        whatever is still buffered then is counted as ``dropped_shutdown``."""
        self._closing = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        leftover = len(self._buffer)
        if leftover:
            logger.error(
                "%d usage events could not be written before shutdown (waited %.1fs)",
                leftover,
                timeout - max(0.0, deadline - time.monotonic()),
            )
            self._dropped_shutdown += leftover
            self._buffer.clear()
        await self._drop_connection()
        self._changed()
        return self.stats
