"""Rate limits: token buckets per key, O(1) per call, bounded memory, thread and async safe.

A :class:`RateLimit` of ``limit`` units per ``period`` seconds is a token bucket that holds at
most ``limit`` units (the burst) and refills continuously at ``limit / period`` units per
second, so over any interval of ``t`` seconds a key is admitted at most
``limit + limit / period * t`` units.

:class:`RateLimiter` keeps one bucket per key (an API key id, an organisation id, ...):

* :meth:`RateLimiter.acquire` takes ``cost`` units when the bucket holds them and refuses
  otherwise (request limits: cost 1);
* :meth:`RateLimiter.check` admits while the bucket is above zero without taking anything, and
  :meth:`RateLimiter.charge` takes units unconditionally, possibly below zero: for costs known
  only after the work (tokens counted by the tokenizer), charge afterwards and refuse the *next*
  request until the debt is refilled.

Every call is a dictionary lookup and a little arithmetic under one lock (no awaiting), so the
limiter is safe from threads and from any number of tasks on an event loop. At most
``max_keys`` buckets are kept; the least recently used one is dropped beyond that (a dropped
key starts again with a full bucket, so keep ``max_keys`` above the number of keys active within
one period). Limits are per process: ``N`` processes with the same limits admit up to ``N``
times as much (divide the limits by the number of processes for a shared bound).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final

import attrs

__all__ = ["RateDecision", "RateLimit", "RateLimiter"]

_SMALLEST: Final = math.nextafter(0.0, 1.0)


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _positive_float(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


@attrs.frozen
class RateLimit:
    """``limit`` units per ``period`` seconds (default: per minute)."""

    limit: int = attrs.field(validator=_positive_int)
    period: float = attrs.field(default=60.0, validator=_positive_float)
    #: Units refilled per second (``limit / period``).
    rate: float = attrs.field(init=False, eq=False, repr=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "rate", self.limit / self.period)  # after the validators


@attrs.frozen
class RateDecision:
    """The outcome of one limiter call.

    ``remaining`` is the whole units left (never below 0), ``reset_after`` the seconds until the
    bucket is full again, ``retry_after`` the seconds until the refused call would be admitted
    (0 when allowed).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, level: float, updated: float) -> None:
        self.level = level
        self.updated = updated


def _check_cost(cost: object) -> float:
    if type(cost) is int and cost >= 0:  # the common case, checked cheaply
        return cost
    if (
        isinstance(cost, bool)
        or not isinstance(cost, (int, float))
        or not math.isfinite(cost)
        or cost < 0
    ):
        raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
    return float(cost)


class RateLimiter:
    """Token buckets keyed by any hashable key; see the module documentation.

    ``clock`` returns monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(max_keys, bool) or max_keys < 1:
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"RateLimiter(<{len(self._buckets)} keys>, max_keys={self.max_keys})"

    def _bucket(self, key: Hashable, limit: RateLimit, now: float) -> _Bucket:
        """The refilled bucket of ``key`` (a new full one when unknown). Call under the lock."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(limit.limit), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(key)
        elapsed = now - bucket.updated
        if elapsed > 0:
            bucket.level = min(float(limit.limit), bucket.level + elapsed * limit.rate)
            bucket.updated = now
        elif bucket.level > limit.limit:  # the limit was lowered
            bucket.level = float(limit.limit)
        return bucket

    @staticmethod
    def _decision(bucket: _Bucket, limit: RateLimit, *, allowed: bool, need: float) -> RateDecision:
        level = bucket.level
        rate = limit.rate
        return RateDecision(
            allowed,
            limit.limit,
            int(level) if level > 0 else 0,  # floor, for a non-negative level
            (limit.limit - level) / rate if level < limit.limit else 0.0,
            0.0 if allowed or level >= need else (need - level) / rate,
        )

    def acquire(self, key: Hashable, limit: RateLimit, cost: float = 1) -> RateDecision:
        """Take ``cost`` units from ``key``'s bucket when it holds them; refuse otherwise (and
        take nothing). A ``cost`` above ``limit.limit`` can never be admitted: ValueError."""
        need = _check_cost(cost)
        if need > limit.limit:
            raise ValueError(f"cost {cost} exceeds the limit {limit.limit}: it can never pass")
        with self._lock:
            bucket = self._bucket(key, limit, self._clock())
            allowed = bucket.level >= need
            if allowed:
                bucket.level -= need
            return self._decision(bucket, limit, allowed=allowed, need=need)

    def check(self, key: Hashable, limit: RateLimit) -> RateDecision:
        """Admit while ``key``'s bucket is above zero; takes nothing (pair with
        :meth:`charge` once the cost is known)."""
        with self._lock:
            bucket = self._bucket(key, limit, self._clock())
            allowed = bucket.level > 0
            return self._decision(bucket, limit, allowed=allowed, need=_SMALLEST)

    def charge(self, key: Hashable, limit: RateLimit, cost: float) -> RateDecision:
        """Take ``cost`` units from ``key``'s bucket unconditionally (the level may go below
        zero: the key is refused by :meth:`check` until the debt is refilled)."""
        need = _check_cost(cost)
        with self._lock:
            bucket = self._bucket(key, limit, self._clock())
            bucket.level -= need
            return self._decision(bucket, limit, allowed=True, need=0.0)
