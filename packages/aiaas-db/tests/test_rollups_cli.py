"""``aiaas-db rollup`` commands, targets files, the contract's checks and the state change set."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import rollup_support
import sqlglot
from click.testing import CliRunner
from rollup_support import (
    ORGS,
    PROTECTOR,
    T0,
    expected,
    insert_events,
    pg_target,
    rollup_rows,
    run_sql,
    spread,
)

from aiaas_db import Migrator
from aiaas_db.analytics._engine import reconcile, run_rollup
from aiaas_db.analytics._models import RollupConfigError, RollupTarget
from aiaas_db.analytics._reconcile import builtin_checks, daily_equivalent, load_checks
from aiaas_db.analytics._targets import load_rollup_targets, rollup_target
from aiaas_db.cli._main import cli, main
from aiaas_db.platform._components import platform_source

rollup_template = rollup_support.rollup_template  # fixtures
url = rollup_support.url
DAY = timedelta(days=1)
WINDOW = ("--from", "2026-03-01", "--to", "2026-03-03T00:00:00+00:00")


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)
    return result.exit_code, result.stdout, result.stderr


def invoke_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = invoke(*args, "--output", "json")
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {code}): {out!r} {err!r}") from None


# -- commands ----------------------------------------------------------------------------------


def test_run_backfill_reconcile_usage_history(url: str, tmp_path: Path) -> None:
    events = spread(300)
    insert_events(url, events)
    code, doc = invoke_json("rollup", "run", "-g", "hour", *WINDOW, "--dsn", url)
    assert code == 0, doc
    assert (doc["ok"], doc["mode"], doc["events"], doc["buckets"]) == (True, "window", 300, 48)
    code, out, err = invoke("rollup", "run", "-g", "day", "--dsn", url)
    assert code == 0
    assert "incremental day rollup on postgres" in out
    assert rollup_rows(url, "day") == expected(events, "day")
    code, out, _ = invoke("rollup", "run", "-g", "day", "--dsn", url)
    assert "nothing to do" in out
    code, out, err = invoke(
        "rollup", "backfill", "-g", "hour", *WINDOW, "--dsn", url, "--window", "12h", "--pause", "0"
    )
    assert code == 0, err
    assert "4 window(s)" in out
    assert "4/4" in err  # the progress bar
    code, doc = invoke_json("rollup", "reconcile", "--dsn", url)
    assert code == 0
    assert doc["ok"] is True
    assert len(doc["checks"]) == 7
    code, out, _ = invoke("rollup", "reconcile", "--dsn", url, *WINDOW)
    assert code == 0
    assert "request_count_matches_usage_daily" in out
    code, doc = invoke_json(
        "rollup", "usage", *WINDOW, "--dsn", url, "--organization", str(ORGS[0])
    )
    assert code == 0
    assert {r["key"] for r in doc["rows"]} == {str(ORGS[0])}
    assert sum(r["request_count"] for r in doc["rows"]) == 100
    code, out, _ = invoke("rollup", "usage", *WINDOW, "--dsn", url, "--by", "model", "-g", "hour")
    assert code == 0
    assert "usage by model (hour)" in out
    code, doc = invoke_json("rollup", "history", "--dsn", url, "--limit", "3")
    assert code == 0
    assert [r["mode"] for r in doc["runs"]] == ["backfill", "incremental", "incremental"]
    code, out, _ = invoke("rollup", "history", "--dsn", url)
    assert "backfill" in out


def test_reconcile_mismatch_exits_3_and_duckdb_target(url: str, tmp_path: Path) -> None:
    insert_events(url, spread(100))
    path = tmp_path / "a.duckdb"
    code, doc = invoke_json(
        "rollup",
        "run",
        "-g",
        "hour",
        *WINDOW,
        "--target",
        "duckdb",
        "--dsn",
        url,
        "--duckdb-path",
        str(path),
    )
    assert code == 0, doc
    assert doc["dialect"] == "duckdb"
    assert rollup_rows(path, "hour", duckdb=True) == expected(spread(100), "hour")
    run_sql(url, "DELETE FROM usage_events WHERE organization_id = %s", (ORGS[0],))
    invoke("rollup", "run", "-g", "hour", *WINDOW, "--dsn", url)  # postgres only
    invoke("rollup", "run", "-g", "day", "--dsn", url)
    code, doc = invoke_json("rollup", "reconcile", "--dsn", url)
    assert code == 0
    run_sql(url, "UPDATE analytics_hourly_rollups SET request_count = request_count + 5")
    code, out, _ = invoke("rollup", "reconcile", "--dsn", url)
    assert code == 3
    assert "mismatch" in out
    assert "request_count_matches_usage" in out
    # The DuckDB file keeps the rollups it computed before the deletion: its own raw mirror
    # agrees with them; a corrupted error count breaks the contract's second check there.
    duck = ("--target", "duckdb", "--dsn", url, "--duckdb-path", str(path))
    invoke("rollup", "run", "-g", "day", *duck)
    code, doc = invoke_json("rollup", "reconcile", *duck)
    assert code == 0, doc
    import duckdb

    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE analytics_hourly_rollups SET error_count = request_count + 1")
    code, doc = invoke_json("rollup", "reconcile", *duck)
    assert code == 3
    failing = {c["name"] for c in doc["checks"] if not c["ok"]}
    assert {"error_rate_consistency", "rollup_measures_match_usage"} <= failing


def test_checks_file_option_uses_the_contract(url: str, contracts_dir: Path) -> None:
    insert_events(url, spread(50))
    run_rollup(pg_target(url), "hour", T0, T0 + 2 * DAY)
    contract = contracts_dir / "analytics-reconciliation-checks.yml"
    code, doc = invoke_json("rollup", "reconcile", "--dsn", url, "--checks", str(contract))
    assert code == 3  # no daily rollups yet: the daily equivalents fail
    failing = {c["name"] for c in doc["checks"] if not c["ok"]}
    assert failing == {
        "request_count_matches_usage_daily",
        "rollup_measures_match_usage_daily",
        "daily_matches_hourly",
    }


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("rollup", "run", "-g", "hour", "--from", "2026-03-02", "--to", "2026-03-01"), 2, "after"),
        (("rollup", "run", "-g", "hour", "--from", "2026-03-02"), 2, "--from and --to"),
        (("rollup", "reconcile", "--from", "2026-03-02"), 2, "--from and --to"),
        (("rollup", "run", "-g", "hour", "--target", "nope"), 2, "unknown rollup target"),
        (("rollup", "backfill", "-g", "hour", *WINDOW, "--window", "5x"), 2, "duration"),
        (("rollup", "run", "-g", "hour", "--from", "yesterday", "--to", "x"), 2, "ISO"),
    ],
)
def test_cli_errors(url: str, args: tuple[str, ...], code: int, fragment: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--dsn", url])
    assert result.exit_code == code, result.output
    assert fragment in result.output + result.stderr


def test_cli_error_documents_and_exit_codes(db_url: str) -> None:
    code, doc = invoke_json("rollup", "run", "-g", "hour", "--dsn", db_url)
    assert code == 4
    assert doc["error"]["code"] == "ROLLUP_SCHEMA_MISSING"
    code, _, err = invoke("rollup", "reconcile", "--dsn", db_url)
    assert code == 4
    assert "ROLLUP_SCHEMA_MISSING" in err
    dsn = "postgresql://u:topsecret@127.0.0.1:1/x?connect_timeout=1"
    code, doc = invoke_json("rollup", "usage", *WINDOW, "--dsn", dsn)
    assert code == 7
    assert "topsecret" not in json.dumps(doc)
    assert main(["rollup", "run", "-g", "hour", "--dsn", dsn, "-o", "json"]) == 7


def test_targets_file_names_targets(url: str, tmp_path: Path) -> None:
    insert_events(url, spread(30))
    targets = tmp_path / "targets.yml"
    targets.write_text(
        "version: 1\ndefault: default\ntargets:\n"
        "  default: {dialect: postgres, dsn: '${ROLLUP_TEST_DSN}'}\n"
        "  warehouse: {dialect: duckdb, dsn: '${ROLLUP_TEST_DSN}', "
        f"path: '${{ROLLUP_TEST_DUCK:-{tmp_path / 'w.duckdb'}}}'}}\n"
    )
    env = {"ROLLUP_TEST_DSN": url, "AIAAS_DB_URL": ""}
    code, out, err = invoke(
        "rollup", "run", "-g", "hour", *WINDOW, "--targets", str(targets), "-o", "json", env=env
    )
    assert code == 0, err
    assert json.loads(out)["target"] == "default"
    code, out, err = invoke(
        "rollup",
        "run",
        "-g",
        "hour",
        *WINDOW,
        "--targets",
        str(targets),
        "-t",
        "warehouse",
        "-o",
        "json",
        env=env,
    )
    assert code == 0, err
    assert json.loads(out)["dialect"] == "duckdb"
    assert (tmp_path / "w.duckdb").is_file()


# -- targets files -----------------------------------------------------------------------------


def test_builtin_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"AIAAS_DB_URL": "postgresql://h/db"}
    targets, default = load_rollup_targets(env=env)
    assert default == "postgres"
    assert set(targets) == {"postgres", "duckdb"}
    assert targets["postgres"].dsn == "postgresql://h/db"
    assert targets["duckdb"].duckdb_path == Path("aiaas-analytics.duckdb")
    assert targets["postgres"].to_dict()["dsn_configured"] is True
    assert "postgresql://h/db" not in repr(targets["postgres"])
    unset, _ = load_rollup_targets(env={})
    assert unset["postgres"].dsn is None
    assert unset["postgres"].dsn_origin == "AIAAS_DB_URL"
    chosen = rollup_target("duckdb", dsn="postgresql://x/y", duckdb_path="/tmp/z.duckdb", env={})
    assert (chosen.dsn, chosen.duckdb_path) == ("postgresql://x/y", Path("/tmp/z.duckdb"))
    monkeypatch.setenv("AIAAS_ROLLUP_TARGETS", "/nonexistent/targets.yml")
    with pytest.raises(RollupConfigError, match="cannot read"):
        load_rollup_targets()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("version: 2\ntargets: {}\n", "version: 1"),
        ("version: 1\ntargets: []\n", "`targets` must map"),
        ("version: 1\ntargets:\n  w: {dialect: snowflake, dsn: x}\n", "unsupported rollup dialect"),
        ("version: 1\ntargets:\n  d: {dialect: duckdb, dsn: x}\n", "needs `path`"),
        ("version: 1\ntargets:\n  p: {dialect: postgres, dsn: x, pool: 3}\n", "unknown key"),
        ("version: 1\ntargets:\n  p: [1]\n", "must be a mapping"),
        ("version: 1\ntargets:\n  p: {dialect: postgres, dsn: 3}\n", "must be a string"),
        ("version: 1\ndefault: q\ntargets:\n  p: {dialect: postgres}\n", "default target 'q'"),
        ("version: 1\ntargets:\n  'bad name!': {dialect: postgres}\n", "bad name"),
        ("{: nope", "not valid YAML"),
    ],
)
def test_bad_targets_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "t.yml"
    path.write_text(text)
    with pytest.raises(RollupConfigError) as info:
        load_rollup_targets(path, env={})
    assert fragment in info.value.message


# -- the contract's checks ---------------------------------------------------------------------


def _norm(sql: str) -> str:
    return sqlglot.parse_one(sql, read="postgres").sql(dialect="postgres")


def test_builtin_checks_equal_the_contract(contracts_dir: Path) -> None:
    contract = load_checks(contracts_dir / "analytics-reconciliation-checks.yml")
    builtin = builtin_checks()
    by_name = {c.name: c for c in builtin}
    assert [c.name for c in contract] == ["request_count_matches_usage", "error_rate_consistency"]
    for check in contract:
        assert _norm(by_name[check.name].sql) == _norm(check.sql)
        daily = daily_equivalent(check)
        assert by_name[daily.name].sql == daily.sql
        assert "analytics_hourly_rollups" not in daily.sql
        assert daily.granularity == "day"
    assert daily_equivalent(contract[0]).sql.count("DATE_TRUNC('DAY'") == 1
    assert [c.name for c in builtin_checks(contract)] == [c.name for c in builtin]


def test_bad_checks_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    for text, fragment in (
        ("checks: 3\n", "expected `checks:`"),
        ("checks:\n  - {name: a, sql: 'SELECT 1', expect: nonempty}\n", "expect: empty"),
        ("checks:\n  - {name: 'Bad Name', sql: 'SELECT 1'}\n", "invalid check"),
    ):
        path.write_text(text)
        with pytest.raises(RollupConfigError, match=fragment):
            load_checks(path)
    with pytest.raises(RollupConfigError, match="cannot load"):
        load_checks(tmp_path / "missing.yml")


# -- the state change set ----------------------------------------------------------------------


def test_state_change_set_passes_the_drill(db_url: str) -> None:
    Migrator(
        db_url, platform_source("operational"), component="operational", protector=PROTECTOR
    ).up()
    report = Migrator(
        db_url, platform_source("analytics"), component="analytics", protector=PROTECTOR
    ).drill()
    assert report.ok
    assert 202611260201 in [s.version for s in report.steps]
    # After the drill everything is applied again and rollups work.
    insert_events(db_url, spread(10))
    assert reconcile(RollupTarget("p", "postgres", dsn=db_url)).ok is False
    run_rollup(RollupTarget("p", "postgres", dsn=db_url), "hour", T0, T0 + 2 * DAY)
    assert all(
        c.ok
        for c in reconcile(RollupTarget("p", "postgres", dsn=db_url)).checks
        if c.granularity == "hour"
    )


# -- rendering -----------------------------------------------------------------------------------


def test_definitions_render_for_each_dialect_only() -> None:
    from aiaas_db.analytics._sql import DAILY, HOURLY, literal, render, select_sql

    assert HOURLY.source == "usage_events"
    assert DAILY.source == "analytics_hourly_rollups"  # daily from hourly, never raw events
    assert DAILY.measure_names == HOURLY.measure_names
    for dialect in ("postgres", "duckdb"):
        sql = render(select_sql("day"), dialect, window_start=T0, window_end=T0 + DAY)  # type: ignore[arg-type]
        assert "CAST(SUM(cost_usd) AS DECIMAL(18, 8))" in sql
        assert "2026-03-01 00:00:00+00:00" in sql
    with pytest.raises(ValueError, match="unsupported dialect"):
        render("SELECT 1", "snowflake")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="window_end"):
        render(select_sql("hour"), "postgres", window_start=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        literal(T0.replace(tzinfo=None))
    with pytest.raises(TypeError, match="cannot bind"):
        literal(1.5)
    rendered = render(
        "SELECT :a, :b, :c, :d, :e", "duckdb", a=None, b=True, c="it's", d=7, e=(1, 2)
    )
    assert rendered == "SELECT NULL, TRUE, 'it''s', 7, (1, 2)"


def test_coalesce_buckets_and_floor_ceil() -> None:
    from aiaas_db.analytics._windows import ceil_bucket, coalesce_buckets, floor_bucket

    h = timedelta(hours=1)
    hours = [T0, T0 + h, T0 + 2 * h, T0 + 5 * h, T0 + h]
    assert coalesce_buckets(hours, h, 2 * h) == [
        (T0, T0 + 2 * h),
        (T0 + 2 * h, T0 + 3 * h),
        (T0 + 5 * h, T0 + 6 * h),
    ]
    odd = T0 + timedelta(minutes=90)
    assert (floor_bucket(odd, "hour"), ceil_bucket(odd, "hour")) == (T0 + h, T0 + 2 * h)
    assert (floor_bucket(odd, "day"), ceil_bucket(T0, "day")) == (T0, T0)


def test_cli_uses_the_local_cluster_without_a_dsn(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiaas_db.cli._rollup as cli_module

    monkeypatch.setattr(cli_module, "resolve_dsn", lambda dsn, out: url)
    code, out, err = invoke("rollup", "run", "-g", "hour", *WINDOW, env={"AIAAS_DB_URL": ""})
    assert code == 0, err
    assert "window hour rollup on postgres" in out


def test_cli_reports_unexpected_errors(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiaas_db.analytics._engine as rollups

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(rollups.RollupEngine, "run", boom)
    code, doc = invoke_json("rollup", "run", "-g", "hour", "--dsn", url)
    assert code == 1
    assert doc["details"]["exception"] == "RuntimeError"
    code, _, err = invoke("rollup", "run", "-g", "hour", "--dsn", url)
    assert code == 1
    assert "kaput" in err
