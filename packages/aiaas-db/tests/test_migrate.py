"""Applying and rolling back: the happy path, failures, checks, timeouts, state and history."""

from __future__ import annotations

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter
from psycopg import sql

from aiaas_db import (
    DatabaseUnavailableError,
    LockTimeoutError,
    MigrationCheckFailedError,
    MigrationFailedError,
    MigrationNotFoundError,
    MigrationRefusedError,
    Migrator,
)
from aiaas_db.migrations._lock import migrator_lock_key


def golang_row(db_url: str, table: str = "schema_migrations_app") -> list[tuple[int, bool]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version, dirty FROM {}").format(sql.Identifier(table))
        ).fetchall()
    return [(int(r[0]), bool(r[1])) for r in rows]


def ledger(db_url: str, component: str = "app") -> dict[int, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT version, status FROM aiaas_migration_ledger WHERE component = %s", (component,)
        ).fetchall()
    return {int(v): s for v, s in rows}


def tables(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT LIKE 'aiaas_%' AND tablename NOT LIKE 'schema_migrations%'"
        ).fetchall()
    return {r[0] for r in rows}


def basic(sets: SetWriter) -> None:
    sets.add(
        V1,
        "users",
        "-- author: alice\nCREATE TABLE users (id int PRIMARY KEY, name text);\n"
        "INSERT INTO users VALUES (1, 'a'), (2, 'b');\n",
        "DROP TABLE users;\n",
    )
    sets.add(
        V2,
        "orgs",
        "CREATE TABLE orgs (id int PRIMARY KEY);\nUPDATE users SET name = upper(name);\n"
        "DELETE FROM users WHERE id = 2;\n",
        "DROP TABLE orgs;\n",
    )


def test_happy_path_up_status_down(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root, actor="deployer")
    fresh = m.status()
    assert not fresh.initialized
    assert fresh.current_version is None
    assert [p.version for p in fresh.pending] == [V1, V2]
    assert fresh.pending[0].author == "alice"
    assert fresh.golang_version is None
    assert not fresh.golang_dirty

    report = m.up()
    assert report.status == "succeeded"
    assert report.operation == "up"
    assert report.versions == (V1, V2)
    assert (report.version_before, report.version_after) == (None, V2)
    first, second = report.results
    assert first.rows_affected == {"public.users": {"inserted": 2, "updated": 0, "deleted": 0}}
    assert second.rows_affected == {"public.users": {"inserted": 0, "updated": 2, "deleted": 1}}
    assert second.row_deltas == {"public.users": -1}
    assert (first.statements, second.statements) == (2, 3)
    assert report.tables_touched == ("public.users",)
    assert report.rows_total == 5
    assert [c.name for c in report.checks] == [
        "connectivity",
        "lock",
        "clean_head",
        "checksums",
        "sources",
        "order",
    ]
    assert all(c.ok for c in report.checks)
    assert tables(db_url) == {"users", "orgs"}
    assert golang_row(db_url) == [(V2, False)]
    assert ledger(db_url) == {V1: "applied", V2: "applied"}

    status = m.status()
    assert status.initialized
    assert status.current_version == V2
    assert status.pending == ()
    assert not status.blocked
    assert [a.version for a in status.applied] == [V1, V2]
    assert all(a.checksum_matches and a.applied_by == "deployer" for a in status.applied)
    assert status.last_migration_at is not None
    assert status.health() == {
        "component": "app",
        "schema_version": V2,
        "last_migration_at": status.last_migration_at.isoformat(),
        "dirty": False,
        "failed_version": None,
        "pending": 0,
    }
    newest = status.history[0]
    assert (newest.version, newest.direction, newest.status) == (V2, "up", "applied")
    assert newest.checksum == second.checksum
    assert newest.applied_by == "deployer"
    assert newest.duration_ms is not None
    assert newest.finished_at is not None
    assert newest.rows_affected["public.users"]["deleted"] == 1
    assert status.to_dict()["applied"][0]["version"] == V1

    again = m.up()
    assert again.status == "noop"
    assert again.results == ()

    down = m.down()
    assert down.versions == (V2,)
    assert down.results[0].status == "rolled_back"
    assert golang_row(db_url) == [(V1, False)]
    assert tables(db_url) == {"users"}
    down_all = m.down(to=0)
    assert down_all.versions == (V1,)
    assert golang_row(db_url) == []  # golang-migrate keeps no row for "nothing applied"
    assert ledger(db_url) == {V1: "rolled_back", V2: "rolled_back"}
    assert m.down().status == "noop"
    run = m.up(to=V1)
    assert run.versions == (V1,)
    assert run.to_migration_run()["appliedVersions"] == [str(V1)]
    assert run.to_migration_run()["status"] == "succeeded"
    assert m.down(steps=1).to_migration_run()["status"] == "rolled_back"
    history = m.history(limit=None)
    assert [h.direction for h in history][:2] == ["down", "up"]
    assert len(m.history(run_id=run.run_id)) == 1


def test_down_options_are_validated(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationRefusedError, match="either to= or steps="):
        m.down(to=V1, steps=1)
    with pytest.raises(MigrationRefusedError, match="steps must be >= 1"):
        m.down(steps=0)
    m.up()
    assert m.down(steps=2).versions == (V2, V1)


def test_up_to_unknown_version(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    with pytest.raises(MigrationNotFoundError, match="no change set with version 1"):
        Migrator(db_url, sets.root).up(to=1)


def test_failure_in_a_transactional_set_is_failed_not_dirty(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    sets.add(
        V3,
        "broken",
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT 1/0;\n",
        "DROP TABLE half;",
    )
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError) as info:
        m.up()
    err = info.value
    assert err.code == "MIGRATION_FAILED"
    assert not err.dirty
    assert err.statement == "SELECT 1/0"
    assert err.sqlstate == "22012"
    assert err.versions == (V3,)
    assert "at statement 3" in err.message
    assert "rolled back completely" in err.message
    assert err.report is not None
    assert err.report.status == "failed"
    assert [r.status for r in err.report.results] == ["applied", "applied", "failed"]
    assert "half" not in tables(db_url)  # nothing of the set survived
    assert golang_row(db_url) == [(V2, False)]  # not dirty: golang-migrate sees V2 clean
    assert ledger(db_url)[V3] == "failed"
    status = m.status()
    assert status.failed_version == V3
    assert not status.dirty
    assert status.blocked
    assert "division by zero" in (status.failed_error or "")
    failed = status.history[0]
    assert (failed.version, failed.status, failed.failed_statement) == (V3, "failed", "SELECT 1/0")


def test_check_file_gates_the_set(db_url: str, sets: SetWriter) -> None:
    sets.add(
        V1,
        "seed",
        "CREATE TABLE t (v int);\nINSERT INTO t VALUES (1), (2);\n",
        "DROP TABLE t;",
        check="SELECT count(*) = 2 FROM t;\nSELECT v > 0 FROM t;\nDO $$ BEGIN END $$;\n",
    )
    sets.add(
        V2,
        "more",
        "INSERT INTO t VALUES (-1);",
        "DELETE FROM t WHERE v = -1;",
        check="SELECT v > 0 FROM t;",
    )
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationCheckFailedError) as info:
        m.up()
    assert info.value.code == "MIGRATION_CHECK_FAILED"
    assert info.value.statement == "SELECT v > 0 FROM t"
    assert "did not return only true" in info.value.message
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
    assert ledger(db_url) == {V1: "applied", V2: "failed"}


def test_statement_timeout_fails_the_set(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "slow", "CREATE TABLE s (a int);\nSELECT pg_sleep(5);\n", "DROP TABLE s;")
    m = Migrator(db_url, sets.root, statement_timeout=0.2)
    with pytest.raises(MigrationFailedError) as info:
        m.up()
    assert info.value.sqlstate == "57014"
    assert "statement timeout" in info.value.message


def test_ddl_lock_timeout(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "t", "CREATE TABLE busy (a int);", "DROP TABLE busy;")
    sets.add(V2, "alter", "ALTER TABLE busy ADD COLUMN b int;", "ALTER TABLE busy DROP COLUMN b;")
    m = Migrator(db_url, sets.root, ddl_lock_timeout=0.2)
    m.up(to=V1)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        with pytest.raises(MigrationFailedError) as info:
            m.up()
    assert info.value.sqlstate == "55P03"
    assert "--ddl-lock-timeout" in info.value.message


def test_migration_lock_timeout(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root, lock_timeout=0.3)
    with psycopg.connect(db_url, autocommit=True, application_name="other-migrator") as other:
        other.execute(
            "SELECT pg_advisory_lock(%s)",
            (migrator_lock_key(other.info.dbname, "public", "app"),),
        )
        with pytest.raises(LockTimeoutError) as info:
            m.up()
        assert "other-migrator" in info.value.message
    assert tables(db_url) == set()
    assert m.up().versions == (V1, V2)


def test_components_are_independent(db_url: str, sets: SetWriter, tmp_path) -> None:
    basic(sets)
    analytics = SetWriter(tmp_path / "analytics")
    analytics.add(V1, "rollups", "CREATE TABLE rollups (a int);", "DROP TABLE rollups;")
    Migrator(db_url, sets.root, component="operational").up()
    Migrator(db_url, analytics.root, component="analytics").up()
    assert golang_row(db_url, "schema_migrations_operational") == [(V2, False)]
    assert golang_row(db_url, "schema_migrations_analytics") == [(V1, False)]
    assert ledger(db_url, "analytics") == {V1: "applied"}
    custom = Migrator(db_url, analytics.root, component="other", migrations_table="my_versions")
    custom.force(V1, reason="adopt existing table")
    assert golang_row(db_url, "my_versions") == [(V1, False)]


def test_connection_failure_never_shows_the_password(sets: SetWriter) -> None:
    basic(sets)
    m = Migrator("postgresql://someone:s3cr3t-pw@127.0.0.1:1/nodb", sets.root, connect_timeout=2)
    with pytest.raises(DatabaseUnavailableError) as info:
        m.up()
    assert "s3cr3t-pw" not in info.value.message
    assert "host 127.0.0.1 port 1 database nodb" in info.value.message
    assert "s3cr3t-pw" not in repr(m)


def test_constructor_validation(sets: SetWriter, db_url: str) -> None:
    with pytest.raises(MigrationRefusedError, match="DSN is required"):
        Migrator("", sets.root)
    with pytest.raises(MigrationRefusedError, match="component must be") as info:
        Migrator(db_url, sets.root, component="Bad-Name")
    assert info.value.code == "MIGRATION_COMPONENT_INVALID"
    with pytest.raises(MigrationRefusedError, match="lock_timeout must be >= 0"):
        Migrator(db_url, sets.root, lock_timeout=-1)
    with pytest.raises(MigrationRefusedError, match="no change-set source") as info:
        Migrator(db_url).up()
    assert info.value.code == "MIGRATION_SOURCE_REQUIRED"
    assert Migrator(db_url).status().pending == ()  # status works without a source
    assert Migrator(db_url).history() == []
