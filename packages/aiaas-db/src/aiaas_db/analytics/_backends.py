"""The stores rollups run on: the operational PostgreSQL and an embedded DuckDB file.

Also how a store's values become JSON and its errors one-line, secret-free messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from aiaas_db._errors import redact_data_values
from aiaas_db.analytics._models import RollupConfigError, RollupError, RollupUnavailableError

if TYPE_CHECKING:
    import duckdb
    import psycopg

__all__: list[str] = []

#: The raw event columns the DuckDB mirror of ``usage_events`` holds.
_MIRROR_COLUMNS: Final = (
    "usage_event_id, occurred_at, ingested_at, organization_id, model_id, tokens_consumed, "
    "latency_ms, status, cost_usd"
)
#: The platform tables a PostgreSQL store must have (the platform change sets create them).
_REQUIRED_TABLES: Final = (
    "usage_events",
    "analytics_hourly_rollups",
    "analytics_daily_rollups",
    "analytics_rollup_watermarks",
    "analytics_rollup_runs",
    "analytics_rollup_backfill_checkpoints",
    "analytics_daily_rollup_invalidations",
)

# The embedded store's tables (canonical PostgreSQL-dialect text, rendered for DuckDB). Same
# names, columns and types as the PostgreSQL tables; DuckDB gets no indexes (zone maps suffice).
_MEASURE_COLUMNS: Final = (
    "request_count BIGINT NOT NULL, tokens_total BIGINT NOT NULL, error_count BIGINT NOT NULL, "
    "rate_limited_count BIGINT NOT NULL DEFAULT 0, cost_usd DECIMAL(18, 8) NOT NULL, "
    "latency_ms_sum BIGINT NOT NULL DEFAULT 0, last_reconciled_at TIMESTAMPTZ NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL"
)
DUCKDB_DDL: Final = (
    "CREATE SEQUENCE IF NOT EXISTS analytics_hourly_rollups_seq",
    "CREATE SEQUENCE IF NOT EXISTS analytics_daily_rollups_seq",
    "CREATE SEQUENCE IF NOT EXISTS analytics_rollup_state_seq",
    "CREATE TABLE IF NOT EXISTS usage_events (usage_event_id UUID NOT NULL, "
    "occurred_at TIMESTAMPTZ NOT NULL, ingested_at TIMESTAMPTZ NOT NULL, "
    "organization_id UUID NOT NULL, model_id UUID, tokens_consumed BIGINT NOT NULL, "
    "latency_ms INT NOT NULL, status TEXT NOT NULL, cost_usd DECIMAL(14, 8) NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analytics_hourly_rollups (analytics_hourly_rollup_id BIGINT "
    "NOT NULL DEFAULT NEXTVAL('analytics_hourly_rollups_seq'), bucket_start TIMESTAMPTZ NOT NULL, "
    f"organization_id UUID NOT NULL, model_id UUID, {_MEASURE_COLUMNS})",
    "CREATE TABLE IF NOT EXISTS analytics_daily_rollups (analytics_daily_rollup_id BIGINT "
    "NOT NULL DEFAULT NEXTVAL('analytics_daily_rollups_seq'), bucket_start TIMESTAMPTZ NOT NULL, "
    f"organization_id UUID NOT NULL, model_id UUID, {_MEASURE_COLUMNS})",
    "CREATE TABLE IF NOT EXISTS analytics_rollup_watermarks (analytics_rollup_watermark_id "
    "BIGINT NOT NULL DEFAULT NEXTVAL('analytics_rollup_state_seq'), granularity TEXT NOT NULL, "
    "watermark TIMESTAMPTZ, last_run_id UUID, last_run_at TIMESTAMPTZ, "
    "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analytics_rollup_runs (analytics_rollup_run_id UUID NOT NULL, "
    "target TEXT NOT NULL, granularity TEXT NOT NULL, mode TEXT NOT NULL, status TEXT NOT NULL, "
    "window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, watermark_before TIMESTAMPTZ, "
    "watermark_after TIMESTAMPTZ, windows BIGINT NOT NULL DEFAULT 0, "
    "buckets_recomputed BIGINT NOT NULL DEFAULT 0, source_events BIGINT NOT NULL DEFAULT 0, "
    "rows_inserted BIGINT NOT NULL DEFAULT 0, rows_updated BIGINT NOT NULL DEFAULT 0, "
    "rows_deleted BIGINT NOT NULL DEFAULT 0, error_code TEXT, error_message TEXT, "
    "started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ, created_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analytics_rollup_backfill_checkpoints ("
    "analytics_rollup_backfill_checkpoint_id BIGINT NOT NULL DEFAULT "
    "NEXTVAL('analytics_rollup_state_seq'), granularity TEXT NOT NULL, "
    "range_start TIMESTAMPTZ NOT NULL, range_end TIMESTAMPTZ NOT NULL, "
    "next_start TIMESTAMPTZ NOT NULL, windows_done BIGINT NOT NULL DEFAULT 0, "
    "status TEXT NOT NULL, last_run_id UUID, completed_at TIMESTAMPTZ, "
    "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS analytics_daily_rollup_invalidations ("
    "analytics_daily_rollup_invalidation_id BIGINT NOT NULL DEFAULT "
    "NEXTVAL('analytics_rollup_state_seq'), bucket_start TIMESTAMPTZ NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL)",
)


class _Backend(Protocol):
    dialect: Literal["postgres", "duckdb"]

    def run(self, sql: str) -> int: ...

    def rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


def _connect_pg(dsn: str, purpose: str) -> psycopg.Connection[Any]:
    import psycopg  # noqa: PLC0415 -- keeps import aiaas_db cheap

    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name=f"aiaas-db rollup {purpose}")
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # libpq messages name host and port, never the password.
        raise RollupUnavailableError(f"cannot connect to PostgreSQL: {first}") from None
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


class _PostgresBackend:
    dialect: Literal["postgres", "duckdb"] = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def run(self, sql: str) -> int:
        cur = self.conn.execute(sql.encode())
        return max(cur.rowcount, 0)

    def rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.conn.execute(sql.encode())
        names = [d.name for d in cur.description or []]
        return names, list(cur.fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def close(self) -> None:
        self.conn.close()


class _DuckDBBackend:
    dialect: Literal["postgres", "duckdb"] = "duckdb"

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def run(self, sql: str) -> int:
        row = self.conn.execute(sql).fetchone()
        return int(row[0]) if row and isinstance(row[0], int) else 0

    def rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.conn.execute(sql)
        names = [d[0] for d in cur.description or []]
        return names, list(cur.fetchall())

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.begin()
        try:
            yield
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def _open_duckdb(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        import duckdb  # noqa: PLC0415 -- optional extra
    except ImportError:
        raise RollupUnavailableError(
            "the DuckDB target needs the duckdb extra: pip install 'aiaas-db[duckdb]'"
        ) from None
    if not path.parent.is_dir():
        raise RollupConfigError(f"the folder of the DuckDB file {path} does not exist")
    try:
        conn = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise RollupUnavailableError(f"cannot open the DuckDB file {path}: {exc}") from None
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def _lock_key(dbname: str) -> int:
    digest = hashlib.sha256(f"aiaas-db-rollup\x00{dbname}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _render_pg(sql: str, **values: object) -> str:
    from aiaas_db.analytics._sql import render  # noqa: PLC0415

    return render(sql, "postgres", **values)


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def _safe_message(exc: BaseException) -> str:
    """A one-line, secret-free description of ``exc``."""
    if isinstance(exc, RollupError):
        return exc.message
    import psycopg  # noqa: PLC0415

    if isinstance(exc, psycopg.Error):
        primary = redact_data_values(exc.diag.message_primary or type(exc).__name__, exc.sqlstate)
        return f"{primary} [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else primary
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
