"""Schemathesis against a live ``aiaas-db serve`` stack: no 5xx, every response per the contract.

The schema is the shared ``schema-management.yaml`` itself. The server runs the real migrator on
a database of its own, with the real rollup engine (its runs fail for want of the analytics
tables, which is still a 202 and a recorded failure), and an API key with the
``platform-engineer`` role. Examples are few and derandomized so the file stays fast and stable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from conftest import CONTRACTS_DIR, V1, V2, SetWriter
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from serve_support import Contract, Keys, live_server, make_telemetry

from aiaas_db import DirectorySource, LocalPostgres
from aiaas_db.server._api import SchemaApi
from aiaas_db.server._runs import default_rollup_trigger


@pytest.fixture(scope="module")
def fuzz_keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def fuzz_server(
    pg: LocalPostgres, fuzz_keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    root: Path = tmp_path_factory.mktemp("fuzz-sets")
    ops = SetWriter(root / "operational")
    ops.add(
        V1,
        "orgs",
        "CREATE TABLE organizations (organization_id uuid PRIMARY KEY);\n",
        "DROP TABLE organizations;\n",
    )
    ops.add(
        V2,
        "users",
        "CREATE TABLE users (user_id uuid PRIMARY KEY, organization_id uuid "
        "REFERENCES organizations);\n",
        "DROP TABLE users;\n",
    )
    ana = SetWriter(root / "analytics")
    ana.add(
        V1,
        "rollups",
        "CREATE TABLE analytics_daily_rollups (x int);\n",
        "DROP TABLE analytics_daily_rollups;\n",
    )
    api = SchemaApi(
        url,
        sources={"operational": DirectorySource(ops.root), "analytics": DirectorySource(ana.root)},
        rollups=default_rollup_trigger(url),
    )
    telemetry = make_telemetry()
    try:
        with live_server(api, fuzz_keys, telemetry) as base:
            yield base
    finally:
        telemetry.shutdown(timeout_s=1)
        pg.drop_database(name)


# The contract as published (tests/contracts/schema-management.yaml).
schema = schemathesis.openapi.from_dict(
    yaml.safe_load((CONTRACTS_DIR / "schema-management.yaml").read_text())
)


@schema.parametrize()
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_contract_fuzz(case: Any, fuzz_server: str, fuzz_keys: Keys) -> None:
    response = case.call(base_url=fuzz_server, headers=fuzz_keys.headers("pe"), timeout=30)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    if response.status_code >= 400:
        Contract(CONTRACTS_DIR).error.validate(response.json())
