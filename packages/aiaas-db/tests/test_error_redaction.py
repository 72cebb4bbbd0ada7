"""A change set failing on a row's value never repeats the value (found by `nox -s chaos`).

PostgreSQL quotes the offending value in a data exception's message (SQLSTATE class 22):
``invalid input syntax for type bigint: "+1-555-0100"``. That value is a row's data -- personal
data, a secret -- and must not reach the error, the run report, the CLI's output, the logs, the
spans or the migration history.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import V1, V2, SetWriter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiaas_db import MigrationFailedError, Migrator
from aiaas_db.analytics._backends import _safe_message

PHONE = '+1-555-0100 "Zelda" Quenby'  # a value with quotes of its own
EMAIL = "zelda.quenby@example.org"


def _people(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "people", "CREATE TABLE people (email text, phone text);", "DROP TABLE people;")
    Migrator(db_url, sets.root).up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO people VALUES (%s, %s), (%s, %s)", (EMAIL, PHONE, EMAIL, PHONE))


def _everything_said(
    exc: MigrationFailedError,
    db_url: str,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> str:
    said = [exc.message, str(exc), json.dumps(exc.report.to_dict() if exc.report else {})]
    said += [r.getMessage() + json.dumps(r.__dict__, default=str) for r in caplog.records]
    for span in spans.get_finished_spans():
        said.append(json.dumps(dict(span.attributes or {}), default=str))
        said += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
    with psycopg.connect(db_url) as conn:
        for table in ("aiaas_migration_history", "aiaas_migration_ledger"):
            exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists and exists[0]:
                rows = conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608
                said.append(repr(rows))
    return "\n".join(said)


def test_a_data_exception_names_the_type_not_the_value(
    db_url: str,
    sets: SetWriter,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _people(db_url, sets)
    sets.add(
        V2,
        "phone_number",
        "ALTER TABLE people ALTER COLUMN phone TYPE bigint USING phone::bigint;",
        "ALTER TABLE people ALTER COLUMN phone TYPE text;",
    )
    spans.clear()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MigrationFailedError) as failed:
        Migrator(db_url, sets.root).up()
    message = failed.value.message
    assert 'invalid input syntax for type bigint: "<value redacted>" [SQLSTATE 22P02]' in message
    said = _everything_said(failed.value, db_url, spans, caplog)
    assert "+1-555-0100" not in said
    assert "Zelda" not in said
    assert "22P02" in said  # what was wrong is still said


def test_the_cli_output_holds_no_value_either(db_url: str, sets: SetWriter) -> None:
    _people(db_url, sets)
    sets.add(
        V2,
        "phone_number",
        "ALTER TABLE people ALTER COLUMN phone TYPE integer USING phone::integer;",
        "ALTER TABLE people ALTER COLUMN phone TYPE text;",
    )
    script = Path(sys.executable).with_name("aiaas-db")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "aiaas_db"]
    for output in ("text", "json"):
        proc = subprocess.run(
            [*head, "migrate", "up", "--source", str(sets.root), "--output", output],
            env={**os.environ, "AIAAS_DB_URL": db_url, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 3, proc.stderr
        assert "+1-555-0100" not in proc.stdout + proc.stderr
        assert "22P02" in proc.stdout + proc.stderr
        if output == "text":  # the next run still says it is blocked, without the value
            blocked = subprocess.run(
                [*head, "migrate", "status", "--source", str(sets.root)],
                env={**os.environ, "AIAAS_DB_URL": db_url, "NO_COLOR": "1"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert "+1-555-0100" not in blocked.stdout + blocked.stderr
            Migrator(db_url, sets.root).recover("mark-rolled-back", reason="retry")


def test_constraint_violations_keep_their_identifiers(db_url: str, sets: SetWriter) -> None:
    """Class 23 messages quote identifiers only (the values are in DETAIL, never shown)."""
    _people(db_url, sets)
    sets.add(
        V2,
        "unique_email",
        "ALTER TABLE people ADD CONSTRAINT people_email_unique UNIQUE (email);",
        "ALTER TABLE people DROP CONSTRAINT people_email_unique;",
    )
    with pytest.raises(MigrationFailedError) as failed:
        Migrator(db_url, sets.root).up()
    assert 'could not create unique index "people_email_unique"' in failed.value.message
    assert EMAIL not in failed.value.message
    assert EMAIL not in json.dumps(failed.value.report.to_dict() if failed.value.report else {})


def test_rollup_errors_redact_a_data_exceptions_value_too(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT %s::bigint", (PHONE,))
    said = _safe_message(caught.value)
    assert said == ('invalid input syntax for type bigint: "<value redacted>" [SQLSTATE 22P02]')
    assert "555" not in said
    assert "Zelda" not in said
    # errors of other classes keep their text: it names objects, not row values
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(psycopg.Error) as other:
        conn.execute('SELECT * FROM "no_such_table"')
    assert _safe_message(other.value) == (
        'relation "no_such_table" does not exist [SQLSTATE 42P01]'
    )
