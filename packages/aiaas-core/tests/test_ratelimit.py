"""RateLimiter: token buckets with a fake clock, a Hypothesis bound, threads, bounded memory."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import RateDecision, RateLimit, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_validation_and_rate() -> None:
    assert RateLimit(60).rate == 1.0
    assert RateLimit(10, period=2).rate == 5.0
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="limit must be an integer >= 1"):
            RateLimit(bad)  # type: ignore[arg-type]
    for period in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="period must be a finite number > 0"):
            RateLimit(1, period=period)


def test_acquire_takes_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(3, period=3)  # 1 per second, burst 3
    decisions = [limiter.acquire("k", limit) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[0] == RateDecision(
        allowed=True, limit=3, remaining=2, reset_after=1.0, retry_after=0.0
    )
    refused = decisions[3]
    assert (refused.remaining, refused.retry_after, refused.reset_after) == (0, 1.0, 3.0)
    clock.now += 0.5
    assert limiter.acquire("k", limit).retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k", limit).allowed
    clock.now += 100  # never above the burst
    assert [limiter.acquire("k", limit).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.acquire("other", limit).allowed  # keys are independent


def test_check_and_charge_refuse_the_next_request_while_in_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    tokens = RateLimit(100, period=10)  # 10 per second
    assert limiter.check("k", tokens).allowed
    debt = limiter.charge("k", tokens, 250)  # known only afterwards: the bucket goes negative
    assert (debt.allowed, debt.remaining) == (True, 0)
    assert debt.reset_after == pytest.approx(25.0)
    refused = limiter.check("k", tokens)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(15.0)
    clock.now += 15.01
    assert limiter.check("k", tokens).allowed
    with pytest.raises(ValueError, match="cost must be a finite number >= 0"):
        limiter.charge("k", tokens, -1)
    with pytest.raises(ValueError, match="cost must be a finite number >= 0"):
        limiter.acquire("k", tokens, float("nan"))
    with pytest.raises(ValueError, match="exceeds the limit"):
        limiter.acquire("k", tokens, 101)
    assert limiter.acquire("f", tokens, 2.5).remaining == 97  # fractional costs too


def test_a_lowered_limit_applies_at_once() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.acquire("k", RateLimit(100)).remaining == 99
    assert limiter.acquire("k", RateLimit(5)).remaining == 4


def test_memory_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    limiter = RateLimiter(max_keys=2, clock=clock)
    limit = RateLimit(1, period=3600)
    assert limiter.acquire("a", limit).allowed
    assert limiter.acquire("b", limit).allowed
    assert not limiter.acquire("a", limit).allowed  # a is now the most recently used
    assert limiter.acquire("c", limit).allowed  # evicts b
    assert len(limiter) == 2
    assert not limiter.acquire("a", limit).allowed  # a kept its empty bucket
    assert "2 keys" in repr(limiter)
    for bad in (0, True):
        with pytest.raises(ValueError, match="max_keys"):
            RateLimiter(max_keys=bad)


@given(
    limit=st.integers(min_value=1, max_value=50),
    period=st.floats(min_value=0.1, max_value=100),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=1, max_value=50)),
        max_size=200,
    ),
)
def test_never_admits_more_than_the_burst_plus_rate_times_elapsed(
    limit: int, period: float, steps: list[tuple[float, int]]
) -> None:
    clock = Clock()
    start = clock.now
    limiter = RateLimiter(clock=clock)
    rule = RateLimit(limit, period=period)
    admitted = 0.0
    for gap, wanted in steps:
        clock.now += gap
        cost = min(wanted, limit)
        decision = limiter.acquire("k", rule, cost)
        if decision.allowed:
            admitted += cost
        assert admitted <= limit + rule.rate * (clock.now - start) + 1e-6
        assert 0 <= decision.remaining <= limit


def test_threads_never_admit_more_than_the_burst() -> None:
    limiter = RateLimiter(clock=lambda: 0.0)  # no refill: exactly the burst may pass
    limit = RateLimit(1000, period=3600)
    admitted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = sum(limiter.acquire("shared", limit).allowed for _ in range(500))
        with lock:
            admitted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000
