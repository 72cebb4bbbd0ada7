"""BatchPolicy and ExecutionOptions validation, and padding buckets."""

from __future__ import annotations

import attrs
import pytest

from aiaas_serving import BatchPolicy, ExecutionOptions, default_buckets
from aiaas_serving._policy import bucket_index


def test_defaults() -> None:
    policy = BatchPolicy()
    assert (policy.max_batch_size, policy.max_batch_tokens, policy.max_queue) == (32, None, 1024)
    assert policy.pad_to == "auto"
    assert policy.age_window == 0.5
    options = ExecutionOptions()
    assert (options.device, options.autocast, options.cuda_graphs) == ("auto", None, False)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_batch_size = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_batch_size", 0, "max_batch_size must be an integer >= 1"),
        ("max_batch_size", True, "max_batch_size must be an integer"),
        ("max_batch_tokens", 0, "max_batch_tokens must be an integer >= 1"),
        ("max_delay", -0.1, "max_delay must be a finite number >= 0"),
        ("max_delay", float("inf"), "max_delay must be a finite number"),
        ("aging", "fast", "aging must be a finite number"),
        ("age_window", 1.5, "age_window must be a number from 0 to 1"),
        ("age_window", -0.1, "age_window must be a number from 0 to 1"),
        ("age_window", float("nan"), "age_window must be a number from 0 to 1"),
        ("age_window", False, "age_window must be a number from 0 to 1"),
        ("age_window", "half", "age_window must be a number from 0 to 1"),
        ("max_queue", 1.5, "max_queue must be an integer"),
        ("pad_to", "middle", "pad_to must be one of"),
        ("buckets", (), "at least one length"),
        ("buckets", (8, 8), "strictly increasing"),
        ("buckets", (0, 8), "integers >= 1"),
    ],
)
def test_batch_policy_rejects_bad_values(field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(**{field: value})


def test_buckets_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match="sequence of lengths"):
        BatchPolicy(buckets="16,32")  # type: ignore[arg-type]
    assert BatchPolicy(buckets=[8, 16]).buckets == (8, 16)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "", "non-empty torch device string"),
        ("autocast", "fp8", "autocast must be one of"),
        ("cuda_graphs", "yes", "must be <class 'bool'>"),
        ("warmup", 1, "warmup must be True, False or None"),
        ("oom_recovery_batches", 0, "oom_recovery_batches must be an integer >= 1"),
    ],
)
def test_execution_options_reject_bad_values(field, value, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        ExecutionOptions(**{field: value})


def test_default_buckets_are_narrow_where_text_lands() -> None:
    assert default_buckets(256) == (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)
    assert default_buckets(512)[-4:] == (320, 384, 448, 512)
    assert default_buckets(100) == (16, 32, 48, 64, 80, 96, 100)
    assert default_buckets(8) == (8,)
    with pytest.raises(ValueError, match="max_length"):
        default_buckets(0)


def test_resolved_buckets_follow_the_adapter_limit() -> None:
    assert BatchPolicy().resolved_buckets(None) is None
    assert BatchPolicy().resolved_buckets(48) == (16, 32, 48)
    assert BatchPolicy(buckets=(8, 64, 512)).resolved_buckets(100) == (8, 64, 100)
    assert BatchPolicy(buckets=(8, 64)).resolved_buckets(None) == (8, 64)


def test_bucket_index_finds_the_smallest_bucket_that_holds_a_length() -> None:
    buckets = (4, 8, 16)
    assert [bucket_index(buckets, n) for n in (0, 4, 5, 16, 17)] == [0, 0, 1, 2, None]
