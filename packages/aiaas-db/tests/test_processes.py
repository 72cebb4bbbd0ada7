"""Real processes: eight concurrent migrators, and migrators killed with SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import V1, V2, V3, V4, SetWriter

from aiaas_db import LocalPostgres, MigrationDirtyError, Migrator
from aiaas_db.migrations._lock import lock_keys
from aiaas_db.migrations._state import expected_golang

RUNNER = """
import json, sys
from aiaas_db import Migrator
url, source = sys.argv[1], sys.argv[2]
report = Migrator(url, source, lock_timeout=120, actor=sys.argv[3]).up()
print(json.dumps({"status": report.status, "versions": list(report.versions),
                  "lock_wait_s": report.lock_wait_s}))
"""


def spawn(url: str, source: Path, actor: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, url, str(source), actor],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )


def slow_sets(sets: SetWriter) -> None:
    sets.add(V1, "a", "CREATE TABLE a (x int);\nSELECT pg_sleep(0.21);", "DROP TABLE a;")
    sets.add(
        V2,
        "idx",
        "-- aiaas:no-transaction\nCREATE INDEX CONCURRENTLY a_x ON a (x);\nSELECT pg_sleep(0.22);\n"
        "CREATE INDEX CONCURRENTLY a_x2 ON a (x);",
        "-- aiaas:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS a_x2;\n"
        "DROP INDEX CONCURRENTLY IF EXISTS a_x;",
    )
    sets.add(V3, "b", "CREATE TABLE b (x int);\nSELECT pg_sleep(0.23);", "DROP TABLE b;")
    sets.add(V4, "c", "CREATE TABLE c (x int);\nINSERT INTO c VALUES (1);", "DROP TABLE c;")


def applied_counts(url: str) -> dict[int, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, count(*) FROM aiaas_migration_history WHERE direction = 'up' "
            "AND status = 'applied' AND NOT dry_run GROUP BY version"
        ).fetchall()
    return {int(v): int(n) for v, n in rows}


@pytest.mark.slow
def test_eight_concurrent_migrators_apply_each_set_once(db_url: str, sets: SetWriter) -> None:
    slow_sets(sets)
    procs = [spawn(db_url, sets.root, f"worker-{i}") for i in range(8)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    applied = [v for r in reports for v in r["versions"]]
    assert sorted(applied) == [V1, V2, V3, V4]  # each set applied exactly once, by one process
    assert applied_counts(db_url) == {V1: 1, V2: 1, V3: 1, V4: 1}
    # The first to take the lock applies everything; the seven others wait, then find nothing.
    assert sorted(r["status"] for r in reports) == ["noop"] * 7 + ["succeeded"]
    assert sum(r["lock_wait_s"] > 0 for r in reports) >= 1  # the rest waited for the lock
    status = Migrator(db_url, sets.root).status()
    assert status.current_version == V4
    assert not status.blocked


def _schema(url: str) -> tuple[set[str], set[str]]:
    with psycopg.connect(url) as conn:
        t = {
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        i = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname='public'")
        }
    return t, i


def _wait_for_lock_release(url: str, timeout: float = 15) -> float:
    start = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        keys = lock_keys(conn.info.dbname, "public", "schema_migrations_app", "app")
        while True:
            got = [conn.execute("SELECT pg_try_advisory_lock(%s)", (k,)).fetchone() for k in keys]
            for k, g in zip(keys, got, strict=True):
                if g == (True,):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (k,))
            if all(g == (True,) for g in got):
                return time.monotonic() - start
            assert time.monotonic() - start < timeout, "the killed migrator's lock was not released"
            time.sleep(0.05)


def _wait_for_query(url: str, needle: str, timeout: float = 30) -> None:
    """Block until the victim's backend runs a statement containing ``needle``."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'aiaas-db up%%' "
                "AND state = 'active' AND position(%s in query) > 0",
                (needle,),
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.01)
    raise AssertionError(f"the migrator never ran {needle!r}")


# (statement to kill during, or None for a random moment; the state it must leave)
KILL_POINTS: list[tuple[str | None, str | None]] = [
    ("pg_sleep(0.21)", "clean@None"),  # inside V1's transaction: nothing committed
    ("pg_sleep(0.22)", "dirty"),  # inside the no-transaction V2: dirty
    ("pg_sleep(0.23)", f"clean@{V2}"),  # inside V3's transaction: V2 committed clean
    (None, None),
    (None, None),
]


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_consistent_state(
    pg: LocalPostgres, sets: SetWriter
) -> None:
    slow_sets(sets)
    rng = random.Random(  # noqa: S311 -- kill timing, not secrecy
        int(os.environ.get("AIAAS_DB_KILL_SEED", "20240101"))
    )
    for needle, expected in KILL_POINTS:
        name = f"k_{uuid.uuid4().hex[:12]}"
        url = pg.create_database(name)
        try:
            proc = spawn(url, sets.root, "victim")
            if needle is None:
                time.sleep(rng.uniform(0.2, 2.0))
            else:
                _wait_for_query(url, needle)
                time.sleep(rng.uniform(0.0, 0.1))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            _wait_for_lock_release(url)
            m = Migrator(url, sets.root, lock_timeout=5)
            status = m.status()
            tables_, _indexes = _schema(url)
            applied = {a.version for a in status.applied}
            # The schema matches the recorded state for every transactional set.
            assert ("a" in tables_) == (V1 in applied)
            assert ("b" in tables_) == (V3 in applied)
            assert ("c" in tables_) == (V4 in applied)
            if status.initialized:
                with psycopg.connect(url) as conn:
                    ledger = m.tables.read_ledger(conn)
                    assert m.tables.read_golang(conn) == expected_golang(ledger)
            outcome = "dirty" if status.dirty else f"clean@{status.current_version}"
            if expected is not None:
                assert outcome == expected, (needle, outcome)
            if status.dirty:
                assert status.dirty_version == V2
                with pytest.raises(MigrationDirtyError):
                    m.up()  # nothing is reapplied on its own
                m.recover("run-down", reason="killed during CREATE INDEX CONCURRENTLY")
                assert not {"a_x", "a_x2"} & _schema(url)[1]
            m.up()
            # Every set ends up applied exactly once: none was ever applied twice.
            assert applied_counts(url) == {V1: 1, V2: 1, V3: 1, V4: 1}
            assert {"a_x", "a_x2"} <= _schema(url)[1]
        finally:
            pg.drop_database(name)
