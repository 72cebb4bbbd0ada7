"""Campaign "migrations": SIGKILL ``aiaas-db migrate up`` at random moments, check the database.

A generated 20-set source (transactional sets creating tables, indexes, columns and functions;
``-- aiaas:no-transaction`` sets building indexes with ``CREATE INDEX CONCURRENTLY``) is applied by
the real ``aiaas-db`` CLI in a subprocess against a throwaway PostgreSQL, with a password-protected
role whose DSN carries a planted password. Each round rolls the database back to a random version,
starts ``migrate up``, kills it with SIGKILL after a random delay and then checks:

* the advisory lock is released once the killed client's server session has ended (``pg_locks``);
* every change set's objects exist (indexes valid) exactly when the recorded state says the set is
  applied, and none exist when it is pending (a set recorded dirty may be half done);
* ``migrate up`` reaches the head -- after the documented ``migrate recover --action run-down``
  when ``up`` answers that the database is dirty (exit 4, a killed no-transaction set).

Figures: kills, recoveries needed, max time to head, disagreements (0), lock leaks (0).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Budget, BudgetFactory, ChaosReport, PlantedSecrets
from psycopg import sql

from aiaas_db import LocalPostgres, Migrator

CAMPAIGN = "migrations"
COMPONENT = "chaos"
ROLE = "chaos_migrator"
SETS = 20
BASE_VERSION = 202501010000
# A killed client's server session ends when it next talks to the client; the longest statement
# here sleeps 0.3 s, so anything holding the lock after this long has leaked it.
LOCK_RELEASE_S = 30.0
CLI_TIMEOUT_S = 120.0
EXIT_DIRTY = 4


@dataclass
class ChangeSet:
    version: int
    slug: str
    up: str
    down: str
    no_transaction: bool
    tables: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)


def generate_source(rng: random.Random, folder: Path) -> list[ChangeSet]:
    """20 change sets: a table first, then a seeded mix of tables, columns, functions and
    no-transaction index builds (at least six) over the tables made so far."""
    kinds = ["table"] + ["notx"] * 6 + ["table"] * 4 + ["column"] * 4 + ["function"] * 5
    rest = kinds[1:]
    rng.shuffle(rest)
    kinds = [kinds[0], *rest]
    folder.mkdir(parents=True, exist_ok=True)
    made: list[ChangeSet] = []
    tables: list[str] = []
    for n, kind in enumerate(kinds, start=1):
        version = BASE_VERSION + n
        pause = round(rng.uniform(0.05, 0.3), 2)
        if kind == "table":
            t = f"chaos_t{n}"
            tables.append(t)
            cs = ChangeSet(
                version,
                f"create_{t}",
                f"CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "v integer NOT NULL, note text);\n"
                f"INSERT INTO {t} (v, note) SELECT g, md5(g::text) "
                f"FROM generate_series(1, {rng.randrange(2000, 20000)}) AS g;\n"
                f"SELECT pg_sleep({pause});\n"
                f"CREATE INDEX {t}_v ON {t} (v);\n",
                f"DROP TABLE {t};\n",
                no_transaction=False,
                tables=[t],
                indexes=[f"{t}_v"],
            )
        elif kind == "notx":
            t = rng.choice(tables)
            a, b = f"{t}_note_{n}", f"{t}_vn_{n}"
            cs = ChangeSet(
                version,
                f"index_{t}_{n}",
                "-- aiaas:no-transaction\n"
                f"CREATE INDEX CONCURRENTLY {a} ON {t} (note);\n"
                f"SELECT pg_sleep({pause});\n"
                f"CREATE INDEX CONCURRENTLY {b} ON {t} (v, note);\n",
                "-- aiaas:no-transaction\n"
                f"DROP INDEX CONCURRENTLY IF EXISTS {b};\n"
                f"DROP INDEX CONCURRENTLY IF EXISTS {a};\n",
                no_transaction=True,
                indexes=[a, b],
            )
        elif kind == "column":
            t = rng.choice(tables)
            c = f"extra_{n}"
            cs = ChangeSet(
                version,
                f"add_{c}",
                f"ALTER TABLE {t} ADD COLUMN {c} integer;\n"
                f"UPDATE {t} SET {c} = v % 7;\n"
                f"SELECT pg_sleep({pause});\n",
                f"ALTER TABLE {t} DROP COLUMN {c};\n",
                no_transaction=False,
                columns=[(t, c)],
            )
        else:
            f = f"chaos_f{n}"
            cs = ChangeSet(
                version,
                f"create_{f}",
                f"CREATE FUNCTION {f}(x integer) RETURNS integer LANGUAGE sql IMMUTABLE "
                f"AS $$ SELECT x + {n} $$;\n"
                f"SELECT pg_sleep({pause});\n",
                f"DROP FUNCTION {f}(integer);\n",
                no_transaction=False,
                functions=[f],
            )
        (folder / f"{version}_{cs.slug}.up.sql").write_text(cs.up)
        (folder / f"{version}_{cs.slug}.down.sql").write_text(cs.down)
        made.append(cs)
    return made


@dataclass
class Cli:
    """The real ``aiaas-db`` command, in subprocesses, every output kept for the secrets scan."""

    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        script = Path(sys.executable).with_name("aiaas-db")
        head = [str(script)] if script.is_file() else [sys.executable, "-m", "aiaas_db"]
        return [*head, *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def collect(self, proc: subprocess.Popen[str]) -> int:
        out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
        self.outputs += [out, err]
        return proc.returncode


@pytest.fixture
def cluster(chaos_secrets: PlantedSecrets) -> Iterator[tuple[LocalPostgres, str]]:
    """A throwaway PostgreSQL whose campaign role logs in with the planted password (SCRAM)."""
    with LocalPostgres.temporary() as pg:
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(chaos_secrets.db_password)
                )
            )
            conn.execute(sql.SQL("CREATE DATABASE chaos OWNER {}").format(sql.Identifier(ROLE)))
        assert pg.data_dir is not None
        hba = pg.data_dir / "pg_hba.conf"
        rule = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rule + hba.read_text())
        with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        dsn = f"postgresql://{ROLE}:{chaos_secrets.db_password}@127.0.0.1:{pg.port}/chaos"
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn.replace(chaos_secrets.db_password, "wrong"), connect_timeout=10)
        yield pg, dsn


def _other_sessions(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _advisory_locks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND d.datname = current_database() "
        "AND l.pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_released(dsn: str) -> bool:
    """Whether every session of the killed client ended and took its advisory locks along."""
    deadline = time.monotonic() + LOCK_RELEASE_S
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        while time.monotonic() < deadline:
            if _other_sessions(conn) == 0 and _advisory_locks(conn) == 0:
                return True
            time.sleep(0.05)
        return _advisory_locks(conn) == 0


def disagreements(dsn: str, sets: list[ChangeSet], source: Path) -> list[str]:
    """Sets whose objects disagree with the recorded state: applied but (partly) missing or an
    index invalid, pending but (partly) present. A dirty set may be half done."""
    status = Migrator(dsn, source, component=COMPONENT).status(history_limit=0)
    applied = {a.version for a in status.applied}
    dirty = status.dirty_version if status.dirty else None
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
        valid = {
            r[0]: bool(r[1])
            for r in conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid"
            ).fetchall()
        }
        columns = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        }
        functions = {r[0] for r in conn.execute("SELECT proname FROM pg_proc").fetchall()}
    problems = []
    for cs in sets:
        present = (
            [t in tables for t in cs.tables]
            + [valid.get(i, False) for i in cs.indexes]
            + [c in columns for c in cs.columns]
            + [f in functions for f in cs.functions]
        )
        leftovers = (
            [t in tables for t in cs.tables]
            + [i in valid for i in cs.indexes]
            + [c in columns for c in cs.columns]
            + [f in functions for f in cs.functions]
        )
        if cs.version == dirty:
            continue
        if cs.version in applied and not all(present):
            problems.append(f"{cs.version} ({cs.slug}) recorded applied but its objects are not")
        if cs.version not in applied and any(leftovers):
            problems.append(f"{cs.version} ({cs.slug}) pending but some of its objects exist")
    return problems


def test_sigkilled_migrations_reach_the_head(
    cluster: tuple[LocalPostgres, str],
    tmp_path: Path,
    chaos_rng: random.Random,
    chaos_budget: BudgetFactory,
    chaos_report: ChaosReport,
    chaos_secrets: PlantedSecrets,
    chaos_seed: int,
) -> None:
    pg, dsn = cluster
    source = tmp_path / "sets"
    sets = generate_source(chaos_rng, source)
    head = sets[-1].version
    env = {
        **os.environ,
        **chaos_secrets.pii_env(),
        "AIAAS_DB_URL": dsn,
        "AIAAS_DB_SOURCE": str(source),
        "AIAAS_DB_COMPONENT": COMPONENT,
        "AIAAS_DB_ACTOR": "chaos-campaign",
        "NO_COLOR": "1",
    }
    env.pop("AIAAS_PG_SOURCE", None)
    cli = Cli(env)

    def status() -> dict[str, Any]:
        proc = cli.run("migrate", "status", "--output", "json")
        assert proc.returncode == 0, f"seed {chaos_seed}: status failed: {proc.stderr}"
        return dict(json.loads(proc.stdout))

    # Calibrate, so kills land across the whole run: the command's start-up (a status), and one
    # whole `up` from empty.
    t0 = time.monotonic()
    assert status()["pending"]
    startup_s = time.monotonic() - t0
    t0 = time.monotonic()
    first = cli.run("migrate", "up")
    full_up_s = time.monotonic() - t0
    assert first.returncode == 0, f"seed {chaos_seed}: the source does not apply: {first.stderr}"
    assert status()["current_version"] == head
    per_set_s = max(0.0, full_up_s - startup_s) / len(sets)

    budget: Budget = chaos_budget(full=100, default=20, seconds=100)
    finished_first = recoveries = 0
    max_to_head = 0.0
    disagreeing: list[str] = []
    lock_leaks: list[int] = []
    round_no = -1
    for round_no, _ in enumerate(budget):
        # Roll back to a random version (often to nothing, so early sets get killed too).
        keep = 0 if chaos_rng.random() < 0.3 else chaos_rng.choice([0, *[s.version for s in sets]])
        if keep < head:
            down = cli.run("migrate", "down", "--to", str(keep), "--yes")
            assert down.returncode == 0, f"seed {chaos_seed} round {round_no}: {down.stderr}"
        pending = sum(cs.version > keep for cs in sets)
        proc = cli.start("migrate", "up")
        time.sleep(chaos_rng.uniform(0.0, startup_s + per_set_s * pending))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            finished_first += 1
            budget.not_counted()  # the count is of kills
        cli.collect(proc)
        if not wait_released(dsn):
            lock_leaks.append(round_no)
        disagreeing += [f"round {round_no}: {p}" for p in disagreements(dsn, sets, source)]
        # Back to the head: `up`, or the documented recovery when `up` says the head is dirty.
        started = time.monotonic()
        again = cli.run("migrate", "up")
        if again.returncode == EXIT_DIRTY:
            recoveries += 1
            dirty = status()["dirty_version"]
            recover = cli.run(
                "migrate",
                "recover",
                "--action",
                "run-down",
                "--version",
                str(dirty),
                "--reason",
                "chaos: killed during a no-transaction set",
                "--yes",
            )
            assert recover.returncode == 0, (
                f"seed {chaos_seed} round {round_no}: recover failed: {recover.stderr}"
            )
            again = cli.run("migrate", "up")
        assert again.returncode == 0, (
            f"seed {chaos_seed} round {round_no}: up after the kill failed "
            f"(exit {again.returncode}): {again.stderr}"
        )
        max_to_head = max(max_to_head, time.monotonic() - started)
        now = Migrator(dsn, source, component=COMPONENT).status(history_limit=0)
        assert now.current_version == head, f"seed {chaos_seed} round {round_no}: {now}"
        assert not now.blocked, f"seed {chaos_seed} round {round_no}: {now}"
        disagreeing += [f"round {round_no} at head: {p}" for p in disagreements(dsn, sets, source)]

    # The checks see what they look for: an index dropped behind the tool's back, a lock held.
    planted = next(cs for cs in sets if cs.no_transaction)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(planted.indexes[0])))
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as holder:
            holder.execute("SELECT pg_advisory_lock(4242)")
            assert _advisory_locks(conn) == 1, f"seed {chaos_seed}: a held lock went unseen"
    seen = disagreements(dsn, sets, source)
    assert seen == [f"{planted.version} ({planted.slug}) recorded applied but its objects are not"]

    hits = chaos_secrets.scan(cli.outputs, where="aiaas-db migrate output")
    if pg.log_file is not None:
        hits += chaos_secrets.scan([pg.log_file], where="PostgreSQL server log")
    report = chaos_report.figure
    kills = budget.ran
    report(CAMPAIGN, "rounds", round_no + 1)
    report(CAMPAIGN, "kills", kills, bound=budget.describe())
    report(CAMPAIGN, "finished before the kill (not counted)", finished_first)
    report(CAMPAIGN, "recoveries needed", recoveries, bound="recover --action run-down")
    report(CAMPAIGN, "max time to head", round(max_to_head, 2), unit="s", bound="< 120 s")
    report(CAMPAIGN, "full up (20 sets)", round(full_up_s, 2), unit="s")
    report(CAMPAIGN, "disagreements", len(disagreeing), bound="0")
    report(CAMPAIGN, "lock leaks", len(lock_leaks), bound="0")
    report(CAMPAIGN, "secret hits", len(hits), bound="0")
    assert kills > 0, f"seed {chaos_seed}: no kill landed while `up` ran"
    assert max_to_head < CLI_TIMEOUT_S, f"seed {chaos_seed}: {max_to_head:.1f} s to the head"
    assert disagreeing == [], f"seed {chaos_seed}: catalog disagrees with state: {disagreeing}"
    assert lock_leaks == [], f"seed {chaos_seed}: advisory lock held after rounds {lock_leaks}"
    assert hits == [], f"seed {chaos_seed}: planted secrets leaked: {[str(h) for h in hits]}"
