"""The typed outcomes: aiaas error tree, codes, statuses, headers, safe rendering."""

from __future__ import annotations

import pytest

from aiaas_core import (
    AiaasError,
    InternalError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
    ValidationError,
    error_body,
)
from aiaas_serving import (
    Cancelled,
    DeadlineExceeded,
    GatewayTimeoutError,
    InputTooLarge,
    InvalidInput,
    ModelError,
    ModelNotFound,
    Overloaded,
    ServingError,
    ShuttingDown,
)


@pytest.mark.parametrize(
    ("cls", "base", "code", "status"),
    [
        (Overloaded, RateLimitedError, "MODEL_OVERLOADED", 429),
        (DeadlineExceeded, GatewayTimeoutError, "DEADLINE_EXCEEDED", 504),
        (Cancelled, AiaasError, "REQUEST_CANCELLED", 499),
        (InputTooLarge, PayloadTooLargeError, "INPUT_TOO_LARGE", 413),
        (InvalidInput, ValidationError, "INPUT_INVALID", 422),
        (ModelError, InternalError, "MODEL_ERROR", 500),
        (ModelNotFound, NotFoundError, "MODEL_NOT_FOUND", 404),
        (ShuttingDown, ServiceUnavailableError, "SHUTTING_DOWN", 503),
    ],
)
def test_each_outcome_has_a_stable_code_and_status(cls, base, code, status) -> None:
    err = cls("what went wrong", model="m")
    assert isinstance(err, base)
    assert isinstance(err, ServingError)
    assert err.code == code
    assert err.status == status
    assert err.model == "m"
    assert err.message == "what went wrong"
    body = error_body(err, request_id="req-12345678", trace_id="0" * 32)
    assert body["code"] == code
    assert body["error"] == "what went wrong"


def test_gateway_timeout_is_a_504() -> None:
    err = GatewayTimeoutError()
    assert (err.code, err.status, err.message) == ("GATEWAY_TIMEOUT", 504, "Gateway timeout")


def test_retryable_outcomes_carry_retry_after_in_whole_seconds() -> None:
    assert Overloaded(retry_after=0.2).headers == {"Retry-After": "1"}
    assert Overloaded(retry_after=2.5).retry_after == 2.5
    assert Overloaded(retry_after=2.5).headers["Retry-After"] == "3"
    assert ShuttingDown(retry_after=4).headers == {"Retry-After": "4"}
    assert Overloaded().headers == {}
    with pytest.raises(ValueError, match="retry_after"):
        Overloaded(retry_after=-1)


def test_defaults_and_refined_codes() -> None:
    assert ModelError().message == "Model error"
    assert ModelError(code="MODEL_OUT_OF_MEMORY").code == "MODEL_OUT_OF_MEMORY"
    assert repr(Cancelled("gone")) == "Cancelled(code='REQUEST_CANCELLED', message='gone')"
    assert InputTooLarge().model is None
