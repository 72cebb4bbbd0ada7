"""``aiaas-db lint``: every rule caught when planted, clean sets clean, the platform clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aiaas_db.cli._common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from aiaas_db.cli._main import main
from aiaas_db.platform._classification import load_classification, platform_classification
from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source
from aiaas_db.quality._lint import LintReport, lint_catalog, lint_change_sets
from aiaas_db.quality._rules import RULES, LintViolation, singular

BASE_UP = """-- author: test
-- The widgets.
CREATE TABLE widgets (
    widget_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    secret_digest text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_widgets_name UNIQUE (name),
    CONSTRAINT ck_widgets_name CHECK (name <> '')
);
CREATE INDEX idx_widgets_created_at ON widgets (created_at);
"""
BASE_DOWN = "-- aiaas:destructive\nDROP TABLE widgets;\n"
BASE_CLASSIFICATION: dict[str, Any] = {
    "entities": [
        {
            "name": "Widget",
            "table": "widgets",
            "retention_days": 0,
            "fields": [
                {"name": "widget_id", "classification": "internal"},
                {"name": "name", "classification": "confidential"},
                {"name": "secret_digest", "classification": "restricted", "protection": "hmac"},
                {"name": "created_at", "classification": "internal"},
            ],
        }
    ]
}
PLANTED = 202401020000


def _write_set(root: Path, version: int, slug: str, up: str, down: str) -> None:
    (root / f"{version}_{slug}.up.sql").write_text(up)
    (root / f"{version}_{slug}.down.sql").write_text(down)


def _lint(
    tmp_path: Path,
    up: str | None = None,
    *,
    down: str = "SELECT 1;\n",
    classification: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
) -> LintReport:
    root = tmp_path / "sets"
    root.mkdir()
    _write_set(root, 202401010000, "widgets", BASE_UP, BASE_DOWN)
    if up is not None:
        _write_set(root, PLANTED, "planted", up, down)
    for name, text in (extra_files or {}).items():
        (root / name).write_text(text)
    cls_file = tmp_path / "classification.yml"
    cls_file.write_text(yaml.safe_dump(classification or BASE_CLASSIFICATION))
    return lint_change_sets([root], classification=load_classification(cls_file))


def _with_entity(entity: dict[str, Any]) -> dict[str, Any]:
    return {"entities": [*BASE_CLASSIFICATION["entities"], entity]}


def _with_widget_fields(**changes: dict[str, Any]) -> dict[str, Any]:
    """The base classification with fields changed (by name) or added (new names)."""
    widget = dict(BASE_CLASSIFICATION["entities"][0])
    names = {f["name"] for f in widget["fields"]}
    fields = [{**f, **changes.get(f["name"], {})} for f in widget["fields"]]
    fields += [{"name": name, **change} for name, change in changes.items() if name not in names]
    widget["fields"] = fields
    return {"entities": [widget]}


GADGETS = {
    "name": "Gadget",
    "table": "gadgets",
    "fields": [{"name": "gadget_id", "classification": "internal"}],
}

# (rule, planted up script, classification, where the violation must point)
CASES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("AIAAS-L000", "DO $$ BEGIN PERFORM 1; END $$;\n", None, "planted.up.sql:1"),
    (
        "AIAAS-L001",
        "CREATE TABLE gadget (gadget_id uuid PRIMARY KEY);\n",
        _with_entity({**GADGETS, "table": "gadget"}),
        "planted.up.sql:1",
    ),
    ("AIAAS-L002", 'ALTER TABLE widgets ADD COLUMN "DisplayName" text;\n', None, ":1"),
    ("AIAAS-L003", "CREATE TABLE gadgets (\n    id uuid PRIMARY KEY\n);\n", None, ":1"),
    ("AIAAS-L003", "CREATE TABLE gadgets (gadget_id uuid);\n", _with_entity(GADGETS), ":1"),
    ("AIAAS-L004", "\n\nCREATE INDEX widgets_name_idx ON widgets (name);\n", None, ":3"),
    ("AIAAS-L004", "CREATE INDEX ON widgets (name);\n", None, ":1"),
    ("AIAAS-L004", "CREATE INDEX idx_widgets_x ON widgets (name);\n", None, ":1"),
    (
        "AIAAS-L005",
        "ALTER TABLE widgets ADD CONSTRAINT widgets_name_key UNIQUE (name);\n",
        None,
        ":1",
    ),
    ("AIAAS-L005", "CREATE UNIQUE INDEX idx_widgets_name ON widgets (name);\n", None, ":1"),
    (
        "AIAAS-L005",
        "CREATE TABLE gadgets (gadget_id uuid PRIMARY KEY, code text UNIQUE);\n",
        _with_entity(
            {
                **GADGETS,
                "fields": [*GADGETS["fields"], {"name": "code", "classification": "internal"}],
            }
        ),
        ":1",
    ),
    (
        "AIAAS-L006",
        "CREATE TABLE gadgets (\n    gadget_id uuid PRIMARY KEY,\n"
        "    widget_id uuid REFERENCES widgets (widget_id)\n);\n",
        _with_entity(
            {
                **GADGETS,
                "fields": [*GADGETS["fields"], {"name": "widget_id", "classification": "internal"}],
            }
        ),
        "planted.up.sql:3",
    ),
    (
        "AIAAS-L006",
        "ALTER TABLE widgets ADD CONSTRAINT widgets_parent FOREIGN KEY (widget_id) "
        "REFERENCES widgets (widget_id);\n",
        None,
        ":1",
    ),
    (
        "AIAAS-L007",
        "ALTER TABLE widgets ADD CONSTRAINT name_short CHECK (length(name) < 9);\n",
        None,
        ":1",
    ),
    ("AIAAS-L007", "ALTER TABLE widgets ADD CHECK (length(name) < 9);\n", None, ":1"),
    (
        "AIAAS-L008",
        "ALTER TABLE widgets\n    ADD COLUMN seen_at timestamp;\n",
        _with_widget_fields(),
        ":2",
    ),
    (
        "AIAAS-L008",
        "CREATE TABLE gadgets (gadget_id uuid PRIMARY KEY, at timestamp(3) without time zone);\n",
        None,
        ":1",
    ),
    (
        "AIAAS-L009",
        "CREATE TABLE gadgets (gadget_id bigserial PRIMARY KEY);\n",
        _with_entity(GADGETS),
        ":1",
    ),
    ("AIAAS-L009", "ALTER TABLE widgets ADD COLUMN n serial;\n", None, ":1"),
    (
        "AIAAS-L011",
        "-- author: x\nALTER TABLE widgets DROP COLUMN name;\n",
        None,
        "planted.up.sql:2",
    ),
    ("AIAAS-L011", "DROP TABLE widgets;\n", None, ":1"),
    ("AIAAS-L011", "TRUNCATE widgets;\n", None, ":1"),
    ("AIAAS-L011", "ALTER TABLE widgets ALTER COLUMN name TYPE varchar(10);\n", None, ":1"),
    ("AIAAS-L011", "DELETE FROM widgets WHERE name = 'x';\n", None, ":1"),
    (
        "AIAAS-L011",
        "ALTER TABLE widgets ENABLE ROW LEVEL SECURITY, DROP COLUMN name;\n",
        None,
        ":1",
    ),
    ("AIAAS-L011", "DO $$ BEGIN EXECUTE 'x'; DROP TABLE widgets; END $$;\n", None, ":1"),
    (
        "AIAAS-L012",
        "CREATE INDEX idx_widgets_name_with_a_very_long_explanation_of_why_it_exists_here "
        "ON widgets (name);\n",
        None,
        ":1",
    ),
    (
        "AIAAS-L013",
        "CREATE TABLE gadgets (gadget_id uuid PRIMARY KEY);\n",
        None,
        "planted.up.sql:1",
    ),
    ("AIAAS-L014", "ALTER TABLE widgets ADD COLUMN colour text;\n", None, "widgets.colour"),
    (
        "AIAAS-L015",
        "",
        _with_widget_fields(secret_digest={"protection": "none"}),
        "widgets.secret_digest",
    ),
    (
        "AIAAS-L015",
        "",
        _with_widget_fields(secret_digest={"protection": "aes-gcm"}),
        "widgets.secret_digest",
    ),
    (
        "AIAAS-L015",
        "ALTER TABLE widgets ADD COLUMN secret_ciphertext text;\n",
        _with_widget_fields(
            extra={
                "classification": "restricted",
                "protection": "aes-gcm",
                "column": "secret_ciphertext",
            }
        ),
        "widgets.secret_ciphertext",
    ),
    (
        "AIAAS-L016",
        "CREATE TABLE usage_events (\n    usage_event_id uuid NOT NULL,\n"
        "    occurred_at timestamptz NOT NULL,\n    PRIMARY KEY (usage_event_id, occurred_at)\n"
        ") PARTITION BY RANGE (occurred_at);\n",
        _with_entity(
            {
                "name": "UsageEvent",
                "table": "usage_events",
                "retention_days": 365,
                "retention_anchor": "occurred_at",
                "fields": [
                    {"name": "usage_event_id", "classification": "internal"},
                    {"name": "occurred_at", "classification": "internal"},
                ],
            }
        ),
        "planted.up.sql:1",
    ),
    ("AIAAS-L017", "", _with_entity({**GADGETS}), "gadgets"),
    ("AIAAS-L017", "", _with_widget_fields(ghost={"classification": "internal"}), "widgets.ghost"),
]


@pytest.mark.parametrize(
    ("rule", "up", "classification", "where"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_planted_violation_is_caught(
    tmp_path: Path, rule: str, up: str, classification: dict[str, Any] | None, where: str
) -> None:
    report = _lint(tmp_path, up or "SELECT 1;\n", classification=classification)
    hits = [v for v in report.violations if v.rule == rule]
    assert hits, f"{rule} not reported; got {[str(v) for v in report.violations]}"
    assert any(v.location.endswith(where) for v in hits), [str(v) for v in hits]
    assert all(v.message and v.name == RULES[rule].name for v in hits)
    if RULES[rule].severity == "error":
        assert not report.ok
    else:
        assert set(hits) <= set(report.warnings)
        assert report.ok or rule == "AIAAS-L012"  # a long name breaks index-name too


def test_every_rule_has_a_planted_case() -> None:
    planted = {c[0] for c in CASES} | {"AIAAS-L010"}  # L010: test_change_set_file_problems
    assert planted == set(RULES)


def test_the_clean_baseline_has_no_violations(tmp_path: Path) -> None:
    report = _lint(tmp_path)
    assert report.violations == ()
    assert report.ok
    assert any("classification" in c for c in report.checked)


def test_conventional_statements_in_every_form_are_clean(tmp_path: Path) -> None:
    up = """-- author: test
CREATE TABLE gadgets (
    gadget_id bigint GENERATED ALWAYS AS IDENTITY,
    widget_id uuid NOT NULL CONSTRAINT fk_gadgets_widget_id REFERENCES widgets (widget_id),
    code text NOT NULL CONSTRAINT ck_gadgets_code CHECK (code <> ''),
    tags text[] NOT NULL DEFAULT '{}',
    secret_ciphertext bytea NULL,
    CONSTRAINT gadgets_pkey PRIMARY KEY (gadget_id),
    CONSTRAINT uq_gadgets_widget_id_code UNIQUE NULLS NOT DISTINCT (widget_id, code)
);
CREATE UNIQUE INDEX uq_gadgets_code ON gadgets (code) NULLS NOT DISTINCT;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_gadgets_lower_code ON gadgets (lower(code));
ALTER TABLE gadgets ENABLE ROW LEVEL SECURITY, ADD COLUMN note text,
    ADD CONSTRAINT ck_gadgets_note CHECK (note <> '');
CREATE FUNCTION gadgets_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM widgets WHERE false; -- in a body: runs only when called
    RETURN NEW;
END $$;
CREATE TRIGGER trg_gadgets_touch BEFORE UPDATE ON gadgets
    FOR EACH ROW EXECUTE FUNCTION gadgets_touch();
COMMENT ON TABLE gadgets IS 'Gadgets; DROP TABLE in a comment is harmless';
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE gadget_logs (gadget_log_id uuid PRIMARY KEY, at timestamptz) PARTITION BY RANGE (at);
CREATE TABLE gadget_logs_p20240101 PARTITION OF gadget_logs
    FOR VALUES FROM ('2024-01-01') TO ('2024-01-02');
CREATE TABLE gadget_logs_default PARTITION OF gadget_logs DEFAULT;
CREATE TABLE schema_migrations_gadgets (version bigint, dirty boolean);
"""
    gadgets = {
        "name": "Gadget",
        "table": "gadgets",
        "fields": [
            {"name": n, "classification": "internal"}
            for n in ("gadget_id", "widget_id", "code", "tags", "note")
        ]
        + [{"name": "secret_ciphertext", "classification": "restricted", "protection": "aes-gcm"}],
    }
    logs = {
        "name": "GadgetLog",
        "table": "gadget_logs",
        "fields": [{"name": n, "classification": "internal"} for n in ("gadget_log_id", "at")],
    }
    report = _lint(
        tmp_path,
        up,
        down="-- aiaas:destructive\nDROP TABLE gadget_logs;\nDROP TABLE gadgets;\n",
        classification={"entities": [*BASE_CLASSIFICATION["entities"], gadgets, logs]},
    )
    assert report.violations == (), [str(v) for v in report.violations]


def test_marked_destructive_up_script_is_allowed(tmp_path: Path) -> None:
    report = _lint(
        tmp_path,
        "-- author: x\n-- aiaas:destructive\nALTER TABLE widgets DROP COLUMN secret_digest;\n",
        classification={
            "entities": [
                {
                    **BASE_CLASSIFICATION["entities"][0],
                    "fields": [
                        f
                        for f in BASE_CLASSIFICATION["entities"][0]["fields"]
                        if f["name"] != "secret_digest"
                    ],
                }
            ]
        },
    )
    assert report.violations == (), [str(v) for v in report.violations]


def test_renames_are_followed(tmp_path: Path) -> None:
    report = _lint(
        tmp_path,
        "ALTER TABLE widgets RENAME COLUMN name TO Title;\nALTER TABLE widgets RENAME TO widget;\n",
        classification=_with_widget_fields(name={"column": "title"}),
    )
    rules = {v.rule for v in report.violations}
    assert "AIAAS-L001" in rules  # widget: not plural
    assert "AIAAS-L013" in rules  # widget: the classification names widgets
    assert not any(v.rule == "AIAAS-L014" and "title" in v.location for v in report.violations)


def test_a_column_added_by_an_up_and_dropped_by_its_down_stays_classified(
    tmp_path: Path,
) -> None:
    """A down script's DROP COLUMN does not hide the column its up script added (as a down
    script's DROP TABLE does not hide the table): the column must still be classified."""
    up = "ALTER TABLE widgets ADD COLUMN colour text NULL;\n"
    down = "-- aiaas:destructive\nALTER TABLE widgets DROP COLUMN colour;\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    classified = _lint(
        tmp_path / "a",
        up,
        down=down,
        classification=_with_widget_fields(colour={"classification": "internal"}),
    )
    assert classified.violations == (), [str(v) for v in classified.violations]
    unclassified = _lint(tmp_path / "b", up, down=down)
    assert any(
        v.rule == "AIAAS-L014" and "colour" in v.location for v in unclassified.violations
    ), [str(v) for v in unclassified.violations]


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"202401020000_lonely.up.sql": "SELECT 1;"}, "missing"),
        ({"2024_short.up.sql": "SELECT 1;", "2024_short.down.sql": "SELECT 1;"}, "12 digits"),
        ({"202413010000_month.up.sql": "SELECT 1;", "202413010000_month.down.sql": ""}, "valid"),
        (
            {
                "202401020000_typo.up.sql": "-- aiaas:destructiv\nSELECT 1;",
                "202401020000_typo.down.sql": "",
            },
            "unknown directive",
        ),
    ],
)
def test_change_set_file_problems(tmp_path: Path, files: dict[str, str], fragment: str) -> None:
    report = _lint(tmp_path, extra_files=files)
    hits = [v for v in report.violations if v.rule == "AIAAS-L010"]
    assert any(fragment in v.message for v in hits), [str(v) for v in report.violations]
    assert not report.ok


def test_without_classification_only_the_schema_rules_run(tmp_path: Path) -> None:
    root = tmp_path / "sets"
    root.mkdir()
    _write_set(
        root,
        202401010000,
        "widgets",
        BASE_UP + "CREATE TABLE gadgets (gadget_id uuid PRIMARY KEY);\n",
        BASE_DOWN,
    )
    report = lint_change_sets([root])
    assert report.violations == ()
    assert report.checked == (f"change sets: {root}",)


def test_singular() -> None:
    assert singular("usage_events") == "usage_event"
    assert singular("model_registry_entries") == "model_registry_entry"
    assert singular("boxes") == "box"
    assert singular("statuses") == "status"
    assert singular("people") == "person"
    assert singular("status") is None
    assert singular("address") is None
    assert singular("widget") is None


def test_violation_and_report_rendering() -> None:
    v = LintViolation("AIAAS-L004", "x.sql:3", "name it idx_a_b")
    assert str(v) == "x.sql:3: AIAAS-L004 index-name: name it idx_a_b"
    assert v.to_dict() == {
        "rule": "AIAAS-L004",
        "name": "index-name",
        "severity": "error",
        "location": "x.sql:3",
        "message": "name it idx_a_b",
    }
    w = LintViolation("AIAAS-L000", "x.sql:10", "unparsed")
    report = LintReport([w, v, v], ["here"])
    assert report.violations == (v, w)  # sorted by line, duplicates dropped
    assert report.to_dict()["errors"] == 1
    assert report.to_dict()["warnings"] == 1
    assert report.rules_broken() == {"AIAAS-L000", "AIAAS-L004"}
    with pytest.raises(ValueError, match="AIAAS-L999"):
        LintViolation("AIAAS-L999", "x", "y")


# -- the platform's own sets -------------------------------------------------------------------


def test_platform_sets_lint_clean() -> None:
    report = lint_change_sets(
        [platform_source(c) for c in PLATFORM_COMPONENTS], classification=platform_classification()
    )
    assert report.errors == (), "\n".join(map(str, report.errors))
    assert not [v for v in report.warnings if v.rule == "AIAAS-L000"]


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_platform_default_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--output", "json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert doc["errors"] == 0
    assert any("classification" in c for c in doc["checked"])


def test_cli_reports_violations_and_exits_with_the_failed_check_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sets"
    root.mkdir()
    _write_set(
        root, 202401010000, "bad", "CREATE TABLE widget (id serial PRIMARY KEY);\n", "SELECT 1;"
    )
    assert main(["lint", "--source", str(root)]) == EXIT_FAILED
    text = capsys.readouterr().out
    assert f"{root}/202401010000_bad.up.sql:1: error AIAAS-L001 table-plural" in text
    assert "AIAAS-L009 no-serial" in text
    assert "AIAAS-L003 primary-key" in text
    assert "error(s)" in text
    assert main(["lint", "--source", str(root), "-o", "json"]) == EXIT_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert {v["rule"] for v in doc["violations"]} >= {"AIAAS-L001", "AIAAS-L003", "AIAAS-L009"}


def test_cli_user_classification_and_a_malformed_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sets"
    root.mkdir()
    _write_set(root, 202401010000, "widgets", BASE_UP, BASE_DOWN)
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump(BASE_CLASSIFICATION))
    assert main(["lint", "-s", str(root), "--classification", str(good)]) == EXIT_OK
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "entities:\n  - name: Widget\n    fields:\n"
        "      - name: x\n        classification: secret\n"
    )
    capsys.readouterr()
    assert (
        main(["lint", "-s", str(root), "--classification", str(bad), "-o", "json"]) == EXIT_FAILED
    )
    doc = json.loads(capsys.readouterr().out)
    assert [v["rule"] for v in doc["violations"]] == ["AIAAS-L017"]
    assert "classification must be one of" in doc["violations"][0]["message"]


def test_cli_missing_source_folder_is_refused(tmp_path: Path) -> None:
    assert main(["lint", "--source", str(tmp_path / "nope")]) == EXIT_REFUSED


def test_cli_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["lint", "--dsn", "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2", "-o", "json"]
    )
    assert code == 7
    out = capsys.readouterr().out
    assert "DATABASE_UNAVAILABLE" in out
    assert "pw" not in out


# -- the live catalog --------------------------------------------------------------------------


def test_catalog_of_the_platform_is_clean_and_catches_planted_objects(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiaas_db.quality._docs import apply_platform

    apply_platform(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            b"CREATE TABLE usage_events_p20261126 PARTITION OF usage_events "
            b"FOR VALUES FROM ('2026-11-26') TO ('2026-11-27')"
        )
        clean = lint_catalog(conn, classification=platform_classification())
        assert clean.errors == (), "\n".join(map(str, clean.errors))
        conn.execute(
            b"CREATE TABLE person (id serial PRIMARY KEY, seen timestamp, "
            b"code text UNIQUE, parent int REFERENCES person (id), CHECK (id > 0))"
        )
        conn.execute(b'CREATE INDEX ON person (seen); ALTER TABLE users ADD COLUMN "Nick" text')
        conn.execute(b"CREATE TABLE schema_migrations_extra (version bigint)")
        report = lint_catalog(conn, classification=platform_classification())
    found = {(v.rule, v.location) for v in report.violations}
    assert ("AIAAS-L001", "person") in found
    assert ("AIAAS-L003", "person") in found
    assert ("AIAAS-L013", "person") in found
    assert ("AIAAS-L009", "person.id") in found
    assert ("AIAAS-L008", "person.seen") in found
    assert ("AIAAS-L005", "person (person_code_key)") in found
    assert ("AIAAS-L006", "person (person_parent_fkey)") in found
    assert ("AIAAS-L007", "person (person_id_check)") in found
    assert ("AIAAS-L004", "person (person_seen_idx)") in found
    assert ("AIAAS-L002", "users.Nick") in found
    assert ("AIAAS-L014", "users.Nick") in found
    assert not any("schema_migrations" in loc or "usage_events_p" in loc for _r, loc in found)
    # The same through the CLI: the change sets and the catalog together.
    assert main(["lint", "--dsn", db_url, "-o", "json"]) == EXIT_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert any(c.startswith("catalog") for c in doc["checked"])
    assert {"AIAAS-L009", "AIAAS-L014"} <= {v["rule"] for v in doc["violations"]}


@pytest.mark.parametrize(
    ("up", "expected", "absent"),
    [
        # ALTER INDEX ... RENAME follows the index it renames.
        (
            "ALTER INDEX idx_widgets_created_at RENAME TO widgets_created_idx;\n",
            {"AIAAS-L004"},
            set(),
        ),
        ('ALTER INDEX idx_elsewhere RENAME TO "Elsewhere";\n', {"AIAAS-L002"}, set()),
        # Actions sqlglot cannot parse alone: regex fallbacks, or a warning.
        (
            'ALTER TABLE widgets RENAME CONSTRAINT ck_widgets_name TO "CkName";\n',
            {"AIAAS-L002"},
            {"AIAAS-L000"},
        ),
        ("ALTER TABLE widgets ADD COLUMN n int, FROBNICATE widgets;\n", {"AIAAS-L000"}, set()),
        (
            "ALTER TABLE widgets FROBNICATE, DROP COLUMN IF EXISTS whatever;\n",
            {"AIAAS-L000", "AIAAS-L011"},
            set(),
        ),
        (
            'ALTER TABLE "widgets" DETACH PARTITION old_widgets, ADD CONSTRAINT ck_widgets_n'
            " CHECK (true);\n",
            set(),
            {"AIAAS-L000", "AIAAS-L007"},
        ),
        ("CREATE TABLE (;\n", {"AIAAS-L000"}, set()),
        ("CREATE TYPE \"Mood\" AS ENUM ('a');\n", {"AIAAS-L002"}, set()),
        # Tables whose columns are not all visible: no primary-key or coverage guesses.
        (
            "CREATE TABLE widget_copies AS SELECT * FROM widgets;\n",
            set(),
            {"AIAAS-L003", "AIAAS-L014"},
        ),
        ("DROP INDEX idx_widgets_created_at;\n", set(), {"AIAAS-L011"}),
        ("DROP SCHEMA audit CASCADE;\n", {"AIAAS-L011"}, set()),
    ],
)
def test_other_statement_forms(
    tmp_path: Path, up: str, expected: set[str], absent: set[str]
) -> None:
    cls = _with_entity(
        {"name": "WidgetCopy", "table": "widget_copies", "fields": []}
    )  # widget_copies (CREATE TABLE AS) is classified; its columns are unknown
    report = _lint(tmp_path, up, classification=cls)
    rules = report.rules_broken() - {"AIAAS-L017"}
    assert expected <= rules, [str(v) for v in report.violations]
    assert not (absent & rules), [str(v) for v in report.violations]


def test_sets_held_in_memory(tmp_path: Path) -> None:
    from aiaas_db.migrations._changesets import ChangeSet, StaticSource

    source = StaticSource(
        [ChangeSet.from_sql(202401010000, "things", "CREATE TABLE thing (thing_id uuid);", "")]
    )
    report = lint_change_sets([source])
    assert {v.rule for v in report.violations} == {"AIAAS-L001", "AIAAS-L003"}
    assert report.violations[0].location.startswith("memory/202401010000_things.up.sql:1")
