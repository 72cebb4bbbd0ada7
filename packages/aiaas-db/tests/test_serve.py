"""The schema management API for real (PostgreSQL, uvicorn, httpx), checked against the contract."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from conftest import CONTRACTS_DIR, V1, V2, V3, SetWriter
from serve_support import Contract, Keys, free_port, live_server, make_telemetry, wait_for

from aiaas_core import ValidationError
from aiaas_db import DirectorySource, LocalPostgres, Migrator
from aiaas_db.cli._main import cli
from aiaas_db.migrations._lock import AdvisoryLock, lock_keys
from aiaas_db.platform._classification import (
    Classification,
    ClassifiedEntity,
    ClassifiedField,
    load_classification,
)
from aiaas_db.platform._components import platform_source
from aiaas_db.server._api import SchemaApi
from aiaas_db.server._auth import schema_api_policy
from aiaas_db.server._catalog import _classify, entity_name
from aiaas_db.server._runs import RollupRequest, RollupTrigger, default_rollup_trigger
from aiaas_telemetry import Telemetry

APPLY = "/v1/schema/migrations/apply"
ROLLBACK = "/v1/schema/migrations/rollback"
STATUS = "/v1/schema/migrations/status/{runId}"
ENTITIES = "/v1/schema/entities"
ROLLUP = "/v1/analytics/rollups/run"
GATE = 4242  # an advisory lock the tests hold to keep a change set (or rollup) running
A1 = 202401010100


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(CONTRACTS_DIR)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    tel = make_telemetry()
    yield tel
    tel.shutdown(timeout_s=1)


@pytest.fixture
def schema_sets(tmp_path: Path) -> dict[str, SetWriter]:
    """Operational: organizations <- users (FK), usage_events (no FK); analytics: a rollup."""
    ops = SetWriter(tmp_path / "operational")
    ops.add(
        V1,
        "organizations",
        "CREATE TABLE organizations (organization_id uuid PRIMARY KEY, slug text NOT NULL);\n"
        "COMMENT ON TABLE organizations IS 'Tenants of the platform';\n",
        "DROP TABLE organizations;\n",
    )
    ops.add(
        V2,
        "users",
        "CREATE TABLE users (user_id uuid PRIMARY KEY, organization_id uuid NOT NULL "
        "CONSTRAINT fk_users_organization_id REFERENCES organizations, email_digest text NOT "
        "NULL, role text);\n"
        "INSERT INTO organizations VALUES (gen_random_uuid(), 'acme');\n",
        "DROP TABLE users;\nDELETE FROM organizations WHERE slug = 'acme';\n",
    )
    ops.add(
        V3,
        "usage_events",
        "CREATE TABLE usage_events (usage_event_id uuid NOT NULL, organization_id uuid NOT "
        "NULL, tokens_consumed bigint NOT NULL, cost_usd numeric(14,8));\n",
        "DROP TABLE usage_events;\n",
    )
    ana = SetWriter(tmp_path / "analytics")
    ana.add(
        A1,
        "hourly",
        "CREATE TABLE analytics_hourly_rollups (analytics_hourly_rollup_id bigint GENERATED "
        "ALWAYS AS IDENTITY PRIMARY KEY, organization_id uuid NOT NULL);\n",
        "DROP TABLE analytics_hourly_rollups;\n",
    )
    return {"operational": ops, "analytics": ana}


def make_api(db_url: str, sets: dict[str, SetWriter], **kwargs: Any) -> SchemaApi:
    if kwargs.pop("platform", False):
        return SchemaApi(db_url, **kwargs)  # the platform's own change sets
    sources = {name: DirectorySource(writer.root) for name, writer in sets.items()}
    return SchemaApi(db_url, sources=sources, **kwargs)


@pytest.fixture
def serve(
    db_url: str, schema_sets: dict[str, SetWriter], keys: Keys, telemetry: Telemetry
) -> Iterator[Callable[..., Any]]:
    """Start a live server for a SchemaApi built with the given keyword arguments."""
    stack: list[Any] = []

    def start(**kwargs: Any) -> tuple[httpx.Client, SchemaApi]:
        api = make_api(db_url, schema_sets, **kwargs)
        ctx = live_server(api, keys, telemetry)
        base = ctx.__enter__()
        stack.append(ctx)
        client = httpx.Client(base_url=base, timeout=30)
        stack.append(client)
        return client, api

    yield start
    for item in reversed(stack):
        if isinstance(item, httpx.Client):
            item.close()
        else:
            item.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(
    pg: LocalPostgres, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, SchemaApi]]:
    """One server for the tests that start no run (auth, validation): no rollup engine."""
    name = f"serve_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    root = tmp_path_factory.mktemp("shared-sets")
    ops = SetWriter(root / "operational")
    ops.add(
        V1,
        "orgs",
        "CREATE TABLE organizations (organization_id uuid PRIMARY KEY);\n",
        "DROP TABLE organizations;\n",
    )
    api = SchemaApi(
        url,
        sources={"operational": DirectorySource(ops.root), "analytics": DirectorySource(ops.root)},
        rollups=None,
    )
    tel = make_telemetry()
    try:
        with live_server(api, keys, tel) as base, httpx.Client(base_url=base, timeout=30) as c:
            yield c, api
    finally:
        tel.shutdown(timeout_s=1)
        pg.drop_database(name)


def submit(client: httpx.Client, keys: Keys, path: str, body: Any, who: str = "pe") -> Any:
    return client.post(path, json=body, headers=keys.headers(who))


def finished(client: httpx.Client, keys: Keys, run_id: str) -> dict[str, Any]:
    return wait_for(
        client,
        f"/v1/schema/migrations/status/{run_id}",
        keys.headers("pe"),
        lambda body: "completedAt" in body,
    )


@pytest.fixture
def gate(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection holding advisory lock GATE: change sets that take it wait until released."""
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    try:
        yield conn
    finally:
        conn.close()


# -- auth ----------------------------------------------------------------------------------------


def test_auth_401_without_credentials_and_403_without_the_role(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys, contract: Contract
) -> None:
    client, api = shared
    for method, path, template in (
        ("get", ENTITIES, ENTITIES),
        ("post", APPLY, APPLY),
        ("post", ROLLBACK, ROLLBACK),
        ("get", "/v1/schema/migrations/status/x", STATUS),
        ("post", ROLLUP, ROLLUP),
    ):
        anonymous = client.request(method, path, json={})
        body = contract.check(anonymous, method, template, 401)
        assert body["code"] == "AUTH_UNAUTHENTICATED"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        wrong = client.request(method, path, json={}, headers={"X-API-Key": "aiaas_nope"})
        assert wrong.status_code == 401
        contract.error.validate(wrong.json())
    # billing has no role here at all; app-team may read but not change anything.
    body = contract.check(
        client.get(ENTITIES, headers=keys.headers("billing")), "get", ENTITIES, 403
    )
    assert body["code"] == "AUTH_ROLE_DENIED"
    assert body["actor"] == {"subject": "billing", "roles": ["billing"]}
    for path in (APPLY, ROLLBACK, ROLLUP):
        denied = submit(client, keys, path, {"component": "operational"}, who="team")
        body = contract.check(denied, "post", path, 403)
        assert body["code"] == "AUTH_ROLE_DENIED"
    assert client.get(ENTITIES, headers=keys.headers("team")).status_code == 200
    # Nothing was started by the refused requests.
    assert not api.runs.busy()
    assert client.get("/health").json()["schema"]["operational"]["schema_version"] is None


def test_policy_roles() -> None:
    policy = schema_api_policy()
    assert policy.decide(("platform-engineer",), "migrations", "apply").allowed
    assert policy.decide(("read-only",), "schema", "read").allowed
    assert not policy.decide(("read-only",), "migrations", "apply").allowed
    assert not policy.decide(("app-team",), "rollups", "run").allowed
    only_admins = schema_api_policy(reader_roles=())
    assert not only_admins.decide(("app-team",), "schema", "read").allowed


# -- apply, status, rollback ---------------------------------------------------------------------


def test_apply_lifecycle_progress_and_409_while_running(  # noqa: PLR0917 -- fixtures
    serve: Callable[..., Any],
    keys: Keys,
    contract: Contract,
    schema_sets: dict[str, SetWriter],
    gate: psycopg.Connection[Any],
    db_url: str,
) -> None:
    # V3 waits on the gate: the run stays in progress until the test lets it go.
    schema_sets["operational"].add(
        V3,
        "usage_events",
        "SELECT pg_advisory_xact_lock(4242);\nCREATE TABLE usage_events (x int);\n",
        "DROP TABLE usage_events;\n",
    )
    client, _ = serve()
    accepted = submit(client, keys, APPLY, {"component": "operational"})
    run = contract.check(accepted, "post", APPLY, 202)
    assert run["status"] in ("pending", "running")
    assert run["component"] == "operational"
    assert "completedAt" not in run
    run_id = run["runId"]
    url = f"/v1/schema/migrations/status/{run_id}"
    # Progress: V1 and V2 land while V3 waits.
    during = wait_for(
        client, url, keys.headers("pe"), lambda b: b["appliedVersions"] == [str(V1), str(V2)]
    )
    assert during["status"] == "running"
    contract.check(client.get(url, headers=keys.headers("team")), "get", STATUS, 200)

    # In-process: one run at a time.
    second = submit(client, keys, APPLY, {"component": "analytics"})
    assert contract.check(second, "post", APPLY, 409)["code"] == "MIGRATION_RUN_IN_PROGRESS"
    again = submit(client, keys, ROLLBACK, {"component": "operational", "version": str(V1)})
    assert contract.check(again, "post", ROLLBACK, 409)["code"] == "MIGRATION_RUN_IN_PROGRESS"

    gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
    done = finished(client, keys, run_id)
    contract.check(client.get(url, headers=keys.headers("pe")), "get", STATUS, 200)
    assert done["status"] == "succeeded"
    assert done["appliedVersions"] == [str(V1), str(V2), str(V3)]
    assert done["metrics"]["rowChanges"] == 1  # the INSERT of V2
    assert done["metrics"]["tablesTouched"] == ["public.organizations"]
    assert datetime.fromisoformat(done["completedAt"]) >= datetime.fromisoformat(
        done["submittedAt"]
    )
    # The migrator recorded who asked for it.
    status = Migrator(db_url, schema_sets["operational"].root, component="operational").status()
    assert status.current_version == V3
    assert {a.applied_by for a in status.applied} == {"api:pe"}


def test_409_when_another_process_holds_the_migration_lock(
    serve: Callable[..., Any], keys: Keys, contract: Contract, db_url: str
) -> None:
    client, api = serve()
    migrator = api.migrator("operational")
    with psycopg.connect(db_url, autocommit=True) as conn:
        lock = AdvisoryLock(
            conn,
            lock_keys(conn.info.dbname, "public", migrator.migrations_table, "operational"),
            timeout=0,
        )
        with lock:
            refused = submit(client, keys, APPLY, {"component": "operational"})
            body = contract.check(refused, "post", APPLY, 409)
            assert body["code"] == "MIGRATION_LOCKED"
            # Another component's lock is free.
            ok = submit(client, keys, APPLY, {"component": "analytics"})
            run = contract.check(ok, "post", APPLY, 202)
        done = finished(client, keys, run["runId"])
        assert done["status"] == "succeeded"
        assert done["appliedVersions"] == [str(A1)]


def test_target_version_dry_run_and_rollback(
    serve: Callable[..., Any], keys: Keys, contract: Contract, db_url: str
) -> None:
    client, _ = serve()
    dry = contract.check(
        submit(client, keys, APPLY, {"component": "operational", "dryRun": True}),
        "post",
        APPLY,
        202,
    )
    dry_done = finished(client, keys, dry["runId"])
    assert dry_done["status"] == "succeeded"
    assert dry_done["dryRun"] is True
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('organizations')").fetchone() == (None,)

    body = {"component": "operational", "targetVersion": str(V2), "hooks": {"skipTelemetry": True}}
    run = contract.check(submit(client, keys, APPLY, body), "post", APPLY, 202)
    assert run["targetVersion"] == str(V2)
    done = finished(client, keys, run["runId"])
    assert done["appliedVersions"] == [str(V1), str(V2)]

    # Rolling back V1 rolls back V2 too (newest first), like `migrate down --to 0`.
    back = submit(
        client, keys, ROLLBACK, {"component": "operational", "version": str(V1), "reason": "test"}
    )
    rolled = contract.check(back, "post", ROLLBACK, 202)
    assert "targetVersion" not in rolled  # nothing stays applied
    result = finished(client, keys, rolled["runId"])
    assert result["status"] == "rolled_back"
    assert result["appliedVersions"] == [str(V2), str(V1)]
    contract.check(
        client.get(f"/v1/schema/migrations/status/{rolled['runId']}", headers=keys.headers("pe")),
        "get",
        STATUS,
        200,
    )
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('users')").fetchone() == (None,)

    # Nothing applied any more: rolling back is a conflict ("no prior run").
    nothing = submit(client, keys, ROLLBACK, {"component": "operational", "version": str(V1)})
    assert contract.check(nothing, "post", ROLLBACK, 409)["code"] == "MIGRATION_NOT_APPLIED"


def test_failed_run_and_precheck_422_afterwards(
    serve: Callable[..., Any], keys: Keys, contract: Contract, schema_sets: dict[str, SetWriter]
) -> None:
    schema_sets["operational"].remove(V3, "usage_events")
    schema_sets["operational"].add(V3, "broken", "SELECT 1/0;\n", "SELECT 1;\n")
    client, _ = serve()
    run = contract.check(
        submit(client, keys, APPLY, {"component": "operational"}), "post", APPLY, 202
    )
    done = finished(client, keys, run["runId"])
    assert done["status"] == "failed"
    assert done["appliedVersions"] == [str(V1), str(V2)]
    assert done["error"]["code"] == "MIGRATION_FAILED"
    assert "division by zero" in done["error"]["message"]
    blocked = submit(client, keys, APPLY, {"component": "operational"})
    body = contract.check(blocked, "post", APPLY, 422)
    assert body["code"] == "MIGRATION_FAILED_HEAD"
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["schema"]["operational"]["failed_version"] == V3


def test_destructive_sets_need_confirmation(
    serve: Callable[..., Any], keys: Keys, contract: Contract, schema_sets: dict[str, SetWriter]
) -> None:
    schema_sets["operational"].remove(V3, "usage_events")
    schema_sets["operational"].add(
        V3,
        "drop_slug",
        "-- aiaas:destructive\nALTER TABLE organizations DROP COLUMN slug;\n",
        "ALTER TABLE organizations ADD COLUMN slug text;\n",
    )
    client, _ = serve()
    refused = submit(client, keys, APPLY, {"component": "operational"})
    body = contract.check(refused, "post", APPLY, 422)
    assert body["code"] == "MIGRATION_DESTRUCTIVE_UNCONFIRMED"
    ok = submit(client, keys, APPLY, {"component": "operational", "confirmDestructive": True})
    done = finished(client, keys, contract.check(ok, "post", APPLY, 202)["runId"])
    assert done["status"] == "succeeded"
    assert done["appliedVersions"] == [str(V1), str(V2), str(V3)]


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        (APPLY, {}, "VALIDATION_FAILED"),
        (APPLY, {"component": "billing"}, "VALIDATION_FAILED"),
        (APPLY, {"component": "operational", "targetVersion": "latest"}, "VALIDATION_FAILED"),
        (APPLY, {"component": "operational", "targetVersion": 202401010000}, "VALIDATION_FAILED"),
        (
            APPLY,
            {"component": "operational", "targetVersion": "209901010000"},
            "MIGRATION_NOT_FOUND",
        ),
        (APPLY, {"component": "operational", "dryRun": "yes"}, "VALIDATION_FAILED"),
        (APPLY, {"component": "operational", "hooks": []}, "VALIDATION_FAILED"),
        (APPLY, {"component": "operational", "hooks": {"x": 1}}, "VALIDATION_FAILED"),
        (APPLY, {"component": "operational", "targetversion": "1"}, "VALIDATION_FAILED"),
        (APPLY, [1, 2], "VALIDATION_FAILED"),
        (ROLLBACK, {"component": "operational"}, "VALIDATION_FAILED"),
        (ROLLBACK, {"component": "operational", "version": "209901010000"}, "MIGRATION_NOT_FOUND"),
        (ROLLBACK, {"component": "operational", "version": "1", "reason": 5}, "VALIDATION_FAILED"),
        (ROLLUP, {"granularity": "week", "start": "2026-01-01T00:00:00Z"}, "VALIDATION_FAILED"),
        (ROLLUP, {"granularity": "hour", "end": "2026-01-01T00:00:00Z"}, "VALIDATION_FAILED"),
        (
            ROLLUP,
            {"granularity": "hour", "start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00Z"},
            "VALIDATION_FAILED",
        ),
        (ROLLUP, {"granularity": "hour", "start": "soon", "end": "later"}, "VALIDATION_FAILED"),
        (ROLLUP, {"granularity": "day", "start": 1, "end": 2}, "VALIDATION_FAILED"),
        (
            ROLLUP,
            {"granularity": "day", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            "VALIDATION_FAILED",
        ),
        (
            ROLLUP,
            {"granularity": "hour", "start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
            "ROLLUP_WINDOW_TOO_LARGE",
        ),
        (
            ROLLUP,
            {
                "granularity": "hour",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T05:00:00Z",
                "reconcileLateArrivals": False,
            },
            "ROLLUP_OPTION_UNSUPPORTED",
        ),
    ],
)
def test_422_validation(  # noqa: PLR0917 -- fixtures and parameters
    shared: tuple[httpx.Client, SchemaApi],
    keys: Keys,
    contract: Contract,
    path: str,
    body: Any,
    code: str,
) -> None:
    client, api = shared
    answer = contract.check(submit(client, keys, path, body), "post", path, 422)
    assert answer["code"] == code
    assert not api.runs.busy()


def test_malformed_bodies(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys, contract: Contract
) -> None:
    client, _ = shared
    headers = keys.headers("pe")
    broken = client.post(
        APPLY, content=b"{nope", headers={**headers, "content-type": "application/json"}
    )
    assert contract.check(broken, "post", APPLY, 400)["code"] == "REQUEST_MALFORMED_JSON"
    text = client.post(
        APPLY, content=b"component=operational", headers={**headers, "content-type": "text/plain"}
    )
    assert contract.check(text, "post", APPLY, 415)["code"] == "UNSUPPORTED_MEDIA_TYPE"
    huge = client.post(
        APPLY,
        content=json.dumps({"component": "operational", "pad": "x" * 70_000}).encode(),
        headers={**headers, "content-type": "application/json"},
    )
    assert contract.check(huge, "post", APPLY, 413)["code"] == "REQUEST_TOO_LARGE"
    wrong_method = client.get(APPLY, headers=headers)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    contract.error.validate(wrong_method.json())
    put = client.put(ENTITIES, headers=keys.headers("team"))
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, HEAD"
    unknown = client.get("/v1/nothing", headers=headers)
    assert unknown.status_code == 403  # aiaas-core denies unmapped routes (no probing)
    contract.error.validate(unknown.json())


def test_every_answer_carries_one_request_id_the_error_body_names(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys, contract: Contract
) -> None:
    client, _ = shared
    headers = keys.headers("pe")
    answers = {
        "routes 200": client.get(ENTITIES, headers=headers),
        "auth 401": client.get(ENTITIES),
        "auth 403": client.post(APPLY, json={}, headers=keys.headers("team")),
        "routes 405": client.get(APPLY, headers=headers),
        "routes 422": client.post(APPLY, json={"component": "nope"}, headers=headers),
        "probe": client.get("/health"),
    }
    for what, response in answers.items():
        ids = response.headers.get_list("x-request-id")
        assert len(ids) == 1, (what, ids)
        if response.status_code >= 400:
            contract.error.validate(response.json())
            assert response.json()["request_id"] == ids[0], what
    given = "req-h3-" + uuid.uuid4().hex
    mine = client.get(APPLY, headers={**headers, "X-Request-ID": given})
    assert mine.status_code == 405
    assert mine.headers.get_list("x-request-id") == [given]
    assert mine.json()["request_id"] == given


def test_a_declared_oversized_body_is_refused_before_it_is_sent(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys
) -> None:
    client, _ = shared
    base = client.base_url
    assert base.host
    assert base.port
    request = (
        f"POST {APPLY} HTTP/1.1\r\nHost: {base.host}\r\n"
        f"Authorization: {keys.headers('pe')['Authorization']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection((base.host, base.port), timeout=10) as sock:
        sock.sendall(request.encode())  # the headers only: no body byte follows
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert "content-type: application/json" in head.lower()


def test_run_status_404(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys, contract: Contract
) -> None:
    client, _ = shared
    missing = client.get("/v1/schema/migrations/status/nope", headers=keys.headers("pe"))
    assert contract.check(missing, "get", STATUS, 404)["code"] == "RUN_NOT_FOUND"
    rollup_missing = client.get("/v1/analytics/rollups/runs/nope", headers=keys.headers("pe"))
    assert rollup_missing.status_code == 404
    contract.error.validate(rollup_missing.json())


# -- entities ------------------------------------------------------------------------------------


def test_entities_from_the_live_catalog_with_classification(
    serve: Callable[..., Any], keys: Keys, contract: Contract
) -> None:
    # The contract's own map (no table/column names): matched by entity and field name.
    classification = load_classification(CONTRACTS_DIR / "data-classification.yml")
    client, _ = serve(classification=classification)
    for component in ("operational", "analytics"):
        run = submit(client, keys, APPLY, {"component": component}).json()
        assert finished(client, keys, run["runId"])["status"] == "succeeded"
    plain = contract.check(client.get(ENTITIES, headers=keys.headers("team")), "get", ENTITIES, 200)
    by_name = {e["name"]: e for e in plain["entities"]}
    assert set(by_name) == {"AnalyticsHourlyRollup", "Organization", "UsageEvent", "User"}
    assert all("fields" not in e for e in plain["entities"])  # the tooling tables are left out
    assert by_name["Organization"]["description"] == "Tenants of the platform"
    assert by_name["User"]["description"] == "Table public.users"
    org = {
        (r["type"], r["target"], r["cardinality"]) for r in by_name["Organization"]["relationships"]
    }
    assert org == {
        ("owns", "User", "one-to-many"),
        ("owns", "UsageEvent", "one-to-many"),
        ("owns", "AnalyticsHourlyRollup", "one-to-many"),
    }
    rollup = {(r["type"], r["target"]) for r in by_name["AnalyticsHourlyRollup"]["relationships"]}
    assert rollup == {("references", "Organization"), ("derivedFrom", "UsageEvent")}

    full = contract.check(
        client.get(ENTITIES, params={"includeFields": "true"}, headers=keys.headers("pe")),
        "get",
        ENTITIES,
        200,
    )
    users = {f["name"]: f for e in full["entities"] if e["name"] == "User" for f in e["fields"]}
    assert users["email_digest"] == {
        "name": "email_digest",
        "type": "text",
        "nullable": False,
        "classification": "restricted",
        "retentionDays": 30,
    }
    assert users["role"]["nullable"] is True
    assert users["user_id"]["classification"] == "internal"
    events = {
        f["name"]: f for e in full["entities"] if e["name"] == "UsageEvent" for f in e["fields"]
    }
    assert events["cost_usd"]["type"] == "numeric(14,8)"
    assert events["cost_usd"]["classification"] == "confidential"
    assert events["usage_event_id"]["classification"] == "internal"  # event_id
    assert "classification" not in events["organization_id"]  # not in the map
    bad = client.get(ENTITIES, params={"includeFields": "maybe"}, headers=keys.headers("pe"))
    assert contract.check(bad, "get", ENTITIES, 422)["code"] == "VALIDATION_FAILED"


def test_entity_names_and_classification_matching() -> None:
    assert entity_name("model_registry_entries") == "ModelRegistryEntry"
    assert entity_name("api_keys") == "ApiKey"
    assert entity_name("addresses") == "Address"
    assert entity_name("boxes") == "Box"
    assert entity_name("s") == "S"
    email = ClassifiedField(name="email", classification="restricted", retention_days=30)
    mail = ClassifiedField(name="mail", classification="internal")
    contract_style = Classification([ClassifiedEntity(name="User", fields=[email, mail])])
    assert _classify(contract_style, "users", "User", "email_ciphertext") == email
    assert _classify(contract_style, "users", "User", "mail") == mail
    # "x_mail_email" would match both entries: ambiguous, so unclassified.
    assert _classify(contract_style, "users", "User", "mail_email") is None
    assert _classify(contract_style, "users", "Organization", "email") is None
    assert _classify(None, "users", "User", "email") is None
    # Our own map names columns exactly: no guessing.
    ours = Classification([ClassifiedEntity(name="User", table="users", fields=[email])])
    assert _classify(ours, "users", "User", "email") == email
    assert _classify(ours, "users", "User", "email_digest") is None


def test_platform_schema_entities_and_real_rollups(
    serve: Callable[..., Any],
    keys: Keys,
    contract: Contract,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The platform's own change sets, classification and rollup engine, through the API."""
    # The migrator audits into audit_log_entries once it exists: it needs the PII keys.
    monkeypatch.setenv("AIAAS_DB_PII_HASH_KEY", os.urandom(32).hex())
    monkeypatch.setenv("AIAAS_DB_PII_ENCRYPTION_KEY", os.urandom(32).hex())
    client, _ = serve(rollups=default_rollup_trigger(db_url), platform=True)
    for component in ("operational", "analytics"):
        run = contract.check(
            submit(client, keys, APPLY, {"component": component}), "post", APPLY, 202
        )
        done = finished(client, keys, run["runId"])
        assert done["status"] == "succeeded", json.dumps(done)
        expected = [str(cs.version) for cs in platform_source(component).load()]
        assert done["appliedVersions"] == expected
    full = contract.check(
        client.get(ENTITIES, params={"includeFields": "true"}, headers=keys.headers("team")),
        "get",
        ENTITIES,
        200,
    )
    by_name = {e["name"]: e for e in full["entities"]}
    assert {"Organization", "User", "ApiKey", "UsageEvent", "AuditLogEntry"} <= set(by_name)
    assert not any(name.startswith("UsageEventsP") for name in by_name)  # partitions left out
    users = {f["name"]: f for f in by_name["User"]["fields"]}
    assert users["email_digest"]["classification"] == "restricted"
    assert users["email_ciphertext"]["classification"] == "restricted"
    assert ("references", "Organization") in {
        (r["type"], r["target"]) for r in by_name["User"]["relationships"]
    }
    # Every platform column is classified by the platform's map.
    unclassified = [
        (e["name"], f["name"])
        for e in full["entities"]
        for f in e["fields"]
        if "classification" not in f
    ]
    assert unclassified == []
    # The real rollup engine runs on the platform schema.
    body = {"granularity": "hour", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"}
    run = contract.check(submit(client, keys, ROLLUP, body), "post", ROLLUP, 202)
    done = wait_for(
        client,
        f"/v1/analytics/rollups/runs/{run['runId']}",
        keys.headers("pe"),
        lambda b: "completedAt" in b,
    )
    assert done["status"] == "succeeded", done
    # Roll the analytics component back completely.
    first = str(platform_source("analytics").load()[0].version)
    back = contract.check(
        submit(client, keys, ROLLBACK, {"component": "analytics", "version": first}),
        "post",
        ROLLBACK,
        202,
    )
    assert finished(client, keys, back["runId"])["status"] == "rolled_back"


# -- health --------------------------------------------------------------------------------------


def test_health_exposes_schema_version_and_last_migration_time(
    serve: Callable[..., Any], keys: Keys
) -> None:
    client, _ = serve()
    before = client.get("/health")
    assert before.status_code == 200
    assert before.json()["schema"]["operational"] == {
        "component": "operational",
        "schema_version": None,
        "last_migration_at": None,
        "dirty": False,
        "failed_version": None,
        "pending": 3,
    }
    run = submit(client, keys, APPLY, {"component": "operational"}).json()
    finished(client, keys, run["runId"])
    time.sleep(1.1)  # past the health cache
    after = client.get("/health").json()
    assert after["status"] == "ok"
    ops = after["schema"]["operational"]
    assert ops["schema_version"] == V3
    assert ops["pending"] == 0
    moment = datetime.fromisoformat(ops["last_migration_at"])
    assert moment.tzinfo is not None
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 120
    assert after["schema"]["analytics"]["schema_version"] is None
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'route="/v1/schema/migrations/apply"' in metrics.text


def test_database_down_health_degrades_ready_fails_entities_503(
    keys: Keys, telemetry: Telemetry, contract: Contract, schema_sets: dict[str, SetWriter]
) -> None:
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    api = make_api(dead, schema_sets, rollups=None)
    with live_server(api, keys, telemetry) as base, httpx.Client(base_url=base, timeout=30) as c:
        health = c.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["schema"] == {}
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["reason"] == "the database is unreachable"
        entities = c.get(ENTITIES, headers=keys.headers("pe"))
        body = contract.check(entities, "get", ENTITIES, 503)
        assert body["code"] == "SCHEMA_METADATA_UNAVAILABLE"
        assert entities.headers["retry-after"] == "5"
        apply = submit(c, keys, APPLY, {"component": "operational"})
        assert contract.check(apply, "post", APPLY, 503)["code"] == "DATABASE_UNAVAILABLE"


# -- rollups -------------------------------------------------------------------------------------


class SqlRollups:
    """A RollupTrigger that does real work in PostgreSQL: records the window, waits on GATE."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS rollup_calls (granularity text, window_start "
                "timestamptz, window_end timestamptz, run_id text)"
            )

    def __call__(self, request: RollupRequest, /) -> object:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))
            if request.granularity == "day":
                raise ValidationError("days are refused by this engine", code="ROLLUP_REFUSED")
            conn.execute(
                "INSERT INTO rollup_calls VALUES (%s, %s, %s, %s)",
                (request.granularity, request.start, request.end, request.run_id),
            )
        return None


def test_rollup_lifecycle_and_409(
    serve: Callable[..., Any],
    keys: Keys,
    contract: Contract,
    db_url: str,
    gate: psycopg.Connection[Any],
) -> None:
    trigger = SqlRollups(db_url)
    assert isinstance(trigger, RollupTrigger)
    client, _ = serve(rollups=trigger)
    body = {
        "granularity": "hour",
        "start": "2026-01-01T00:30:00+01:00",
        "end": "2026-01-01T05:00:00Z",
    }
    run = contract.check(submit(client, keys, ROLLUP, body), "post", ROLLUP, 202)
    assert run["granularities"] == ["hour"]
    assert run["status"] in ("queued", "running")
    url = f"/v1/analytics/rollups/runs/{run['runId']}"
    running = wait_for(client, url, keys.headers("team"), lambda b: b["status"] == "running")
    contract.component("RollupRun").validate(running)
    busy = submit(client, keys, ROLLUP, body)
    assert contract.check(busy, "post", ROLLUP, 409)["code"] == "ROLLUP_RUN_IN_PROGRESS"
    gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
    done = wait_for(client, url, keys.headers("pe"), lambda b: "completedAt" in b)
    contract.component("RollupRun").validate(done)
    assert done["status"] == "succeeded"
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT granularity, window_start, window_end, run_id FROM rollup_calls"
        ).fetchall()
    assert rows == [
        (
            "hour",
            datetime(2025, 12, 31, 23, 30, tzinfo=UTC),
            datetime(2026, 1, 1, 5, tzinfo=UTC),
            run["runId"],
        )
    ]
    day = {"granularity": "day", "start": "2026-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}
    failed_run = contract.check(submit(client, keys, ROLLUP, day), "post", ROLLUP, 202)
    failed = wait_for(
        client,
        f"/v1/analytics/rollups/runs/{failed_run['runId']}",
        keys.headers("pe"),
        lambda b: "completedAt" in b,
    )
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "ROLLUP_REFUSED",
        "message": "days are refused by this engine",
    }
    # A migration status id is not a rollup id and vice versa.
    assert (
        client.get(
            f"/v1/schema/migrations/status/{run['runId']}", headers=keys.headers("pe")
        ).status_code
        == 404
    )


def test_rollups_unavailable_is_503_not_a_fake_success(
    shared: tuple[httpx.Client, SchemaApi], keys: Keys, contract: Contract
) -> None:
    client, _ = shared
    body = {"granularity": "day", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    answer = contract.check(submit(client, keys, ROLLUP, body), "post", ROLLUP, 503)
    assert answer["code"] == "ROLLUPS_UNAVAILABLE"


def test_default_rollup_trigger_runs_the_real_engine(
    serve: Callable[..., Any], keys: Keys, contract: Contract, db_url: str
) -> None:
    trigger = default_rollup_trigger(db_url)
    assert trigger is not None
    client, _ = serve(rollups=trigger)
    body = {"granularity": "hour", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T02:00:00Z"}
    run = contract.check(submit(client, keys, ROLLUP, body), "post", ROLLUP, 202)
    done = wait_for(
        client,
        f"/v1/analytics/rollups/runs/{run['runId']}",
        keys.headers("pe"),
        lambda b: "completedAt" in b,
    )
    # This database has no analytics tables: the real engine says so, and so does the run.
    assert done["status"] == "failed"
    assert done["error"]["code"] == "ROLLUP_SCHEMA_MISSING"


# -- the command ---------------------------------------------------------------------------------


def test_cli_issue_key_and_bad_configuration(keys: Keys) -> None:
    runner = CliRunner()
    issued = runner.invoke(
        cli,
        ["serve", "--issue-key", "platform-engineer", "--subject", "ops"],
        env={"AIAAS_DB_API_KEY_HASH_KEY": keys.hash_key},
    )
    assert issued.exit_code == 0, issued.output
    assert "aiaas_" in issued.output
    assert ":platform-engineer:hmac-sha256$v1$" in issued.output
    no_hash = runner.invoke(
        cli, ["serve", "--issue-key", "x"], env={"AIAAS_DB_API_KEY_HASH_KEY": ""}
    )
    assert no_hash.exit_code == 2
    assert "AIAAS_DB_API_KEY_HASH_KEY" in no_hash.output
    bad_entry = runner.invoke(
        cli,
        ["serve", "--dsn", "postgresql://x/y"],
        env={"AIAAS_DB_API_KEY_HASH_KEY": keys.hash_key, "AIAAS_DB_API_KEYS": "nonsense"},
    )
    assert bad_entry.exit_code == 2
    assert "entry 1" in bad_entry.output
    missing_hash = runner.invoke(
        cli,
        ["serve", "--dsn", "postgresql://x/y"],
        env={"AIAAS_DB_API_KEY_HASH_KEY": "", "AIAAS_DB_API_KEYS": keys.entries[0]},
    )
    assert missing_hash.exit_code == 2
    twice = runner.invoke(
        cli,
        ["serve", "--dsn", "postgresql://x/y"],
        env={
            "AIAAS_DB_API_KEY_HASH_KEY": keys.hash_key,
            "AIAAS_DB_API_KEYS": f"{keys.entries[0]}, {keys.entries[1]}\n{keys.entries[0]}",
        },
    )
    assert twice.exit_code == 2
    assert "$AIAAS_DB_API_KEYS entry 3: key id" in twice.output
    assert "listed twice" in twice.output
    assert keys.entries[0].rsplit(":", 1)[1] not in twice.output  # digests are not echoed
    short = runner.invoke(
        cli, ["serve", "--issue-key", "x"], env={"AIAAS_DB_API_KEY_HASH_KEY": "short"}
    )
    assert short.exit_code == 2


def test_cli_refuses_a_port_in_use(keys: Keys, db_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["serve", "--dsn", db_url, "--port", str(port)], env=keys.env()
        )
    assert result.exit_code == 1, result.output
    assert f"the server could not start on 127.0.0.1:{port}" in result.output
    assert "address is in use" in result.output


def test_cli_serves_until_sigterm(
    keys: Keys, db_url: str, contract: Contract, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIAAS_", "OTEL_"))}
    env.update(keys.env())
    env["AIAAS_DB_URL"] = db_url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiaas_db",
            "serve",
            "--port",
            str(port),
            "--keys-env",
            "AIAAS_DB_API_KEYS",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
            assert time.monotonic() < deadline, "aiaas-db serve did not come up"
        with httpx.Client(base_url=base, timeout=10) as client:
            anonymous = client.get(ENTITIES)
            allowed = client.get(ENTITIES, headers=keys.headers("pe"))
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    contract.check(anonymous, "get", ENTITIES, 401)
    body = contract.check(allowed, "get", ENTITIES, 200)
    assert body["entities"] == []
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["message"] == "aiaas-db serve stopped" for line in lines)
    for secret in (keys.hash_key, *keys.tokens.values()):
        assert secret not in err


def test_close_waits_for_runs_and_detaches(
    db_url: str, schema_sets: dict[str, SetWriter], keys: Keys, telemetry: Telemetry
) -> None:
    api = make_api(db_url, schema_sets)
    with live_server(api, keys, telemetry) as base, httpx.Client(base_url=base) as client:
        run = submit(client, keys, APPLY, {"component": "operational"}).json()
    # Leaving the server (lifespan shutdown) waited for the run.
    final = api.runs.get(run["runId"], rollup=False)
    assert final is not None
    assert final["status"] == "succeeded"
    assert not [t for t in threading.enumerate() if t.name.startswith("aiaas-db-apply")]


def test_pre_checks_refuse_with_422_before_anything_runs(
    serve: Callable[..., Any], keys: Keys, contract: Contract, schema_sets: dict[str, SetWriter]
) -> None:
    client, api = serve()
    run = submit(client, keys, APPLY, {"component": "operational", "targetVersion": str(V2)})
    assert finished(client, keys, run.json()["runId"])["status"] == "succeeded"
    ops = schema_sets["operational"]
    # A set older than the head that was never applied: the API never applies out of order.
    ops.add(V1 + 1, "late", "SELECT 1;\n", "SELECT 1;\n")
    late = submit(client, keys, APPLY, {"component": "operational"})
    assert contract.check(late, "post", APPLY, 422)["code"] == "MIGRATION_OUT_OF_ORDER"
    ops.remove(V1 + 1, "late")
    # An applied set edited afterwards.
    (ops.root / f"{V1}_organizations.up.sql").write_text("CREATE TABLE organizations (x int);\n")
    edited = submit(client, keys, APPLY, {"component": "operational"})
    assert contract.check(edited, "post", APPLY, 422)["code"] == "MIGRATION_CHECKSUM_MISMATCH"
    back = submit(client, keys, ROLLBACK, {"component": "operational", "version": str(V2)})
    assert contract.check(back, "post", ROLLBACK, 422)["code"] == "MIGRATION_CHECKSUM_MISMATCH"
    # An applied set whose files are gone.
    ops.remove(V1, "organizations")
    gone = submit(client, keys, APPLY, {"component": "operational"})
    assert contract.check(gone, "post", APPLY, 422)["code"] == "MIGRATION_SOURCE_MISSING"
    # A malformed source.
    (ops.root / "not-a-change-set.up.sql").write_text("SELECT 1;\n")
    broken = submit(client, keys, APPLY, {"component": "operational"})
    assert contract.check(broken, "post", APPLY, 422)["code"] == "MIGRATION_SOURCE_INVALID"
    undo = submit(client, keys, ROLLBACK, {"component": "operational", "version": str(V2)})
    assert contract.check(undo, "post", ROLLBACK, 422)["code"] == "MIGRATION_SOURCE_INVALID"
    assert not api.runs.busy()


def test_a_crashing_rollup_engine_is_a_failed_run_without_its_text(
    serve: Callable[..., Any], keys: Keys, contract: Contract
) -> None:
    def crash(request: RollupRequest, /) -> object:
        raise RuntimeError(f"password=hunter2 while rolling up {request.run_id}")

    client, _ = serve(rollups=crash)
    body = {"granularity": "day", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    run = contract.check(submit(client, keys, ROLLUP, body), "post", ROLLUP, 202)
    done = wait_for(
        client,
        f"/v1/analytics/rollups/runs/{run['runId']}",
        keys.headers("pe"),
        lambda b: "completedAt" in b,
    )
    assert done["status"] == "failed"
    assert done["error"] == {"code": "INTERNAL_ERROR", "message": "the run crashed: RuntimeError"}


async def test_the_bare_app_refuses_other_scopes_and_unknown_paths(db_url: str) -> None:
    from aiaas_core import NotFoundError

    with pytest.raises(ValueError, match="at least one component"):
        SchemaApi(db_url, sources={})
    with pytest.raises(ValueError, match="DSN"):
        SchemaApi(" ")
    api = SchemaApi(db_url, classification=None)
    assert api.components == ("operational", "analytics")
    assert api.source("operational").load()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(_message: Any) -> None:
        return None

    with pytest.raises(NotFoundError, match="HTTP only"):
        await api({"type": "websocket", "path": "/"}, receive, send)
    with pytest.raises(NotFoundError, match="no route"):
        await api({"type": "http", "path": "/nope", "method": "GET"}, receive, send)
    scope = {
        "type": "http",
        "path": APPLY,
        "method": "POST",
        "headers": [(b"content-type", b"application/json")],
    }
    with pytest.raises(Exception, match="went away") as info:
        await api(scope, receive, send)
    assert getattr(info.value, "code", None) == "REQUEST_INVALID"
    api.close(timeout=1)


def test_the_run_book_keeps_the_latest_finished_runs() -> None:
    from aiaas_db.server._runs import _Run, _RunBook

    book = _RunBook(keep=2)
    now = datetime.now(UTC)

    def finish(run: _Run) -> None:
        book.update(run, status="succeeded", completed_at=datetime.now(UTC))

    ids = []
    for _ in range(3):
        run = _Run(run_id=str(uuid.uuid4()), kind="apply", submitted_at=now, status="pending")
        book.start(run, finish)
        book.join(5)
        ids.append(run.run_id)
    assert book.get(ids[0], rollup=False) is None
    assert book.get(ids[2], rollup=False) is not None
    assert book.get(ids[2], rollup=True) is None
