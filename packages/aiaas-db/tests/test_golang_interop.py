"""golang-migrate and aiaas-db take over one database from each other, and never interleave."""

from __future__ import annotations

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter
from golang_migrate import ErrDirty, ErrNoChange, GolangMigrate, advisory_lock_id
from test_migrate import ledger, tables

from aiaas_db import LockTimeoutError, MigrationDirtyError, Migrator, golang_migrate_lock_key
from aiaas_db.migrations._lock import lock_keys


def three(sets: SetWriter) -> None:
    sets.add(V1, "a", "CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);", "DROP TABLE a;")
    sets.add(V2, "b", "CREATE TABLE b (x int);", "DROP TABLE b;")
    sets.add(V3, "c", "CREATE TABLE c (x int);\nCREATE INDEX c_x ON c (x);", "DROP TABLE c;")


def test_emulator_key_is_ours() -> None:
    assert advisory_lock_id("/db", "public", "schema_migrations") == golang_migrate_lock_key(
        "/db", "public", "schema_migrations"
    )


def test_golang_reads_what_we_wrote_and_continues(db_url: str, sets: SetWriter) -> None:
    three(sets)
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations")
    ours.up(to=V2)
    gm = GolangMigrate(db_url, sets.root)
    try:
        assert gm.version() == (V2, False)
        gm.up()  # golang-migrate applies V3 after our V2
        assert gm.version() == (V3, False)
        with pytest.raises(ErrNoChange):
            gm.up()
    finally:
        gm.close()
    status = ours.status()
    assert status.current_version == V3
    assert status.pending == ()
    ours.down()  # adopts V3 first, then rolls it back with its own down script
    assert "c" not in tables(db_url)
    adopted = [h for h in ours.history(limit=None) if h.direction == "adopt"]
    assert [(h.version, h.status) for h in adopted] == [(V3, "applied")]
    gm = GolangMigrate(db_url, sets.root)
    try:
        assert gm.version() == (V2, False)
        gm.down()
        assert gm.version() == (-1, False)
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)
    finally:
        gm.close()
    assert ours.status().current_version is None
    assert ours.up().versions == (V1, V2, V3)
    assert ledger(db_url) == {V1: "applied", V2: "applied", V3: "applied"}


def test_we_take_over_a_golang_database(db_url: str, sets: SetWriter) -> None:
    three(sets)
    gm = GolangMigrate(db_url, sets.root)
    try:
        gm.steps(2)
        assert gm.version() == (V2, False)
    finally:
        gm.close()
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations")
    status = ours.status()
    assert not status.initialized
    assert status.current_version == V2
    assert [p.version for p in status.pending] == [V3]
    assert status.golang_version == V2
    assert ours.up().versions == (V3,)
    gm = GolangMigrate(db_url, sets.root)
    try:
        assert gm.version() == (V3, False)
    finally:
        gm.close()


def test_golang_dirty_blocks_us_until_recovered(db_url: str, sets: SetWriter) -> None:
    three(sets)
    sets.add(V3, "c", "CREATE TABLE c (x int);\nSELECT 1/0;", "DROP TABLE IF EXISTS c;")
    gm = GolangMigrate(db_url, sets.root)
    try:
        gm.steps(2)
        with pytest.raises(psycopg.errors.DivisionByZero):
            gm.up()
        # golang-migrate marks dirty even though PostgreSQL rolled the whole file back.
        assert gm.version() == (V3, True)
        assert "c" not in tables(db_url)
    finally:
        gm.close()
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations")
    status = ours.status()
    assert status.dirty
    assert status.dirty_version == V3
    assert "outside aiaas-db" in (status.dirty_detail or "")
    with pytest.raises(MigrationDirtyError, match="golang-migrate"):
        ours.up()
    ours.recover("mark-rolled-back", reason="file failed under golang-migrate; rolled back by PG")
    gm = GolangMigrate(db_url, sets.root)
    try:
        assert gm.version() == (V2, False)
    finally:
        gm.close()
    sets.add(V3, "c", "CREATE TABLE c (x int);", "DROP TABLE c;")
    assert ours.up().versions == (V3,)


def test_golang_refuses_our_dirty_state_and_its_force_is_adopted(
    db_url: str, sets: SetWriter
) -> None:
    three(sets)
    sets.add(
        V3,
        "c",
        "-- aiaas:no-transaction\nCREATE TABLE c (x int);\nSELECT 1/0;",
        "-- aiaas:no-transaction\nDROP TABLE c;",
    )
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations")
    with pytest.raises(Exception, match="DIRTY"):
        ours.up()
    gm = GolangMigrate(db_url, sets.root)
    try:
        assert gm.version() == (V3, True)
        with pytest.raises(ErrDirty):
            gm.up()
        gm.force(V3)  # the operator decides with golang-migrate that V3 is in
    finally:
        gm.close()
    status = ours.status()
    assert not status.dirty
    assert status.current_version == V3
    ours.down()
    assert ledger(db_url)[V3] == "rolled_back"


def test_golang_rollback_is_adopted(db_url: str, sets: SetWriter) -> None:
    three(sets)
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations")
    ours.up()
    gm = GolangMigrate(db_url, sets.root, from_url=False)
    try:
        gm.steps(-2)
        assert gm.version() == (V1, False)
    finally:
        gm.close()
    assert ours.status().current_version == V1
    assert ours.up().versions == (V2, V3)


def test_the_tools_never_interleave(db_url: str, sets: SetWriter) -> None:
    three(sets)
    ours = Migrator(db_url, sets.root, migrations_table="schema_migrations", lock_timeout=0.3)
    ours.up(to=V1)
    for from_url in (True, False):
        gm = GolangMigrate(db_url, sets.root, from_url=from_url)
        try:
            gm.lock()  # golang-migrate is running
            with pytest.raises(LockTimeoutError):
                ours.up()
            gm.unlock()
        finally:
            gm.close()
    # And while we hold our locks, golang-migrate waits (bounded here by lock_timeout).
    with psycopg.connect(db_url, autocommit=True) as holder:
        dbname = holder.info.dbname
        for key in lock_keys(dbname, "public", "schema_migrations", "app"):
            holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        for from_url in (True, False):
            gm = GolangMigrate.__new__(GolangMigrate)
            gm.conn = psycopg.connect(db_url, autocommit=True)
            gm.schema, gm.table = "public", "schema_migrations"
            gm.lock_id = advisory_lock_id(
                f"/{dbname}" if from_url else dbname, "public", "schema_migrations"
            )
            try:
                gm.conn.execute("SET lock_timeout = '200ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    gm.lock()
            finally:
                gm.close()
    assert ours.up().versions == (V2, V3)


def test_table_shape_is_golangs(db_url: str, sets: SetWriter) -> None:
    three(sets)
    Migrator(db_url, sets.root, migrations_table="schema_migrations").up()
    with psycopg.connect(db_url) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'schema_migrations' ORDER BY ordinal_position"
        ).fetchall()
        pk = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'schema_migrations'::regclass "
            "AND i.indisprimary"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (1,)
    assert cols == [("version", "bigint", "NO"), ("dirty", "boolean", "NO")]
    assert pk == [("version",)]
