"""The error body's JSON Schema ships with aiaas-core and matches what error_body renders."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from aiaas_core import (
    NotFoundError,
    RateLimitedError,
    error_body,
    error_response_schema,
)


def test_the_schema_is_the_packaged_file() -> None:
    packaged = resources.files("aiaas_core") / "contracts" / "error-response.schema.json"
    assert packaged.is_file()
    assert error_response_schema() == json.loads(packaged.read_text(encoding="utf-8"))


def test_the_schema_is_a_valid_draft_7_schema_for_the_error_body() -> None:
    schema = error_response_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert set(schema["required"]) == {"error", "code", "request_id", "trace_id", "timestamp"}
    assert schema["additionalProperties"] is False


def test_each_call_returns_an_independent_copy() -> None:
    first = error_response_schema()
    first["required"].append("mutated")
    first["properties"].clear()
    second = error_response_schema()
    assert "mutated" not in second["required"]
    assert "error" in second["properties"]
    assert first is not second


@pytest.mark.parametrize("exc", [NotFoundError("No such thing"), RateLimitedError("Slow down")])
def test_rendered_bodies_validate(exc: Exception) -> None:
    validator = jsonschema.Draft7Validator(
        error_response_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    validator.validate(error_body(exc))


def test_the_schema_rejects_a_body_with_unknown_or_missing_fields() -> None:
    validator = jsonschema.Draft7Validator(error_response_schema())
    body = error_body(NotFoundError("No such thing"))
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        validator.validate({**body, "stack": "Traceback (most recent call last)"})
    missing = {k: v for k, v in body.items() if k != "request_id"}
    with pytest.raises(jsonschema.ValidationError, match="request_id"):
        validator.validate(missing)
