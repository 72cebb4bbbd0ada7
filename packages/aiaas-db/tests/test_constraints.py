"""Every rule of the platform schema, enforced by the database: one refusal test per rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from aiaas_db import LocalPostgres, Migrator, PiiProtector, platform_source
from aiaas_db.platform._components import PLATFORM_COMPONENTS

PII = PiiProtector.for_local_development("test-constraints")


@pytest.fixture(scope="module")
def schema_url(pg: LocalPostgres) -> Iterator[str]:
    url = pg.create_database("constraints")
    for component in PLATFORM_COMPONENTS:
        Migrator(url, platform_source(component), component=component, protector=PII).up()
    yield url
    pg.drop_database("constraints")


@pytest.fixture
def db(schema_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection inside a transaction that is always rolled back."""
    with psycopg.connect(schema_url) as conn, conn.transaction(force_rollback=True):
        yield conn


def refused(
    conn: psycopg.Connection[Any],
    statement: str,
    params: tuple[Any, ...] | dict[str, Any] = (),
    *,
    error: type[Exception],
    constraint: str | None = None,
    message: str | None = None,
) -> None:
    """``statement`` fails with ``error`` (naming ``constraint`` / containing ``message``)."""
    with pytest.raises(error) as info, conn.transaction():
        conn.execute(statement, params or None)
    exc = info.value
    assert isinstance(exc, psycopg.Error)
    if constraint is not None:
        assert exc.diag.constraint_name == constraint
    if message is not None:
        assert message in str(exc)


def org(conn: psycopg.Connection[Any], slug: str | None = None, **values: Any) -> uuid.UUID:
    fields = {
        "slug": slug or f"org-{uuid.uuid4().hex[:8]}",
        "display_name": "Acme",
        "plan_tier": "pro",
        **values,
    }
    cols = ", ".join(fields)
    marks = ", ".join(f"%({k})s" for k in fields)
    row = conn.execute(
        f"INSERT INTO organizations ({cols}) VALUES ({marks}) RETURNING organization_id",  # noqa: S608
        fields,
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def user(conn: psycopg.Connection[Any], org_id: uuid.UUID, email: str, role: str = "admin") -> None:
    conn.execute(
        "INSERT INTO users (organization_id, email_digest, role) VALUES (%s, %s, %s)",
        (org_id, PII.email_digest(email), role),
    )


def api_key(
    conn: psycopg.Connection[Any], org_id: uuid.UUID, name: str, key_id: str | None = None
) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO api_keys (organization_id, key_id, name, hashed_secret)"
        " VALUES (%s, %s, %s, 'hmac-sha256$v1$x') RETURNING api_key_id",
        (org_id, key_id or uuid.uuid4().hex[:12], name),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


EVENT = (
    "INSERT INTO usage_events (occurred_at, organization_id, tokens_consumed, latency_ms, status,"
    " error_code, region, cost_usd) VALUES (now(), gen_random_uuid(), %(tokens)s, %(latency)s,"
    " %(status)s, %(error_code)s, %(region)s, %(cost)s)"
)
GOOD_EVENT = {
    "tokens": 10,
    "latency": 5,
    "status": "success",
    "error_code": None,
    "region": "eu",
    "cost": 0,
}


# -- organizations -------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["a", "acme", "acme-pro-2", "0x", "a" * 63, "a-b-c"])
def test_valid_slugs(db: psycopg.Connection[Any], slug: str) -> None:
    org(db, slug)


@pytest.mark.parametrize(
    "slug", ["", "Acme", "-acme", "acme-", "ac_me", "a" * 64, "acme pro", "acmé", "a--"]
)
def test_slug_format_is_enforced(db: psycopg.Connection[Any], slug: str) -> None:
    refused(
        db,
        "INSERT INTO organizations (slug, display_name, plan_tier) VALUES (%s, 'A', 'free')",
        (slug,),
        error=errors.CheckViolation,
        constraint="ck_organizations_slug",
    )


def test_slug_is_unique_and_immutable(db: psycopg.Connection[Any]) -> None:
    org_id = org(db, "acme")
    refused(
        db,
        "INSERT INTO organizations (slug, display_name, plan_tier) VALUES ('acme', 'B', 'free')",
        error=errors.UniqueViolation,
        constraint="uq_organizations_slug",
    )
    refused(
        db,
        "UPDATE organizations SET slug = 'acme-2' WHERE organization_id = %s",
        (org_id,),
        error=errors.RaiseException,
        message="SLUG_IMMUTABLE: the slug of organization",
    )
    # Other columns change freely, and updated_at follows.
    db.execute(
        "UPDATE organizations SET updated_at = '2000-01-01', slug = 'acme' WHERE slug = 'acme'"
    )
    db.execute("UPDATE organizations SET display_name = 'Acme Ltd' WHERE slug = 'acme'")
    row = db.execute(
        "SELECT display_name, updated_at > '2000-01-02' FROM organizations WHERE slug = 'acme'"
    ).fetchone()
    assert row == ("Acme Ltd", True)


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("plan_tier", "platinum", "ck_organizations_plan_tier"),
        ("status", "deleted", "ck_organizations_status"),
        ("budget_limit_tokens", -1, "ck_organizations_budget_limit_tokens"),
        ("display_name", "", "ck_organizations_display_name"),
        ("display_name", "x" * 201, "ck_organizations_display_name"),
    ],
)
def test_organization_checks(
    db: psycopg.Connection[Any], column: str, value: object, constraint: str
) -> None:
    with pytest.raises(errors.CheckViolation) as info, db.transaction():
        org(db, None, **{column: value})
    assert info.value.diag.constraint_name == constraint


def test_organization_defaults(db: psycopg.Connection[Any]) -> None:
    org_id = org(db, "defaults")
    row = db.execute(
        "SELECT status, budget_limit_tokens, deleted_at FROM organizations"
        " WHERE organization_id = %s",
        (org_id,),
    ).fetchone()
    assert row == ("active", 0, None)


# -- users ---------------------------------------------------------------------------------


def test_user_email_digest_is_unique_per_organization(db: psycopg.Connection[Any]) -> None:
    a, b = org(db), org(db)
    user(db, a, "ada@example.com")
    user(db, b, "ada@example.com")  # another organisation: fine
    with pytest.raises(errors.UniqueViolation) as info, db.transaction():
        user(db, a, "ADA@example.com ")  # same address after normalisation
    assert info.value.diag.constraint_name == "uq_users_organization_id_email_digest"


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("role", "superuser", "ck_users_role"),
        ("status", "deleted", "ck_users_status"),
        ("email_digest", "ada@example.com", "ck_users_email_digest"),
        ("email_digest", "hmac-sha256$v1$tooshort", "ck_users_email_digest"),
        (
            "email_digest",
            "anonymized$00000000-0000-0000-0000-000000000000",
            "ck_users_email_digest",
        ),
        ("email_ciphertext", b"\x00" * 40, "ck_users_email_ciphertext"),
    ],
)
def test_user_checks(
    db: psycopg.Connection[Any], column: str, value: object, constraint: str
) -> None:
    values = {"organization_id": org(db), "email_digest": PII.digest("x"), "role": "owner"}
    values[column] = value
    cols = ", ".join(values)
    marks = ", ".join(f"%({k})s" for k in values)
    refused(
        db,
        f"INSERT INTO users ({cols}) VALUES ({marks})",  # noqa: S608
        values,
        error=errors.CheckViolation,
        constraint=constraint,
    )


def test_user_anonymization_shape_is_accepted(db: psycopg.Connection[Any]) -> None:
    org_id = org(db)
    user(db, org_id, "leaver@example.com")
    ct, version = PII.encrypt("leaver@example.com", b"aad")
    db.execute("UPDATE users SET email_ciphertext = %s, email_key_version = %s", (ct, version))
    db.execute(
        "UPDATE users SET email_digest = 'anonymized$' || user_id, email_ciphertext = NULL,"
        " email_key_version = NULL, anonymized_at = now()"
    )
    refused(
        db,
        "INSERT INTO users (organization_id, email_digest, role) VALUES (%s, %s, 'owner')",
        (uuid.uuid4(), PII.digest("y")),
        error=errors.ForeignKeyViolation,
        constraint="fk_users_organization_id",
    )


# -- api keys ------------------------------------------------------------------------------


def test_api_key_names_are_unique_per_organization(db: psycopg.Connection[Any]) -> None:
    a, b = org(db), org(db)
    api_key(db, a, "ci")
    api_key(db, b, "ci")
    with pytest.raises(errors.UniqueViolation) as info, db.transaction():
        api_key(db, a, "ci")
    assert info.value.diag.constraint_name == "uq_api_keys_organization_id_name"
    api_key(db, a, "first", key_id="AAAAAAAAAAAA")
    with pytest.raises(errors.UniqueViolation) as info, db.transaction():
        api_key(db, b, "second", key_id="AAAAAAAAAAAA")
    assert info.value.diag.constraint_name == "uq_api_keys_key_id"


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("key_id", "short", "ck_api_keys_key_id"),
        ("key_id", "has-dash-123", "ck_api_keys_key_id"),
        ("name", "", "ck_api_keys_name"),
        ("hashed_secret", "", "ck_api_keys_hashed_secret"),
        ("status", "expired", "ck_api_keys_status"),
    ],
)
def test_api_key_checks(
    db: psycopg.Connection[Any], column: str, value: object, constraint: str
) -> None:
    values = {
        "organization_id": org(db),
        "key_id": "abcDEF123456",
        "name": "k",
        "hashed_secret": "d",
    }
    values[column] = value
    cols = ", ".join(values)
    marks = ", ".join(f"%({k})s" for k in values)
    refused(
        db,
        f"INSERT INTO api_keys ({cols}) VALUES ({marks})",  # noqa: S608
        values,
        error=errors.CheckViolation,
        constraint=constraint,
    )


@pytest.mark.parametrize(
    ("change", "state"),
    [("deleted_at = now()", "deleted"), ("status = 'closed'", "closed")],
)
def test_api_keys_refused_for_inactive_organizations(
    db: psycopg.Connection[Any], change: str, state: str
) -> None:
    org_id = org(db)
    live = api_key(db, org_id, "live")
    revoked = api_key(db, org_id, "old")
    db.execute("UPDATE api_keys SET status = 'revoked' WHERE api_key_id = %s", (revoked,))
    db.execute(f"UPDATE organizations SET {change} WHERE organization_id = %s", (org_id,))  # noqa: S608
    with pytest.raises(errors.RaiseException) as info, db.transaction():
        api_key(db, org_id, "new")
    assert str(info.value).startswith(f"ORG_INACTIVE: organization {org_id} is {state}")
    assert info.value.sqlstate == "P0001"
    refused(
        db,
        "UPDATE api_keys SET status = 'active' WHERE api_key_id = %s",
        (revoked,),
        error=errors.RaiseException,
        message="ORG_INACTIVE",
    )
    # Winding down stays possible: revoking, and bookkeeping on a key that is not reactivated.
    db.execute("UPDATE api_keys SET last_used_at = now() WHERE api_key_id = %s", (live,))
    db.execute(
        "UPDATE api_keys SET status = 'revoked', revoked_at = now() WHERE api_key_id = %s", (live,)
    )


def test_api_keys_allowed_for_suspended_organizations(db: psycopg.Connection[Any]) -> None:
    org_id = org(db, status="suspended")
    api_key(db, org_id, "k")
    refused(
        db,
        "INSERT INTO api_keys (organization_id, key_id, name, hashed_secret)"
        " VALUES (%s, 'abcdefabcdef', 'k2', 'd')",
        (uuid.uuid4(),),
        error=errors.ForeignKeyViolation,
        constraint="fk_api_keys_organization_id",
    )


def test_moving_a_key_to_a_closed_organization_is_refused(db: psycopg.Connection[Any]) -> None:
    closed = org(db)
    key = api_key(db, org(db), "k")
    db.execute("UPDATE organizations SET status = 'closed' WHERE organization_id = %s", (closed,))
    refused(
        db,
        "UPDATE api_keys SET organization_id = %s WHERE api_key_id = %s",
        (closed, key),
        error=errors.RaiseException,
        message="ORG_INACTIVE",
    )


# -- model registry ------------------------------------------------------------------------

MODEL = (
    "INSERT INTO model_registry_entries (organization_id, name, revision, deployment_target,"
    " cost_per_1k_tokens_usd) VALUES (%s, %s, %s, 'gpu-pool', %s)"
    " RETURNING model_registry_entry_id"
)


def test_global_models_are_unique_too(db: psycopg.Connection[Any]) -> None:
    db.execute(MODEL, (None, "all-MiniLM-L6-v2", "gt-1", 0.01))
    refused(
        db,
        MODEL,
        (None, "all-MiniLM-L6-v2", "gt-1", 0.02),
        error=errors.UniqueViolation,
        constraint="uq_model_registry_entries_organization_id_name_revision",
    )
    org_id = org(db)
    db.execute(MODEL, (org_id, "all-MiniLM-L6-v2", "gt-1", 0.01))  # an org's own copy: fine
    db.execute(MODEL, (None, "all-MiniLM-L6-v2", "gt-2", 0.01))  # another revision: fine
    refused(
        db,
        MODEL,
        (org_id, "all-MiniLM-L6-v2", "gt-1", 0.01),
        error=errors.UniqueViolation,
        constraint="uq_model_registry_entries_organization_id_name_revision",
    )


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        (
            "INSERT INTO model_registry_entries (name, revision, deployment_target,"
            " cost_per_1k_tokens_usd) VALUES ('m', 'r', 't', -0.01)",
            "ck_model_registry_entries_cost_per_1k_tokens_usd",
        ),
        (
            "INSERT INTO model_registry_entries (name, revision, deployment_target,"
            " cost_per_1k_tokens_usd, status) VALUES ('m', 'r', 't', 0, 'gone')",
            "ck_model_registry_entries_status",
        ),
        (
            "INSERT INTO model_registry_entries (name, revision, deployment_target,"
            " cost_per_1k_tokens_usd, metadata) VALUES ('m', 'r', 't', 0, '[1]')",
            "ck_model_registry_entries_metadata",
        ),
        (
            "INSERT INTO model_registry_entries (name, revision, deployment_target,"
            " cost_per_1k_tokens_usd) VALUES ('', 'r', 't', 0)",
            "ck_model_registry_entries_name",
        ),
    ],
)
def test_model_checks(db: psycopg.Connection[Any], sql: str, constraint: str) -> None:
    refused(db, sql, error=errors.CheckViolation, constraint=constraint)


def test_model_history_is_kept(db: psycopg.Connection[Any]) -> None:
    row = db.execute(MODEL, (None, "hist-model", "r1", 0.5)).fetchone()
    assert row is not None
    model_id = row[0]
    db.execute(
        "UPDATE model_registry_entries SET status = 'deprecated' WHERE model_registry_entry_id"
        " = %s",
        (model_id,),
    )
    db.execute("DELETE FROM model_registry_entries WHERE model_registry_entry_id = %s", (model_id,))
    changes = db.execute(
        "SELECT change, old_row->>'status', new_row->>'status' FROM model_registry_entry_changes"
        " WHERE model_registry_entry_id = %s ORDER BY model_registry_entry_change_id",
        (model_id,),
    ).fetchall()
    assert changes == [
        ("insert", None, "active"),
        ("update", "active", "deprecated"),
        ("delete", "deprecated", None),
    ]
    refused(
        db,
        "INSERT INTO model_registry_entry_changes (model_registry_entry_id, change, new_row)"
        " VALUES (gen_random_uuid(), 'update', '{}')",
        error=errors.CheckViolation,
        constraint="ck_model_registry_entry_changes_rows",
    )


# -- usage events --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "constraint"),
    [
        ({"tokens": -1}, "ck_usage_events_tokens_consumed"),
        ({"latency": -1}, "ck_usage_events_latency_ms"),
        ({"status": "timeout"}, "ck_usage_events_status"),
        ({"error_code": "MODEL_FAILED"}, "ck_usage_events_error_code"),
        ({"cost": -0.5}, "ck_usage_events_cost_usd"),
        ({"region": ""}, "ck_usage_events_region"),
    ],
)
def test_usage_event_checks(
    db: psycopg.Connection[Any], changes: dict[str, Any], constraint: str
) -> None:
    refused(
        db, EVENT, {**GOOD_EVENT, **changes}, error=errors.CheckViolation, constraint=constraint
    )


def test_usage_event_error_codes(db: psycopg.Connection[Any]) -> None:
    db.execute(EVENT, GOOD_EVENT)
    db.execute(EVENT, {**GOOD_EVENT, "status": "error", "error_code": "MODEL_FAILED"})
    db.execute(EVENT, {**GOOD_EVENT, "status": "rate_limited", "tokens": 0})
    row = db.execute("SELECT count(*), bool_and(ingested_at IS NOT NULL) FROM usage_events")
    assert row.fetchone() == (3, True)


# -- rollups -------------------------------------------------------------------------------

ROLLUP = (
    "INSERT INTO {table} (bucket_start, organization_id, model_id, request_count, tokens_total,"
    " error_count, rate_limited_count, cost_usd, latency_ms_sum) VALUES (%(bucket)s, %(org)s,"
    " %(model)s, %(requests)s, %(tokens)s, %(errors)s, %(limited)s, %(cost)s, %(latency)s)"
)
ORG_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
GOOD_ROLLUP = {
    "bucket": "2026-11-26 10:00:00+00",
    "org": ORG_A,
    "model": None,
    "requests": 10,
    "tokens": 100,
    "errors": 2,
    "limited": 1,
    "cost": 0.5,
    "latency": 300,
}


@pytest.mark.parametrize("grain", ["hourly", "daily"])
@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"errors": 11}, "error_count"),
        ({"errors": -1}, "error_count"),
        # request_count >= 0 has its own check, but error_count (>= 0, <= request_count)
        # always fails first for a negative request_count.
        ({"requests": -1, "errors": 0, "limited": 0}, "error_count"),
        ({"tokens": -1}, "tokens_total"),
        ({"limited": 11}, "rate_limited_count"),
        ({"cost": -1}, "cost_usd"),
        ({"latency": -1}, "latency_ms_sum"),
        ({"bucket": "2026-11-26 10:30:00+00"}, "bucket_start"),
    ],
)
def test_rollup_checks(
    db: psycopg.Connection[Any], grain: str, changes: dict[str, Any], what: str
) -> None:
    table = f"analytics_{grain}_rollups"
    row = {**GOOD_ROLLUP, **changes}
    if grain == "daily" and what != "bucket_start":
        row["bucket"] = "2026-11-26 00:00:00+00"
    refused(
        db,
        ROLLUP.format(table=table),
        row,
        error=errors.CheckViolation,
        constraint=f"ck_{table}_{what}",
    )


@pytest.mark.parametrize("grain", ["hourly", "daily"])
def test_rollup_buckets_are_unique_with_null_models(
    db: psycopg.Connection[Any], grain: str
) -> None:
    table = f"analytics_{grain}_rollups"
    row = {**GOOD_ROLLUP, "bucket": "2026-11-26 00:00:00+00"}
    db.execute(ROLLUP.format(table=table), row)
    db.execute(ROLLUP.format(table=table), {**row, "model": uuid.uuid4()})
    refused(
        db,
        ROLLUP.format(table=table),
        row,
        error=errors.UniqueViolation,
        constraint=f"uq_{table}_bucket_start_org_id_model_id",
    )


def test_daily_buckets_are_utc_midnights_whatever_the_session_zone(
    db: psycopg.Connection[Any],
) -> None:
    db.execute("SET LOCAL TimeZone = 'Asia/Kolkata'")
    refused(
        db,
        ROLLUP.format(table="analytics_daily_rollups"),
        {**GOOD_ROLLUP, "bucket": "2026-11-26 00:00:00+05:30"},
        error=errors.CheckViolation,
        constraint="ck_analytics_daily_rollups_bucket_start",
    )
    db.execute(
        ROLLUP.format(table="analytics_daily_rollups"),
        {**GOOD_ROLLUP, "bucket": "2026-11-26 05:30:00+05:30"},
    )
