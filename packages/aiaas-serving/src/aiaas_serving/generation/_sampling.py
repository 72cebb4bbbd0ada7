"""Per-request sampling parameters and the batched sampler.

:class:`SamplingParams` is a frozen, validated value (the OpenAI request fields the engine acts
on). :func:`sample` turns one step's logits ``[R, V]`` into one token per row: greedy rows take
the argmax; the others are scaled by their temperature, cut to their top-k and top-p, and drawn
with their own :class:`torch.Generator`, so a request with a ``seed`` gets the same tokens
whatever else shares its batch. Logprobs are those of the model's own distribution (the raw
logits' log-softmax, before temperature and cuts), as vLLM reports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import torch

from aiaas_serving._errors import InvalidInput

__all__ = ["InvalidSamplingParams", "SamplingParams", "SampleOutput", "TokenLogprob", "sample"]

MAX_STOP_STRINGS: Final = 4
MAX_LOGPROBS: Final = 20
_SEED_MAX: Final = 2**63 - 1
_GREEDY_BELOW: Final = 1e-5


class InvalidSamplingParams(InvalidInput):
    """A sampling parameter is out of range; ``param`` names it (OpenAI's error ``param``)."""

    code = "SAMPLING_PARAMS_INVALID"
    title = "Invalid sampling parameters"

    def __init__(self, message: str, *, param: str) -> None:
        self.param = param
        super().__init__(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request's tokens are chosen and when its generation stops.

    - ``max_tokens``: most tokens to generate (>= 1); ``None`` generates up to the engine's
      context length (or as much as its KV cache holds, when that is less).
    - ``temperature``: 0 to 2; 0 (or below 1e-5) is greedy (argmax, no randomness).
    - ``top_p``: nucleus sampling mass, in (0, 1]; 1 keeps every token.
    - ``top_k``: keep the k most likely tokens; 0 turns it off.
    - ``seed``: seeds this request's own random generator (same seed, same tokens, whatever
      else is in the batch); ``None`` draws a fresh seed.
    - ``stop``: up to 4 non-empty strings; generation stops before the first one, which is never
      part of the text (finish reason ``"stop"``).
    - ``stop_token_ids``: token ids that end generation like EOS (their text is not emitted).
    - ``ignore_eos``: keep generating past the model's end-of-sequence tokens.
    - ``logprobs``: ``None`` for none; 0 to 20 for the chosen token's logprob plus that many
      most likely alternatives.
    """

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None
    _stop_prefixes: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise InvalidSamplingParams(
                f"max_tokens must be an integer >= 1 (or None for up to the context length), "
                f"got {self.max_tokens!r}",
                param="max_tokens",
            )
        if not _is_number(self.temperature) or not 0.0 <= float(self.temperature) <= 2.0:
            raise InvalidSamplingParams(
                f"temperature must be a number from 0 to 2 (0 is greedy), got {self.temperature!r}",
                param="temperature",
            )
        if not _is_number(self.top_p) or not 0.0 < float(self.top_p) <= 1.0:
            raise InvalidSamplingParams(
                f"top_p must be a number in (0, 1], got {self.top_p!r}", param="top_p"
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise InvalidSamplingParams(
                f"top_k must be an integer >= 0 (0 turns it off), got {self.top_k!r}",
                param="top_k",
            )
        if self.seed is not None and (not _is_int(self.seed) or abs(self.seed) > _SEED_MAX):
            raise InvalidSamplingParams(
                f"seed must be an integer between -2**63+1 and 2**63-1 or None, got {self.seed!r}",
                param="seed",
            )
        stop: object = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (tuple, list)) or not all(isinstance(s, str) for s in stop):
            raise InvalidSamplingParams(
                f"stop must be a string or a sequence of strings, got {self.stop!r}", param="stop"
            )
        if len(stop) > MAX_STOP_STRINGS:
            raise InvalidSamplingParams(
                f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}", param="stop"
            )
        if any(not s for s in stop):
            raise InvalidSamplingParams("stop strings must not be empty", param="stop")
        object.__setattr__(self, "stop", tuple(stop))
        ids: object = self.stop_token_ids
        if not isinstance(ids, (tuple, list)) or not all(_is_int(t) and t >= 0 for t in ids):
            raise InvalidSamplingParams(
                f"stop_token_ids must be a sequence of token ids >= 0, got {ids!r}",
                param="stop_token_ids",
            )
        object.__setattr__(self, "stop_token_ids", tuple(ids))
        if not _is_bool(self.ignore_eos):
            raise InvalidSamplingParams(
                f"ignore_eos must be True or False, got {self.ignore_eos!r}", param="ignore_eos"
            )
        if self.logprobs is not None and (
            not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS
        ):
            raise InvalidSamplingParams(
                f"logprobs must be None or an integer from 0 to {MAX_LOGPROBS}, "
                f"got {self.logprobs!r}",
                param="logprobs",
            )
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(
            self,
            "_stop_prefixes",
            frozenset(s[:n] for s in self.stop for n in range(1, len(s))),
        )

    @property
    def greedy(self) -> bool:
        """True when the argmax is taken (temperature 0, or below 1e-5 where scaling by it
        would overflow)."""
        return self.temperature < _GREEDY_BELOW

    def held_back(self, text: str) -> int:
        """How many trailing characters of ``text`` could begin a stop string (kept unsent)."""
        prefixes = self._stop_prefixes
        if not prefixes:
            return 0
        longest = min(len(text), max(len(p) for p in prefixes))
        for n in range(longest, 0, -1):
            if text[-n:] in prefixes:
                return n
        return 0

    def find_stop(self, text: str) -> int:
        """Index in ``text`` where the earliest stop string begins, or -1."""
        found = -1
        for s in self.stop:
            index = text.find(s)
            if index != -1 and (found == -1 or index < found):
                found = index
        return found


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The chosen token's log-probability and the ``top`` most likely alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class SampleOutput:
    """One row's sampled token and, when asked for, its logprobs."""

    token_id: int
    logprob: TokenLogprob | None


def _cut(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """``logits`` [r, V] with tokens outside each row's top-k and top-p set to -inf."""
    vocab = logits.shape[1]
    sorted_logits, order = logits.sort(dim=1, descending=True)
    ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_k], device=logits.device)
    ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
    sorted_logits = sorted_logits.masked_fill(ranks >= ks.unsqueeze(1), -math.inf)
    ps = torch.tensor(top_p, dtype=logits.dtype, device=logits.device).unsqueeze(1)
    probs = sorted_logits.softmax(dim=1)
    before = probs.cumsum(dim=1) - probs  # mass of the more likely tokens
    sorted_logits = sorted_logits.masked_fill(before >= ps, -math.inf)  # the first always stays
    return torch.full_like(logits, -math.inf).scatter(1, order, sorted_logits)


def _draw(scaled: torch.Tensor, generators: Sequence[torch.Generator]) -> list[int]:
    """One token per row of ``scaled`` logits, by inverse transform sampling: each row's own
    generator draws one uniform number (so a row's token never depends on the other rows), and
    one batched cumulative sum and search picks every row's token."""
    bad = (
        torch.isnan(scaled).any(dim=1)
        | (scaled == math.inf).any(dim=1)
        | (scaled == -math.inf).all(dim=1)
    )
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"the logits of row(s) {rows} are not finite numbers: nothing to sample")
    cdf = scaled.double().softmax(dim=1).cumsum(dim=1)
    device = scaled.device
    uniform = torch.cat(
        [torch.rand(1, generator=g, dtype=torch.float64, device=device) for g in generators]
    )
    targets = (uniform * cdf[:, -1]).unsqueeze(1)
    picked = torch.searchsorted(cdf, targets, right=True).squeeze(1)
    # rounding can put the target at the very end: take the row's last token of non-zero mass
    overflow = picked >= scaled.shape[1]
    if bool(overflow.any()):
        last = scaled.shape[1] - 1 - (scaled.flip(1) > -math.inf).int().argmax(dim=1)
        picked = torch.where(overflow, last, picked)
    return [int(t) for t in picked.tolist()]


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
) -> list[SampleOutput]:
    """One token per row of ``logits`` [R, V] (float32), row ``i`` by ``params[i]``."""
    rows = logits.shape[0]
    if len(params) != rows or len(generators) != rows:
        raise ValueError(
            f"sample() needs one SamplingParams and one generator per row: {rows} rows, "
            f"{len(params)} params, {len(generators)} generators"
        )
    chosen: list[int] = [0] * rows
    greedy = [i for i, p in enumerate(params) if p.greedy]
    if greedy:
        picked = logits[greedy].argmax(dim=1).tolist() if len(greedy) < rows else None
        if picked is None:
            picked = logits.argmax(dim=1).tolist()
        for i, token in zip(greedy, picked, strict=True):
            chosen[i] = token
    drawn = [i for i, p in enumerate(params) if not p.greedy]
    if drawn:
        scaled = logits[drawn] / torch.tensor(
            [params[i].temperature for i in drawn], dtype=logits.dtype, device=logits.device
        ).unsqueeze(1)
        if any(params[i].top_k or params[i].top_p < 1.0 for i in drawn):
            scaled = _cut(
                scaled, [params[i].top_k for i in drawn], [params[i].top_p for i in drawn]
            )
        for row, token in enumerate(_draw(scaled, [generators[i] for i in drawn])):
            chosen[drawn[row]] = token
    want = [i for i, p in enumerate(params) if p.logprobs is not None]
    logprobs: list[TokenLogprob | None] = [None] * rows
    if want:
        logp = logits[want].log_softmax(dim=1)
        ids = torch.tensor([chosen[i] for i in want], device=logits.device).unsqueeze(1)
        picked_lp = logp.gather(1, ids).squeeze(1).tolist()
        most = max(params[i].logprobs or 0 for i in want)
        top_v: list[list[float]] = []
        top_i: list[list[int]] = []
        if most:
            values, indices = logp.topk(most, dim=1)
            top_v, top_i = values.tolist(), indices.tolist()
        for row, i in enumerate(want):
            n = params[i].logprobs or 0
            top = tuple(zip(top_i[row][:n], top_v[row][:n], strict=True)) if n else ()
            logprobs[i] = TokenLogprob(chosen[i], picked_lp[row], top)
    return [SampleOutput(chosen[i], logprobs[i]) for i in range(rows)]
