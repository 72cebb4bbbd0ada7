"""The platform's own change sets: shipped as resources, drilled, documented, audited."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

from aiaas_db import (
    LocalPostgres,
    MigrationRefusedError,
    Migrator,
    PiiKeyError,
    PiiProtector,
    platform_source,
)
from aiaas_db.platform._components import PLATFORM_COMPONENTS

PII = PiiProtector.for_local_development("test-platform-schema")
DIGEST = re.compile(r"hmac-sha256\$dev\$[A-Za-z0-9_-]{43}")

OPERATIONAL_TABLES = {
    "organizations",
    "users",
    "api_keys",
    "model_registry_entries",
    "model_registry_entry_changes",
    "usage_events",
    "usage_events_default",
    "audit_log_entries",
}
ANALYTICS_TABLES = {"analytics_hourly_rollups", "analytics_daily_rollups"}


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AIAAS_DB_PII_HASH_KEY", "AIAAS_DB_PII_ENCRYPTION_KEY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(f"{var}_PREVIOUS", raising=False)


@pytest.fixture(scope="module")
def drilled(pg: LocalPostgres) -> Iterator[str]:
    """A database where every platform change set was drilled (and so is left applied)."""
    url = pg.create_database("platform_drill")
    for component in PLATFORM_COMPONENTS:
        report = Migrator(
            url, platform_source(component), component=component, actor="ci", protector=PII
        ).drill()
        assert report.ok, report.to_dict()
        assert [s.version for s in report.steps] == [
            cs.version for cs in platform_source(component).load()
        ]
    yield url
    pg.drop_database("platform_drill")


def rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_change_sets_are_package_resources_with_versions_in_their_ranges() -> None:
    operational = platform_source("operational").load()
    analytics = platform_source("analytics").load()
    assert [cs.version for cs in operational] == [
        202611260001,
        202611260002,
        202611260003,
        202611260004,
        202611260005,
        202611260006,
    ]
    assert all(202611260001 <= cs.version < 202611260101 for cs in operational)
    assert analytics[0].version == 202611260101
    assert all(cs.version >= 202611260101 for cs in analytics)
    # Every down script drops data, so each is marked destructive; ups never are.
    for cs in (*operational, *analytics):
        assert cs.down.destructive
        assert not cs.up.destructive
        assert cs.origin.startswith("aiaas_db:schemas/")
    assert platform_source("operational").origin == "aiaas_db:schemas/operational"


def test_unknown_platform_component_is_refused() -> None:
    with pytest.raises(MigrationRefusedError, match="unknown platform component") as info:
        platform_source("billing")  # type: ignore[arg-type]
    assert info.value.code == "MIGRATION_COMPONENT_INVALID"


def test_drill_leaves_every_table_applied(drilled: str) -> None:
    tables = {
        r[0]
        for r in rows(
            drilled,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
        )
    }
    assert tables >= OPERATIONAL_TABLES | ANALYTICS_TABLES
    kinds: dict[str, str] = dict(
        rows(  # type: ignore[arg-type]
            drilled,
            "SELECT relname, relkind::text FROM pg_class WHERE relname IN"
            " ('usage_events', 'usage_events_default')",
        )
    )
    assert kinds == {"usage_events": "p", "usage_events_default": "r"}


def test_every_table_and_column_is_commented(drilled: str) -> None:
    missing = rows(
        drilled,
        """
        SELECT c.relname, a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND c.relname = ANY(%s)
          AND col_description(c.oid, a.attnum) IS NULL
        """,
        (sorted(OPERATIONAL_TABLES | ANALYTICS_TABLES - {"usage_events_default"}),),
    )
    assert missing == []
    uncommented = rows(
        drilled,
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND obj_description(oid) IS NULL",
        (sorted(OPERATIONAL_TABLES | ANALYTICS_TABLES),),
    )
    assert uncommented == []


def test_names_follow_the_conventions(drilled: str) -> None:
    constraints = rows(
        drilled,
        """
        SELECT con.conname, con.contype::text, cl.relname
        FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
        WHERE cl.relname = ANY(%s) AND NOT cl.relispartition
          AND con.contype <> 'n'  -- PostgreSQL 18 lists NOT NULL too, named by the server
        """,
        (sorted(OPERATIONAL_TABLES | ANALYTICS_TABLES),),
    )
    prefixes = {"c": "ck_", "u": "uq_", "f": "fk_"}
    for name, kind, table in constraints:
        assert isinstance(name, str)
        assert isinstance(kind, str)
        assert isinstance(table, str)
        if kind == "p":
            assert name == f"{table}_pkey"
        else:
            assert name.startswith(prefixes[kind] + table + "_"), name
    # No timestamp without time zone, no serial-style sequences on platform tables.
    bad = rows(
        drilled,
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema ="
        " 'public' AND table_name = ANY(%s) AND (data_type = 'timestamp without time zone'"
        " OR column_default LIKE 'nextval(%%')",
        (sorted(OPERATIONAL_TABLES | ANALYTICS_TABLES),),
    )
    assert bad == []


def test_migrations_audit_through_the_protector(drilled: str) -> None:
    entries = rows(
        drilled,
        "SELECT actor_type, actor_id, action, target, metadata FROM audit_log_entries"
        " ORDER BY audit_log_entry_id",
    )
    # The drill of the audit table's own set: its first up, its down (table gone: nothing to
    # record) and its reapply; then every later set's up, down and reapply.
    actions = [(e[2], e[3]) for e in entries]
    assert ("migration.apply", "operational:202611260004_audit_log_entries") in actions
    assert ("migration.rollback", "analytics:202611260101_rollups") in actions
    for actor_type, actor_id, _action, _target, metadata in entries:
        assert actor_type == "migration"
        assert isinstance(actor_id, str)
        assert DIGEST.fullmatch(actor_id)
        assert actor_id == PII.digest("ci")
        assert isinstance(metadata, dict)
        assert len(metadata["checksum"]) == 64
    assert "ci" not in {str(e[1]) for e in entries}


def test_missing_pii_keys_fail_before_anything_is_applied(db_url: str) -> None:
    m = Migrator(db_url, platform_source("operational"), component="operational")
    with pytest.raises(PiiKeyError) as info:
        m.up()
    err = info.value
    assert err.code == "PII_KEYS_MISSING"
    assert "AIAAS_DB_PII_HASH_KEY" in err.message
    assert "AIAAS_DB_PII_ENCRYPTION_KEY" in err.message
    assert "nothing was changed" in err.message
    assert err.component == "operational"
    assert rows(db_url, "SELECT to_regclass('organizations') IS NULL") == [(True,)]


def test_pii_keys_from_the_environment(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAAS_DB_PII_HASH_KEY", "v3:" + "ab" * 32)
    monkeypatch.setenv("AIAAS_DB_PII_ENCRYPTION_KEY", "e1:" + "cd" * 32)
    Migrator(db_url, platform_source("operational"), component="operational", actor="ops").up()
    (actor_id, version), *_ = rows(
        db_url, "SELECT actor_id, actor_key_version FROM audit_log_entries"
    )
    assert str(actor_id).startswith("hmac-sha256$v3$")
    assert version == "e1"
    # Once the table exists, a later run needs the keys too, even with nothing pending.
    monkeypatch.delenv("AIAAS_DB_PII_HASH_KEY")
    with pytest.raises(PiiKeyError, match="AIAAS_DB_PII_HASH_KEY"):
        Migrator(db_url, platform_source("operational"), component="operational").up()


def test_a_source_that_creates_the_audit_table_needs_keys_for_any_write(db_url: str) -> None:
    # Even a run that stops before the audit set: the keys are settled before anything runs.
    m = Migrator(db_url, platform_source("operational"), component="operational")
    with pytest.raises(PiiKeyError):
        m.up(to=202611260001)
    # Dry runs write nothing, so they need no keys.
    report = m.up(to=202611260001, dry_run=True)
    assert report.dry_run
    assert report.versions == (202611260001,)


def test_identifiers_of_the_platform_sets_fit_postgresql() -> None:
    # PostgreSQL silently truncates names over 63 bytes; a truncated name breaks the naming
    # conventions and any ON CONFLICT ON CONSTRAINT that spells it out.
    ours = [
        cs
        for c in PLATFORM_COMPONENTS
        for cs in platform_source(c).load()
        if cs.version < 202611260200  # the rollup state sets belong to the rollups engine
    ]
    assert len(ours) == 7
    for cs in ours:
        for script in (cs.up, cs.down):
            long_names = {w for w in re.findall(r"\b[a-z_0-9]+\b", script.sql) if len(w) > 63}
            assert long_names == set(), cs.name
