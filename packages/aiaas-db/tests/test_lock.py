from __future__ import annotations

import binascii
import random
import threading
import time

import psycopg
import pytest

from aiaas_db import AdvisoryLock, LockTimeoutError, golang_migrate_lock_key, migrator_lock_key
from aiaas_db.migrations._lock import lock_keys


def _reference_golang_key(database: str, schema: str, table: str) -> int:
    # database/util.go: crc32.ChecksumIEEE(strings.Join([schema, table, db], "\x00")) * salt,
    # in uint32 arithmetic.
    joined = "\x00".join([schema, table, database]).encode()
    total = (binascii.crc32(joined) & 0xFFFFFFFF) * 1486364155
    return total % (1 << 32)


@pytest.mark.parametrize(
    ("database", "schema", "table"),
    [
        ("/mydb", "public", "schema_migrations"),
        ("mydb", "public", "schema_migrations"),
        ("/app", "ops", "schema_migrations_operational"),
        ("ünï", "s", "t"),
    ],
)
def test_golang_key_matches_reference(database: str, schema: str, table: str) -> None:
    key = golang_migrate_lock_key(database, schema, table)
    assert key == _reference_golang_key(database, schema, table)
    assert 0 <= key < 2**32


def test_keys_differ_by_form_and_component() -> None:
    assert golang_migrate_lock_key("/db", "public", "t") != golang_migrate_lock_key(
        "db", "public", "t"
    )
    a = migrator_lock_key("db", "public", "operational")
    b = migrator_lock_key("db", "public", "analytics")
    assert a != b
    assert -(2**63) <= a < 2**63
    keys = lock_keys("db", "public", "schema_migrations_app", "app")
    assert keys[0] == migrator_lock_key("db", "public", "app")
    assert keys[1] == golang_migrate_lock_key("/db", "public", "schema_migrations_app")
    assert keys[2] == golang_migrate_lock_key("db", "public", "schema_migrations_app")


def test_acquire_release_and_all_or_none(db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as a,
        psycopg.connect(db_url, autocommit=True, application_name="holder-b") as b,
    ):
        lock_a = AdvisoryLock(a, [11, -22, 33], timeout=0)
        with lock_a:
            assert lock_a.held
            assert lock_a.acquire() is lock_a  # re-entrant no-op
            # b holds nothing of it while a holds all keys
            assert b.execute("SELECT pg_try_advisory_lock(-22)").fetchone() == (False,)
        assert not lock_a.held
        lock_a.release()  # idempotent
        # b takes one key: a must get none (all or none) and time out naming b.
        b.execute("SELECT pg_advisory_lock(33)")
        waits: list[float] = []
        lock = AdvisoryLock(a, [11, -22, 33], timeout=0.3, on_wait=waits.append, component="app")
        with pytest.raises(LockTimeoutError) as info:
            lock.acquire()
        assert info.value.code == "MIGRATION_LOCK_TIMEOUT"
        assert "holder-b" in info.value.message
        assert info.value.component == "app"
        assert waits
        assert lock.attempts >= 2
        held = a.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        assert held == (0,)
        # a negative key is found by holders() too
        b.execute("SELECT pg_advisory_lock(-22)")
        assert [h.application_name for h in AdvisoryLock(a, [-22]).holders()] == ["holder-b"]


def test_waits_until_released(db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as a,
        psycopg.connect(db_url, autocommit=True) as b,
    ):
        b.execute("SELECT pg_advisory_lock(7)")
        timer = threading.Timer(0.3, lambda: b.execute("SELECT pg_advisory_unlock(7)"))
        timer.start()
        # The jitter comes from the lock's own generator: an application's seeded ``random``
        # (and Hypothesis, which checks it between draws) must not see a library waiting.
        random.seed(1234)
        before = random.getstate()
        lock = AdvisoryLock(a, [7], timeout=10)
        lock.acquire()
        timer.join()
        assert lock.held
        assert lock.waited_s > 0
        assert random.getstate() == before
        lock.release()


def test_lock_dies_with_its_session(db_url: str) -> None:
    a = psycopg.connect(db_url, autocommit=True)
    AdvisoryLock(a, [99], timeout=0).acquire()
    a.close()
    with psycopg.connect(db_url, autocommit=True) as b:
        deadline = time.monotonic() + 5
        lock = AdvisoryLock(b, [99], timeout=5)
        lock.acquire()
        assert time.monotonic() < deadline
        lock.release()


def test_release_on_closed_connection_is_quiet(db_url: str) -> None:
    a = psycopg.connect(db_url, autocommit=True)
    lock = AdvisoryLock(a, [5], timeout=0).acquire()
    a.close()
    lock.release()
    assert not lock.held


def test_negative_timeout_is_rejected(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as a, pytest.raises(ValueError, match=">= 0"):
        AdvisoryLock(a, [1], timeout=-1)
