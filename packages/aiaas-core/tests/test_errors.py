from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiaas_core
from aiaas_core import (
    Actor,
    AiaasError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    InternalError,
    LockedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceUnavailableError,
    ValidationError,
    as_aiaas_error,
    error_body,
    error_response,
    problem_details,
    request_context,
)

TREE = [
    (AiaasError, "INTERNAL_ERROR", 500),
    (ConfigError, "CONFIG_INVALID", 500),
    (BadRequestError, "REQUEST_INVALID", 400),
    (PayloadTooLargeError, "REQUEST_TOO_LARGE", 413),
    (ValidationError, "VALIDATION_FAILED", 422),
    (AuthenticationError, "AUTH_UNAUTHENTICATED", 401),
    (PermissionDeniedError, "AUTH_ROLE_DENIED", 403),
    (NotFoundError, "NOT_FOUND", 404),
    (ConflictError, "CONFLICT", 409),
    (LockedError, "RESOURCE_LOCKED", 423),
    (RateLimitedError, "RATE_LIMITED", 429),
    (ServiceUnavailableError, "SERVICE_UNAVAILABLE", 503),
    (InternalError, "INTERNAL_ERROR", 500),
]


@pytest.mark.parametrize(("cls", "code", "status"), TREE)
def test_tree_codes_and_statuses_are_stable(cls: type[AiaasError], code: str, status: int) -> None:
    err = cls()
    assert (err.code, err.status) == (code, status)
    assert issubclass(cls, AiaasError)
    assert err.message == cls.title


@pytest.mark.parametrize(("cls", "code", "status"), TREE)
def test_every_error_renders_a_schema_valid_body(
    cls: type[AiaasError], code: str, status: int, error_schema: dict[str, object]
) -> None:
    body = error_body(cls("something went wrong", detail="more context"))
    jsonschema.validate(body, error_schema, format_checker=jsonschema.FormatChecker())
    assert body["code"] == code
    assert body["error"] == "something went wrong"
    assert body["detail"] == "more context"


def test_unknown_exception_becomes_generic_internal_error_without_its_text(
    error_schema: dict[str, object],
) -> None:
    secret = "password=hunter2 at /srv/app/db.py line 12"
    exc = RuntimeError(secret)
    err = as_aiaas_error(exc)
    assert isinstance(err, InternalError)
    body = error_body(exc)
    jsonschema.validate(body, error_schema)
    assert body["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in json.dumps(body)
    status, _headers, raw = error_response(exc, problem=True)
    assert status == 500
    assert b"hunter2" not in raw
    assert b"Traceback" not in raw


def test_body_takes_ids_and_actor_from_the_request_context(error_schema: dict[str, object]) -> None:
    actor = Actor("user-42", ("app-team",))
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with request_context("req-12345678", trace_id=trace, actor=actor):
        body = error_body(PermissionDeniedError("not allowed to read environments"))
    jsonschema.validate(body, error_schema)
    assert body["request_id"] == "req-12345678"
    assert body["trace_id"] == trace
    assert body["actor"] == {"subject": "user-42", "roles": ["app-team"]}


def test_explicit_arguments_win_over_context() -> None:
    with request_context("req-aaaaaaaa"):
        body = error_body(
            NotFoundError(),
            request_id="req-bbbbbbbb",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        )
    assert body["request_id"] == "req-bbbbbbbb"
    assert body["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert body["timestamp"] == "2026-01-02T01:04:05Z"


def test_outside_any_request_ids_are_still_present() -> None:
    body = error_body(ConflictError())
    assert len(body["request_id"]) == 32
    assert body["trace_id"] == "0" * 32
    assert "actor" not in body


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        error_body(ConflictError(), now=datetime(2026, 1, 1))  # noqa: DTZ001


def test_problem_details_rfc7807_shape() -> None:
    doc = problem_details(
        NotFoundError("environment 'qa' does not exist", detail="known: development, staging"),
        instance="/v1/environments/qa",
        request_id="req-12345678",
    )
    assert doc["type"] == "https://errors.aiaas.dev/not-found"
    assert doc["title"] == "Not found"
    assert doc["status"] == 404
    assert doc["detail"] == "environment 'qa' does not exist: known: development, staging"
    assert doc["instance"] == "/v1/environments/qa"
    assert doc["code"] == "NOT_FOUND"
    assert doc["request_id"] == "req-12345678"
    datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))


def test_error_response_headers_and_content_types() -> None:
    status, headers, body = error_response(RateLimitedError("slow down", retry_after=2.1))
    h = dict(headers)
    assert status == 429
    assert h[b"content-type"] == b"application/json"
    assert h[b"retry-after"] == b"3"  # rounded up: never retry early
    assert int(h[b"content-length"]) == len(body)
    assert json.loads(body)["code"] == "RATE_LIMITED"

    status, headers, _ = error_response(AuthenticationError(), problem=True)
    h = dict(headers)
    assert status == 401
    assert h[b"content-type"] == b"application/problem+json"
    assert h[b"www-authenticate"].startswith(b"Bearer")


def test_instance_code_refinement_and_repr() -> None:
    err = AuthenticationError("API key revoked", code="API_KEY_REVOKED")
    assert err.code == "API_KEY_REVOKED"
    assert AuthenticationError.code == "AUTH_UNAUTHENTICATED"
    assert repr(err) == "AuthenticationError(code='API_KEY_REVOKED', message='API key revoked')"
    assert str(err) == "API key revoked"


def test_retry_after_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="retry_after"):
        ServiceUnavailableError(retry_after=-1)
    assert "Retry-After" not in ServiceUnavailableError().headers


def test_config_error_lists_every_problem() -> None:
    err = ConfigError(problems=["a: expected an integer", "b: required"])
    assert err.problems == ("a: expected an integer", "b: required")
    assert "2 configuration problem(s)" in err.message
    assert "a: expected an integer" in err.message
    assert ConfigError().message == "Invalid configuration"


@given(
    message=st.text(max_size=200),
    detail=st.one_of(st.none(), st.text(max_size=200)),
    status_cls=st.sampled_from([cls for cls, _, _ in TREE]),
)
def test_any_message_renders_valid_json_body(
    message: str, detail: str | None, status_cls: type[AiaasError]
) -> None:
    status, _headers, raw = error_response(status_cls(message, detail=detail))
    body = json.loads(raw)
    assert status == status_cls.status
    assert body["error"] == message
    assert set(body) <= {"error", "code", "detail", "request_id", "trace_id", "actor", "timestamp"}


def test_exports_resolve_lazily() -> None:
    assert aiaas_core.NotFoundError is NotFoundError
    assert datetime.now(UTC)  # keeps the UTC import honest for ruff
