"""Clocks and retry policy: every wait in aiaas-infra goes through an injectable :class:`Clock`."""

from __future__ import annotations

import random
import time
from typing import Final, Protocol, runtime_checkable

import attrs

__all__ = ["Clock", "RetryPolicy", "SystemClock"]

RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})


@runtime_checkable
class Clock(Protocol):
    """Time as aiaas-infra sees it: deadlines use ``monotonic``; every wait calls ``sleep``."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@attrs.frozen
class RetryPolicy:
    """How failed Linode API calls are retried.

    Retryable: ``statuses`` (408, 429 and 5xx by default) and connection errors or timeouts.
    A ``Retry-After`` header is honoured (capped at ``max_retry_after``); otherwise the wait is
    exponential from ``base_delay`` up to ``max_delay`` with +/- ``jitter`` (a fraction).
    ``max_attempts`` counts the first try.
    """

    max_attempts: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    max_retry_after: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    statuses: frozenset[int] = RETRYABLE_STATUSES

    def delay(
        self, attempt: int, retry_after: float | None = None, *, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        raw = min(self.base_delay * float(2 ** max(attempt - 1, 0)), self.max_delay)
        if self.jitter and raw:
            spread = raw * self.jitter
            raw += float((rng or _RNG).uniform(-spread, spread))
        return max(raw, 0.0)


_RNG = random.Random()  # noqa: S311 -- jitter, not cryptography


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; HTTP dates are read as unknown)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
