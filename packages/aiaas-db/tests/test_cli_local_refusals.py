"""`aiaas-db migrate` without a DSN starts the local cluster only when nothing checkable refuses
first, and a command that fails stops what it started (removing a cluster folder it created)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SetWriter
from test_migrate import basic

EXE = Path(sys.executable).with_name("aiaas-db")


def cli_env(local_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AIAAS_DB_LOCAL_DIR": str(local_dir), "COLUMNS": "200", **extra}
    env.pop("AIAAS_DB_URL", None)
    return env


def aiaas_db(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], env=env, capture_output=True, text=True, check=False, timeout=180
    )


def postgres_processes_in(folder: Path) -> list[int]:
    """PIDs of processes whose command line names ``folder`` (a server of that cluster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline and "postgres" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("args", "env_drop", "code", "error"),
    [
        # The whole platform (the default) creates audit_log_entries: it needs the PII keys.
        (["migrate", "up"], ("AIAAS_DB_PII_HASH_KEY",), 2, "PII_KEYS_MISSING"),
        (["migrate", "up", "--platform"], ("AIAAS_DB_PII_ENCRYPTION_KEY",), 2, "PII_KEYS_MISSING"),
        (["migrate", "down", "--component", "operational", "--yes"], ("AIAAS_DB_PII_HASH_KEY",), 2,
         "PII_KEYS_MISSING"),
        (["migrate", "up", "--source", "/nonexistent/change-sets"], (), 5,
         "MIGRATION_SOURCE_INVALID"),
        (["migrate", "status", "--component", "billing"], (), 5, "MIGRATION_SOURCE_REQUIRED"),
    ],
)  # fmt: skip
def test_refused_before_anything_starts(
    tmp_path: Path, args: list[str], env_drop: tuple[str, ...], code: int, error: str
) -> None:
    local_dir = tmp_path / "pg"
    env = cli_env(local_dir)
    for name in env_drop:
        env.pop(name, None)
    done = aiaas_db(env, *args, "-o", "json")
    assert done.returncode == code, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == error
    assert not local_dir.exists()  # no cluster folder, so no initdb and no server
    assert postgres_processes_in(local_dir) == []
    text = aiaas_db(env, *args)
    assert text.returncode == code
    assert "starting the local PostgreSQL" not in text.stderr
    assert error in text.stderr
    assert not local_dir.exists()


def test_missing_pii_keys_are_named_before_the_cluster_starts(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "pg")
    env.pop("AIAAS_DB_PII_HASH_KEY", None)
    env.pop("AIAAS_DB_PII_ENCRYPTION_KEY", None)
    done = aiaas_db(env, "migrate", "up")
    assert done.returncode == 2
    assert "AIAAS_DB_PII_HASH_KEY and AIAAS_DB_PII_ENCRYPTION_KEY" in done.stderr
    assert not (tmp_path / "pg").exists()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A cluster folder the server's OS user can reach (tmp_path's parents are private)."""
    folder = Path(tempfile.mkdtemp(prefix="aiaas-db-refusal-"))
    folder.chmod(0o711)
    yield folder / "pg"
    if (folder / "pg").exists():
        subprocess.run(
            [str(EXE), "local", "stop", "--data-dir", str(folder / "pg")],
            check=False,
            capture_output=True,
            timeout=120,
        )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_failed_command_stops_the_cluster_it_started(
    reachable_dir: Path, sets: SetWriter
) -> None:
    basic(sets)
    sets.add(300001010000, "boom", "SELECT 1/0;\n", "SELECT 1;\n")
    env = cli_env(reachable_dir)

    def running() -> bool:
        status = aiaas_db(env, "local", "status", "-o", "json")
        assert status.returncode == 0, status.stderr
        return bool(json.loads(status.stdout)["running"])

    # 1. Nothing there: the command creates and starts a cluster, a change set fails (exit 3),
    #    and the cluster it created is stopped and removed.
    failed = aiaas_db(env, "migrate", "up", "--source", str(sets.root))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "starting the local PostgreSQL" in failed.stderr
    assert "stopped and removed the local PostgreSQL this command started" in failed.stderr
    assert not reachable_dir.exists()
    assert postgres_processes_in(reachable_dir) == []

    # 2. A stopped cluster of the user's: started for the command, stopped again, kept.
    assert aiaas_db(env, "local", "start").returncode == 0
    assert aiaas_db(env, "local", "stop").returncode == 0
    again = aiaas_db(env, "migrate", "up", "--source", str(sets.root), "-o", "json")
    assert again.returncode == 3, again.stdout + again.stderr
    assert json.loads(again.stdout)["ok"] is False  # one JSON document, nothing else on stdout
    assert not running()
    assert (reachable_dir / "data" / "PG_VERSION").is_file()
    assert postgres_processes_in(reachable_dir) == []

    # 3. A running cluster is not the command's to stop (the failed set now blocks: exit 4).
    assert aiaas_db(env, "local", "start").returncode == 0
    third = aiaas_db(env, "migrate", "up", "--source", str(sets.root))
    assert third.returncode == 4, third.stdout + third.stderr
    assert "this command started" not in third.stderr
    assert running()

    # 4. Success keeps the cluster it started running (the documented behaviour).
    assert aiaas_db(env, "local", "stop").returncode == 0
    clean = SetWriter(sets.root.parent / "clean")
    clean.add(202401010000, "things", "CREATE TABLE things (id int);\n", "DROP TABLE things;\n")
    ok = aiaas_db(env, "migrate", "up", "--component", "other", "--source", str(clean.root))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert running()


def test_seed_refuses_bad_keys_before_the_cluster_starts(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "pg", AIAAS_DB_PII_HASH_KEY="not-a-key")
    env.pop("AIAAS_DB_PII_ENCRYPTION_KEY", None)
    done = aiaas_db(env, "seed", "--package", "local-dev", "-o", "json")
    assert done.returncode == 2, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "PII_KEYS_MISSING"
    assert "not-a-key" not in done.stdout + done.stderr  # a key's value is never shown
    assert not (tmp_path / "pg").exists()
