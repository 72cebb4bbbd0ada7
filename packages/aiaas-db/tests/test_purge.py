"""Purge: users anonymised after their deletion request ages past the window; no PII left."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest
import seed_support
import yaml
from seed_support import content_hashes, run_cli, run_cli_json

from aiaas_db.platform._pii import PiiProtector
from aiaas_db.platform._purge import PURGE_POLICY_WINDOW, PurgeError, anonymized_marker, purge
from aiaas_db.platform._seeds import CI_SEED_SECRET, seed, seed_uuid

platform_template = seed_support.platform_template
platform_url = seed_support.platform_url

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
PII = PiiProtector.for_local_development(CI_SEED_SECRET)
LEAVER = seed_uuid("users", "acme-pro:leaver")  # asked 45 days before NOW
NEW_LEAVER = seed_uuid("users", "acme-pro:newleaver")  # asked 3 days before NOW
LEAVER_EMAIL = "leaver@acme-pro.example.com"
BYTEA_MATCH = psycopg.sql.SQL("position(convert_to(%s, 'UTF8') in {c}) > 0")
TEXT_MATCH = psycopg.sql.SQL("strpos({c}::text, %s) > 0")
SEARCHED_TYPES = ("text", "character varying", "bytea", "jsonb", "json", "ARRAY")


@pytest.fixture
def ci_url(platform_url: str) -> str:
    seed(platform_url, "ci", window="1d", now=NOW, seed_secret=CI_SEED_SECRET, protector=PII)
    return platform_url


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AIAAS_DB_SEED_SECRET", "AIAAS_DB_PII_HASH_KEY", "AIAAS_ENV", "AIAAS_DB_URL"):
        monkeypatch.delenv(var, raising=False)


def q(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def traces(url: str, needles: list[str]) -> list[str]:
    """``table.column`` of every text-like or binary value containing one of ``needles``."""
    found: list[str] = []
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
            " AND c.data_type = ANY(%s)",
            (list(SEARCHED_TYPES),),
        ).fetchall()
        assert len(columns) > 20  # the whole platform schema is searched
        for table, column, data_type in columns:
            for needle in needles:
                cond = BYTEA_MATCH if data_type == "bytea" else TEXT_MATCH
                sql = psycopg.sql.SQL("SELECT count(*) FROM {t} WHERE {cond}").format(
                    t=psycopg.sql.Identifier(table),
                    cond=cond.format(c=psycopg.sql.Identifier(column)),
                )
                if conn.execute(sql, (needle,)).fetchone() != (0,):
                    found.append(f"{table}.{column}")
    return sorted(set(found))


def test_purge_anonymises_only_users_past_the_window(ci_url: str) -> None:
    report = purge(ci_url, protector=PII, now=NOW)
    assert report.user_ids == (LEAVER,)
    assert report.count == 1
    assert not report.dry_run
    assert report.cutoff == NOW - PURGE_POLICY_WINDOW
    row = q(
        ci_url,
        "SELECT email_digest, email_ciphertext, email_key_version, anonymized_at, deleted_at,"
        " status FROM users WHERE user_id = %s",
        (LEAVER,),
    )[0]
    assert row == (anonymized_marker(LEAVER), None, None, NOW, NOW, "disabled")
    # The recent request and everyone else are untouched.
    others = q(
        ci_url,
        "SELECT count(*) FROM users WHERE anonymized_at IS NULL AND email_ciphertext IS NOT NULL",
    )
    assert others == [(18,)]
    audit = q(
        ci_url,
        "SELECT actor_type, actor_id, target, metadata::text FROM audit_log_entries"
        " WHERE action = 'user.anonymized'",
    )
    assert len(audit) == 1
    actor_type, actor_id, target, metadata = audit[0]
    assert (actor_type, target) == ("service", f"user:{LEAVER}")
    assert actor_id == PII.digest("aiaas-db purge")
    assert "leaver" not in metadata
    assert "example.com" not in metadata
    assert "policy_window" in metadata


def test_purge_is_idempotent(ci_url: str) -> None:
    purge(ci_url, protector=PII, now=NOW)
    before = content_hashes(ci_url)
    again = purge(ci_url, protector=PII, now=NOW + timedelta(hours=1))
    assert again.user_ids == ()
    assert content_hashes(ci_url) == before


def test_before_and_after_the_window(ci_url: str) -> None:
    requested = NOW - timedelta(days=3)  # NEW_LEAVER's request
    assert (
        NEW_LEAVER not in purge(ci_url, protector=PII, now=requested + timedelta(days=29)).user_ids
    )
    assert purge(ci_url, protector=PII, now=requested + timedelta(days=31)).user_ids == (
        NEW_LEAVER,
    )
    assert q(ci_url, "SELECT count(*) FROM users WHERE anonymized_at IS NOT NULL") == [(2,)]


def test_shorter_window_purges_sooner(ci_url: str) -> None:
    report = purge(ci_url, protector=PII, now=NOW, window="2d")
    assert report.user_ids == (LEAVER, NEW_LEAVER)  # oldest request first


def test_dry_run_changes_nothing(ci_url: str) -> None:
    before = content_hashes(ci_url)
    report = purge(ci_url, protector=PII, now=NOW, dry_run=True)
    assert report.user_ids == (LEAVER,)
    assert report.dry_run
    assert report.to_dict()["anonymized"] == 0
    assert report.to_dict()["candidates"] == 1
    assert content_hashes(ci_url) == before
    code, doc = run_cli_json("purge", "--dsn", ci_url, "--dry-run", "--window", "0d")
    assert code == 0, doc
    assert doc["dry_run"] is True
    assert set(doc["user_ids"]) == {str(LEAVER), str(NEW_LEAVER)}
    assert content_hashes(ci_url) == before


def test_no_trace_of_the_email_after_purge(ci_url: str) -> None:
    digest = PII.email_digest(LEAVER_EMAIL)
    needles = [LEAVER_EMAIL, digest, digest.rsplit("$", 1)[1]]
    # The search does find the address while it is there (so it can fail).
    assert traces(ci_url, needles) == ["users.email_digest"]
    ciphertext = q(
        ci_url,
        "SELECT email_ciphertext, email_key_version FROM users WHERE user_id = %s",
        (LEAVER,),
    )
    assert PII.decrypt(bytes(ciphertext[0][0]), LEAVER.bytes, ciphertext[0][1]) == LEAVER_EMAIL
    purge(ci_url, protector=PII, now=NOW)
    assert traces(ci_url, needles) == []
    # No remaining ciphertext decrypts to the address either.
    for ct, version, user_id in q(
        ci_url,
        "SELECT email_ciphertext, email_key_version, user_id FROM users"
        " WHERE email_ciphertext IS NOT NULL",
    ):
        assert PII.decrypt(bytes(ct), user_id.bytes, version) != LEAVER_EMAIL


def test_rollups_hold_no_personal_data(platform_url: str, contracts_dir: Path) -> None:
    classification = yaml.safe_load(
        (contracts_dir / "data-classification.yml").read_text(encoding="utf-8")
    )
    personal: set[str] = set()
    for entity in classification["entities"]:
        for field in entity["fields"]:
            # Fields of people and credentials, and anything restricted, are personal/secret.
            if entity["name"] in {"User", "APIKey"} or field["classification"] == "restricted":
                personal.add(field["name"])
    assert {"email", "user_id", "api_key_id", "hashed_secret", "actor_id"} <= personal
    pattern = re.compile(r"email|user|key|secret|actor|ip_address|request_id|name", re.I)
    tables = ("analytics_hourly_rollups", "analytics_daily_rollups")
    columns = q(
        platform_url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = ANY(%s)",
        (list(tables),),
    )
    assert {t for t, _ in columns} == set(tables)
    offending = [(t, c) for t, c in columns if c in personal or pattern.search(c)]
    assert offending == []
    assert {"organization_id", "model_id", "bucket_start", "request_count"} <= {
        c for _, c in columns
    }


def test_cli_purge(ci_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside production without PII keys in the environment, the local-development keys of
    # the seed secret are used: give it the ci secret the database was seeded with.
    monkeypatch.setenv("AIAAS_DB_SEED_SECRET", CI_SEED_SECRET)
    code, doc = run_cli_json("purge", "--dsn", ci_url, "--window", "30d")
    assert code == 0, doc
    assert doc["anonymized"] == 1
    assert doc["user_ids"] == [str(LEAVER)]
    code, out, err = run_cli("purge", "--dsn", ci_url)
    assert code == 0, err
    assert "anonymised 0 user(s)" in out


def test_cli_text_lists_users(ci_url: str) -> None:
    code, out, err = run_cli("purge", "--dsn", ci_url, "--dry-run", "--window", "0d")
    assert code == 0, err
    assert "would anonymise 2 user(s)" in out
    assert str(NEW_LEAVER) in out


@pytest.mark.parametrize("window", ["31d", "5w", "abc", "-1d"])
def test_bad_windows(window: str, ci_url: str) -> None:
    with pytest.raises(PurgeError) as info:
        purge(ci_url, protector=PII, window=window)
    assert info.value.code == "PURGE_WINDOW_INVALID"
    code, _out, err = run_cli("purge", "--dsn", ci_url, "--window", window)
    assert code == 2
    assert "window" in err.lower()


def test_refusals(db_url: str) -> None:
    code, doc = run_cli_json("purge", "--dsn", db_url)
    assert code == 5
    assert doc["error"]["code"] == "PURGE_SCHEMA_MISSING"
    code, doc = run_cli_json("purge", "--dsn", db_url, "--env", "production")
    assert code == 2  # missing configuration is a usage error
    assert doc["error"]["code"] == "PII_KEYS_MISSING"
    assert "AIAAS_DB_PII_HASH_KEY" in doc["error"]["error"]
    with pytest.raises(ValueError, match="timezone-aware"):
        purge(db_url, protector=PII, now=datetime(2026, 1, 1))  # noqa: DTZ001


def test_purge_with_a_caller_connection(ci_url: str) -> None:
    with psycopg.connect(ci_url) as conn:
        report = purge(conn, protector=PII, now=NOW, request_id="req-123")
        conn.commit()
    assert report.user_ids == (LEAVER,)
    assert q(
        ci_url, "SELECT request_id FROM audit_log_entries WHERE action = 'user.anonymized'"
    ) == [("req-123",)]
