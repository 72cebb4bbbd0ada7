"""Seeds: deterministic, idempotent fixtures; the printed key; bad input and exit codes."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import seed_support
from hypothesis import given
from hypothesis import strategies as st
from seed_support import content_hashes, counts, run_cli, run_cli_json

from aiaas_core import ApiKeyVerifier, AuthenticationError, HashKey, KeyedHasher, parse_api_key
from aiaas_db import DatabaseUnavailableError, LocalPostgres
from aiaas_db.platform._apikey_store import PostgresApiKeyStore
from aiaas_db.platform._dbops import ensure_usage_partitions, format_window, mask, parse_window
from aiaas_db.platform._pii import PiiProtector
from aiaas_db.platform._seeds import (
    AIAAS_SEED_NAMESPACE,
    CI_SEED_SECRET,
    LOCAL_DEV_SEED_SECRET,
    SEED_SECRET_ENV,
    LoadProgress,
    SeedError,
    derive_api_key,
    local_dev_api_key,
    resolve_seed_secret,
    seed,
    seed_api_key_hash_key,
    seed_api_key_hasher,
    seed_uuid,
)

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
ROLES = {"owner", "admin", "developer", "billing"}
TIERS = {"acme-free": "free", "acme-starter": "starter", "acme-pro": "pro"}
TIERS["acme-enterprise"] = "enterprise"


def protector() -> PiiProtector:
    return PiiProtector.for_local_development(LOCAL_DEV_SEED_SECRET)


def rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        SEED_SECRET_ENV,
        "AIAAS_DB_API_KEY_HASH_KEY",
        "AIAAS_DB_PII_HASH_KEY",
        "AIAAS_DB_PII_ENCRYPTION_KEY",
        "AIAAS_ENV",
        "AIAAS_DB_URL",
    ):
        monkeypatch.delenv(var, raising=False)


def test_local_dev_content(platform_url: str) -> None:
    report = seed(platform_url, "local-dev", now=NOW)
    assert report.window_end == datetime(2026, 11, 26, tzinfo=UTC)
    assert report.window_start == datetime(2026, 11, 19, tzinfo=UTC)
    assert report.changed
    orgs = dict(rows(platform_url, "SELECT slug, plan_tier FROM organizations"))
    assert orgs == TIERS
    budgets = rows(platform_url, "SELECT budget_limit_tokens FROM organizations")
    assert all(int(b[0]) > 0 for b in budgets)
    assert rows(
        platform_url, "SELECT organization_id FROM organizations WHERE slug='acme-pro'"
    ) == [(seed_uuid("organizations", "acme-pro"),)]

    users = rows(
        platform_url,
        "SELECT o.slug, u.user_id, u.role, u.email_digest, u.email_ciphertext,"
        " u.email_key_version FROM users u JOIN organizations o USING (organization_id)",
    )
    assert len(users) == 16
    pii = protector()
    for slug, user_id, role, digest, ciphertext, version in users:
        email = f"{role}@{slug}.example.com"
        assert digest == pii.email_digest(email)
        assert str(digest).startswith("hmac-sha256$")
        assert pii.decrypt(bytes(ciphertext), user_id.bytes, version) == email
        assert email.encode() not in bytes(ciphertext)
    assert {(u[0], u[2]) for u in users} == {(s, r) for s in TIERS for r in ROLES}
    # No e-mail address in plain text anywhere in users.
    assert rows(
        platform_url, "SELECT count(*) FROM users u WHERE strpos(u::text, 'example.com') > 0"
    ) == [(0,)]

    keys = rows(
        platform_url,
        "SELECT o.slug, k.name, k.key_id, k.hashed_secret, k.status, k.roles, k.scopes"
        " FROM api_keys k JOIN organizations o USING (organization_id)",
    )
    names = {(k[0], k[1]) for k in keys}
    assert ("acme-pro", "local-dev") in names
    assert {("acme-free", "default"), ("acme-enterprise", "default")} <= names
    local = next(k for k in keys if k[1] == "local-dev")
    token = parse_api_key(report.api_key)
    assert local[2] == token.key_id == report.api_key_id
    assert seed_api_key_hasher().verify(token.secret, str(local[3]))
    assert token.secret not in str(local[3])
    assert local[4] == "active"
    assert "developer" in local[5]

    models = rows(
        platform_url,
        "SELECT organization_id, name, revision, cost_per_1k_tokens_usd"
        " FROM model_registry_entries",
    )
    assert (None, "all-MiniLM-L6-v2", "gt-1") in {m[:3] for m in models}
    own = [m for m in models if m[0] is not None]
    assert own
    assert own[0][0] == seed_uuid("organizations", "acme-enterprise")

    events = rows(
        platform_url,
        "SELECT min(occurred_at), max(occurred_at), count(*), count(DISTINCT organization_id),"
        " count(*) FILTER (WHERE status = 'error'),"
        " count(*) FILTER (WHERE status = 'rate_limited'),"
        " count(*) FILTER (WHERE model_id IS NULL), min(tokens_consumed)"
        " FILTER (WHERE status = 'success'), max(tokens_consumed), sum(cost_usd) FROM usage_events",
    )[0]
    assert events[0] >= report.window_start
    assert events[1] < report.window_end
    assert events[2] == report.inserted["usage_events"] > 1000
    assert events[3] == 4
    assert 0 < events[4] < events[2] * 0.06
    assert 0 < events[5] < events[2] * 0.04
    assert events[6] == events[5]  # rate-limited requests never reached a model
    assert events[7] >= 8
    assert events[8] <= 2048
    assert events[9] > Decimal(0)
    # Every event landed in its daily partition, none in the default one.
    assert rows(platform_url, "SELECT count(*) FROM usage_events_default") == [(0,)]
    audit = rows(
        platform_url, "SELECT action, target FROM audit_log_entries WHERE action = 'seed.apply'"
    )
    assert audit == [("seed.apply", "seed-package:local-dev")]


def test_rerun_changes_nothing(platform_url: str) -> None:
    first = seed(platform_url, "local-dev", now=NOW)
    before_counts, before = counts(platform_url), content_hashes(platform_url)
    second = seed(platform_url, "local-dev", now=NOW + timedelta(hours=5))
    assert not second.changed
    assert set(second.inserted.values()) == {0}
    assert counts(platform_url) == before_counts
    assert content_hashes(platform_url) == before
    assert second.api_key == first.api_key


def test_next_day_adds_only_the_new_day(platform_url: str) -> None:
    seed(platform_url, "ci", now=NOW, window="3d")
    before = rows(platform_url, "SELECT usage_event_id FROM usage_events")
    later = seed(platform_url, "ci", now=NOW + timedelta(days=1), window="3d")
    assert later.inserted["organizations"] == 0
    assert later.inserted["usage_events"] > 0
    after = rows(platform_url, "SELECT usage_event_id FROM usage_events")
    assert set(before) < set(after)
    assert len(after) == len(set(after))  # no duplicate ids
    new_days = rows(
        platform_url,
        "SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date FROM usage_events"
        " WHERE occurred_at >= %s",
        (datetime(2026, 11, 26, tzinfo=UTC),),
    )
    assert new_days == [(date(2026, 11, 26),)]


def test_deterministic_across_databases(
    pg: LocalPostgres, platform_template: str, platform_url: str
) -> None:
    name = f"t_det_{uuid.uuid4().hex[:12]}"
    other = pg.create_database(name, template=platform_template)
    try:
        for url in (platform_url, other):
            seed(url, "ci", now=NOW, window="2d")
        query = (
            "SELECT 'o', organization_id::text, slug FROM organizations UNION ALL"
            " SELECT 'u', user_id::text, email_digest FROM users UNION ALL"
            " SELECT 'k', api_key_id::text, key_id || hashed_secret FROM api_keys UNION ALL"
            " SELECT 'm', model_registry_entry_id::text, name FROM model_registry_entries UNION ALL"
            " SELECT 'e', usage_event_id::text, occurred_at::text || tokens_consumed || status"
            " FROM usage_events ORDER BY 1, 2"
        )
        assert rows(platform_url, query) == rows(other, query)
    finally:
        pg.drop_database(name)


def test_both_packages_in_one_database(platform_url: str) -> None:
    # One database, one seed secret: the packages' published defaults differ, so pass one.
    ci = seed(platform_url, "ci", now=NOW, window="2d", seed_secret=CI_SEED_SECRET)
    dev = seed(platform_url, "local-dev", now=NOW, window="2d", seed_secret=CI_SEED_SECRET)
    assert ci.inserted["users"] == 19  # 16 + disabled + two deletion requests
    assert ci.inserted["api_keys"] == 8
    assert dev.inserted["organizations"] == dev.inserted["users"] == dev.inserted["api_keys"] == 0
    assert dev.inserted["usage_events"] > ci.inserted["usage_events"] > 0
    total = rows(platform_url, "SELECT count(*), count(DISTINCT usage_event_id) FROM usage_events")
    assert total == [(ci.inserted["usage_events"] + dev.inserted["usage_events"],) * 2]
    statuses = dict(
        rows(platform_url, "SELECT name, status FROM api_keys WHERE starts_with(name, 'ci-')")
    )
    assert statuses == {"ci-revoked": "revoked", "ci-expired": "active", "ci-rotating": "rotating"}


def test_existing_natural_key_is_reused_not_changed(platform_url: str) -> None:
    with psycopg.connect(platform_url) as conn:
        conn.execute(
            "INSERT INTO organizations (slug, display_name, plan_tier, budget_limit_tokens)"
            " VALUES ('acme-pro', 'Hand made', 'starter', 7)"
        )
    report = seed(platform_url, "local-dev", now=NOW, window="1d")
    assert report.inserted["organizations"] == 3
    org = rows(
        platform_url,
        "SELECT organization_id, display_name, plan_tier FROM organizations WHERE slug='acme-pro'",
    )
    assert org[0][1:] == ("Hand made", "starter")
    assert org[0][0] != seed_uuid("organizations", "acme-pro")
    key_org = rows(platform_url, "SELECT organization_id FROM api_keys WHERE name = 'local-dev'")
    assert key_org == [(org[0][0],)]


async def test_printed_key_authenticates(platform_url: str) -> None:
    code, doc = run_cli_json(
        "seed", "--package", "local-dev", "--dsn", platform_url, "--window", "1d"
    )
    assert code == 0, doc
    again_code, again = run_cli_json("seed", "--dsn", platform_url, "--window", "1d")
    assert again_code == 0
    assert again["changed"] is False
    assert doc["api_key"] == again["api_key"] == local_dev_api_key()
    assert doc["inserted"]["organizations"] == 4
    store = PostgresApiKeyStore(platform_url)
    verifier = ApiKeyVerifier(store, seed_api_key_hasher(), background=False)
    actor = await verifier.verify(doc["api_key"])
    assert actor.kind == "api_key"
    assert actor.roles == ("developer",)
    with pytest.raises(AuthenticationError):
        await verifier.verify(derive_api_key(LOCAL_DEV_SEED_SECRET, "acme-pro", "nope").token)


def test_seed_secret_and_hash_key_from_environment(
    platform_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_SECRET_ENV, "a-team-specific-seed-secret-0042")
    monkeypatch.setenv("AIAAS_DB_API_KEY_HASH_KEY", "v7:" + "ab" * 32)
    monkeypatch.setenv("AIAAS_DB_PII_HASH_KEY", "p3:" + "cd" * 32)
    monkeypatch.setenv("AIAAS_DB_PII_ENCRYPTION_KEY", "e3:" + "ef" * 32)
    code, doc = run_cli_json("seed", "--package", "ci", "--dsn", platform_url, "--window", "1d")
    assert code == 0, doc
    assert doc["api_key"] == local_dev_api_key("a-team-specific-seed-secret-0042")
    assert doc["api_key"] != local_dev_api_key(CI_SEED_SECRET)
    digest = rows(platform_url, "SELECT hashed_secret FROM api_keys WHERE name = 'local-dev'")
    assert str(digest[0][0]).startswith("hmac-sha256$v7$")
    pii = PiiProtector.from_env()
    emails = rows(
        platform_url, "SELECT email_digest, email_key_version FROM users WHERE role = 'owner'"
    )
    assert all(d.startswith("hmac-sha256$p3$") and v == "e3" for d, v in emails)
    assert pii.email_digest("owner@acme-pro.example.com") in {d for d, _ in emails}


def test_text_output_hides_the_key(platform_url: str) -> None:
    code, out, err = run_cli("seed", "--dsn", platform_url, "--window", "1d")
    assert code == 0, err
    assert "seeded" in out
    assert "usage_events" in out
    key = local_dev_api_key()
    assert key not in out
    assert key not in err
    assert f"aiaas_{parse_api_key(key).key_id}_****" in out
    code, out, _ = run_cli("seed", "--dsn", platform_url, "--window", "1d")
    assert code == 0
    assert "already seeded" in out


def test_progress_reports_every_event(platform_url: str) -> None:
    seen: list[int] = []
    advanced: list[int] = []
    closed: list[bool] = []

    class Recorder:
        def advance(self, rows: int) -> None:
            advanced.append(rows)

        def close(self) -> None:
            closed.append(True)

    def factory(total: int) -> LoadProgress:
        seen.append(total)
        recorder = Recorder()
        assert isinstance(recorder, LoadProgress)
        return recorder

    report = seed(platform_url, "ci", now=NOW, window="2d", progress=factory)
    assert seen == [sum(advanced)] == [report.inserted["usage_events"]]
    assert closed == [True]


def test_rich_progress_bar(platform_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(platform_url, "ci", now=NOW, window="1d", progress=True)
    assert "usage events" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["bogus", "", "LOCAL-DEV"])
def test_unknown_package(package: str, platform_url: str) -> None:
    with pytest.raises(SeedError) as info:
        seed(platform_url, package)
    assert info.value.code == "SEED_PACKAGE_UNKNOWN"
    assert "local-dev, ci" in info.value.message


@pytest.mark.parametrize("window", ["7x", "0d", "36h", "367d", "-1d", "d", "1.5d"])
def test_bad_window(window: str, platform_url: str) -> None:
    with pytest.raises(SeedError) as info:
        seed(platform_url, "ci", window=window)
    assert info.value.code == "SEED_WINDOW_INVALID"
    code, _out, err = run_cli("seed", "--dsn", platform_url, "--window", window)
    assert code == 2
    assert "window" in err.lower()
    assert counts(platform_url)["organizations"] == 0


def test_windows_that_are_whole_days(platform_url: str) -> None:
    report = seed(platform_url, "ci", now=NOW, window=timedelta(weeks=1))
    assert report.window_end - report.window_start == timedelta(days=7)
    assert seed(platform_url, "ci", now=NOW, window="48h").window_start == datetime(
        2026, 11, 24, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        seed(platform_url, "ci", now=datetime(2026, 1, 1))  # noqa: DTZ001


def test_cli_usage_errors() -> None:
    code, _out, err = run_cli("seed", "--package", "bogus")
    assert code == 2
    assert "local-dev" in err


def test_protected_environment_refused(platform_url: str) -> None:
    code, doc = run_cli_json("seed", "--dsn", platform_url, "--env", "production")
    assert code == 5
    assert doc["error"]["code"] == "SEED_PROTECTED_ENVIRONMENT"
    with pytest.raises(SeedError, match="production"):
        seed(platform_url, "ci", environment="Production")
    assert counts(platform_url)["organizations"] == 0


def test_schema_missing(db_url: str) -> None:
    code, doc = run_cli_json("seed", "--dsn", db_url)
    assert code == 5
    assert doc["error"]["code"] == "SEED_SCHEMA_MISSING"
    assert "aiaas-db migrate up" in doc["error"]["error"]


def test_unreachable_database() -> None:
    url = "postgresql://u:sup3rs3cret@127.0.0.1:1/nope"
    code, doc = run_cli_json("seed", "--dsn", url)
    assert code == 7
    assert doc["error"]["code"] == "DATABASE_UNAVAILABLE"
    assert "sup3rs3cret" not in str(doc)
    with pytest.raises(DatabaseUnavailableError):
        seed(url, "ci")
    with pytest.raises(TypeError):
        seed(42, "ci")  # type: ignore[arg-type]


def test_seed_secret_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_seed_secret("local-dev", {}) == LOCAL_DEV_SEED_SECRET
    assert resolve_seed_secret("ci", {SEED_SECRET_ENV: "  "}) == CI_SEED_SECRET
    assert resolve_seed_secret("ci", {SEED_SECRET_ENV: "x" * 20}) == "x" * 20
    with pytest.raises(SeedError) as info:
        resolve_seed_secret("ci", {SEED_SECRET_ENV: "short"})
    assert info.value.code == "SEED_SECRET_INVALID"
    assert "short" not in info.value.message
    with pytest.raises(SeedError):
        local_dev_api_key("short")
    with pytest.raises(SeedError):
        resolve_seed_secret("other", {})
    monkeypatch.setenv(SEED_SECRET_ENV, "tiny")
    code, doc = run_cli_json("seed", "--dsn", "postgresql://127.0.0.1:1/x")
    assert code == 5
    assert doc["error"]["code"] == "SEED_SECRET_INVALID"


def test_derived_ids_and_keys() -> None:
    assert seed_uuid("organizations", "acme-pro").version == 5
    assert seed_uuid("organizations", "acme-pro") != seed_uuid("organizations", "acme-free")
    assert seed_uuid("users", "acme-pro:owner") == uuid.uuid5(
        AIAAS_SEED_NAMESPACE, "users:acme-pro:owner"
    )
    key = seed_api_key_hash_key()
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert key != seed_api_key_hash_key(CI_SEED_SECRET)
    assert local_dev_api_key() == local_dev_api_key(LOCAL_DEV_SEED_SECRET)
    assert "secret=<redacted>" in repr(derive_api_key(CI_SEED_SECRET, "acme-pro", "local-dev"))


@given(st.text(min_size=16, max_size=64).filter(lambda s: len(s.strip()) >= 16))
def test_any_secret_gives_a_well_formed_stable_key(secret: str) -> None:
    token = local_dev_api_key(secret)
    assert token == local_dev_api_key(secret)
    parsed = parse_api_key(token)
    assert parsed.token == token
    other = derive_api_key(secret, "acme-pro", "default")
    assert other.key_id != parsed.key_id
    assert other.secret != parsed.secret


def test_report_dict_hides_key_unless_asked(platform_url: str) -> None:
    report = seed(platform_url, "ci", now=NOW, window="1d")
    assert report.api_key not in repr(report)
    assert "api_key" not in report.to_dict()
    assert report.to_dict(include_api_key=True)["api_key"] == report.api_key
    assert report.to_dict()["window_start"] == "2026-11-25T00:00:00+00:00"


def test_window_helpers() -> None:
    assert parse_window("2w") == timedelta(days=14)
    assert parse_window(" 36h ") == timedelta(hours=36)
    with pytest.raises(ValueError, match="negative"):
        parse_window(timedelta(days=-1))
    assert format_window(timedelta(days=3)) == "3d"
    assert format_window(timedelta(hours=5)) == "5h"
    assert format_window(timedelta(seconds=90)) == "90s"
    assert mask("password sekrit failed", "postgresql://u:sekrit@h/d") == "password *** failed"
    assert mask("no password here", "not a dsn = =") == "no password here"


def test_partitions_cover_a_partial_last_day(platform_url: str) -> None:
    with psycopg.connect(platform_url) as conn:
        start = datetime(2026, 3, 1, 6, tzinfo=UTC)
        end = start + timedelta(days=1)
        created = ensure_usage_partitions(conn, start, end, protector=protector(), actor="t")
        again = ensure_usage_partitions(conn, start, end, protector=protector(), actor="t")
        exact = ensure_usage_partitions(
            conn,
            start.replace(hour=0),
            start.replace(day=3, hour=0),
            protector=protector(),
            actor="t",
        )
    assert (created, again, exact) == (2, 0, 0)


def test_other_secret_on_a_seeded_database_is_refused(platform_url: str) -> None:
    seed(platform_url, "ci", now=NOW, window="1d")
    before = content_hashes(platform_url)
    with pytest.raises(SeedError) as info:
        seed(platform_url, "ci", now=NOW, window="1d", seed_secret="another-secret-of-20-chars")
    assert info.value.code == "SEED_SECRET_MISMATCH"
    assert "another-secret" not in info.value.message
    other_hash_key = KeyedHasher([HashKey("v9", b"k" * 32)], "v9")
    with pytest.raises(SeedError, match="hash key"):
        seed(platform_url, "ci", now=NOW, window="1d", api_key_hasher=other_hash_key)
    assert content_hashes(platform_url) == before
    with psycopg.connect(platform_url) as conn:
        conn.execute("UPDATE api_keys SET hashed_secret = 'not-a-digest' WHERE name = 'local-dev'")
    with pytest.raises(SeedError) as garbled:
        seed(platform_url, "ci", now=NOW, window="1d")
    assert garbled.value.code == "SEED_SECRET_MISMATCH"
