"""Batching policy and execution options: frozen value objects, validated on construction."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from typing import Any, Literal

import attrs

__all__ = ["BatchPolicy", "ExecutionOptions", "default_buckets"]

PadTo = Literal["auto", "longest", "bucket"]
Autocast = Literal["bf16", "fp16"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _optional_positive_int(
    inst: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None:
        _positive_int(inst, attribute, value)  # type: ignore[arg-type]


def _non_negative_float(_inst: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def _fraction(_inst: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ValueError(f"{attribute.name} must be a number from 0 to 1, got {value!r}")


def _to_buckets(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"buckets must be a sequence of lengths, got {type(value).__name__}")
    return tuple(value)


def _buckets(
    _inst: object, _attribute: attrs.Attribute[tuple[int, ...] | None], value: object
) -> None:
    if value is None:
        return
    assert isinstance(value, tuple)  # the converter made it one
    if not value:
        raise ValueError("buckets must hold at least one length (or be None for automatic ones)")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"bucket lengths must be integers >= 1, got {item!r}")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(f"bucket lengths must be strictly increasing, got {list(value)}")


def _one_of(*choices: object) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {list(choices)}, got {value!r}")

    return check


@attrs.frozen
class BatchPolicy:
    """How one model's requests are queued and grouped into batches.

    - ``max_batch_size``: most requests in one batch.
    - ``max_batch_tokens``: token budget per batch, counted as padded tokens (longest request
      times count, as TEI counts them; the bucket length when padding to buckets). ``None``
      means no budget. A request that cannot fit the budget even alone is refused at once.
    - ``max_delay``: the longest a queued request is passed over in favour of fuller batches of
      other lengths (then it goes first). It trades tail latency for batch size under load; it
      is never a wait: the runtime never idles the device to let a batch fill (a request arriving
      at an idle device is dispatched at once, and batches grow only while the device is busy).
    - ``buckets``: sequence-length bucket bounds; a batch only groups requests of one bucket
      (less padding, stable shapes). ``None`` derives them from the adapter's ``max_length``.
    - ``pad_to``: pad a batch to its ``"longest"`` request or to its ``"bucket"`` bound (stable
      shapes, needed for CUDA graphs); ``"auto"`` pads to the bucket when CUDA graphs are on.
    - ``max_queue``: bound on queued requests; beyond it :class:`Overloaded` is raised at once.
    - ``aging``: priority levels a waiting request gains per second, so nothing starves.
    - ``age_window``: which of the chosen bucket's requests join its batch, as a share of the
      wait of the batch's most urgent request (its head): a request joins when it is at most
      ``age_window * aging * head_wait`` priority levels less urgent than the head (with equal
      priorities: when it has waited at least ``(1 - age_window)`` times as long), or when it
      arrived within one batch time (the model's recent mean compute time per batch) of the
      head, so that a group admitted together is never split. Fresher ones wait for that
      bucket's next batch. ``1.0`` takes every queued request of the bucket (no window), as
      does the model's first batch; ``0.0`` leaves only the batch-time grace. See below.

    Aging across buckets bounds the tail. The next batch goes to the bucket of the most urgent
    request (aged priority; the oldest one at equal priorities) once that request has waited
    ``max_delay``, so no bucket is passed over for more than about one batch of each other
    bucket, however sparse it is. Were each batch to take every queued request of its bucket,
    a request arriving just before its bucket runs would wait almost nothing and one arriving
    just after would wait a whole round of all the other buckets: waits would spread evenly from
    zero to a round, the slowest about twice the mean. ``age_window`` leaves the fresh ones for
    the bucket's next batch, when they are among the oldest, so waits even out close to
    arrival order while batches stay grouped by length. Under a burst every request has waited
    about as long as the head, so batches stay full.
    """

    max_batch_size: int = attrs.field(default=32, validator=_positive_int)
    max_batch_tokens: int | None = attrs.field(default=None, validator=_optional_positive_int)
    max_delay: float = attrs.field(default=0.05, validator=_non_negative_float)
    buckets: tuple[int, ...] | None = attrs.field(
        default=None, converter=_to_buckets, validator=_buckets
    )
    pad_to: PadTo = attrs.field(default="auto", validator=_one_of("auto", "longest", "bucket"))
    max_queue: int = attrs.field(default=1024, validator=_positive_int)
    aging: float = attrs.field(default=1.0, validator=_non_negative_float)
    age_window: float = attrs.field(default=0.5, validator=_fraction)

    def resolved_buckets(self, max_length: int | None) -> tuple[int, ...] | None:
        """The bucket bounds in force for an adapter whose longest input is ``max_length``."""
        if self.buckets is not None:
            if max_length is not None:
                kept = tuple(b for b in self.buckets if b < max_length)
                return (*kept, max_length)
            return self.buckets
        if max_length is None:
            return None
        return default_buckets(max_length)


def default_buckets(max_length: int) -> tuple[int, ...]:
    """Bucket bounds up to ``max_length``: steps of 16 to 128, of 32 to 256, then of 64.

    Narrow steps where most text lands keep padding waste near that of length-sorted batches;
    the last bound is always ``max_length`` itself.
    """
    if not _is_int(max_length) or max_length < 1:
        raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
    bounds: list[int] = []
    length = 16
    while length < max_length:
        bounds.append(length)
        length += 16 if length < 128 else 32 if length < 256 else 64
    bounds.append(max_length)
    return tuple(bounds)


def bucket_index(buckets: tuple[int, ...], cost: int) -> int | None:
    """Index of the smallest bucket that holds ``cost``, or None when it fits none."""
    index = bisect.bisect_left(buckets, cost)
    return index if index < len(buckets) else None


@attrs.frozen
class ExecutionOptions:
    """Where and how one model runs.

    - ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
      or any other torch device string.
    - ``autocast``: ``"bf16"`` or ``"fp16"`` mixed precision for the forward pass (``None``: off).
    - ``cuda_graphs``: capture one CUDA graph per (batch size, bucket) and replay it (CUDA only;
      the adapter's forward must be capturable; implies padding to buckets).
    - ``warmup``: run each bucket once at start (``None``: on CUDA only). Needs the adapter's
      ``dummy_item``.
    - ``pin_memory``: stage host-to-device copies in pinned buffers (CUDA only).
    - ``oom_recovery_batches``: after a CUDA out-of-memory error lowered the batch limit, raise it
      again step by step every this many successful batches.
    """

    device: str = attrs.field(default="auto")
    autocast: Autocast | None = attrs.field(default=None, validator=_one_of(None, "bf16", "fp16"))
    cuda_graphs: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    warmup: bool | None = attrs.field(default=None)
    pin_memory: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    oom_recovery_batches: int = attrs.field(default=200, validator=_positive_int)

    @device.validator
    def _check_device(self, _attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"device must be a non-empty torch device string, got {value!r}")

    @warmup.validator
    def _check_warmup(self, _attribute: attrs.Attribute[bool | None], value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"warmup must be True, False or None, got {value!r}")
