"""Daily partitions of usage_events: routing, ensure (with moves out of DEFAULT), retain, CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aiaas_db import (
    LocalPostgres,
    LockTimeoutError,
    MigrationRefusedError,
    Migrator,
    PiiKeyError,
    PiiProtector,
    ensure_partitions,
    list_partitions,
    parse_days,
    platform_source,
    retain_partitions,
)
from aiaas_db.cli._main import main
from aiaas_db.platform._audit import reveal_actor
from aiaas_db.platform._partitions import USAGE_EVENTS_RETENTION_DAYS

PII = PiiProtector.for_local_development("test-partitions")
TODAY = date(2026, 11, 26)
ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")
KEYS = {
    "AIAAS_DB_PII_HASH_KEY": "v1:" + "11" * 32,
    "AIAAS_DB_PII_ENCRYPTION_KEY": "v1:" + "22" * 32,
}


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def url(pg: LocalPostgres) -> Iterator[str]:
    """A fresh database with the operational platform schema."""
    name = f"p_{uuid.uuid4().hex[:12]}"
    dsn = pg.create_database(name)
    Migrator(dsn, platform_source("operational"), component="operational", protector=PII).up()
    yield dsn
    pg.drop_database(name)


@pytest.fixture
def conn(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as c:
        yield c


def insert(conn: psycopg.Connection[Any], *moments: datetime) -> list[uuid.UUID]:
    ids = []
    for moment in moments:
        row = conn.execute(
            "INSERT INTO usage_events (occurred_at, organization_id, tokens_consumed, latency_ms,"
            " status, region) VALUES (%s, %s, 10, 5, 'success', 'eu-west-1')"
            " RETURNING usage_event_id",
            (moment, ORG),
        ).fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def where(conn: psycopg.Connection[Any], event_id: uuid.UUID) -> str:
    row = conn.execute(
        "SELECT tableoid::regclass::text FROM usage_events WHERE usage_event_id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def audit(conn: psycopg.Connection[Any], action: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor_type, actor_id, actor_ciphertext, actor_key_version, target, metadata"
        " FROM audit_log_entries WHERE action = %s ORDER BY audit_log_entry_id",
        (action,),
    ).fetchall()


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_ensure_creates_days_ahead_idempotently_and_audits(conn: psycopg.Connection[Any]) -> None:
    report = ensure_partitions(conn, ahead=7, today=TODAY, protector=PII, actor="cron")
    assert report.created == tuple(
        f"usage_events_p{TODAY + timedelta(days=n):%Y%m%d}" for n in range(8)
    )
    assert report.existing == ()
    assert report.moved_rows == {}
    assert report.audit_entry_id is not None
    assert report.changed
    again = ensure_partitions(conn, ahead=7, today=TODAY, protector=PII, actor="cron")
    assert again.created == ()
    assert again.existing == report.created
    assert again.audit_entry_id is None
    assert not again.changed
    (entry,) = audit(conn, "partitions.ensure")
    actor_type, actor_id, ct, version, target, metadata = entry
    assert (actor_type, target) == ("service", "usage_events")
    assert actor_id == PII.digest("cron")
    assert reveal_actor(PII, actor_id=actor_id, actor_ciphertext=ct, actor_key_version=version) == (
        "cron"
    )
    assert metadata["created"] == list(report.created)
    names = [p.name for p in list_partitions(conn)]
    assert names == [*report.created, "usage_events_default"]
    assert [p.day for p in list_partitions(conn)][:2] == [TODAY, TODAY + timedelta(days=1)]


def test_events_route_to_their_utc_day(conn: psycopg.Connection[Any]) -> None:
    ensure_partitions(conn, ahead=3, today=TODAY, protector=PII)
    conn.execute("SET TimeZone = 'America/New_York'")
    # 23:30 in New York on the 27th is 04:30 UTC on the 28th.
    late_evening = datetime.fromisoformat("2026-11-27T23:30:00-05:00")
    first_instant = datetime(2026, 11, 27, tzinfo=UTC)
    last_instant = datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=UTC)
    ids = insert(conn, late_evening, first_instant, last_instant, at(date(2031, 1, 1)))
    assert [where(conn, i) for i in ids] == [
        "usage_events_p20261128",
        "usage_events_p20261127",
        "usage_events_p20261127",
        "usage_events_default",
    ]


def test_ensure_moves_rows_out_of_the_default_partition(conn: psycopg.Connection[Any]) -> None:
    future = date(2030, 1, 1)
    ids = insert(conn, at(future, 1), at(future, 23), at(future + timedelta(days=1)))
    other = insert(conn, at(date(2035, 6, 1)))
    assert {where(conn, i) for i in ids} == {"usage_events_default"}
    report = ensure_partitions(conn, ahead=2, today=future - timedelta(days=1), protector=PII)
    assert report.moved_rows == {"usage_events_p20300101": 2, "usage_events_p20300102": 1}
    assert [where(conn, i) for i in ids] == [
        "usage_events_p20300101",
        "usage_events_p20300101",
        "usage_events_p20300102",
    ]
    assert where(conn, other[0]) == "usage_events_default"  # outside the new range: untouched
    total = conn.execute("SELECT count(*) FROM usage_events").fetchone()
    assert total == (4,)
    (entry,) = audit(conn, "partitions.ensure")
    assert entry[5]["moved_rows"] == report.moved_rows


def test_ensure_behind_partitions_past_days(conn: psycopg.Connection[Any]) -> None:
    past = TODAY - timedelta(days=3)
    (event,) = insert(conn, at(past))
    report = ensure_partitions(conn, ahead=0, behind=3, today=TODAY, protector=PII)
    assert len(report.created) == 4
    assert report.moved_rows == {f"usage_events_p{past:%Y%m%d}": 1}
    assert where(conn, event) == f"usage_events_p{past:%Y%m%d}"


def test_ensure_respects_partitions_it_did_not_make(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE usage_events_manual PARTITION OF usage_events FOR VALUES FROM"
        " ('2026-12-01 00:00+00') TO ('2026-12-03 00:00+00')"
    )
    report = ensure_partitions(conn, ahead=2, today=date(2026, 11, 30), protector=PII)
    assert report.created == ("usage_events_p20261130",)
    assert report.existing == ("usage_events_manual", "usage_events_manual")
    conn.execute(
        "CREATE TABLE usage_events_odd PARTITION OF usage_events FOR VALUES FROM"
        " ('2026-12-10 12:00+00') TO ('2026-12-11 12:00+00')"
    )
    with pytest.raises(MigrationRefusedError, match="partly covered by usage_events_odd") as info:
        ensure_partitions(conn, ahead=3, today=date(2026, 12, 9), protector=PII)
    assert info.value.code == "PARTITION_OVERLAP"
    # Refused as a whole: the day before the overlap was not created either.
    assert "usage_events_p20261209" not in {p.name for p in list_partitions(conn)}


def test_retain_drops_only_whole_partitions_past_the_cutoff(conn: psycopg.Connection[Any]) -> None:
    cutoff_day = TODAY - timedelta(days=730)  # 2024-11-26
    ensure_partitions(conn, ahead=2, behind=2, today=cutoff_day, protector=PII)
    ensure_partitions(conn, ahead=1, today=TODAY, protector=PII)
    old = insert(conn, at(cutoff_day - timedelta(days=1)), at(cutoff_day))
    (stray,) = insert(conn, at(date(2024, 11, 20)))  # no partition for that day
    (recent,) = insert(conn, at(TODAY))
    assert where(conn, stray) == "usage_events_default"

    preview = retain_partitions(conn, today=TODAY, dry_run=True, protector=PII)
    assert [p.name for p in preview.dropped] == ["usage_events_p20241124", "usage_events_p20241125"]
    assert preview.default_rows_deleted == 1
    assert preview.dry_run
    assert not preview.changed
    assert preview.cutoff == datetime(2024, 11, 26, tzinfo=UTC)
    assert len(list_partitions(conn)) == 8  # nothing changed
    assert audit(conn, "partitions.retain") == []

    report = retain_partitions(conn, today=TODAY, protector=PII, actor="retention-job")
    assert [p.name for p in report.dropped] == ["usage_events_p20241124", "usage_events_p20241125"]
    assert report.kept == 5
    assert report.default_rows_deleted == 1
    assert report.changed
    remaining = {r[0] for r in conn.execute("SELECT usage_event_id FROM usage_events")}
    assert remaining == {old[1], recent}  # the cutoff day itself is kept
    (entry,) = audit(conn, "partitions.retain")
    assert entry[5]["dropped"] == ["usage_events_p20241124", "usage_events_p20241125"]
    assert entry[5]["older_than_days"] == 730
    again = retain_partitions(conn, today=TODAY, protector=PII)
    assert again.dropped == ()
    assert again.default_rows_deleted == 0
    assert not again.changed
    assert len(audit(conn, "partitions.retain")) == 1


def test_retention_matches_the_data_classification(contracts_dir: Path) -> None:
    doc = yaml.safe_load((contracts_dir / "data-classification.yml").read_text())
    (usage,) = [e for e in doc["entities"] if e["name"] == "UsageEvent"]
    assert usage["retention_days"] == USAGE_EVENTS_RETENTION_DAYS == 730


def test_bad_input_is_refused(conn: psycopg.Connection[Any]) -> None:
    assert parse_days("7d") == parse_days(" 7 ") == parse_days(7) == 7
    for bad in ("7h", "-1d", "", "d", "99999d", True):
        with pytest.raises(ValueError, match="days"):
            parse_days(bad)
    with pytest.raises(MigrationRefusedError) as info:
        retain_partitions(conn, older_than=0, protector=PII)
    assert info.value.code == "PARTITION_RETENTION_INVALID"


def test_refused_without_the_partitioned_table(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        with pytest.raises(MigrationRefusedError, match="migrate up --platform") as info:
            ensure_partitions(c, protector=PII)
        assert info.value.code == "PARTITION_TABLE_MISSING"
        c.execute("CREATE TABLE usage_events (a int)")  # not partitioned
        with pytest.raises(MigrationRefusedError, match="not a partitioned table"):
            retain_partitions(c, protector=PII)


def test_missing_pii_keys_refuse_before_any_change(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(PiiKeyError, match="AIAAS_DB_PII_HASH_KEY") as info:
        ensure_partitions(conn, today=TODAY)
    assert info.value.code == "PII_KEYS_MISSING"
    assert [p.name for p in list_partitions(conn)] == ["usage_events_default"]
    # A dry run writes no audit entry, so it needs no keys.
    assert retain_partitions(conn, dry_run=True, today=TODAY).dropped == ()


def test_lock_timeout_when_the_default_partition_is_busy(url: str) -> None:
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as c:
        holder.execute("SELECT count(*) FROM usage_events_default")  # holds ACCESS SHARE
        with pytest.raises(LockTimeoutError, match="could not lock usage_events") as info:
            ensure_partitions(c, ahead=0, today=TODAY, protector=PII, lock_timeout=0.2)
        assert info.value.code == "MIGRATION_LOCK_TIMEOUT"
        holder.rollback()
        assert ensure_partitions(c, ahead=0, today=TODAY, protector=PII).created


def test_cli_ensure_and_retain(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["partitions", "ensure", "--dsn", url, "--ahead", "2d"])
    assert code == 2  # the audit entry needs the PII keys
    assert "AIAAS_DB_PII_HASH_KEY" in capsys.readouterr().err
    for var, value in KEYS.items():
        monkeypatch.setenv(var, value)
    code = main(["partitions", "ensure", "--dsn", url, "--ahead", "2d", "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["ok"] is True
    assert len(doc["created"]) == 3
    code = main(["partitions", "ensure", "--dsn", url, "--ahead", "2d"])
    assert code == 0
    assert "already has a partition" in capsys.readouterr().out
    code = main(["partitions", "ensure", "--dsn", url, "--ahead", "3d", "--author", "ops"])
    text = capsys.readouterr().out
    assert code == 0
    assert "created 1" in text
    code = main(["partitions", "retain", "--dsn", url, "--dry-run", "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["dry_run"] is True
    assert doc["dropped"] == []
    code = main(["partitions", "retain", "--dsn", url, "--older-than", "730d"])
    assert code == 0
    assert "dropped 0 partition(s)" in capsys.readouterr().out
    assert main(["partitions", "ensure", "--dsn", url, "--ahead", "7h"]) == 2
    capsys.readouterr()


def test_cli_retain_renders_dropped_partitions(
    conn: psycopg.Connection[Any],
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for var, value in KEYS.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("COLUMNS", "200")
    row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    old = row[0] - timedelta(days=20)
    ensure_partitions(conn, ahead=0, today=old, protector=PII)
    code = main(["partitions", "retain", "--dsn", url, "--older-than", "10d", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"usage_events_p{old:%Y%m%d}" in out
    assert "would drop 1" in out
    code = main(["partitions", "retain", "--dsn", url, "--older-than", "10d", "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["dropped"]] == [f"usage_events_p{old:%Y%m%d}"]
    assert doc["audit_entry_id"] is not None


def test_open_ended_partitions_and_the_default_actor(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIAAS_DB_ACTOR", raising=False)
    conn.execute(
        "CREATE TABLE usage_events_archive PARTITION OF usage_events"
        " FOR VALUES FROM (MINVALUE) TO ('2020-01-01 00:00+00')"
    )
    (archive,) = [p for p in list_partitions(conn) if p.name == "usage_events_archive"]
    assert archive.lower is None
    assert archive.day is None
    assert archive.to_dict()["lower"] is None
    # A day inside it counts as covered; retention drops it whole once it is old enough.
    inside = ensure_partitions(conn, ahead=0, today=date(2019, 6, 1), protector=PII)
    assert inside.existing == ("usage_events_archive",)
    assert inside.created == ()
    report = retain_partitions(conn, today=TODAY, protector=PII)
    assert [p.name for p in report.dropped] == ["usage_events_archive"]
    (entry,) = audit(conn, "partitions.retain")
    actor = reveal_actor(
        PII, actor_id=entry[1], actor_ciphertext=entry[2], actor_key_version=entry[3]
    )
    assert actor is not None
    assert actor.startswith("aiaas-db partitions")
    monkeypatch.setenv("AIAAS_DB_ACTOR", "ops@example.com")
    ensure_partitions(conn, ahead=0, today=TODAY, protector=PII)
    (entry,) = audit(conn, "partitions.ensure")
    assert entry[1] == PII.digest("ops@example.com")
