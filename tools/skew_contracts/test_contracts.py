"""Contracts between the aiaas packages, checked in every combination of the skew matrix.

Error bodies of aiaas-db, aiaas-infra and aiaas-serving (through aiaas-core's ``error_body``)
against aiaas-core's error schema; the telemetry profile; the API key format; aiaas-db's usage
event columns; aiaas-telemetry's audit events as aiaas-db's audit log takes them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import os
import re
import secrets
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import aiaas_core

ROOT = Path(__file__).resolve().parents[2]
PROFILE_SCHEMA = (
    ROOT / "packages" / "aiaas-telemetry" / "tests" / "contracts" / "telemetry-profile.schema.json"
)
# Values for the required constructor parameters of public error classes, by annotation.
_SAMPLES: dict[str, Any] = {
    "str": "the skew contract check failed",
    "str | None": "the skew contract check failed",
    "Sequence[str]": ["the first problem", "the second problem"],
    "Sequence[int]": [1, 2],
    "int": 3,
    "float": 1.5,
    "float | None": 1.5,
}


# Public errors whose constructor takes the result of a real run, not plain values: their bodies
# are checked by their own package's tests.
_NOT_FROM_PLAIN_VALUES = frozenset({"ApplyError"})


_COLLECTION = re.compile(r"(Iterable|Sequence|list|tuple)\[[A-Za-z_.]+(, \.\.\.)?\]")


def _validator(schema: dict[str, Any]) -> Callable[[Any], None]:
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    return jsonschema.Draft7Validator(schema, format_checker=checker).validate


def _public_errors(module_name: str) -> list[type[aiaas_core.AiaasError]]:
    module = importlib.import_module(module_name)
    found = []
    for name in module.__all__:
        with warnings.catch_warnings():  # a deprecated name is still exported: still checked
            warnings.simplefilter("ignore", aiaas_core.AiaasDeprecationWarning)
            obj = getattr(module, name)
        is_error = isinstance(obj, type) and issubclass(obj, aiaas_core.AiaasError)
        if is_error and name not in _NOT_FROM_PLAIN_VALUES:
            found.append(obj)
    return found


def _instance(cls: type[aiaas_core.AiaasError]) -> aiaas_core.AiaasError:
    kwargs: dict[str, Any] = {}
    for param in inspect.signature(cls).parameters.values():
        if param.default is not inspect.Parameter.empty or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        annotation = str(param.annotation).replace("'", "")
        if annotation not in _SAMPLES and _COLLECTION.fullmatch(annotation):
            kwargs[param.name] = []  # a collection of the package's own problem records
            continue
        if annotation not in _SAMPLES:
            raise AssertionError(
                f"{cls.__module__}.{cls.__qualname__}: no sample value for the required "
                f"parameter {param.name}: {annotation}; add one to _SAMPLES"
            )
        kwargs[param.name] = _SAMPLES[annotation]
    return cls(**kwargs)


def test_installed_versions_are_the_combinations(expected_versions: dict[str, str]) -> None:
    installed = {name: importlib.metadata.version(name) for name in expected_versions}
    assert installed == expected_versions


@pytest.mark.parametrize(
    "module_name",
    [
        pytest.param("aiaas_db", marks=pytest.mark.aiaas_db),
        pytest.param("aiaas_infra", marks=pytest.mark.aiaas_infra),
        pytest.param("aiaas_serving", marks=pytest.mark.aiaas_serving),
        pytest.param("aiaas_telemetry", marks=pytest.mark.aiaas_telemetry),
    ],
)
def test_error_bodies_validate_against_the_error_schema(module_name: str) -> None:
    validate = _validator(aiaas_core.error_response_schema())
    errors = _public_errors(module_name)
    if module_name != "aiaas_telemetry":  # telemetry exports few (or no) error classes
        assert len(errors) >= 2, f"{module_name} exports {len(errors)} aiaas errors"
    request_id = "req-" + secrets.token_hex(8)
    for cls in errors:
        exc = _instance(cls)
        body = aiaas_core.error_body(exc, request_id=request_id)
        validate(body)
        assert body["request_id"] == request_id
        assert body["code"] == exc.code, cls.__qualname__
        problem = aiaas_core.problem_details(exc, request_id=request_id)
        assert problem["status"] == exc.status, cls.__qualname__
    validate(aiaas_core.error_body(RuntimeError("secret=hunter2 leaked")))
    assert "hunter2" not in json.dumps(aiaas_core.error_body(RuntimeError("secret=hunter2")))


@pytest.mark.aiaas_telemetry
def test_the_telemetry_profile_loads_and_validates(tmp_path: Path) -> None:
    from aiaas_telemetry import load_profile

    validate = _validator(json.loads(PROFILE_SCHEMA.read_text(encoding="utf-8")))
    document = {"service_name": "skew-contract"}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    for profile in (load_profile(document, environ={}), load_profile(path, environ={})):
        assert profile.service_name == "skew-contract"
        validate(profile.to_dict())
    env = {"AIAAS_TELEMETRY_PROFILE": str(path), "OTEL_SERVICE_NAME": "from-env"}
    assert load_profile(environ=env).service_name == "from-env"
    with pytest.raises(aiaas_core.ConfigError) as caught:
        load_profile({"service_name": "skew-contract", "no_such_section": {}}, environ={})
    assert caught.value.problems, "a bad profile names its problems"


async def test_an_issued_api_key_is_accepted_in_the_entry_format() -> None:
    hash_key = secrets.token_hex(32)
    hasher = aiaas_core.KeyedHasher([aiaas_core.HashKey.from_text("v1", hash_key)], "v1")
    issuer = aiaas_core.ApiKeyVerifier(aiaas_core.InMemoryApiKeyStore(), hasher)
    key, record = issuer.issue(subject="ops", roles=["admin", "reader"])
    assert aiaas_core.parse_api_key(key.token).key_id == record.key_id
    entry = f"ops:{record.key_id}:admin+reader:{record.digest}"
    parsed = aiaas_core.parse_api_key_entry(entry)
    assert (parsed.key_id, parsed.digest) == (record.key_id, record.digest)
    # A service that only knows the entry (its environment) and the hash key accepts the key.
    service = aiaas_core.ApiKeyVerifier(
        aiaas_core.InMemoryApiKeyStore([parsed]),
        aiaas_core.KeyedHasher([aiaas_core.HashKey.from_text("v1", hash_key)], "v1"),
        touch_interval=None,
    )
    actor = await service.verify(key.token)
    assert (actor.subject, set(actor.roles)) == ("ops", {"admin", "reader"})
    garbled = key.token[:-1] + ("A" if key.token[-1] != "A" else "B")
    with pytest.raises(aiaas_core.AuthenticationError):
        await service.verify(garbled)


@pytest.mark.aiaas_db
def test_seeded_api_keys_have_the_core_format() -> None:
    import aiaas_db

    token = aiaas_db.local_dev_api_key()
    key = aiaas_core.parse_api_key(token)
    assert key.token == token
    derived = aiaas_db.derive_api_key("s" * 32, "acme-pro", "ci")
    assert aiaas_core.parse_api_key(derived.token).key_id == derived.key_id
    digest = aiaas_db.seed_api_key_hasher().digest(key.secret)
    assert aiaas_core.parse_api_key_entry(f"local:{key.key_id}:admin:{digest}").digest == digest


@pytest.mark.aiaas_telemetry
def test_telemetry_redacts_api_keys() -> None:
    from aiaas_telemetry import is_secret_key, redact

    token = aiaas_core.generate_api_key().token
    assert is_secret_key("authorization")
    assert is_secret_key("x-api-key")
    assert token not in json.dumps(redact({"headers": {"authorization": f"Bearer {token}"}}))


@pytest.mark.aiaas_db
def test_usage_event_columns_are_what_the_writer_writes() -> None:
    from aiaas_db import USAGE_EVENT_COLUMNS, UsageEvent, UsageWriter

    event = UsageEvent(
        occurred_at=datetime.now(UTC),
        organization_id=uuid.uuid4(),
        api_key_id=uuid.uuid4(),
        model_id=uuid.uuid4(),
        request_id="req-" + secrets.token_hex(8),
        tokens_consumed=12,
        latency_ms=7,
        status="success",
        error_code=None,
        region="us-ord",
        cost_usd=Decimal("0.0012"),
    )
    row = event.row()
    assert len(USAGE_EVENT_COLUMNS) == len(set(USAGE_EVENT_COLUMNS)) == len(row)
    assert dict(zip(USAGE_EVENT_COLUMNS, row, strict=True)) == {
        column: getattr(event, column) for column in USAGE_EVENT_COLUMNS
    }
    writer = UsageWriter("postgresql://127.0.0.1:1/never-connected", buffer_limit=1)
    assert writer.record(event) is True
    assert writer.record(event) is False  # full: dropped and counted, never raised
    assert (writer.stats.accepted, writer.stats.pending, writer.stats.dropped_buffer_full) == (
        2,
        1,
        1,
    )


@pytest.mark.aiaas_db
@pytest.mark.aiaas_telemetry
@pytest.mark.parametrize("allowed", [True, False])
def test_telemetry_audit_events_fit_the_db_audit_log(allowed: bool) -> None:
    import aiaas_db
    from aiaas_telemetry import AuditEvent

    actor = aiaas_core.Actor("ops@example.com", ["admin"], kind="service")
    with aiaas_core.request_context(request_id="req-" + secrets.token_hex(8)):
        event = AuditEvent.authorization(
            allowed=allowed,
            action="config:read",
            resource="/admin/config",
            reason="rule admins-read-config",
            actor=actor,
            route="/admin/config",
        )
    assert event.actor is not None
    assert event.resource is not None
    hasher = aiaas_core.KeyedHasher([aiaas_core.HashKey.generate("v1")], "v1")
    protector = aiaas_db.PiiProtector(hasher, {"k1": os.urandom(32)}, "k1")
    row = aiaas_db.AuditRow.build(
        actor_type=event.actor.kind,
        actor=event.actor.subject,
        action=f"{event.type}.{event.outcome}",
        target=event.resource,
        protector=protector,
        metadata={"action": event.action, "reason": event.reason, **dict(event.attributes)},
        request_id=event.request_id,
        occurred_at=event.timestamp,
    )
    assert row.request_id == event.request_id
    assert row.occurred_at == event.timestamp
    assert json.loads(row.metadata_json)["route"] == "/admin/config"
    revealed = aiaas_db.reveal_actor(
        protector,
        actor_id=row.actor_id,
        actor_ciphertext=row.actor_ciphertext,
        actor_key_version=row.actor_key_version,
    )
    assert revealed == "ops@example.com"
