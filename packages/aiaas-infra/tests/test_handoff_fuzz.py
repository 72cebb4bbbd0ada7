"""Schemathesis fuzzes the live handoff API from its own /openapi.json: no 5xx, and every
response conforms (status code, content type, headers, body schema), for valid and invalid
inputs and for each caller role. Deterministic (derandomized) and bounded (a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import schemathesis
from handoff_support import Keys, LogCapture, handoff_server
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from aiaas_infra import PlatformSpec, spec_from_dict, spec_to_dict

CALLERS = ("platform-engineer", "app-team", "read-only", None)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def base(spec: PlatformSpec, keys: Keys) -> Iterator[str]:
    data = spec_to_dict(spec)
    data["environments"]["staging"]["maintenance"] = {"locked": True, "reason": "upgrade"}
    with handoff_server(spec_from_dict(data), keys, LogCapture()) as url:
        yield url


@pytest.fixture(scope="module")
def operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    # The callers' real API keys are sent; malformed credentials are covered by test_handoff_api.
    schema.config.generation.update(with_security_parameters=False)
    # Valid input may still meet a denial (403 for a role the caller may not hand out), a
    # missing key (401) or a maintenance lock (423): documented answers, not rejections of it.
    schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "401", "403", "423"]
    ops: list[Any] = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert {op.path for op in ops} == {
        "/v1/environments",
        "/v1/environments/{environment}/handoff",
    }
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz(operations: list[Any], base: str, keys: Keys, mode: GenerationMode) -> None:
    seen: dict[int, int] = {}

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/v1/environments":
            continue  # no parameters: nothing can be made invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=30,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            for caller in CALLERS:
                headers = keys.headers(caller) if caller is not None else {}
                response = case.call_and_validate(base_url=base, headers=headers)
                assert response.status_code < 500
                seen[response.status_code] = seen.get(response.status_code, 0) + 1

        run()
    # The fuzzing reached the interesting answers, not only 401s.
    assert 401 in seen
    if mode is GenerationMode.POSITIVE:
        assert {200, 403, 423} <= set(seen)
    else:
        assert {400, 404} <= set(seen)


def test_generated_credentials_meet_the_schemas_answers(base: str) -> None:
    """Schemathesis's own credentials (any string in Authorization or X-API-Key, empty, both
    headers at once), with its default checks and expected statuses: a request the served schema
    allows is never answered 400 (ST202); a malformed credential is a rejected one, 401."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    assert schema.config.generation.with_security_parameters
    seen: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(
            max_examples=60,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call_and_validate(base_url=base)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        run()
    assert set(seen) == {401}


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"X-API-Key": ""}, "empty"),
        ({"Authorization": "Bearer two words"}, None),
        ({"X-API-Key": "not a token!"}, None),
        ({"Authorization": "Bearer aiaas_x", "X-API-Key": "aiaas_y"}, None),
    ],
)
def test_malformed_credentials_answer_401_with_their_code(
    base: str, headers: dict[str, str], detail: str | None
) -> None:
    response = httpx.get(f"{base}/v1/environments", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="aiaas"'
    body = response.json()
    # the same title as every other 401 of the platform (aiaas_core.AuthenticationError)
    assert (body["status"], body["title"], body["code"]) == (
        401,
        "Authentication required",
        "AUTH_HEADER_INVALID",
    )
    assert int(response.headers["content-length"]) == len(response.content)
    if detail is not None:
        assert detail in body["detail"]
    for value in headers.values():
        if value:
            assert value.removeprefix("Bearer ") not in response.text  # never echoed
