"""The aiaas-db command line: output for people and machines, and its exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import requires, version
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import V1, V2, V3, SetWriter
from test_migrate import basic

from aiaas_core import error_response_schema
from aiaas_db.cli._common import EXIT_CODES, exit_code_for
from aiaas_db.cli._main import cli, main
from aiaas_db.migrations._lock import migrator_lock_key

ERROR_SCHEMA = error_response_schema()


@pytest.fixture
def run(db_url: str, sets: SetWriter, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("AIAAS_DB_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, dsn: bool = True, source: bool = True, **kw: Any) -> Result:
        argv = list(args)
        if args and args[0] == "migrate":
            if dsn:
                argv += ["--dsn", db_url]
            if source:
                argv += ["--source", str(sets.root)]
        return runner.invoke(cli, argv, catch_exceptions=False, **kw)

    return invoke


def as_json(result: Result) -> dict[str, Any]:
    doc = json.loads(result.stdout)
    if doc.get("ok") is False:  # every error document carries the shared error body
        jsonschema.validate(doc["error"], ERROR_SCHEMA)
        assert doc["exit_code"] == result.exit_code
    return doc


def test_help_everywhere(run) -> None:
    for args in (
        [],
        ["local"],
        ["local", "start"],
        ["local", "stop"],
        ["local", "status"],
        ["local", "url"],
        ["migrate"],
        ["migrate", "up"],
        ["migrate", "down"],
        ["migrate", "status"],
        ["migrate", "drill"],
        ["migrate", "recover"],
        ["migrate", "force"],
        ["migrate", "accept-checksum"],
    ):
        result = run(*args, "--help", dsn=False, source=False)
        assert result.exit_code == 0, args
        assert "Usage:" in result.stdout
    top = run("--help").stdout
    assert "Exit codes" in top
    assert "6 lock timeout" in top
    assert "--lock-timeout" in run("migrate", "up", "--help").stdout
    version = run("--version")
    assert version.exit_code == 0
    assert "0.1.0" in version.stdout


def test_up_status_down_for_people(run, sets: SetWriter) -> None:
    basic(sets)
    status = run("migrate", "status")
    assert status.exit_code == 0
    assert "pending" in status.stdout
    assert "users" in status.stdout
    up = run("migrate", "up", "--author", "dev")
    assert up.exit_code == 0, up.output
    assert "applied" in up.stdout
    assert f"version — → {V2}" in up.stdout
    assert f"↑ up {V1}_users" in up.stderr
    assert "✓ applied" in up.stderr
    assert "public.users +2" in up.stderr
    status = run("migrate", "status")
    assert "clean" in status.stdout
    assert str(V2) in status.stdout
    assert "history" in status.stdout
    noop = run("migrate", "up")
    assert noop.exit_code == 0
    assert "nothing to up" in noop.stdout
    down = run("migrate", "down", "--yes")
    assert down.exit_code == 0
    assert "rolled_back" in down.stdout


def test_json_output(run, sets: SetWriter) -> None:
    basic(sets)
    dry = run("migrate", "up", "--dry-run", "-o", "json")
    doc = as_json(dry)
    assert dry.exit_code == 0
    assert doc["ok"]
    assert doc["dry_run"]
    assert [r["status"] for r in doc["results"]] == ["dry_run", "dry_run"]
    assert dry.stderr == ""  # machines get one document, nothing else
    up = as_json(run("migrate", "up", "-o", "json"))
    assert up["status"] == "succeeded"
    assert up["version_after"] == V2
    status = as_json(run("migrate", "status", "-o", "json"))
    assert status["current_version"] == V2
    assert status["health"]["schema_version"] == V2
    assert status["health"]["last_migration_at"]


def test_dry_run_for_people_lists_statements(run, sets: SetWriter) -> None:
    basic(sets)
    result = run("migrate", "up", "--dry-run")
    assert result.exit_code == 0
    assert "INSERT INTO users VALUES" in result.stdout
    assert "rolled back" in result.stdout
    down = run("migrate", "down", "--dry-run")  # no confirmation needed for a dry run
    assert down.exit_code == 0
    assert "nothing to down" in down.stdout


def test_exit_codes(run, sets: SetWriter, db_url: str) -> None:
    basic(sets)
    sets.add(V3, "bad", "SELECT 1/0;", "SELECT 1;")
    failed = run("migrate", "up", "-o", "json")
    assert failed.exit_code == 3
    body = as_json(failed)
    assert body["error"]["code"] == "MIGRATION_FAILED"
    assert body["details"]["versions"] == [V3]
    assert body["details"]["report"]["results"][-1]["status"] == "failed"
    assert body["error"]["request_id"]
    assert body["error"]["trace_id"]
    blocked = run("migrate", "up")
    assert blocked.exit_code == 4
    assert "MIGRATION_FAILED_HEAD" in blocked.stderr
    assert run("migrate", "status", "--exit-code").exit_code == 4
    recovered = run(
        "migrate", "recover", "--action", "mark-rolled-back", "--reason", "fix", "--yes"
    )
    assert recovered.exit_code == 0
    assert "recovered" in recovered.stdout
    nothing = run("migrate", "recover", "--action", "mark-applied", "--reason", "x", "--yes")
    assert nothing.exit_code == 4
    assert run("migrate", "status", "--exit-code").exit_code == 8
    sets.remove(V3, "bad")
    assert run("migrate", "status", "--exit-code").exit_code == 0
    # tamper: 5
    path = sets.root / f"{V1}_users.up.sql"
    path.write_text(path.read_text() + "-- edited\n")
    tamper = run("migrate", "up", "-o", "json")
    assert tamper.exit_code == 5
    assert as_json(tamper)["error"]["code"] == "MIGRATION_CHECKSUM_MISMATCH"
    accepted = run("migrate", "accept-checksum", str(V1), "--reason", "comment", "--yes")
    assert accepted.exit_code == 0
    # approval: 5, refused before connecting
    sets.add(V3, "c", "CREATE TABLE c (a int);", "DROP TABLE c;")
    prod = run("migrate", "up", "--env", "production", "-o", "json")
    assert prod.exit_code == 5
    assert as_json(prod)["error"]["code"] == "MIGRATION_APPROVAL_REQUIRED"
    ok = run("migrate", "up", "--env", "production", "--approved-by", "reviewer", "--author", "me")
    assert ok.exit_code == 0
    # lock timeout: 6
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(%s)", (migrator_lock_key(holder.info.dbname, "public", "app"),)
        )
        locked = run("migrate", "status", "--exit-code")  # status takes no lock
        assert locked.exit_code == 0
        timeout = run("migrate", "down", "--yes", "--lock-timeout", "0.2")
        assert timeout.exit_code == 6
        assert "MIGRATION_LOCK_TIMEOUT" in timeout.stderr
    # unreachable: 7
    unreachable = run(
        "migrate", "status", "--dsn", "postgresql://u:hunter2@127.0.0.1:1/x", dsn=False
    )
    assert unreachable.exit_code == 7
    assert "hunter2" not in unreachable.output
    # invalid source: 5; usage: 2
    bad = sets.root / "oops.up.sql"
    bad.write_text("")
    invalid = run("migrate", "status", "-o", "json")
    assert invalid.exit_code == 5
    assert "oops.up.sql" in " ".join(as_json(invalid)["details"]["problems"])
    bad.unlink()
    assert run("migrate", "down", "--steps", "0").exit_code == 2
    assert run("migrate", "down", "--steps", "1", "--all").exit_code == 2
    assert run("migrate", "up", "--to", "5").exit_code == 5  # unknown version


def test_confirmation_is_required_without_a_terminal(run, sets: SetWriter) -> None:
    basic(sets)
    sets.add(V3, "drop", "-- aiaas:destructive\nDROP TABLE orgs;", "CREATE TABLE orgs (id int);")
    assert run("migrate", "up", "--to", str(V2)).exit_code == 0
    down = run("migrate", "down", "-o", "json")
    assert down.exit_code == 5
    assert as_json(down)["error"]["code"] == "MIGRATION_CONFIRMATION_REQUIRED"
    destructive = run("migrate", "up", "-o", "json")
    assert destructive.exit_code == 5
    assert as_json(destructive)["error"]["code"] == "MIGRATION_CONFIRMATION_REQUIRED"
    assert run("migrate", "up", "--yes").exit_code == 0
    force = run("migrate", "force", str(V1), "--reason", "r")
    assert force.exit_code == 5
    forced = run("migrate", "force", str(V1), "--reason", "r", "--yes", "-o", "json")
    assert forced.exit_code == 0
    assert as_json(forced)["version_after"] == V1
    assert run("migrate", "force", "none", "--reason", "r", "--yes").exit_code == 0
    assert run("migrate", "force", "x", "--reason", "r", "--yes").exit_code == 2


def test_drill_from_the_cli(run, sets: SetWriter) -> None:
    sets.add(V1, "t", "CREATE TABLE t (a int);", "DROP TABLE t;")
    good = run("migrate", "drill")
    assert good.exit_code == 0
    assert "yes" in good.stdout
    again = run("migrate", "drill", "-o", "json")
    assert as_json(again) == {**as_json(again), "ok": True, "steps": []}
    sets.add(V2, "leak", "CREATE INDEX t_a ON t (a);", "SELECT 1;")
    bad = run("migrate", "drill")
    assert bad.exit_code == 3
    assert "MIGRATION_DRILL_FAILED" in bad.stderr
    assert "+ indexes: CREATE INDEX t_a" in bad.stderr
    # The failed drill rolled V2 back (leaving its index): the next drill runs it again.
    bad_json = run("migrate", "drill", "-o", "json")
    assert bad_json.exit_code == 3
    body = as_json(bad_json)
    assert body["error"]["code"] == "MIGRATION_FAILED"  # the leftover index now makes its up fail
    assert body["details"]["versions"] == [V2]


def test_exit_code_mapping() -> None:
    from aiaas_db import MigrationRefusedError

    assert exit_code_for(MigrationRefusedError("x", code="MIGRATION_SOMETHING_NEW")) == 5
    assert exit_code_for(ValueError("x")) == 1
    assert set(EXIT_CODES.values()) <= {2, 3, 4, 5, 6, 7, 78}
    assert EXIT_CODES["VERSION_SKEW"] == 78  # the installed aiaas packages do not fit together
    # Missing or malformed PII keys, or an unknown AIAAS_PG_SOURCE, are configuration the
    # caller must supply: usage (2).
    assert {code for code, status in EXIT_CODES.items() if status == 2} == {
        "PII_KEYS_MISSING",
        "PII_KEYS_INVALID",
        "PII_KEY_UNKNOWN",
        "POSTGRES_SOURCE_INVALID",
    }
    assert EXIT_CODES["POSTGRES_EMBEDDED_MISSING"] == 7


def test_main_returns_exit_codes(
    sets: SetWriter, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    basic(sets)
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out
    assert main(["migrate", "up", "--dsn", db_url, "--source", str(sets.root), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    assert main(["migrate", "nope"]) == 2
    assert main(["migrate", "down", "--dsn", db_url, "--source", str(sets.root)]) == 5


def test_main_refuses_an_out_of_range_sibling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiaas-telemetry 0.9.0's metadata first on sys.path (as a pip install of it leaves it):
    every command, even --version, refuses with 78 and names the requirement it breaks."""
    info = tmp_path / "aiaas_telemetry-0.9.0.dist-info"
    info.mkdir()
    meta = "Metadata-Version: 2.1\nName: aiaas-telemetry\nVersion: 0.9.0\n"
    (info / "METADATA").write_text(meta)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--version"]) == 78
    err = capsys.readouterr().err
    assert err.startswith("aiaas-db: error VERSION_SKEW:")
    # the line names the installed aiaas-db and its declared aiaas-telemetry range, as installed
    wanted = next(r for r in requires("aiaas-db") or () if r.startswith("aiaas-telemetry"))
    assert f"aiaas-db {version('aiaas-db')} requires {wanted}, but aiaas-telemetry 0.9.0" in err


@pytest.fixture
def local_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="aiaas-db-cli-"))
    folder.chmod(0o711)
    yield folder / "pg"
    subprocess.run(
        [sys.executable, "-m", "aiaas_db", "local", "stop", "--data-dir", str(folder / "pg")],
        check=False,
        capture_output=True,
        timeout=120,
    )
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_local_cluster_and_migrate_without_dsn(local_dir: Path, sets: SetWriter) -> None:
    basic(sets)
    env = {**os.environ, "AIAAS_DB_LOCAL_DIR": str(local_dir), "COLUMNS": "200"}
    env.pop("AIAAS_DB_URL", None)
    exe = Path(sys.executable).with_name("aiaas-db")

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args], env=env, capture_output=True, text=True, check=False, timeout=180
        )

    stopped = sh("local", "status", "-o", "json")
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout)["running"] is False
    assert sh("local", "url").returncode == 7
    # No DSN: migrate starts the local cluster by itself.
    up = sh("migrate", "up", "--source", str(sets.root), "-o", "json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["version_after"] == V2
    status = sh("local", "status")
    assert "running" in status.stdout
    assert "***" in status.stdout
    url = sh("local", "url").stdout.strip()
    assert url.startswith("postgresql://postgres:")
    assert url.endswith("/aiaas")
    password = url.split("@")[0].split(":")[-1]
    assert password not in status.stdout
    assert password not in up.stdout + up.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
    started = sh("local", "start", "-o", "json")  # already running: reported, not restarted
    assert started.returncode == 0
    assert json.loads(started.stdout)["running"]
    assert "port" in sh("local", "start").stdout
    assert sh("local", "stop").returncode == 0
    assert "not running" in sh("local", "stop").stdout
    assert json.loads(sh("local", "stop", "-o", "json").stdout) == {"ok": True, "stopped": False}
    restarted = sh("migrate", "status", "--source", str(sets.root), "-o", "json")
    assert json.loads(restarted.stdout)["current_version"] == V2  # the data persisted
