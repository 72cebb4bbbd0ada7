"""No-transaction sets, dirty and failed heads, recover and force, audit rows."""

from __future__ import annotations

import json

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter
from test_migrate import basic, golang_row, ledger, tables

from aiaas_db import (
    MigrationDirtyError,
    MigrationFailedError,
    MigrationFailedHeadError,
    MigrationNotFoundError,
    MigrationRefusedError,
    Migrator,
    NothingToRecoverError,
    PiiProtector,
)
from aiaas_db.platform._audit import reveal_actor

NOTX = "-- aiaas:no-transaction\n"


def indexes(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def index_sets(sets: SetWriter, *, broken: bool) -> None:
    sets.add(V1, "t", "CREATE TABLE t (a int, b int);", "DROP TABLE t;")
    second = (
        "CREATE INDEX CONCURRENTLY t_b ON t (nope);"
        if broken
        else "CREATE INDEX CONCURRENTLY t_b ON t (b);"
    )
    sets.add(
        V2,
        "idx",
        NOTX + "CREATE INDEX CONCURRENTLY t_a ON t (a);\n" + second + "\n",
        NOTX + "DROP INDEX CONCURRENTLY IF EXISTS t_b;\nDROP INDEX CONCURRENTLY IF EXISTS t_a;\n",
    )


def test_no_transaction_set_runs_concurrently(db_url: str, sets: SetWriter) -> None:
    index_sets(sets, broken=False)
    m = Migrator(db_url, sets.root, statement_timeout=10, ddl_lock_timeout=5)
    report = m.up()
    assert report.results[1].no_transaction
    assert report.results[1].statements == 2
    assert {"t_a", "t_b"} <= indexes(db_url)
    assert golang_row(db_url) == [(V2, False)]
    with psycopg.connect(db_url) as conn:  # session timeouts were reset afterwards
        assert m.down().versions == (V2,)
        assert conn.execute(
            "SELECT count(*) FROM aiaas_migration_history WHERE status = 'running'"
        ).fetchone() == (0,)
    assert not {"t_a", "t_b"} & indexes(db_url)


def test_no_transaction_failure_leaves_it_dirty(db_url: str, sets: SetWriter) -> None:
    index_sets(sets, broken=True)
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError) as info:
        m.up()
    err = info.value
    assert err.dirty
    assert err.statement == "CREATE INDEX CONCURRENTLY t_b ON t (nope)"
    assert "DIRTY" in err.message
    assert "at statement 2" in err.message
    assert "t_a" in indexes(db_url)  # the first statement stays applied
    assert golang_row(db_url) == [(V2, True)]  # dirty, as golang-migrate marks it
    assert ledger(db_url) == {V1: "applied", V2: "dirty"}
    status = m.status()
    assert status.dirty
    assert status.dirty_version == V2
    assert status.blocked
    assert "no-transaction up interrupted" in (status.dirty_detail or "")
    entry = status.history[0]
    assert (entry.status, entry.failed_statement) == ("failed", err.statement)

    with pytest.raises(MigrationDirtyError) as dirty:
        m.up()
    assert "failed statement: CREATE INDEX CONCURRENTLY t_b" in dirty.value.message
    with pytest.raises(MigrationDirtyError):
        m.down()
    with pytest.raises(MigrationDirtyError):
        m.drill()

    with pytest.raises(MigrationRefusedError) as no_reason:
        m.recover("run-down", reason="")
    assert no_reason.value.code == "MIGRATION_REASON_REQUIRED"
    with pytest.raises(MigrationRefusedError) as bad_action:
        m.recover("retry", reason="x")  # type: ignore[arg-type]
    assert bad_action.value.code == "MIGRATION_RECOVER_ACTION_INVALID"
    with pytest.raises(NothingToRecoverError, match=f"{V2} is"):
        m.recover("run-down", reason="x", version=V1)

    report = m.recover("run-down", reason="index on a missing column; fixed in the file")
    assert report.operation == "recover"
    assert report.results[0].direction == "down"
    assert "t_a" not in indexes(db_url)
    assert golang_row(db_url) == [(V1, False)]
    assert ledger(db_url)[V2] == "rolled_back"
    recovered = m.history(limit=1)[0]
    assert (recovered.direction, recovered.action, recovered.status) == (
        "recover",
        "run-down",
        "rolled_back",
    )
    assert recovered.reason == "index on a missing column; fixed in the file"

    index_sets(sets, broken=False)
    assert m.up().versions == (V2,)
    with pytest.raises(NothingToRecoverError):
        m.recover("mark-applied", reason="x")


def test_recover_failed_head_by_marking(db_url: str, sets: SetWriter) -> None:
    basic(sets)
    sets.add(V3, "bad", "CREATE TABLE v3 (a int);\nSELECT 1/0;", "DROP TABLE v3;")
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError):
        m.up()
    with pytest.raises(MigrationFailedHeadError) as info:
        m.up()
    assert info.value.versions == (V3,)
    assert "recover" in info.value.message
    with pytest.raises(MigrationFailedHeadError):
        m.down()
    # Someone applied it by hand: mark it applied.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE v3 (a int)")
    m.recover("mark-applied", reason="applied by hand during the incident", version=V3)
    assert ledger(db_url)[V3] == "applied"
    assert golang_row(db_url) == [(V3, False)]
    assert m.status().current_version == V3
    # Fix the file so that its down works, roll back, then fail it again and retry.
    sets.add(V3, "bad", "CREATE TABLE v3 (a int);\nSELECT 1/0;", "DROP TABLE v3;")
    assert m.down().versions == (V3,)
    with pytest.raises(MigrationFailedError):
        m.up()
    m.recover("mark-rolled-back", reason="will fix the script")
    assert ledger(db_url)[V3] == "rolled_back"
    assert not m.status().blocked
    sets.add(V3, "bad", "CREATE TABLE v3 (a int);", "DROP TABLE v3;")
    assert m.up().versions == (V3,)


def test_recover_failed_head_by_running_down(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "bad", "CREATE TABLE x (a int);\nSELECT 1/0;", "DROP TABLE IF EXISTS x;")
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError):
        m.up()
    report = m.recover("run-down", reason="clean up")
    assert report.results[0].status == "rolled_back"
    assert ledger(db_url) == {V1: "rolled_back"}
    assert golang_row(db_url) == []


def test_failed_rollback_keeps_the_set_applied(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "t", "CREATE TABLE t (a int);", "DROP TABLE t;\nSELECT 1/0;")
    m = Migrator(db_url, sets.root)
    m.up()
    with pytest.raises(MigrationFailedError) as info:
        m.down()
    assert not info.value.dirty
    assert "t" in tables(db_url)
    assert ledger(db_url) == {V1: "applied"}
    assert golang_row(db_url) == [(V1, False)]
    assert not m.status().blocked  # nothing changed: the set is still applied


def test_recover_run_down_failure_stays_blocked(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "bad", "SELECT 1/0;", "SELECT 1/0;")
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError):
        m.up()
    with pytest.raises(MigrationFailedError):
        m.recover("run-down", reason="try")
    assert m.status().failed_version == V1


def test_force(db_url: str, sets: SetWriter) -> None:
    index_sets(sets, broken=True)
    sets.add(V3, "c", "CREATE TABLE c (a int);", "DROP TABLE c;")
    m = Migrator(db_url, sets.root)
    with pytest.raises(MigrationFailedError):
        m.up()
    with pytest.raises(MigrationRefusedError, match="needs a reason"):
        m.force(V2, reason="")
    with pytest.raises(MigrationNotFoundError):
        m.force(42, reason="x")
    report = m.force(V2, reason="index finished by hand")
    assert report.operation == "force"
    assert report.version_after == V2
    assert golang_row(db_url) == [(V2, False)]
    assert ledger(db_url) == {V1: "applied", V2: "applied"}
    assert m.up().versions == (V3,)
    m.force(None, reason="start over")
    assert golang_row(db_url) == []
    assert set(ledger(db_url).values()) == {"rolled_back"}
    m.force(-1, reason="idempotent")
    forced = [h for h in m.history(limit=None) if h.direction == "force"]
    assert {h.reason for h in forced} == {"index finished by hand", "start over"}


def test_interrupted_run_is_closed_by_the_next_locked_operation(
    db_url: str, sets: SetWriter
) -> None:
    index_sets(sets, broken=False)
    m = Migrator(db_url, sets.root)
    m.up(to=V1)
    # Simulate a migrator killed while running a no-transaction set: dirty mark, running row.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE aiaas_migration_ledger SET status = 'applied' WHERE version = %s", (V1,)
        )
        conn.execute(
            "INSERT INTO aiaas_migration_ledger (component, version, slug, status, direction, "
            "checksum, no_transaction) VALUES ('app', %s, 'idx', 'dirty', 'up', 'x', true)",
            (V2,),
        )
        conn.execute("TRUNCATE schema_migrations_app")
        conn.execute("INSERT INTO schema_migrations_app VALUES (%s, true)", (V2,))
        conn.execute(
            "INSERT INTO aiaas_migration_history (run_id, component, version, slug, direction, "
            "status, started_at, applied_by) VALUES (gen_random_uuid(), 'app', %s, 'idx', 'up', "
            "'running', now(), 'ghost')",
            (V2,),
        )
    with pytest.raises(MigrationDirtyError):
        m.up()
    ghost = next(h for h in m.history(limit=None) if h.applied_by == "ghost")
    assert ghost.status == "failed"
    assert "interrupted" in (ghost.error or "")
    m.recover("mark-rolled-back", reason="nothing was built")
    assert m.up().versions == (V2,)


AUDIT_DDL = """
CREATE TABLE audit_log_entries (
    audit_log_entry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_type text NOT NULL,
    actor_id text NOT NULL,
    actor_ciphertext bytea,
    actor_key_version text,
    action text NOT NULL,
    target text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    request_id text
);
"""
PII = PiiProtector.for_local_development("test-recovery")


def audit_rows(db_url: str) -> list[tuple[str, str, str, str, dict[str, object]]]:
    """(actor type, revealed actor, action, target, metadata) of every audit row."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT actor_type, actor_id, actor_ciphertext, actor_key_version, action, target,"
            " metadata FROM audit_log_entries ORDER BY audit_log_entry_id"
        ).fetchall()
    out = []
    for actor_type, actor_id, ct, version, action, target, meta in rows:
        assert actor_id == PII.digest("ops-bot")  # a keyed digest, never the raw actor
        actor = reveal_actor(PII, actor_id=actor_id, actor_ciphertext=ct, actor_key_version=version)
        assert actor is not None
        out.append(
            (
                actor_type,
                actor,
                action,
                target,
                meta if isinstance(meta, dict) else json.loads(meta),
            )
        )
    return out


def test_audit_rows_when_the_platform_table_exists(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "audit", AUDIT_DDL, "DROP TABLE audit_log_entries;")
    sets.add(V2, "t", "CREATE TABLE t (a int);", "DROP TABLE t;")
    sets.add(V3, "bad", "SELECT 1/0;", "SELECT 1;")
    m = Migrator(db_url, sets.root, actor="ops-bot", protector=PII)
    report = m.up(to=V2)
    with pytest.raises(MigrationFailedError):
        m.up()
    m.recover("mark-rolled-back", reason="bad script")
    m.force(V2, reason="confirm state")
    m.down(to=V1)
    rows = audit_rows(db_url)
    actions = [r[2] for r in rows]
    # V1's own apply is audited: the table exists by the time its bookkeeping runs.
    assert actions == [
        "migration.apply",
        "migration.apply",
        "migration.failed",
        "migration.recover",
        "migration.force",
        "migration.rollback",
    ]
    assert all(r[0] == "migration" and r[1] == "ops-bot" for r in rows)
    first = rows[0]
    assert first[3] == f"app:{V1}_audit"
    assert first[4]["checksum"] == report.results[0].checksum
    assert rows[3][4]["reason"] == "bad script"
    assert rows[5][4]["checksum"]
    assert rows[5][4]["direction"] == "down"
    # Rolling back the set that created the table: nothing to audit into, and no error.
    assert m.down(to=0).versions == (V1,)
