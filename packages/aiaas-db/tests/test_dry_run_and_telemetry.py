"""Dry runs leave no trace; events and spans carry what the platform needs."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from aiaas_db import MigrationFailedError, Migrator, catalog_fingerprint


def snapshot(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        fp = catalog_fingerprint(conn)

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql.encode()).fetchall()

        exists = conn.execute("SELECT to_regclass('aiaas_migration_ledger') IS NOT NULL").fetchone()
        return {
            "catalog": fp.items,
            "data": rows("SELECT * FROM t ORDER BY a")
            if conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone() == (True,)
            else None,
            "golang": rows("SELECT * FROM schema_migrations_app") if exists == (True,) else None,
            "ledger": rows(
                "SELECT component, version, status, checksum, applied_at, updated_at"
                " FROM aiaas_migration_ledger ORDER BY version"
            )
            if exists == (True,)
            else None,
            "real_history": rows("SELECT id, status FROM aiaas_migration_history WHERE NOT dry_run")
            if exists == (True,)
            else None,
        }


def dry_sets(sets: SetWriter) -> None:
    sets.add(
        V1, "t", "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (2), (3);", "DROP TABLE t;"
    )
    sets.add(
        V2,
        "grow",
        "ALTER TABLE t ADD COLUMN b int;\nINSERT INTO t VALUES (4, 4);\n"
        "DELETE FROM t WHERE a = 1;\n",
        "ALTER TABLE t DROP COLUMN b;",
    )
    sets.add(
        V3,
        "idx",
        "-- aiaas:no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);",
        "DROP INDEX t_a;",
    )


def test_dry_run_leaves_no_trace(db_url: str, sets: SetWriter) -> None:
    dry_sets(sets)
    m = Migrator(db_url, sets.root)
    # On a fresh database a dry run creates nothing at all, not even the state tables.
    before_fresh = snapshot(db_url)
    fresh = m.up(dry_run=True)
    assert fresh.dry_run
    assert fresh.status == "succeeded"
    assert snapshot(db_url) == before_fresh
    assert before_fresh["ledger"] is None

    m.up(to=V1)
    before = snapshot(db_url)
    report = m.up(dry_run=True)
    assert report.version_before == report.version_after == V1
    grow, idx = report.results
    assert grow.status == "dry_run"
    assert grow.statements == 3
    assert grow.sql == (
        "ALTER TABLE t ADD COLUMN b int",
        "INSERT INTO t VALUES (4, 4)",
        "DELETE FROM t WHERE a = 1",
    )
    assert grow.rows_affected == {"public.t": {"inserted": 1, "updated": 0, "deleted": 1}}
    assert grow.row_deltas == {"public.t": 0}
    assert idx.status == "skipped"
    assert idx.no_transaction
    assert "listed, not executed" in (idx.error or "")
    assert idx.sql == ("CREATE INDEX CONCURRENTLY t_a ON t (a)",)
    assert snapshot(db_url) == before
    assert [p.version for p in m.status().pending] == [V2, V3]
    recorded = [h for h in m.history(limit=None) if h.dry_run]
    assert {h.version for h in recorded} == {V2, V3}
    assert m.status().last_migration_at == m.history(limit=None)[-1].finished_at


def test_dry_run_reports_a_failure_and_changes_nothing(db_url: str, sets: SetWriter) -> None:
    dry_sets(sets)
    sets.add(V2, "grow", "ALTER TABLE t ADD COLUMN b int;\nSELECT 1/0;", "SELECT 1;")
    m = Migrator(db_url, sets.root)
    m.up(to=V1)
    before = snapshot(db_url)
    report = m.up(dry_run=True)
    assert report.status == "failed"
    assert len(report.results) == 1  # later sets depend on it: not tried
    assert report.results[0].status == "failed"
    assert report.results[0].failed_statement == "SELECT 1/0"
    assert "division by zero" in (report.results[0].error or "")
    assert snapshot(db_url) == before
    assert not m.status().blocked  # a failed dry run does not block anything
    assert m.down(dry_run=True).results[0].status == "dry_run"
    assert snapshot(db_url) == before


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiaas.db.migrations"]


def test_structured_events(db_url: str, sets: SetWriter, caplog: pytest.LogCaptureFixture) -> None:
    dry_sets(sets)
    caplog.set_level(logging.INFO, logger="aiaas.db.migrations")
    m = Migrator(db_url, sets.root)
    m.up(to=V2)
    recs = events(caplog)
    names = [r.event for r in recs]  # type: ignore[attr-defined]
    assert names == [
        "migration_pre_checks",
        "migration_start",
        "migration_finish",
        "migration_start",
        "migration_finish",
    ]
    pre = recs[0]
    assert pre.ok is True
    assert pre.component == "app"
    assert {c["name"] for c in pre.checks} >= {"connectivity", "lock", "checksums"}  # type: ignore[attr-defined]
    finish = recs[4]
    assert finish.version == V2
    assert finish.direction == "up"
    assert finish.status == "applied"
    assert finish.dry_run is False
    assert finish.duration_ms >= 0
    assert finish.row_deltas == {"public.t": 0}  # type: ignore[attr-defined]
    assert finish.rows_affected["public.t"]["inserted"] == 1  # type: ignore[attr-defined]

    caplog.clear()
    sets.add(
        V3, "idx", "-- aiaas:no-transaction\nCREATE INDEX CONCURRENTLY x ON nope (a);", "SELECT 1;"
    )
    with pytest.raises(MigrationFailedError):
        m.up()
    failed = [r for r in events(caplog) if r.event == "migration_failed"]  # type: ignore[attr-defined]
    assert len(failed) == 1
    assert failed[0].levelno == logging.ERROR
    assert failed[0].dirty is True
    assert failed[0].sqlstate == "42P01"
    assert failed[0].error_code == "MIGRATION_FAILED"  # type: ignore[attr-defined]
    caplog.clear()
    with pytest.raises(Exception, match="dirty"):
        m.up()
    pre_failed = events(caplog)[-1]
    assert pre_failed.event == "migration_pre_checks"
    assert pre_failed.ok is False
    assert pre_failed.levelno == logging.WARNING


def test_spans(db_url: str, sets: SetWriter, spans: InMemorySpanExporter) -> None:
    dry_sets(sets)
    m = Migrator(db_url, sets.root)
    m.up(to=V2)
    finished = spans.get_finished_spans()
    per_set = [s for s in finished if s.name == "aiaas_db.migration"]
    runs = [s for s in finished if s.name == "aiaas_db.migrate"]
    assert len(per_set) == 2
    assert len(runs) == 1
    a = dict(per_set[1].attributes or {})
    assert a["db.migration.component"] == "app"
    assert a["db.migration.direction"] == "up"
    assert a["db.migration.version"] == V2
    assert a["db.migration.dry_run"] is False
    assert a["db.migration.status"] == "applied"
    assert a["db.migration.rows_affected"] == 2
    assert a["db.migration.duration_ms"] >= 0
    assert a["db.migration.tables"] == "public.t"
    assert per_set[1].parent is not None
    assert per_set[1].parent.span_id == runs[0].context.span_id
    run_attrs = dict(runs[0].attributes or {})
    assert run_attrs["db.migration.status"] == "succeeded"
    assert run_attrs["db.migration.planned"] == 2

    spans.clear()
    m.up(dry_run=True)
    dry = [s for s in spans.get_finished_spans() if s.name == "aiaas_db.migration"]
    assert [dict(s.attributes or {})["db.migration.status"] for s in dry] == ["skipped"]
    assert dict(dry[0].attributes or {})["db.migration.dry_run"] is True

    spans.clear()
    sets.add(V3, "idx", "SELECT 1/0;", "SELECT 1;")
    with pytest.raises(MigrationFailedError):
        m.up()
    failed = next(s for s in spans.get_finished_spans() if s.name == "aiaas_db.migration")
    assert dict(failed.attributes or {})["db.migration.status"] == "failed"
    assert failed.status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)
