"""Drill (apply -> roll back -> reapply with catalog fingerprints) and the fingerprint itself."""

from __future__ import annotations

import psycopg
import pytest
from conftest import V1, V2, V3, SetWriter

from aiaas_db import (
    DrillFailedError,
    MigrationNotFoundError,
    Migrator,
    OutOfOrderError,
    catalog_fingerprint,
)

RICH_UP = """
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE SEQUENCE counter START 5 INCREMENT 2;
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    at timestamptz NOT NULL DEFAULT now(),
    org int NOT NULL,
    n positive,
    m mood,
    doubled int GENERATED ALWAYS AS (org * 2) STORED,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX events_org ON events (org, at);
CREATE TABLE orgs (id int PRIMARY KEY, name text COLLATE "C" UNIQUE);
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
CREATE POLICY orgs_read ON orgs FOR SELECT USING (id > 0);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orgs_touch BEFORE UPDATE ON orgs FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW org_names AS SELECT name FROM orgs;
CREATE MATERIALIZED VIEW org_count AS SELECT count(*) AS n FROM orgs;
CREATE TYPE pair AS (a int, b text);
CREATE SCHEMA extra;
CREATE TABLE extra.things (id serial PRIMARY KEY, org int REFERENCES orgs (id) DEFERRABLE);
"""
RICH_DOWN = """
DROP TABLE extra.things;
DROP SCHEMA extra;
DROP TYPE pair;
DROP MATERIALIZED VIEW org_count;
DROP VIEW org_names;
DROP TABLE orgs;
DROP FUNCTION touch();
DROP TABLE events;
DROP SEQUENCE counter;
DROP DOMAIN positive;
DROP TYPE mood;
"""


def test_drill_passes_for_exact_downs(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "rich", RICH_UP, RICH_DOWN)
    sets.add(
        V2,
        "col",
        "ALTER TABLE orgs ADD COLUMN tier text DEFAULT 'free';",
        "ALTER TABLE orgs DROP COLUMN tier;",
    )
    m = Migrator(db_url, sets.root)
    report = m.drill()
    assert report.ok
    assert [s.version for s in report.steps] == [V1, V2]
    step = report.steps[0]
    assert step.before == step.after_down
    assert step.after_up == step.after_reapply
    assert step.before != step.after_up
    assert report.to_dict()["steps"][0]["ok"] is True
    assert m.status().current_version == V2  # drilled sets stay applied
    directions = [h.direction for h in reversed(m.history(limit=None))]
    assert directions == ["up", "down", "up", "up", "down", "up"]
    assert m.drill().steps == ()  # nothing pending: nothing to drill


def test_drill_shows_what_a_down_left_behind(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "t", "CREATE TABLE t (a int);", "DROP TABLE t;")
    sets.add(
        V2,
        "leaky",
        "CREATE INDEX t_a ON t (a);\nALTER TABLE t ALTER COLUMN a SET DEFAULT 7;\n"
        "ALTER TABLE t ADD CONSTRAINT a_pos CHECK (a > 0);",
        "DROP INDEX t_a;\nALTER TABLE t DROP CONSTRAINT a_pos;",  # forgets the default
    )
    m = Migrator(db_url, sets.root)
    with pytest.raises(DrillFailedError) as info:
        m.drill()
    err = info.value
    assert err.code == "MIGRATION_DRILL_FAILED"
    assert err.versions == (V2,)
    joined = "\n".join(err.differences)
    assert "after down 202401020000_leaky" in joined
    assert "- columns: public.t.a integer" in joined
    assert "+ columns: public.t.a integer default 7" in joined
    assert err.detail is not None
    assert "default 7" in err.detail


def test_drill_range_and_refusals(db_url: str, sets: SetWriter) -> None:
    sets.add(V1, "a", "CREATE TABLE a (x int);", "DROP TABLE a;")
    sets.add(V3, "c", "CREATE TABLE c (x int);", "DROP TABLE c;")
    m = Migrator(db_url, sets.root)
    assert [s.version for s in m.drill(to=V1).steps] == [V1]
    with pytest.raises(MigrationNotFoundError):
        m.drill(to=V2)
    m.up()
    sets.add(V2, "b", "CREATE TABLE b (x int);", "DROP TABLE b;")
    with pytest.raises(OutOfOrderError):
        m.drill()


def test_fingerprint_sees_every_kind_of_object(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        empty = catalog_fingerprint(conn)
        for stmt in RICH_UP.split(";\n"):
            if stmt.strip():
                conn.execute(stmt.encode())
        full = catalog_fingerprint(conn)
        lines = "\n".join(empty.diff(full))
        for expected in (
            "+ schemas: extra",
            "+ tables: public.events kind=p persistence=p partition_key=RANGE (at)",
            "+ columns: public.events.doubled integer default (org * 2) generated s",
            "+ columns: public.events.id bigint not null identity a",
            "+ columns: public.orgs.name text collate C",
            "+ constraints: extra.things things_org_fkey FOREIGN KEY (org) REFERENCES orgs(id)"
            " DEFERRABLE",
            "+ indexes: CREATE INDEX events_org ON ONLY public.events USING btree (org, at)",
            "+ triggers: CREATE TRIGGER orgs_touch BEFORE UPDATE ON public.orgs",
            "+ functions: CREATE OR REPLACE FUNCTION public.touch()",
            "+ views: public.org_names kind=v",
            "+ views: public.org_count kind=m",
            "+ sequences: public.counter bigint start 5 increment 2",
            "+ sequences: extra.things_id_seq integer start 1 increment 1",
            "+ types: public.mood e ('ok', 'sad')",
            "+ types: public.positive d integer",
            "+ types: public.pair c",
            "+ partitions: public.events <- public.events_2024 FOR VALUES FROM",
            "+ policies: public.orgs orgs_read r permissive using (id > 0)",
            "+ tables: public.orgs kind=r persistence=p rls",
        ):
            assert expected in lines, expected
        assert full != empty
        assert full.digest != empty.digest
        assert len({full, empty}) == 2
        assert (full == "x") is False
        # Excluding a table leaves out its columns, constraints, indexes and sequences.
        without = catalog_fingerprint(conn, exclude=["extra.things"])
        assert not any("extra.things" in item for v in without.items.values() for item in v)
