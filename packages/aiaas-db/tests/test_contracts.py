"""Run reports match the MigrationRun shape of contracts/schema-management.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import V1, V2, SetWriter
from test_migrate import basic

from aiaas_db import MigrationFailedError, Migrator


@pytest.fixture(scope="module")
def migration_run_schema(contracts_dir: Path) -> dict[str, Any]:
    spec = yaml.safe_load((contracts_dir / "schema-management.yaml").read_text())
    schema = dict(spec["components"]["schemas"]["MigrationRun"])
    # OpenAPI 3.0's `nullable: true` is JSON Schema's type union.
    props = {}
    for name, original in schema["properties"].items():
        prop = dict(original)
        if prop.pop("nullable", False):
            prop["type"] = [prop["type"], "null"]
        props[name] = prop
    schema["properties"] = props
    return schema


def test_reports_are_migration_runs(
    db_url: str, sets: SetWriter, migration_run_schema: dict[str, Any]
) -> None:
    basic(sets)
    m = Migrator(db_url, sets.root, component="operational")
    up = m.up().to_migration_run()
    jsonschema.validate(up, migration_run_schema)
    assert up["appliedVersions"] == [str(V1), str(V2)]
    assert up["targetVersion"] == str(V2)
    assert up["metrics"]["tablesTouched"] == ["public.users"]
    assert up["metrics"]["rowChanges"] == 5
    noop = m.up().to_migration_run()
    jsonschema.validate(noop, migration_run_schema)
    assert noop["appliedVersions"] == []
    down = m.down(to=0).to_migration_run()
    jsonschema.validate(down, migration_run_schema)
    assert down["status"] == "rolled_back"
    assert down["targetVersion"] is None
    sets.add(202401030000, "bad", "SELECT 1/0;", "SELECT 1;")
    m.up(to=V2)
    with pytest.raises(MigrationFailedError) as info:
        m.up()
    failed = info.value.report.to_migration_run()
    jsonschema.validate(failed, migration_run_schema)
    assert failed["status"] == "failed"
