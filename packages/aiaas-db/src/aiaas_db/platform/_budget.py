"""Organisation budgets per period, read from the platform database and cached per organisation.

An organisation's budget is ``organizations.budget_limit_tokens`` (0: no tokens granted) and,
optionally, ``organizations.budget_limit_usd`` (NULL: no cost budget), both per
``organizations.budget_period``: the UTC calendar month (the default) or the UTC day.

Usage in the period is read without scanning the period's raw events:

* the hourly rollups (``analytics_hourly_rollups``) for the hours that are complete: every hour
  before ``date_trunc('hour', watermark - 5 minutes)``, where the watermark is the hourly
  rollup's ``analytics_rollup_watermarks.watermark`` (the 5 minutes leave room for events that
  are written a little after they happened);
* plus ``usage_events`` from that hour on (an index range scan of
  ``(organization_id, occurred_at)``: about an hour of one organisation's events when the rollup
  runs regularly, the whole period when it never runs).

Without the analytics schema the whole period is read from ``usage_events``.

:class:`BudgetTracker` keeps each organisation's reading for ``refresh_interval`` seconds and
adds what this process recorded since (:meth:`BudgetTracker.record`), so a request costs a
dictionary lookup; one query per organisation per interval reads the database (concurrent
requests share it). Several processes sharing one database each see the others' spend once it
is written and their own refresh has run, so the worst-case overshoot of a budget is about
``(processes - 1) x rate per process x (refresh_interval + the usage writer's flush interval)``
plus, per process, the tokens of the requests admitted just before the budget ran out (a
request is checked before it runs; its tokens are known after).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

import attrs

from aiaas_core import ServiceUnavailableError
from aiaas_db.platform._usage import Connect, dsn_connector

__all__ = ["Budget", "BudgetPeriod", "BudgetTracker", "BudgetUnavailableError"]

logger = logging.getLogger("aiaas.db.budget")

BudgetPeriod = Literal["day", "month"]

#: Events written this long after they happened are still counted before the next rollup.
_LATE_EVENTS: Final = "5 minutes"
#: Local spend is kept in slots of this many seconds (bounded memory per organisation).
_SLOT_S: Final = 0.25

_ORG: Final = """
SELECT o.organization_id, o.plan_tier, o.status, o.deleted_at IS NOT NULL,
       o.budget_limit_tokens, o.budget_limit_usd, o.budget_period,
       p.utc_start AT TIME ZONE 'UTC',
       (p.utc_start + ('1 ' || o.budget_period)::interval) AT TIME ZONE 'UTC', p.at
FROM organizations o
CROSS JOIN LATERAL (
    SELECT date_trunc(o.budget_period, t.at AT TIME ZONE 'UTC') AS utc_start, t.at
    FROM (SELECT COALESCE(%(at)s::timestamptz, now()) AS at) t
) p
WHERE o.organization_id = %(org)s
"""
_ROLLUPS_PRESENT: Final = (
    "SELECT to_regclass('analytics_hourly_rollups') IS NOT NULL"
    " AND to_regclass('analytics_rollup_watermarks') IS NOT NULL"
)
_HOUR_END: Final = f"""
SELECT date_trunc('hour', (watermark - interval '{_LATE_EVENTS}') AT TIME ZONE 'UTC')
       AT TIME ZONE 'UTC'
FROM analytics_rollup_watermarks WHERE granularity = 'hour' AND watermark IS NOT NULL
"""  # noqa: S608 -- constants only
_ROLLUP_USAGE: Final = """
SELECT COALESCE(SUM(tokens_total), 0), COALESCE(SUM(cost_usd), 0)
FROM analytics_hourly_rollups
WHERE organization_id = %(org)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
"""
_EVENT_USAGE: Final = """
SELECT COALESCE(SUM(tokens_consumed), 0), COALESCE(SUM(cost_usd), 0)
FROM usage_events
WHERE organization_id = %(org)s AND occurred_at >= %(start)s AND occurred_at < %(end)s
"""


@attrs.frozen(kw_only=True)
class Budget:
    """An organisation's budget and its usage in the current period.

    ``used_tokens``/``used_usd`` are the database's reading plus what this process recorded
    since; ``read_at`` is when the database was read (its clock).
    """

    organization_id: uuid.UUID
    plan_tier: str
    active: bool
    period: BudgetPeriod
    period_start: datetime
    period_end: datetime
    limit_tokens: int
    limit_usd: Decimal | None
    used_tokens: int
    used_usd: Decimal
    read_at: datetime

    @property
    def remaining_tokens(self) -> int:
        """Tokens left in the period (0 when spent)."""
        return max(0, self.limit_tokens - self.used_tokens)

    @property
    def exhausted(self) -> bool:
        """True when the token budget is spent, or the cost budget is."""
        if self.used_tokens >= self.limit_tokens:
            return True
        return self.limit_usd is not None and self.used_usd >= self.limit_usd

    @property
    def exhausted_by(self) -> Literal["tokens", "cost"] | None:
        """Which budget is spent (tokens first), or None."""
        if self.used_tokens >= self.limit_tokens:
            return "tokens"
        if self.limit_usd is not None and self.used_usd >= self.limit_usd:
            return "cost"
        return None


class BudgetUnavailableError(ServiceUnavailableError):
    """The budget of an organisation could not be read and none is cached."""

    code = "BUDGET_UNAVAILABLE"
    title = "Budget unavailable"


@attrs.define
class _Entry:
    budget: Budget  # as read from the database
    read_mono: float
    # Local spend, oldest first: [slot, tokens, cost] (slot = monotonic time // _SLOT_S), and
    # its totals.
    spend: deque[list[Any]] = attrs.field(factory=deque)
    spent_tokens: int = 0
    spent_usd: Decimal = Decimal(0)
    # The budget with the local spend added (None: compute again).
    view: Budget | None = None
    refreshing: asyncio.Future[Budget | None] | None = None


def _org_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"organization_id must be a uuid, got {value!r}") from None


class BudgetTracker:
    """Each organisation's :class:`Budget`, cached for ``refresh_interval`` seconds.

    ``connect`` is a DSN or an async callable opening a psycopg ``AsyncConnection``
    (autocommit). ``write_lag`` is how long a usage event recorded here may take to reach the
    database (the usage writer's flush interval plus a margin): this process's own spend stays
    counted that long after a refresh, so it is never missed (at worst counted twice for that
    long, which errs towards refusing). At most ``max_organizations`` are cached (least recently
    used dropped first). The period is placed by the database's clock (``now``, a callable
    returning an aware datetime, overrides it: for tests and replays).
    """

    def __init__(
        self,
        connect: Connect | str,
        *,
        refresh_interval: float = 5.0,
        write_lag: float = 2.0,
        max_organizations: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if refresh_interval <= 0 or write_lag < 0:
            raise ValueError("refresh_interval must be > 0 and write_lag >= 0 seconds")
        if max_organizations < 1:
            raise ValueError("max_organizations must be >= 1")
        self._connect = (
            dsn_connector(connect, "aiaas-db budgets") if isinstance(connect, str) else connect
        )
        self.refresh_interval = refresh_interval
        self.write_lag = write_lag
        self.max_organizations = max_organizations
        self._clock = clock
        self._now = now
        self._entries: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        self._unknown: OrderedDict[uuid.UUID, float] = OrderedDict()
        self._rollups: bool | None = None
        #: Database reads done, and reads that failed (a cached reading was served, if any).
        self.reads = 0
        self.read_failures = 0

    def __repr__(self) -> str:
        return (
            f"BudgetTracker(<{len(self._entries)} organisations>,"
            f" refresh_interval={self.refresh_interval})"
        )

    # -- the request side ------------------------------------------------------------------

    async def get(self, organization_id: uuid.UUID | str) -> Budget | None:
        """The organisation's budget and usage (``None`` for an unknown organisation).

        Served from the cache while the reading is younger than ``refresh_interval``; otherwise
        read again (one read per organisation at a time). When the read fails, the cached
        reading is served (logged); with nothing cached :class:`BudgetUnavailableError`.
        """
        org = _org_id(organization_id)
        now = self._clock()
        entry = self._entries.get(org)
        if entry is not None:
            self._entries.move_to_end(org)
            if now - entry.read_mono < self.refresh_interval:
                return self._with_spend(entry)
        else:
            seen = self._unknown.get(org)
            if seen is not None and now - seen < self.refresh_interval:
                return None
        return await self._refresh(org, entry)

    def cached(self, organization_id: uuid.UUID | str) -> Budget | None:
        """The cached budget (with this process's spend since), however old; no I/O."""
        entry = self._entries.get(_org_id(organization_id))
        return None if entry is None else self._with_spend(entry)

    def record(self, organization_id: uuid.UUID | str, tokens: int, cost: Decimal) -> None:
        """Count spend this process caused (call when its usage event is recorded)."""
        org = _org_id(organization_id)
        entry = self._entries.get(org)
        if entry is None or (tokens <= 0 and cost <= 0):
            return
        slot = int(self._clock() // _SLOT_S)
        spend = entry.spend
        if spend and spend[-1][0] == slot:
            spend[-1][1] += tokens
            spend[-1][2] += cost
        else:
            spend.append([slot, tokens, cost])
        entry.spent_tokens += tokens
        entry.spent_usd += cost
        entry.view = None

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _with_spend(entry: _Entry) -> Budget:
        view = entry.view
        if view is not None:
            return view
        read = entry.budget
        if entry.spent_tokens or entry.spent_usd:
            view = Budget(
                organization_id=read.organization_id,
                plan_tier=read.plan_tier,
                active=read.active,
                period=read.period,
                period_start=read.period_start,
                period_end=read.period_end,
                limit_tokens=read.limit_tokens,
                limit_usd=read.limit_usd,
                used_tokens=read.used_tokens + entry.spent_tokens,
                used_usd=read.used_usd + entry.spent_usd,
                read_at=read.read_at,
            )
        else:
            view = read
        entry.view = view
        return view

    async def _refresh(self, org: uuid.UUID, entry: _Entry | None) -> Budget | None:
        if entry is not None and entry.refreshing is not None:
            await asyncio.shield(entry.refreshing)
            return self._with_spend(entry)
        future: asyncio.Future[Budget | None] = asyncio.get_running_loop().create_future()
        if entry is not None:
            entry.refreshing = future
        started = self._clock()
        try:
            budget = await self._read(org)
        except Exception as exc:
            self.read_failures += 1
            future.set_result(None)
            if entry is not None:
                entry.refreshing = None
                logger.warning(
                    "budget of organisation %s not refreshed (%s): serving the reading of %.0fs"
                    " ago",
                    org,
                    type(exc).__name__,
                    started - entry.read_mono,
                )
                return self._with_spend(entry)
            logger.warning("budget of organisation %s unavailable (%s)", org, type(exc).__name__)
            raise BudgetUnavailableError(
                "the organisation's budget cannot be read right now: retry shortly",
                retry_after=5,
            ) from exc
        except BaseException:  # cancelled: the requests waiting for this read must not hang
            future.set_result(None)
            if entry is not None:
                entry.refreshing = None
            raise
        future.set_result(budget)
        if budget is None:
            self._entries.pop(org, None)
            self._unknown[org] = started
            self._unknown.move_to_end(org)
            if len(self._unknown) > self.max_organizations:
                self._unknown.popitem(last=False)
            return None
        self._unknown.pop(org, None)
        current = self._entries.get(org)
        if current is None:
            current = _Entry(budget, started)
            self._entries[org] = current
            if len(self._entries) > self.max_organizations:
                self._entries.popitem(last=False)
        else:
            current.budget = budget
            current.read_mono = started
            current.refreshing = None
        # Spend recorded within write_lag before the read began may not be in it yet: keep it.
        oldest = int((started - self.write_lag) // _SLOT_S)
        while current.spend and current.spend[0][0] < oldest:
            _, tokens, cost = current.spend.popleft()
            current.spent_tokens -= tokens
            current.spent_usd -= cost
        current.view = None
        return self._with_spend(current)

    async def _read(self, org: uuid.UUID) -> Budget | None:
        self.reads += 1
        params: dict[str, Any] = {"org": org, "at": None if self._now is None else self._now()}
        async with await self._connect() as conn:
            cur = await conn.execute(_ORG, params)
            row = await cur.fetchone()
            if row is None:
                return None
            (_, tier, status, deleted, limit_tokens, limit_usd, period, start, end, now) = row
            params.update(start=start, end=end)
            tokens, cost = 0, Decimal(0)
            if self._rollups is not True:
                self._rollups = bool((await (await conn.execute(_ROLLUPS_PRESENT)).fetchone())[0])
            if self._rollups:
                mark = await (await conn.execute(_HOUR_END)).fetchone()
                if mark is not None and mark[0] > start:
                    hour_end = min(mark[0], end)
                    cur = await conn.execute(_ROLLUP_USAGE, {**params, "end": hour_end})
                    rolled = await cur.fetchone()
                    tokens, cost = int(rolled[0]), Decimal(rolled[1])
                    params["start"] = hour_end
            cur = await conn.execute(_EVENT_USAGE, params)
            raw = await cur.fetchone()
        return Budget(
            organization_id=org,
            plan_tier=tier,
            active=status == "active" and not deleted,
            period=period,
            period_start=start,
            period_end=end,
            limit_tokens=int(limit_tokens),
            limit_usd=None if limit_usd is None else Decimal(limit_usd),
            used_tokens=tokens + int(raw[0]),
            used_usd=cost + Decimal(raw[1]),
            read_at=now,
        )
