"""``aiaas-db migrate ... --platform``: the platform's own change sets from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from aiaas_db.cli._main import cli

KEYS = {
    "AIAAS_DB_PII_HASH_KEY": "v1:" + "31" * 32,
    "AIAAS_DB_PII_ENCRYPTION_KEY": "v1:" + "42" * 32,
}
OPERATIONAL = [202611260001, 202611260002, 202611260003, 202611260004, 202611260005, 202611260006]


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "200")
    for var in (*KEYS, "AIAAS_DB_URL", "AIAAS_DB_SOURCE", "AIAAS_DB_COMPONENT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in KEYS.items():
        monkeypatch.setenv(var, value)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, [*args, "--dsn", db_url], catch_exceptions=False)

    return invoke


def tables(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT LIKE 'schema_migrations%%'"
            " AND tablename NOT LIKE 'aiaas_migration%%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_no_source_means_the_whole_platform(run: Any, db_url: str) -> None:
    result = run("migrate", "up", "-o", "json", "--yes")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["platform"] is True
    assert [c["component"] for c in doc["components"]] == ["operational", "analytics"]
    assert [r["version"] for r in doc["components"][0]["results"]] == OPERATIONAL
    assert {"organizations", "audit_log_entries", "analytics_hourly_rollups"} <= tables(db_url)

    status = run("migrate", "status", "--platform", "-o", "json", "--exit-code")
    assert status.exit_code == 0, status.output
    sdoc = json.loads(status.stdout)
    assert [c["component"] for c in sdoc["components"]] == ["operational", "analytics"]
    assert all(c["pending"] == [] for c in sdoc["components"])
    text = run("migrate", "status")
    assert text.exit_code == 0
    assert "operational" in text.stdout
    assert "analytics" in text.stdout

    refused = run("migrate", "down")
    assert refused.exit_code == 2
    assert "needs --all or --to" in refused.output
    down = run("migrate", "down", "--all", "--yes", "-o", "json")
    assert down.exit_code == 0, down.output
    ddoc = json.loads(down.stdout)
    assert [c["component"] for c in ddoc["components"]] == ["analytics", "operational"]
    assert tables(db_url) == set()


def test_a_platform_component_without_source(run: Any, db_url: str) -> None:
    result = run("migrate", "up", "--component", "operational", "--to", "202611260002")
    assert result.exit_code == 0, result.output
    assert "202611260002" in result.output
    assert tables(db_url) >= {"organizations", "users", "api_keys"}
    assert "usage_events" not in tables(db_url)
    drill = run("migrate", "drill", "--platform", "--component", "operational", "-o", "json")
    assert drill.exit_code == 0, drill.output
    assert [s["version"] for s in json.loads(drill.stdout)["steps"]] == OPERATIONAL[2:]


def test_drill_of_the_whole_platform(run: Any) -> None:
    result = run("migrate", "drill", "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert [c["component"] for c in doc["components"]] == ["operational", "analytics"]
    text = run("migrate", "up")  # nothing left: both report nothing to do
    assert text.exit_code == 0
    assert text.stdout.count("nothing to up") == 2


def test_missing_pii_keys_exit_2_and_apply_nothing(
    run: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIAAS_DB_PII_ENCRYPTION_KEY")
    result = run("migrate", "up", "-o", "json")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["code"] == "PII_KEYS_MISSING"
    assert "AIAAS_DB_PII_ENCRYPTION_KEY" in doc["error"]["error"]
    assert tables(db_url) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "up", "--platform", "--source", "."], "--platform uses the change sets"),
        (["migrate", "up", "--platform", "--component", "billing"], "is not one of them"),
        (["migrate", "up", "--migrations-table", "schema_migrations"], "names one component"),
        (
            ["migrate", "force", "none", "--reason", "x", "--yes"],
            "this command acts on one component",
        ),
    ],
)
def test_usage_errors(run: Any, args: list[str], message: str, tmp_path: Path) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_own_sources_still_work(run: Any, tmp_path: Path) -> None:
    (tmp_path / "202401010000_t.up.sql").write_text("CREATE TABLE t (a int);")
    (tmp_path / "202401010000_t.down.sql").write_text("DROP TABLE t;")
    result = run("migrate", "up", "--source", str(tmp_path), "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["component"] == "app"
    assert "platform" not in doc
    other = run("migrate", "up", "--component", "billing")
    assert other.exit_code == 5  # a non-platform component still needs a source
    assert "MIGRATION_SOURCE_REQUIRED" in other.output
