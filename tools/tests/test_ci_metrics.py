from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import ci_metrics

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="{e}" failures="{f}" skipped="{s}" tests="{t}">
</testsuite></testsuites>"""


def _junit(tmp_path: Path, name: str, *, t: int, f: int = 0, s: int = 0, e: int = 0) -> Path:
    path = tmp_path / name
    path.write_text(JUNIT.format(t=t, f=f, s=s, e=e))
    return path


def test_junit_counts_sums_reports_and_ignores_missing_files(tmp_path: Path) -> None:
    a = _junit(tmp_path, "a.xml", t=10, f=2, s=1, e=1)
    b = _junit(tmp_path, "b.xml", t=5)
    counts = ci_metrics.junit_counts([a, b, tmp_path / "absent.xml"])
    assert counts == ci_metrics.Counts(passed=11, failed=2, skipped=1, errors=1)


def test_record_then_summary_and_report(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    ci_metrics.record(
        "tests(project='aiaas-core')",
        status="passed",
        started_at=start,
        duration_s=12.5,
        counts=ci_metrics.Counts(passed=40, skipped=1),
        revision="abc123",
        db=db,
        now=start,
    )
    ci_metrics.record(
        "lint",
        status="failed",
        started_at=start + timedelta(minutes=1),
        duration_s=3.0,
        counts=ci_metrics.Counts(passed=4, failed=1),
        revision="abc123",
        detail="failed: ruff",
        db=db,
        now=start,
    )
    counts, ok, bad = ci_metrics.summary_since(start, db=db)
    assert (counts.passed, counts.failed, counts.skipped, ok, bad) == (44, 1, 1, 1, 1)
    later_counts, later_ok, later_bad = ci_metrics.summary_since(
        start + timedelta(minutes=1), db=db
    )
    assert (later_counts.passed, later_ok, later_bad) == (4, 0, 1)

    text = ci_metrics.report(db=db, now=start + timedelta(days=1))
    assert "tests(project='aiaas-core')" in text
    assert "100.0" in text  # pass rate of the tests session
    assert "failed: ruff" in text  # failure history carries the detail
    assert "abc123" in text


def test_records_older_than_retention_are_pruned(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    now = datetime(2026, 11, 26, tzinfo=UTC)
    old = now - timedelta(days=ci_metrics.RETENTION_DAYS + 1)
    ci_metrics.record(
        "tests", status="passed", started_at=old, duration_s=1, revision="r", db=db, now=old
    )
    ci_metrics.record(
        "tests", status="passed", started_at=now, duration_s=1, revision="r", db=db, now=now
    )
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select started_at from runs").fetchall()
    assert rows == [(now.isoformat(),)]


def test_record_rejects_unknown_status(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status must be"):
        ci_metrics.record(
            "x", status="maybe", started_at=datetime.now(UTC), duration_s=0, db=tmp_path / "m"
        )


def test_report_on_empty_store(tmp_path: Path) -> None:
    assert "(no runs recorded)" in ci_metrics.report(db=tmp_path / "empty.sqlite3")


def test_git_revision_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert ci_metrics.git_revision(tmp_path) == "unknown"


def test_cli_summary_exit_code_reflects_failed_sessions(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    start = datetime.now(UTC)
    ci_metrics.record(
        "a",
        status="passed",
        started_at=start,
        duration_s=1,
        counts=ci_metrics.Counts(3),
        revision="r",
        db=db,
    )
    script = Path(ci_metrics.__file__)
    since = (start - timedelta(seconds=1)).isoformat()
    ok = subprocess.run(
        [sys.executable, str(script), "--db", str(db), "summary", "--since", since],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert ok.returncode == 0
    assert ok.stdout.splitlines()[-1] == "tests: 3 passed, 0 failed, 0 skipped"
    ci_metrics.record("b", status="failed", started_at=start, duration_s=1, revision="r", db=db)
    bad = subprocess.run(
        [sys.executable, str(script), "--db", str(db), "summary", "--since", since],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "sessions: 1 passed, 1 failed" in bad.stdout
    naive = subprocess.run(
        [sys.executable, str(script), "--db", str(db), "summary", "--since", "2026-01-01T00:00:00"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert naive.returncode == 2
    assert "timezone" in naive.stderr
    rep = subprocess.run(
        [sys.executable, str(script), "--db", str(db), "report"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert rep.returncode == 0
    assert "Failure history" in rep.stdout


def test_repeated_recordings_accumulate(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    now = datetime.now(UTC)
    for i in range(20):
        ci_metrics.record(
            f"s{i}", status="passed", started_at=now, duration_s=0, revision="r", db=db
        )
    counts, ok, bad = ci_metrics.summary_since(now - timedelta(seconds=1), db=db)
    assert (ok, bad, counts.passed) == (20, 0, 0)
