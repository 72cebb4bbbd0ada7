"""The API gateway checks of one compute request: the organisation's budget, then the per-key
and per-organisation request and token rate limits, all before any compute.

Composed from the libraries: aiaas-db's :class:`~aiaas_db.BudgetTracker` (budgets per period,
read through the database and cached per organisation) and aiaas-core's
:class:`~aiaas_core.RateLimiter` (token buckets, per process).

* **Budget**: ``organizations.budget_limit_tokens`` (and ``budget_limit_usd`` when set) per
  ``budget_period``; a spent budget is ``429 insufficient_quota`` (with ``x-should-retry:
  false``: retrying does not help until the period ends or the budget is raised).
* **Rate limits** per plan tier (:class:`PlanLimits`: requests and tokens per minute, per key and
  per organisation): a request is admitted while each request bucket holds one request and each
  token bucket is above zero; its input tokens (counted by the tokenizer, so known only after
  the model ran) are charged when it completes, and a bucket in debt refuses the *next* requests
  until it is refilled. A refusal is ``429 rate_limit_exceeded`` with ``Retry-After``.
* Every answer of ``POST /v1/embeddings`` carries OpenAI's ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the ``-tokens``
  equivalents (the tighter of the key's and the organisation's).

Several processes: budgets are shared through the database (see aiaas-db's ``BudgetTracker`` for
the overshoot bound); rate limits are per process, so each process enforces the plan's limits
divided by ``processes`` (rounded up): ``N`` processes together admit at most the plan's limits
(plus one request or one request's tokens per process and bucket from the rounding and the
charge-after of tokens).
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal

import attrs

from aiaas_core import Message, RateDecision, RateLimit, RateLimiter, Send
from aiaas_db import Budget, BudgetTracker, BudgetUnavailableError

__all__ = [
    "DEFAULT_PLAN_LIMITS",
    "PLAN_TIERS",
    "Gateway",
    "PlanLimits",
    "Refusal",
    "format_reset",
    "parse_plan_limits",
]

logger = logging.getLogger("inference-service.gateway")

PLAN_TIERS: Final = ("free", "starter", "pro", "enterprise")
_MINUTE: Final = 60.0
_LIMIT_ITEM: Final = re.compile(r"\s*(key_rpm|key_tpm|org_rpm|org_tpm)\s*=\s*([0-9_]+)\s*")

RefusalReason = Literal[
    "insufficient_quota", "key_requests", "key_tokens", "org_requests", "org_tokens"
]
REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = (
    "insufficient_quota",
    "key_requests",
    "key_tokens",
    "org_requests",
    "org_tokens",
)


def _at_least_one(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen
class PlanLimits:
    """Requests and tokens per minute, per API key and per organisation, of one plan tier."""

    key_rpm: int = attrs.field(validator=_at_least_one)
    key_tpm: int = attrs.field(validator=_at_least_one)
    org_rpm: int = attrs.field(validator=_at_least_one)
    org_tpm: int = attrs.field(validator=_at_least_one)

    def per_process(self, processes: int) -> PlanLimits:
        """Each of ``processes`` processes' share (rounded up, at least 1)."""
        if processes == 1:
            return self
        return PlanLimits(*(max(1, math.ceil(v / processes)) for v in attrs.astuple(self)))

    def text(self) -> str:
        """The settings form: ``key_rpm=..,key_tpm=..,org_rpm=..,org_tpm=..``."""
        return ",".join(f"{k}={v}" for k, v in attrs.asdict(self).items())


#: Defaults per plan tier (per minute). Embeddings inputs are short; a request is ~100 tokens.
DEFAULT_PLAN_LIMITS: Final[Mapping[str, PlanLimits]] = {
    "free": PlanLimits(key_rpm=60, key_tpm=100_000, org_rpm=120, org_tpm=200_000),
    "starter": PlanLimits(key_rpm=300, key_tpm=500_000, org_rpm=600, org_tpm=1_000_000),
    "pro": PlanLimits(key_rpm=1_200, key_tpm=2_000_000, org_rpm=3_000, org_tpm=5_000_000),
    "enterprise": PlanLimits(key_rpm=6_000, key_tpm=10_000_000, org_rpm=15_000, org_tpm=25_000_000),
}


def parse_plan_limits(text: str, default: PlanLimits) -> PlanLimits:
    """``key_rpm=60,org_tpm=200000`` over ``default`` (named items replace the default's);
    ``ValueError`` naming the bad item otherwise."""
    values = attrs.asdict(default)
    for item in text.split(","):
        if not item.strip():
            continue
        match = _LIMIT_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"{item.strip()!r} is not NAME=NUMBER with NAME one of key_rpm, key_tpm,"
                " org_rpm, org_tpm (per minute), e.g. key_rpm=60,org_tpm=200000"
            )
        values[match.group(1)] = int(match.group(2).replace("_", ""))
    return PlanLimits(**values)


def format_reset(seconds: float) -> str:
    """A duration as OpenAI's reset headers write it: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    millis = max(0, math.ceil(seconds * 1000))
    if millis < 1000:
        return f"{millis}ms"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _headers(requests: RateDecision, tokens: RateDecision) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-requests", str(requests.limit).encode()),
        (b"x-ratelimit-remaining-requests", str(requests.remaining).encode()),
        (b"x-ratelimit-reset-requests", format_reset(requests.reset_after).encode()),
        (b"x-ratelimit-limit-tokens", str(tokens.limit).encode()),
        (b"x-ratelimit-remaining-tokens", str(tokens.remaining).encode()),
        (b"x-ratelimit-reset-tokens", format_reset(tokens.reset_after).encode()),
    ]


def _tighter(a: RateDecision, b: RateDecision) -> RateDecision:
    if a.allowed != b.allowed:
        return b if a.allowed else a
    return a if a.remaining <= b.remaining else b


@attrs.frozen
class Refusal:
    """A refused request: the stable code recorded on its usage event and its 429 answer."""

    reason: RefusalReason
    code: str  # RATE_LIMIT_EXCEEDED or INSUFFICIENT_QUOTA
    message: str
    headers: tuple[tuple[bytes, bytes], ...]

    def body(self) -> bytes:
        """OpenAI's error shape."""
        error_type = (
            "insufficient_quota"
            if self.reason == "insufficient_quota"
            else ("tokens" if self.reason.endswith("tokens") else "requests")
        )
        return json.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": error_type,
                    "param": None,
                    "code": self.code.lower(),
                }
            },
            separators=(",", ":"),
        ).encode()

    async def send(self, send: Send) -> None:
        """Answer 429 (the ``X-Request-ID`` header is the telemetry middleware's to add: one
        per response)."""
        body = self.body()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@attrs.frozen
class Admission:
    """An admitted request: the rate-limit headers its answer carries."""

    headers: tuple[tuple[bytes, bytes], ...]

    def wrap(self, send: Send) -> Send:
        """``send`` with the headers added to the response start."""
        extra = list(self.headers)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return with_headers


class Gateway:
    """Budget and rate-limit checks of compute requests; see the module documentation.

    ``limits`` maps every plan tier to its :class:`PlanLimits` (whole-platform figures);
    ``processes`` divides them for this process. ``enforce_budgets``/``enforce_rate_limits``
    turn either check off (the other still runs).
    """

    def __init__(
        self,
        budgets: BudgetTracker,
        *,
        limits: Mapping[str, PlanLimits] = DEFAULT_PLAN_LIMITS,
        processes: int = 1,
        enforce_budgets: bool = True,
        enforce_rate_limits: bool = True,
        limiter: RateLimiter | None = None,
    ) -> None:
        missing = [tier for tier in PLAN_TIERS if tier not in limits]
        if missing:
            raise ValueError(f"limits must name every plan tier; missing: {', '.join(missing)}")
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.budgets = budgets
        self.processes = processes
        self.enforce_budgets = enforce_budgets
        self.enforce_rate_limits = enforce_rate_limits
        self.limiter = limiter or RateLimiter()
        self._rules: dict[str, tuple[RateLimit, RateLimit, RateLimit, RateLimit]] = {}
        for tier, plan in limits.items():
            share = plan.per_process(processes)
            self._rules[tier] = (
                RateLimit(share.key_rpm, _MINUTE),
                RateLimit(share.key_tpm, _MINUTE),
                RateLimit(share.org_rpm, _MINUTE),
                RateLimit(share.org_tpm, _MINUTE),
            )
        self.refusals: dict[RefusalReason, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.budget_unavailable = 0

    def _rules_for(self, tier: str) -> tuple[RateLimit, RateLimit, RateLimit, RateLimit]:
        return self._rules.get(tier) or self._rules["free"]

    async def admit(self, organization_id: uuid.UUID, key_id: str) -> Admission | Refusal:
        """Check the budget, then the rate limits, of one request by ``key_id``."""
        budget: Budget | None = None
        try:
            budget = await self.budgets.get(organization_id)
        except BudgetUnavailableError:
            # The database is down and nothing is cached: let traffic through (usage is
            # buffered and counted once the database is back); never fail a request for it.
            self.budget_unavailable += 1
        tier = budget.plan_tier if budget is not None else "free"
        if budget is not None and self.enforce_budgets and budget.exhausted:
            return self._refuse_budget(budget)
        key_req, key_tok, org_req, org_tok = self._rules_for(tier)
        limiter = self.limiter
        tokens = _tighter(
            limiter.check(("kt", key_id), key_tok),
            limiter.check(("ot", organization_id.int), org_tok),
        )
        if self.enforce_rate_limits and not tokens.allowed:
            kt = limiter.check(("kt", key_id), key_tok)
            reason: RefusalReason = "key_tokens" if not kt.allowed else "org_tokens"
            requests = limiter.check(("kr", key_id), key_req)
            return self._refuse_rate(reason, tokens, requests, tokens)
        key_requests = limiter.acquire(("kr", key_id), key_req)
        if self.enforce_rate_limits and not key_requests.allowed:
            return self._refuse_rate("key_requests", key_requests, key_requests, tokens)
        org_requests = limiter.acquire(("or", organization_id.int), org_req)
        if self.enforce_rate_limits and not org_requests.allowed:
            return self._refuse_rate("org_requests", org_requests, org_requests, tokens)
        return Admission(tuple(_headers(_tighter(key_requests, org_requests), tokens)))

    def charge(self, organization_id: uuid.UUID, key_id: str, tokens: int, cost: Decimal) -> None:
        """Count a completed request's tokens against its rate limits and its budget."""
        if tokens <= 0 and cost <= 0:
            return
        budget = self.budgets.cached(organization_id)  # before record(): no recomputation
        self.budgets.record(organization_id, tokens, cost)
        if tokens > 0:
            _, key_tok, _, org_tok = self._rules_for(
                budget.plan_tier if budget is not None else "free"
            )
            self.limiter.charge(("kt", key_id), key_tok, tokens)
            self.limiter.charge(("ot", organization_id.int), org_tok, tokens)

    # -- refusals ------------------------------------------------------------------------------

    def _refuse_budget(self, budget: Budget) -> Refusal:
        self.refusals["insufficient_quota"] += 1
        period = "month" if budget.period == "month" else "day"
        if budget.exhausted_by == "cost":
            spent = f"cost budget for this {period} is spent (limit {budget.limit_usd} USD)"
        else:
            spent = f"token budget for this {period} is spent (limit {budget.limit_tokens} tokens)"
        message = (
            f"You exceeded your current quota: your organisation's {spent}. It renews at"
            f" {budget.period_end.isoformat().replace('+00:00', 'Z')}; ask an owner of the"
            " organisation to raise the budget to continue now."
        )
        return Refusal(
            "insufficient_quota", "INSUFFICIENT_QUOTA", message, ((b"x-should-retry", b"false"),)
        )

    def _refuse_rate(
        self,
        reason: RefusalReason,
        refused: RateDecision,
        requests: RateDecision,
        tokens: RateDecision,
    ) -> Refusal:
        self.refusals[reason] += 1
        who = "this API key" if reason.startswith("key") else "your organisation"
        what = "tokens" if reason.endswith("tokens") else "requests"
        retry = max(1, math.ceil(refused.retry_after))
        per = f"{refused.limit} {what} per minute"
        if self.processes > 1:
            per += f" per service process ({self.processes} processes)"
        message = (
            f"Rate limit reached for {what} on {who}: limit {per}. Please try again in {retry}s."
        )
        headers = (*_headers(requests, tokens), (b"retry-after", str(retry).encode()))
        return Refusal(reason, "RATE_LIMIT_EXCEEDED", message, headers)
