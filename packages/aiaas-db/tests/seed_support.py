"""Shared fixtures of the seed, purge, API key store and synthetic tests.

The platform schema is applied once per session to a template database; each test gets a fresh
copy (``CREATE DATABASE ... TEMPLATE``), which is much faster than migrating every time.
Import the fixtures into a test module with ``from seed_support import ...  # noqa: F401``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from aiaas_db import LocalPostgres, Migrator

#: Tables whose content the idempotence tests fingerprint.
SEEDED_TABLES = (
    "organizations",
    "users",
    "api_keys",
    "model_registry_entries",
    "model_registry_entry_changes",
    "usage_events",
    "audit_log_entries",
)


def apply_platform(url: str) -> None:
    from aiaas_db.platform._components import PLATFORM_COMPONENTS, platform_source
    from aiaas_db.platform._pii import PiiProtector

    protector = PiiProtector.for_local_development("aiaas-db seed tests: migration audit")
    for component in PLATFORM_COMPONENTS:
        Migrator(url, platform_source(component), component=component, protector=protector).up()


@pytest.fixture(scope="session")
def platform_template(pg: LocalPostgres) -> str:
    """The name of a database with the platform schema applied (never connected to again)."""
    name = f"tpl_platform_{uuid.uuid4().hex[:8]}"
    apply_platform(pg.create_database(name))
    return name


@pytest.fixture
def platform_url(pg: LocalPostgres, platform_template: str) -> Iterator[str]:
    """A fresh database with the platform schema."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name, template=platform_template)
    yield url
    pg.drop_database(name)


def table_hash(url: str, table: str) -> str:
    """A digest of every row of ``table`` (all columns, in a stable order)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT t::text FROM {table} t ORDER BY t::text"  # noqa: S608 -- test constants
        ).fetchall()
    return hashlib.sha256("\n".join(str(r[0]) for r in rows).encode()).hexdigest()


def content_hashes(url: str) -> dict[str, str]:
    return {t: table_hash(url, t) for t in SEEDED_TABLES}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])  # noqa: S608
            for t in SEEDED_TABLES
        }


def run_cli(*args: str) -> tuple[int, str, str]:
    """``aiaas-db <args>`` in-process: exit code, stdout, stderr."""
    from click.testing import CliRunner

    from aiaas_db.cli._main import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def run_cli_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_cli(*args, "--output", "json")
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON (exit {code}): {out!r} {err!r}") from None
