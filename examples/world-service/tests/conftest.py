"""Fixtures: the error body schema (aiaas-core), an HMAC key, API keys and in-process telemetry."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiaas_core import (
    ApiKeyVerifier,
    HashKey,
    InMemoryApiKeyStore,
    KeyedHasher,
    error_response_schema,
)


@pytest.fixture(scope="session")
def error_validator() -> Callable[[Any], None]:
    import jsonschema

    return jsonschema.Draft7Validator(
        error_response_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate


class Keys:
    """An HMAC key and two issued API keys (admin, reader) with their env entries."""

    def __init__(self) -> None:
        self.hash_key = secrets.token_hex(32)
        hasher = KeyedHasher([HashKey.from_text("v1", self.hash_key)], "v1")
        verifier = ApiKeyVerifier(InMemoryApiKeyStore(), hasher)
        admin, admin_record = verifier.issue(subject="ops", roles=["admin"])
        reader, reader_record = verifier.issue(subject="dashboards", roles=["reader"])
        self.admin = admin.token
        self.reader = reader.token
        self.entries = [
            f"ops:{admin_record.key_id}:admin:{admin_record.digest}",
            f"dashboards:{reader_record.key_id}:reader:{reader_record.digest}",
        ]

    def env(self) -> dict[str, str]:
        return {
            "WORLD_SERVICE_API_KEY_HASH_KEY": self.hash_key,
            "WORLD_SERVICE_API_KEYS": ",".join(self.entries),
        }


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


class LogCapture(io.StringIO):
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture
def log_stream() -> LogCapture:
    return LogCapture()


@pytest.fixture
def telemetry(log_stream: LogCapture) -> Iterator[Any]:
    from aiaas_telemetry import load_profile, setup

    tel = setup(
        load_profile({"service_name": "world-service"}, environ={}),
        tracing=False,
        log_stream=log_stream,
    )
    yield tel
    tel.shutdown(timeout_s=1)
