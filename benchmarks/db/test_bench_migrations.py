"""aiaas-db: what the guardrails cost.

* 200 small change sets applied by ``Migrator.up`` against the same SQL run directly through
  psycopg (each set in its own transaction), in the same run: the difference divided by 200 is
  the per-set overhead of locking, checks, row-count deltas, ledger, golang-migrate's table,
  history and spans/events. ``extra_info`` carries ``per_set_overhead_ms``.
* Taking and releasing the migration lock (our key and golang-migrate's two).
* A drill (apply -> fingerprint -> roll back -> fingerprint -> reapply) over 20 sets.

Each round gets a fresh database; the cluster is a throwaway one from this machine's binaries.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aiaas_db import AdvisoryLock, LocalPostgres, Migrator, lock_keys

SETS = 200
DRILL_SETS = 20
ROUNDS = 5


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalPostgres]:
    with LocalPostgres.temporary() as pg:
        yield pg


@pytest.fixture(scope="module")
def source() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="aiaas-bench-"))
    for i in range(SETS):
        hour, minute = divmod(i, 60)  # a valid YYYYMMDDHHMM for every set
        version = int(f"20240101{hour:02d}{minute:02d}")
        (folder / f"{version}_t{i}.up.sql").write_text(
            f"CREATE TABLE t{i} (id int PRIMARY KEY, v text);\nINSERT INTO t{i} VALUES (1, 'x');\n"
        )
        (folder / f"{version}_t{i}.down.sql").write_text(f"DROP TABLE t{i};\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_db(cluster: LocalPostgres) -> Iterator[Callable[[], str]]:
    names: list[str] = []

    def make() -> str:
        name = f"b_{uuid.uuid4().hex[:12]}"
        names.append(name)
        return cluster.create_database(name)

    yield make
    for name in names:
        cluster.drop_database(name)


def _direct(url: str, scripts: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for script in scripts:
            with conn.transaction():
                for stmt in script.split(";\n"):
                    if stmt.strip():
                        conn.execute(stmt.encode())


def _scripts(folder: Path) -> list[str]:
    return [p.read_text() for p in sorted(folder.glob("*.up.sql"))]


@pytest.mark.benchmark(group="db-apply-200")
def test_apply_200_sets_direct_psycopg(benchmark: Any, source: Path, fresh_db: Any) -> None:
    """Baseline: the same SQL, each set in its own transaction, no bookkeeping at all."""
    scripts = _scripts(source)
    benchmark.pedantic(
        _direct, setup=lambda: ((fresh_db(), scripts), {}), rounds=ROUNDS, iterations=1
    )


@pytest.mark.benchmark(group="db-apply-200")
def test_apply_200_sets_migrator(benchmark: Any, source: Path, fresh_db: Any) -> None:
    """Migrator.up over 200 sets; extra_info compares with the direct run measured alongside."""
    scripts = _scripts(source)
    direct: list[float] = []
    reports: list[Any] = []

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        # Measure the baseline right before each round so both see the same machine state.
        url = fresh_db()
        start = time.perf_counter()
        _direct(url, scripts)
        direct.append(time.perf_counter() - start)
        return (fresh_db(),), {}

    def run(url: str) -> None:
        reports.append(Migrator(url, source, component="bench").up())

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert all(len(r.versions) == SETS for r in reports)
    ours = benchmark.stats.stats.median
    base = statistics.median(direct)
    benchmark.extra_info.update(
        {
            "sets": SETS,
            "direct_median_s": round(base, 4),
            "migrator_median_s": round(ours, 4),
            "per_set_overhead_ms": round((ours - base) / SETS * 1000, 3),
            "ratio": round(ours / base, 2),
        }
    )


@pytest.mark.benchmark(group="db-lock")
def test_lock_acquire_release(benchmark: Any, fresh_db: Any) -> None:
    """Take and release our lock and golang-migrate's two keys, uncontended."""
    url = fresh_db()
    with psycopg.connect(url, autocommit=True) as conn:
        keys = lock_keys(conn.info.dbname, "public", "schema_migrations_bench", "bench")

        def cycle() -> None:
            lock = AdvisoryLock(conn, keys, timeout=5)
            lock.acquire()
            lock.release()

        benchmark(cycle)
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
    assert held == (0,)


@pytest.mark.benchmark(group="db-drill")
def test_drill_20_sets(benchmark: Any, source: Path, fresh_db: Any, tmp_path: Path) -> None:
    """A drill over 20 sets: 60 set runs and 80 catalog fingerprints."""
    folder = tmp_path / "drill"
    folder.mkdir()
    for path in sorted(source.iterdir())[: DRILL_SETS * 2]:
        shutil.copy(path, folder / path.name)
    reports: list[Any] = []

    def run(url: str) -> None:
        reports.append(Migrator(url, folder, component="bench").drill())

    benchmark.pedantic(run, setup=lambda: ((fresh_db(),), {}), rounds=3, iterations=1)
    assert all(r.ok and len(r.steps) == DRILL_SETS for r in reports)
    benchmark.extra_info["per_set_ms"] = round(benchmark.stats.stats.median / DRILL_SETS * 1000, 2)
