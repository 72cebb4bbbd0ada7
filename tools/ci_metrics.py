"""Build and test metrics: a SQLite store that nox sessions write and `nox -s metrics` reads.

Every `tests`, `benchmarks` and `lint` session records one row: session name, outcome, duration,
pass/fail/skip/error counts, git revision and time. Rows older than the retention (30 days) are
pruned on every write. The store is a plain SQLite file (``.metrics/ci-metrics.sqlite3`` by
default, ``AIAAS_METRICS_DB`` to move it), so it can be queried with any SQLite client::

    sqlite3 .metrics/ci-metrics.sqlite3 "select session, avg(duration_s) from runs group by 1"

Command line (stdlib only, so it runs before any virtualenv exists)::

    python tools/ci_metrics.py report [--days N] [--db PATH]
    python tools/ci_metrics.py summary --since ISO-8601 [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

RETENTION_DAYS = 30
DEFAULT_DB = Path(__file__).resolve().parents[1] / ".metrics" / "ci-metrics.sqlite3"

_SCHEMA = """
create table if not exists runs (
    id integer primary key autoincrement,
    session text not null,
    status text not null check (status in ('passed', 'failed')),
    started_at text not null,
    duration_s real not null check (duration_s >= 0),
    passed integer not null default 0,
    failed integer not null default 0,
    skipped integer not null default 0,
    errors integer not null default 0,
    revision text not null,
    detail text
);
create index if not exists idx_runs_started_at on runs (started_at);
create index if not exists idx_runs_session_started_at on runs (session, started_at);
"""


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.passed + other.passed,
            self.failed + other.failed,
            self.skipped + other.skipped,
            self.errors + other.errors,
        )


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get("AIAAS_METRICS_DB", DEFAULT_DB))


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10)
    conn.executescript(_SCHEMA)
    return conn


def junit_counts(paths: Iterable[Path]) -> Counts:
    """Sum pytest's JUnit XML reports (missing files count as nothing ran)."""
    total = Counts()
    for path in paths:
        if not path.is_file():
            continue
        root = ET.parse(path).getroot()  # noqa: S314 - our own pytest output
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            tests = int(suite.get("tests", 0))
            failed = int(suite.get("failures", 0))
            errors = int(suite.get("errors", 0))
            skipped = int(suite.get("skipped", 0))
            total += Counts(max(tests - failed - errors - skipped, 0), failed, skipped, errors)
    return total


def git_revision(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def record(
    session: str,
    *,
    status: str,
    started_at: datetime,
    duration_s: float,
    counts: Counts = Counts(),
    revision: str | None = None,
    detail: str | None = None,
    db: Path | None = None,
    now: datetime | None = None,
) -> None:
    """Record one session run and prune rows older than the retention."""
    if status not in ("passed", "failed"):
        raise ValueError(f"status must be 'passed' or 'failed', got {status!r}")
    moment = now or datetime.now(UTC)
    with connect(db_path(db)) as conn:
        conn.execute(
            "insert into runs (session, status, started_at, duration_s, passed, failed, skipped,"
            " errors, revision, detail) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session,
                status,
                started_at.astimezone(UTC).isoformat(),
                round(duration_s, 3),
                counts.passed,
                counts.failed,
                counts.skipped,
                counts.errors,
                revision or git_revision(),
                detail,
            ),
        )
        prune(conn, now=moment)


def prune(conn: sqlite3.Connection, *, now: datetime, days: int = RETENTION_DAYS) -> int:
    cutoff = (now - timedelta(days=days)).astimezone(UTC).isoformat()
    cur = conn.execute("delete from runs where started_at < ?", (cutoff,))
    return cur.rowcount


def summary_since(since: datetime, *, db: Path | None = None) -> tuple[Counts, int, int]:
    """Totals over runs started at or after ``since``: counts, sessions passed, sessions failed."""
    with connect(db_path(db)) as conn:
        row = conn.execute(
            "select coalesce(sum(passed),0), coalesce(sum(failed),0), coalesce(sum(skipped),0),"
            " coalesce(sum(errors),0), coalesce(sum(status = 'passed'),0),"
            " coalesce(sum(status = 'failed'),0) from runs where started_at >= ?",
            (since.astimezone(UTC).isoformat(),),
        ).fetchone()
    return Counts(row[0], row[1], row[2], row[3]), row[4], row[5]


def report(
    *, days: int = RETENTION_DAYS, db: Path | None = None, now: datetime | None = None
) -> str:
    """Trends per session (runs, pass rate, mean and last duration) and the failure history."""
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=days)).isoformat()
    with connect(db_path(db)) as conn:
        trends = conn.execute(
            "select session, count(*), sum(status = 'passed'), avg(duration_s), max(started_at),"
            " sum(passed), sum(failed) from runs where started_at >= ? group by session"
            " order by session",
            (cutoff,),
        ).fetchall()
        last = dict(
            conn.execute(
                "select session, duration_s from runs r where started_at = (select max(started_at)"
                " from runs where session = r.session) and started_at >= ?",
                (cutoff,),
            )
        )
        failures = conn.execute(
            "select started_at, session, revision, failed, errors, coalesce(detail, '')"
            " from runs where status = 'failed' and started_at >= ? order by started_at desc"
            " limit 20",
            (cutoff,),
        ).fetchall()
    lines = [f"Build and test metrics, last {days} days"]
    if not trends:
        lines.append("(no runs recorded)")
        return "\n".join(lines)
    header = (
        f"{'session':<40} {'runs':>5} {'pass%':>6} {'mean s':>8} {'last s':>8} "
        f"{'tests ok':>9} {'tests bad':>9}  last run"
    )
    lines += [header, "-" * len(header)]
    for session, runs, ok, mean, latest, tpass, tfail in trends:
        lines.append(
            f"{session:<40} {runs:>5} {100.0 * ok / runs:>6.1f} {mean:>8.2f} "
            f"{last.get(session, 0.0):>8.2f} {tpass:>9} {tfail:>9}  {latest[:19]}"
        )
    lines.append("")
    lines.append("Failure history (newest first)")
    if not failures:
        lines.append("(none)")
    for started, session, rev, failed, errors, detail in failures:
        extra = f" - {detail}" if detail else ""
        lines.append(f"{started[:19]}  {session}  {rev}  failed={failed} errors={errors}{extra}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci_metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="metrics database (default: $AIAAS_METRICS_DB or .metrics/)")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="trends and failure history")
    rep.add_argument("--days", type=int, default=RETENTION_DAYS)
    summ = sub.add_parser("summary", help="one closing line of totals since a time")
    summ.add_argument("--since", required=True, help="ISO-8601 time, e.g. 2026-11-26T15:00:00Z")
    args = parser.parse_args(argv)
    db = Path(args.db) if args.db else None
    if args.command == "report":
        print(report(days=args.days, db=db))
        return 0
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    if since.tzinfo is None:
        parser.error("--since needs a timezone, e.g. 2026-11-26T15:00:00Z")
    counts, ok, bad = summary_since(since, db=db)
    print(f"sessions: {ok} passed, {bad} failed")
    failed = counts.failed + counts.errors
    print(f"tests: {counts.passed} passed, {failed} failed, {counts.skipped} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
