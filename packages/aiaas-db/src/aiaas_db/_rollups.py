"""Hourly and daily usage rollups on PostgreSQL (default) or DuckDB (embedded), one definition.

* **Window replacement.** A window's buckets are recomputed from their source (hourly: raw
  ``usage_events``; daily: hourly rollups) and replaced in one transaction: vanished keys
  deleted, changed rows updated, new rows inserted. Running a window twice leaves identical
  aggregates (and the same row ids); deleted raw events disappear from a window's rollup.
* **Late events.** Incremental hourly runs read the ``ingested_at`` watermark of the last run
  and recompute only the hours holding events ingested since (less an ``overlap``, default
  5 minutes, so rows committed by long ingest transactions are not missed); the watermark then
  moves to the run's snapshot time. Hourly runs that change anything mark the affected UTC
  days in ``analytics_daily_rollup_invalidations``; incremental daily runs recompute exactly
  those days from hourly rollups.
* **Backfills** run window after window (each committed with its checkpoint), throttled by a
  pause and/or a maximum event rate, and resume from the checkpoint when interrupted.
* **Reconciliation** runs the contract's checks (``analytics-reconciliation-checks.yml``),
  their daily equivalents (derived by rewriting the checks' syntax tree) and two stricter
  checks over every measure in both directions.
* **DuckDB**: the raw events a run needs are bulk-copied (``COPY ... TO STDOUT``) from the
  operational PostgreSQL into a ``usage_events`` mirror in the DuckDB file, window by window,
  and the same rollup definition runs there.

Targets are named in a targets file (YAML; ``${VAR}`` / ``${VAR:-default}`` are read from the
environment)::

    version: 1
    default: postgres
    targets:
      default:   {dialect: postgres, dsn: "${AIAAS_DB_URL}"}
      warehouse: {dialect: duckdb, dsn: "${AIAAS_DB_URL}", path: "${ANALYTICS_DUCKDB:-a.duckdb}"}

The built-in file defines ``postgres`` and ``duckdb``. Only PostgreSQL and DuckDB are offered:
they are the dialects the test suite executes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from aiaas_db._errors import redact_data_values
from aiaas_db._rollup_models import (
    CheckResult,
    ReconciliationCheck,
    ReconciliationReport,
    RollupConfigError,
    RollupError,
    RollupFailedError,
    RollupLockedError,
    RollupProgress,
    RollupReport,
    RollupSchemaMissingError,
    RollupTarget,
    RollupUnavailableError,
    RollupWindowError,
    RunMode,
    UsageRow,
)
from aiaas_db._rollup_sql import GRANULARITIES, Granularity

if TYPE_CHECKING:
    import duckdb
    import psycopg
    from sqlglot import exp

__all__ = [
    "RollupEngine",
    "backfill",
    "builtin_checks",
    "load_checks",
    "load_rollup_targets",
    "reconcile",
    "rollup_target",
    "run_rollup",
    "trigger_rollup",
    "usage_by_model",
    "usage_by_organization",
]

ProgressCallback = Callable[[RollupProgress], None]

DEFAULT_OVERLAP: Final = timedelta(minutes=5)
#: Largest window committed in one transaction by incremental runs and backfills.
DEFAULT_WINDOW: Final[Mapping[str, timedelta]] = {
    "hour": timedelta(days=1),
    "day": timedelta(days=31),
}
STEP: Final[Mapping[str, timedelta]] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
#: Raw events are copied into DuckDB at most this much event time at a time.
COPY_CHUNK: Final = timedelta(days=1)
TARGETS_ENV: Final = "AIAAS_ROLLUP_TARGETS"
_ENV_REF: Final = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_MIRROR_COLUMNS: Final = (
    "usage_event_id, occurred_at, ingested_at, organization_id, model_id, tokens_consumed, "
    "latency_ms, status, cost_usd"
)
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


# -- time --------------------------------------------------------------------------------------


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise RollupWindowError(
            f"{what} {value.isoformat()} has no time zone; give an ISO time with an offset "
            "(e.g. 2026-01-01T00:00:00Z)"
        )
    return value.astimezone(UTC)


def floor_bucket(value: datetime, granularity: Granularity) -> datetime:
    """The start of the UTC hour or day holding ``value``."""
    value = _aware(value, "time")
    if granularity == "hour":
        return value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_bucket(value: datetime, granularity: Granularity) -> datetime:
    """The first UTC hour or day boundary at or after ``value``."""
    start = floor_bucket(value, granularity)
    return start if start == value.astimezone(UTC) else start + STEP[granularity]


def _check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise RollupWindowError(
            f"unsupported granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}"
        )
    return granularity


def _window(granularity: Granularity, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` widened to whole buckets; refuses empty or inverted windows."""
    start, end = _aware(start, "window start"), _aware(end, "window end")
    if end <= start:
        raise RollupWindowError(
            f"window end {end.isoformat()} must be after its start {start.isoformat()}"
        )
    return floor_bucket(start, granularity), ceil_bucket(end, granularity)


def _split(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        nxt = min(cursor + size, end)
        out.append((cursor, nxt))
        cursor = nxt
    return out


def coalesce_buckets(
    buckets: Sequence[datetime], step: timedelta, max_span: timedelta
) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts grouped into contiguous windows no longer than ``max_span``."""
    windows: list[tuple[datetime, datetime]] = []
    for b in sorted(set(buckets)):
        if windows and windows[-1][1] == b and (b + step) - windows[-1][0] <= max_span:
            windows[-1] = (windows[-1][0], b + step)
        else:
            windows.append((b, b + step))
    return windows


def _buckets_in(start: datetime, end: datetime, granularity: Granularity) -> int:
    return int((end - start) / STEP[granularity])


# -- targets -----------------------------------------------------------------------------------


def _expand(value: object, env: Mapping[str, str], where: str) -> tuple[str | None, str | None]:
    """``value`` with ``${VAR}`` references expanded; (None, var) when a variable is unset."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise RollupConfigError(f"{where} must be a string")
    unset: list[str] = []
    names: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        names.append(name)
        if name in env and env[name] != "":
            return env[name]
        if m.group("default") is not None:
            return m.group("default")
        unset.append(name)
        return ""

    expanded = _ENV_REF.sub(sub, value)
    origin = names[0] if names else None
    return (None if unset else expanded), origin


def load_rollup_targets(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> tuple[dict[str, RollupTarget], str]:
    """The targets of a targets file (default: ``$AIAAS_ROLLUP_TARGETS`` or the built-in one).

    Returns ``(targets by name, default target name)``. Every problem is reported at once in
    a :class:`RollupConfigError`; values of environment variables never appear in messages.
    """
    import yaml  # noqa: PLC0415 -- only when targets are loaded

    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(TARGETS_ENV) or None
    if chosen is None:
        text = resources.files("aiaas_db").joinpath("rollup-targets.yml").read_text("utf-8")
        origin = "built-in rollup-targets.yml"
    else:
        try:
            text = Path(chosen).read_text("utf-8")
        except OSError as exc:
            raise RollupConfigError(
                f"cannot read the rollup targets file {chosen}: {exc.strerror or exc}"
            ) from None
        origin = str(chosen)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RollupConfigError(f"{origin} is not valid YAML: {exc}") from None
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise RollupConfigError(f"{origin}: expected a mapping with `version: 1` and `targets`")
    raw_targets = doc.get("targets")
    if not isinstance(raw_targets, dict) or not raw_targets:
        raise RollupConfigError(f"{origin}: `targets` must map names to targets")
    targets: dict[str, RollupTarget] = {}
    for name, spec in raw_targets.items():
        where = f"{origin}: target {name!r}"
        if not isinstance(spec, dict):
            problems.append(f"{where} must be a mapping")
            continue
        unknown = set(spec) - {"dialect", "dsn", "path"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {sorted(unknown)}")
        try:
            dsn, dsn_origin = _expand(spec.get("dsn"), env, f"{where}: dsn")
            path_text, _ = _expand(spec.get("path"), env, f"{where}: path")
            dialect = spec.get("dialect")
            if dialect == "duckdb" and not spec.get("path"):
                problems.append(f"{where}: a duckdb target needs `path`")
            targets[str(name)] = RollupTarget(
                name=str(name),
                dialect=str(dialect),
                dsn=dsn,
                duckdb_path=Path(path_text) if path_text else None,
                dsn_origin=dsn_origin,
            )
        except RollupConfigError as exc:
            problems.append(f"{where}: {exc.message}")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    default = doc.get("default", next(iter(raw_targets)))
    if default not in raw_targets:
        problems.append(f"{origin}: default target {default!r} is not defined")
    if problems:
        raise RollupConfigError(problems=problems)
    return targets, str(default)


def rollup_target(
    name: str | None = None,
    *,
    dsn: str | None = None,
    duckdb_path: str | os.PathLike[str] | None = None,
    targets_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> RollupTarget:
    """The target ``name`` (default: the file's default) with ``dsn``/``duckdb_path`` applied."""
    import attrs  # noqa: PLC0415

    targets, default = load_rollup_targets(targets_file, env=env)
    chosen = name or default
    if chosen not in targets:
        raise RollupConfigError(
            f"unknown rollup target {chosen!r}; defined: {', '.join(sorted(targets))}"
        )
    target = targets[chosen]
    if dsn is not None:
        target = attrs.evolve(target, dsn=dsn, dsn_origin="--dsn")
    if duckdb_path is not None:
        target = attrs.evolve(target, duckdb_path=Path(duckdb_path))
    return target


# -- backends ----------------------------------------------------------------------------------


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


# -- checks ------------------------------------------------------------------------------------

# The contract's checks (analytics-reconciliation-checks.yml, in tests/contracts/), verbatim in
# meaning; tests prove the built-in set and the contract file render to the same SQL.
_CONTRACT_CHECKS: Final = (
    (
        "request_count_matches_usage",
        "Ensure hourly rollup matches usage_events counts.",
        """
        WITH rollup AS (
          SELECT bucket_start, organization_id, model_id, request_count
          FROM analytics_hourly_rollups
        ),
        usage AS (
          SELECT date_trunc('hour', occurred_at) AS bucket_start, organization_id, model_id,
                 COUNT(*) AS request_count
          FROM usage_events
          GROUP BY 1,2,3
        )
        SELECT usage.bucket_start, usage.organization_id, usage.model_id,
               usage.request_count AS usage_count,
               COALESCE(rollup.request_count, 0) AS rollup_count
        FROM usage
        LEFT JOIN rollup
          ON usage.bucket_start = rollup.bucket_start
         AND usage.organization_id = rollup.organization_id
         AND (usage.model_id IS NOT DISTINCT FROM rollup.model_id)
        WHERE COALESCE(rollup.request_count, 0) <> usage.request_count
        """,
    ),
    (
        "error_rate_consistency",
        "",
        """
        SELECT bucket_start, organization_id, model_id
        FROM analytics_hourly_rollups
        WHERE error_count > request_count
        """,
    ),
)

# Stricter than the contract: every measure, both directions (a rollup row whose raw events
# were deleted is found too).
_MEASURES_MATCH: Final = """
WITH rollup AS (
  SELECT bucket_start, organization_id, model_id, request_count, tokens_total, error_count,
         rate_limited_count, cost_usd, latency_ms_sum
  FROM analytics_hourly_rollups
),
usage AS (
  SELECT date_trunc('hour', occurred_at) AS bucket_start, organization_id, model_id,
         COUNT(*) AS request_count, SUM(tokens_consumed) AS tokens_total,
         COUNT(*) FILTER (WHERE status = 'error') AS error_count,
         COUNT(*) FILTER (WHERE status = 'rate_limited') AS rate_limited_count,
         SUM(cost_usd) AS cost_usd, SUM(latency_ms) AS latency_ms_sum
  FROM usage_events
  GROUP BY 1, 2, 3
)
SELECT COALESCE(usage.bucket_start, rollup.bucket_start) AS bucket_start,
       COALESCE(usage.organization_id, rollup.organization_id) AS organization_id,
       COALESCE(usage.model_id, rollup.model_id) AS model_id,
       usage.request_count AS usage_count, rollup.request_count AS rollup_count
FROM usage
FULL OUTER JOIN rollup
  ON usage.bucket_start = rollup.bucket_start
 AND usage.organization_id = rollup.organization_id
 AND (usage.model_id IS NOT DISTINCT FROM rollup.model_id)
WHERE usage.request_count IS DISTINCT FROM rollup.request_count
   OR usage.tokens_total IS DISTINCT FROM rollup.tokens_total
   OR usage.error_count IS DISTINCT FROM rollup.error_count
   OR usage.rate_limited_count IS DISTINCT FROM rollup.rate_limited_count
   OR usage.cost_usd IS DISTINCT FROM rollup.cost_usd
   OR usage.latency_ms_sum IS DISTINCT FROM rollup.latency_ms_sum
"""

_DAILY_MATCHES_HOURLY: Final = """
WITH hourly AS (
  SELECT date_trunc('day', bucket_start) AS bucket_start, organization_id, model_id,
         SUM(request_count) AS request_count, SUM(tokens_total) AS tokens_total,
         SUM(error_count) AS error_count, SUM(rate_limited_count) AS rate_limited_count,
         SUM(cost_usd) AS cost_usd, SUM(latency_ms_sum) AS latency_ms_sum
  FROM analytics_hourly_rollups
  GROUP BY 1, 2, 3
)
SELECT COALESCE(hourly.bucket_start, daily.bucket_start) AS bucket_start,
       COALESCE(hourly.organization_id, daily.organization_id) AS organization_id,
       COALESCE(hourly.model_id, daily.model_id) AS model_id,
       hourly.request_count AS hourly_count, daily.request_count AS daily_count
FROM hourly
FULL OUTER JOIN analytics_daily_rollups AS daily
  ON hourly.bucket_start = daily.bucket_start
 AND hourly.organization_id = daily.organization_id
 AND (hourly.model_id IS NOT DISTINCT FROM daily.model_id)
WHERE hourly.request_count IS DISTINCT FROM daily.request_count
   OR hourly.tokens_total IS DISTINCT FROM daily.tokens_total
   OR hourly.error_count IS DISTINCT FROM daily.error_count
   OR hourly.rate_limited_count IS DISTINCT FROM daily.rate_limited_count
   OR hourly.cost_usd IS DISTINCT FROM daily.cost_usd
   OR hourly.latency_ms_sum IS DISTINCT FROM daily.latency_ms_sum
"""


def load_checks(path: str | os.PathLike[str]) -> tuple[ReconciliationCheck, ...]:
    """Checks from a file in the contract's format (``version: 1``, ``checks: [...]``)."""
    import yaml  # noqa: PLC0415

    try:
        doc = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RollupConfigError(f"cannot load reconciliation checks from {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("checks"), list):
        raise RollupConfigError(f"{path}: expected `checks:` with a list of checks")
    out: list[ReconciliationCheck] = []
    for item in doc["checks"]:
        if not isinstance(item, dict) or item.get("expect", "empty") != "empty":
            raise RollupConfigError(
                f"{path}: every check needs `name` and `sql`, and `expect: empty` is the only "
                "expectation supported"
            )
        try:
            out.append(
                ReconciliationCheck(
                    name=str(item.get("name")),
                    sql=str(item.get("sql") or ""),
                    description=str(item.get("description") or ""),
                )
            )
        except ValueError as exc:
            raise RollupConfigError(f"{path}: invalid check {item.get('name')!r}: {exc}") from None
    return tuple(out)


def daily_equivalent(check: ReconciliationCheck) -> ReconciliationCheck:
    """The check rewritten for daily rollups: hourly table -> daily, ``'hour'`` -> ``'day'``."""
    import sqlglot  # noqa: PLC0415
    from sqlglot import exp  # noqa: PLC0415

    tree = cast("exp.Expression", sqlglot.parse_one(check.sql, read="postgres"))

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name == "analytics_hourly_rollups":
            node = node.copy()
            node.set("this", exp.to_identifier("analytics_daily_rollups"))
            return node
        if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
            unit = node.args.get("unit")
            if unit is not None and unit.name.lower() == "hour":
                node = node.copy()
                node.set("unit", exp.Literal.string("day") if unit.is_string else exp.var("DAY"))
                return node
        return node

    daily = tree.transform(swap)
    return ReconciliationCheck(
        name=f"{check.name}_daily",
        sql=daily.sql(dialect="postgres"),
        granularity="day",
        description=f"{check.description} (daily equivalent)".strip(),
    )


def builtin_checks(
    contract: Sequence[ReconciliationCheck] | None = None,
) -> tuple[ReconciliationCheck, ...]:
    """The contract's checks, their daily equivalents and the stricter built-in checks."""
    base = (
        tuple(contract)
        if contract is not None
        else tuple(ReconciliationCheck(n, s, description=d) for n, d, s in _CONTRACT_CHECKS)
    )
    strict = ReconciliationCheck(
        "rollup_measures_match_usage",
        _MEASURES_MATCH,
        description="Every measure of every rollup row equals raw usage, both directions.",
    )
    hourly = (*base, strict)
    daily_from_hourly = ReconciliationCheck(
        "daily_matches_hourly",
        _DAILY_MATCHES_HOURLY,
        granularity="day",
        description="Every daily row equals the sum of its hourly rows, both directions.",
    )
    return (*hourly, *(daily_equivalent(c) for c in hourly), daily_from_hourly)


def _scoped(tree: exp.Expression, start: datetime | None, end: datetime | None) -> exp.Expression:
    """Restrict every read of events or rollups in ``tree`` to ``[start, end)``."""
    if start is None and end is None:
        return tree
    import sqlglot  # noqa: PLC0415
    from sqlglot import exp  # noqa: PLC0415

    from aiaas_db._rollup_sql import literal  # noqa: PLC0415

    columns = {
        "usage_events": "occurred_at",
        "analytics_hourly_rollups": "bucket_start",
        "analytics_daily_rollups": "bucket_start",
    }

    def swap(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Table) or node.name not in columns or node.db:
            return node
        column = columns[node.name]
        conds = []
        if start is not None:
            conds.append(f"{column} >= :s")
        if end is not None:
            conds.append(f"{column} < :e")
        text = f"SELECT * FROM {node.name} WHERE {' AND '.join(conds)}"  # noqa: S608
        sub = sqlglot.parse_one(text, read="postgres")

        def bind(n: exp.Expression) -> exp.Expression:
            if isinstance(n, exp.Placeholder):
                return literal(start if n.name == "s" else end)
            return n

        sub = sub.transform(bind)
        alias = node.alias or node.name
        return exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier(alias)))

    return tree.transform(swap)


# -- engine ------------------------------------------------------------------------------------


class RollupEngine:
    """Runs rollups, backfills, reconciliation and dashboard queries against one target.

    Use as a context manager (or call :meth:`close`). ``clock`` and ``sleep`` are injectable
    for tests; ``overlap`` re-reads that much ingest time before the watermark (late commits).
    """

    def __init__(
        self,
        target: RollupTarget,
        *,
        overlap: timedelta = DEFAULT_OVERLAP,
        lock_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if overlap < timedelta(0):
            raise RollupWindowError("overlap must not be negative")
        if target.dsn is None:
            env = f" (set {target.dsn_origin})" if target.dsn_origin else ""
            raise RollupConfigError(
                f"rollup target {target.name!r} has no PostgreSQL DSN{env}; pass --dsn"
            )
        if target.dialect == "duckdb" and target.duckdb_path is None:
            raise RollupConfigError(f"rollup target {target.name!r} needs a DuckDB file path")
        self.target = target
        self.overlap = overlap
        self.lock_timeout = lock_timeout
        self._sleep = sleep
        self._monotonic = monotonic
        self._pg: psycopg.Connection[Any] | None = None
        self._store: _Backend | None = None
        self._source: _PostgresBackend | None = None
        self._locked = False

    # connections -----------------------------------------------------------------------------

    def __enter__(self) -> RollupEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock and close every connection (idempotent)."""
        if self._store is not None and self._store is not self._source:
            self._store.close()
        if self._pg is not None and not self._pg.closed:
            self._pg.close()
        self._store = self._source = self._pg = None
        self._locked = False

    @property
    def dialect(self) -> Literal["postgres", "duckdb"]:
        return cast("Literal['postgres', 'duckdb']", self.target.dialect)

    def _source_backend(self) -> _PostgresBackend:
        if self._source is None:
            self._pg = _connect_pg(cast("str", self.target.dsn), self.target.name)
            self._source = _PostgresBackend(self._pg)
        return self._source

    def _backend(self) -> _Backend:
        """The store rollups live in (created and checked on first use)."""
        if self._store is not None:
            return self._store
        if self.dialect == "postgres":
            source = self._source_backend()
            self._require_schema(source)
            self._store = source
        else:
            store = _DuckDBBackend(_open_duckdb(cast("Path", self.target.duckdb_path)))
            from aiaas_db._rollup_sql import render  # noqa: PLC0415

            for ddl in DUCKDB_DDL:
                store.run(render(ddl, "duckdb"))
            self._store = store
        return self._store

    @staticmethod
    def _require_schema(source: _PostgresBackend) -> None:
        names = ", ".join(f"to_regclass('{t}')" for t in _REQUIRED_TABLES)
        _, rows = source.rows(f"SELECT {names}")
        missing = [t for t, found in zip(_REQUIRED_TABLES, rows[0], strict=True) if found is None]
        if missing:
            raise RollupSchemaMissingError(
                f"the database lacks {', '.join(missing)}; apply the platform change sets "
                "first: aiaas-db migrate up --platform"
            )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One rollup at a time per PostgreSQL database (DuckDB files lock themselves)."""
        if self.dialect != "postgres" or self._locked:
            yield
            return
        from aiaas_db._errors import LockTimeoutError  # noqa: PLC0415
        from aiaas_db._lock import AdvisoryLock  # noqa: PLC0415

        self._backend()
        conn = cast("psycopg.Connection[Any]", self._pg)
        lock = AdvisoryLock(conn, [_lock_key(conn.info.dbname)], timeout=self.lock_timeout)
        try:
            lock.acquire()
        except LockTimeoutError:
            raise RollupLockedError(
                f"another rollup holds this database's rollup lock (waited "
                f"{self.lock_timeout:g} s); wait for it or raise --lock-timeout"
            ) from None
        self._locked = True
        try:
            yield
        finally:
            self._locked = False
            lock.release()

    def _sql(self, sql: str, **values: object) -> str:
        from aiaas_db._rollup_sql import render  # noqa: PLC0415

        return render(sql, self.dialect, **values)

    def _now(self) -> datetime:
        """The database clock (ingested_at is stamped by it)."""
        _, rows = self._source_backend().rows("SELECT now()")
        return cast("datetime", rows[0][0]).astimezone(UTC)

    # window replacement ----------------------------------------------------------------------

    def _mirror(self, start: datetime, end: datetime) -> None:
        """Make the DuckDB mirror of ``usage_events`` equal PostgreSQL's for ``[start, end)``."""
        from aiaas_db._rollup_sql import render  # noqa: PLC0415

        store = self._backend()
        store.run(
            self._sql(
                "DELETE FROM usage_events WHERE occurred_at >= :s AND occurred_at < :e",
                s=start,
                e=end,
            )
        )
        source = self._source_backend()
        folder = self.target.duckdb_path.parent if self.target.duckdb_path else None
        for a, b in _split(start, end, COPY_CHUNK):
            select = render(
                f"SELECT {_MIRROR_COLUMNS} FROM usage_events "  # noqa: S608
                "WHERE occurred_at >= :s AND occurred_at < :e",
                "postgres",
                s=a,
                e=b,
            )
            fd, name = tempfile.mkstemp(prefix=".aiaas-rollup-", suffix=".csv", dir=folder)
            try:
                wrote = 0
                copy_sql = f"COPY ({select}) TO STDOUT WITH (FORMAT csv)".encode()
                with os.fdopen(fd, "wb") as fh, source.conn.cursor().copy(copy_sql) as copy:
                    for data in copy:
                        fh.write(data)
                        wrote += len(data)
                if wrote:
                    quoted = name.replace("'", "''")
                    store.run(f"COPY usage_events FROM '{quoted}' (FORMAT csv, HEADER false)")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)

    def _replace(
        self, granularity: Granularity, start: datetime, end: datetime, now: datetime
    ) -> tuple[int, int, int, int]:
        """Replace the buckets of ``[start, end)``; (events, inserted, updated, deleted).

        Runs inside the caller's transaction.
        """
        from aiaas_db._rollup_sql import (  # noqa: PLC0415
            CLEAR_INVALIDATIONS,
            INVALIDATE_DAY,
            STAGE_TABLE,
            STAGE_TOTALS,
            replacement_sql,
        )

        store = self._backend()
        if granularity == "hour" and self.dialect == "duckdb":
            self._mirror(start, end)
        stage, delete, update, insert, touch, drop = replacement_sql(granularity)
        values = {"window_start": start, "window_end": end, "now": now}
        store.run(self._sql(stage, **values))
        if self.dialect == "postgres":
            # Temporary tables are never auto-analysed: without statistics the planner picks
            # nested loops for the key joins below.
            store.run(f"ANALYZE {STAGE_TABLE}")
        _, totals = store.rows(self._sql(STAGE_TOTALS))
        events = int(totals[0][1])
        deleted = store.run(self._sql(delete, **values))
        updated = store.run(self._sql(update, **values))
        inserted = store.run(self._sql(insert, **values))
        store.run(self._sql(touch, **values))
        store.run(self._sql(drop))
        if granularity == "hour" and (inserted or updated or deleted):
            day = floor_bucket(start, "day")
            while day < end:
                store.run(self._sql(INVALIDATE_DAY, day=day, now=now))
                day += STEP["day"]
        if granularity == "day":
            store.run(self._sql(CLEAR_INVALIDATIONS, **values))
        return events, inserted, updated, deleted

    # runs ------------------------------------------------------------------------------------

    def _watermark(self, granularity: Granularity) -> datetime | None:
        from aiaas_db._rollup_sql import GET_WATERMARK  # noqa: PLC0415

        _, rows = self._backend().rows(self._sql(GET_WATERMARK, granularity=granularity))
        value = rows[0][0] if rows else None
        return cast("datetime", value).astimezone(UTC) if value is not None else None

    def run(
        self,
        granularity: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> RollupReport:
        """Roll up ``[start, end)`` (widened to whole buckets), or what changed since last run.

        Without a window an hourly run recomputes the hours holding events ingested since the
        watermark; a daily run recomputes the days whose hourly rollups changed.
        """
        gran = _check_granularity(granularity)
        if (start is None) != (end is None):
            raise RollupWindowError("give both the window start and end, or neither")
        if start is not None and end is not None:
            window = _window(gran, start, end)
            return self._execute(gran, "window", [window], progress=progress, window=window)
        with self._exclusive():
            return self._incremental(gran, progress)

    def _incremental(self, gran: Granularity, progress: ProgressCallback | None) -> RollupReport:
        from aiaas_db._rollup_sql import (  # noqa: PLC0415
            AFFECTED_HOURS,
            ALL_HOURS,
            INVALIDATED_DAYS,
        )

        store = self._backend()
        before = self._watermark(gran)
        if gran == "hour":
            until = self._now()
            if before is None:
                sql = _render_pg(ALL_HOURS, until=until)
            else:
                sql = _render_pg(AFFECTED_HOURS, since=before - self.overlap, until=until)
            _, rows = self._source_backend().rows(sql)
            buckets = [cast("datetime", r[0]).astimezone(UTC) for r in rows]
            after: datetime | None = max(until, before) if before is not None else until
        else:
            _, rows = store.rows(self._sql(INVALIDATED_DAYS))
            buckets = [cast("datetime", r[0]).astimezone(UTC) for r in rows]
            after = None
        windows = coalesce_buckets(buckets, STEP[gran], DEFAULT_WINDOW[gran])
        return self._execute(
            gran,
            "incremental",
            windows,
            progress=progress,
            watermark=(before, after),
        )

    def _execute(
        self,
        gran: Granularity,
        mode: RunMode,
        windows: Sequence[tuple[datetime, datetime]],
        *,
        progress: ProgressCallback | None = None,
        window: tuple[datetime, datetime] | None = None,
        watermark: tuple[datetime | None, datetime | None] = (None, None),
        checkpoint: Mapping[str, Any] | None = None,
        throttle: tuple[float, float | None] = (0.0, None),
        resumed_from: datetime | None = None,
    ) -> RollupReport:
        from aiaas_db._rollup_sql import (  # noqa: PLC0415
            ADVANCE_CHECKPOINT,
            FINISH_RUN,
            INSERT_RUN,
            INSERT_WATERMARK,
            UPDATE_WATERMARK,
        )

        with self._exclusive():
            store = self._backend()
            run_id = uuid.uuid4()
            started = self._now()
            span = window or ((windows[0][0], windows[-1][1]) if windows else (None, None))
            store.run(
                self._sql(
                    INSERT_RUN,
                    run_id=run_id,
                    target=self.target.name,
                    granularity=gran,
                    mode=mode,
                    window_start=span[0],
                    window_end=span[1],
                    watermark_before=watermark[0],
                    now=started,
                )
            )
            totals = [0, 0, 0, 0]
            buckets = 0
            done = 0
            pause, max_rate = throttle
            t0 = self._monotonic()

            def finish(
                status: str,
                watermark_after: datetime | None,
                error_code: str | None,
                error_message: str | None,
                now: datetime,
            ) -> None:
                store.run(
                    self._sql(
                        FINISH_RUN,
                        run_id=run_id,
                        status=status,
                        window_start=span[0],
                        window_end=span[1],
                        watermark_after=watermark_after,
                        windows=done,
                        buckets=buckets,
                        events=totals[0],
                        inserted=totals[1],
                        updated=totals[2],
                        deleted=totals[3],
                        error_code=error_code,
                        error_message=error_message,
                        now=now,
                    )
                )

            try:
                for a, b in windows:
                    now = self._now()
                    with store.transaction():
                        counts = self._replace(gran, a, b, now)
                        if checkpoint is not None:
                            store.run(
                                self._sql(
                                    ADVANCE_CHECKPOINT,
                                    next_start=b,
                                    status="completed"
                                    if b >= checkpoint["range_end"]
                                    else "running",
                                    completed_at=now if b >= checkpoint["range_end"] else None,
                                    run_id=run_id,
                                    now=now,
                                    **checkpoint,
                                )
                            )
                    totals = [x + y for x, y in zip(totals, counts, strict=True)]
                    buckets += _buckets_in(a, b, gran)
                    done += 1
                    if progress is not None:
                        progress(RollupProgress(gran, done, len(windows), a, b, counts[0]))
                    if done < len(windows):
                        self._throttle(pause, max_rate, totals[0], t0)
                if mode == "incremental" and gran == "hour":
                    values = {
                        "granularity": gran,
                        "watermark": watermark[1],
                        "run_id": run_id,
                        "now": self._now(),
                    }
                    with store.transaction():
                        store.run(self._sql(INSERT_WATERMARK, **values))
                        store.run(self._sql(UPDATE_WATERMARK, **values))
            except BaseException as exc:
                message = _safe_message(exc)
                code = exc.code if isinstance(exc, RollupError) else "ROLLUP_FAILED"
                with contextlib.suppress(Exception):
                    finish("failed", None, code, message, self._now())
                if isinstance(exc, RollupError) or not isinstance(exc, Exception):
                    raise
                raise RollupFailedError(
                    f"{gran} rollup run {run_id} failed after {done} of {len(windows)} "
                    f"window(s): {message}",
                    run_id=run_id,
                ) from exc
            finished = self._now()
            after = watermark[1] if mode == "incremental" else None
            finish("succeeded", after, None, None, finished)
            return RollupReport(
                run_id=run_id,
                target=self.target.name,
                dialect=self.dialect,
                granularity=gran,
                mode=mode,
                status="succeeded",
                started_at=started,
                finished_at=finished,
                window_start=span[0],
                window_end=span[1],
                watermark_before=watermark[0],
                watermark_after=after,
                windows=done,
                buckets=buckets,
                events=totals[0],
                rows_inserted=totals[1],
                rows_updated=totals[2],
                rows_deleted=totals[3],
                resumed_from=resumed_from,
            )

    def _throttle(self, pause: float, max_rate: float | None, events: int, t0: float) -> None:
        wait = pause
        if max_rate is not None and events:
            # Sleep until the average rate since the start is at most max_rate events/s.
            wait = max(wait, events / max_rate - (self._monotonic() - t0))
        if wait > 0:
            self._sleep(wait)

    def backfill(
        self,
        granularity: str,
        start: datetime,
        end: datetime,
        *,
        window: timedelta | None = None,
        pause: float = 0.0,
        max_events_per_second: float | None = None,
        restart: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RollupReport:
        """Roll up a long range window by window, resuming from its checkpoint.

        Each window is committed together with the checkpoint, so an interrupted backfill run
        again with the same range continues after the last committed window. ``pause`` seconds
        are slept between windows, and ``max_events_per_second`` caps the average rate.
        """
        from aiaas_db._rollup_sql import (  # noqa: PLC0415
            GET_CHECKPOINT,
            INSERT_CHECKPOINT,
            RESTART_CHECKPOINT,
        )

        gran = _check_granularity(granularity)
        size = window or DEFAULT_WINDOW[gran]
        if size < STEP[gran] or size % STEP[gran]:
            raise RollupWindowError(
                f"a {gran} backfill window must be a whole number of {gran}s, got {size}"
            )
        if pause < 0 or (max_events_per_second is not None and max_events_per_second <= 0):
            raise RollupWindowError("pause must be >= 0 and the maximum rate > 0")
        range_start, range_end = _window(gran, start, end)
        key = {"granularity": gran, "range_start": range_start, "range_end": range_end}
        with self._exclusive():
            store = self._backend()
            _, rows = store.rows(self._sql(GET_CHECKPOINT, **key))
            now = self._now()
            resumed: datetime | None = None
            if not rows:
                store.run(self._sql(INSERT_CHECKPOINT, run_id=None, now=now, **key))
                cursor = range_start
            elif restart:
                store.run(self._sql(RESTART_CHECKPOINT, run_id=None, now=now, **key))
                cursor = range_start
            else:
                cursor = cast("datetime", rows[0][0]).astimezone(UTC)
                resumed = cursor if cursor > range_start else None
            windows = _split(cursor, range_end, size)
            return self._execute(
                gran,
                "backfill",
                windows,
                progress=progress,
                window=(range_start, range_end),
                checkpoint=key,
                throttle=(pause, max_events_per_second),
                resumed_from=resumed,
            )

    # reconciliation --------------------------------------------------------------------------

    def reconcile(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        checks: Sequence[ReconciliationCheck] | None = None,
        sample: int = 5,
    ) -> ReconciliationReport:
        """Run ``checks`` (default :func:`builtin_checks`); each must return no rows.

        With ``start``/``end`` (widened to whole days) every read of raw events and rollups is
        restricted to that range.
        """
        import sqlglot  # noqa: PLC0415

        if (start is None) != (end is None):
            raise RollupWindowError("give both the reconciliation start and end, or neither")
        if start is not None and end is not None:
            start, end = _window("day", start, end)
        store = self._backend()
        results: list[CheckResult] = []
        for check in checks if checks is not None else builtin_checks():
            parsed = cast("exp.Expression", sqlglot.parse_one(check.sql, read="postgres"))
            tree = _scoped(parsed, start, end)
            names, rows = store.rows(tree.sql(dialect=self.dialect))
            results.append(
                CheckResult(
                    name=check.name,
                    granularity=check.granularity,
                    ok=not rows,
                    mismatches=len(rows),
                    sample=tuple(
                        {n: _jsonable(v) for n, v in zip(names, r, strict=True)}
                        for r in rows[:sample]
                    ),
                    description=check.description,
                )
            )
        return ReconciliationReport(
            target=self.target.name,
            dialect=self.dialect,
            checks=tuple(results),
            window_start=start,
            window_end=end,
        )

    # dashboards ------------------------------------------------------------------------------

    def usage(
        self,
        *,
        start: datetime,
        end: datetime,
        granularity: str = "day",
        by: Literal["organization", "model"] = "organization",
        organization_ids: Sequence[uuid.UUID] = (),
        model_ids: Sequence[uuid.UUID] = (),
        include_unattributed: bool = False,
    ) -> tuple[UsageRow, ...]:
        """Usage per bucket and organisation (or model) over ``[start, end)`` from rollups."""
        from aiaas_db._rollup_sql import usage_sql  # noqa: PLC0415

        gran = _check_granularity(granularity)
        if by not in ("organization", "model"):
            raise RollupWindowError(f"usage is grouped by organization or model, not {by!r}")
        range_start, range_end = _window(gran, start, end)
        sql = usage_sql(
            gran,
            by=by,
            organization_ids=organization_ids,
            model_ids=model_ids,
            with_null_model=include_unattributed,
        )
        values: dict[str, object] = {"range_start": range_start, "range_end": range_end}
        values.update({f"organization_{i}": v for i, v in enumerate(organization_ids)})
        values.update({f"model_{i}": v for i, v in enumerate(model_ids)})
        _, rows = self._backend().rows(self._sql(sql, **values))
        return tuple(
            UsageRow(
                bucket_start=cast("datetime", r[0]).astimezone(UTC),
                key=r[1] if r[1] is None or isinstance(r[1], uuid.UUID) else uuid.UUID(str(r[1])),
                request_count=int(r[2]),
                tokens_total=int(r[3]),
                error_count=int(r[4]),
                rate_limited_count=int(r[5]),
                cost_usd=Decimal(r[6]),
                latency_ms_sum=int(r[7]),
            )
            for r in rows
        )

    def history(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """The newest rollup runs, newest first."""
        names, rows = self._backend().rows(
            self._sql(
                "SELECT * FROM analytics_rollup_runs ORDER BY started_at DESC LIMIT :limit",
                limit=limit,
            )
        )
        return [{n: _jsonable(v) for n, v in zip(names, r, strict=True)} for r in rows]


def _render_pg(sql: str, **values: object) -> str:
    from aiaas_db._rollup_sql import render  # noqa: PLC0415

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


# -- module-level API --------------------------------------------------------------------------


def run_rollup(
    target: RollupTarget,
    granularity: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    overlap: timedelta = DEFAULT_OVERLAP,
    progress: ProgressCallback | None = None,
) -> RollupReport:
    """One rollup run against ``target`` (see :meth:`RollupEngine.run`)."""
    with RollupEngine(target, overlap=overlap) as engine:
        return engine.run(granularity, start, end, progress=progress)


def backfill(
    target: RollupTarget,
    granularity: str,
    start: datetime,
    end: datetime,
    *,
    window: timedelta | None = None,
    pause: float = 0.0,
    max_events_per_second: float | None = None,
    restart: bool = False,
    progress: ProgressCallback | None = None,
) -> RollupReport:
    """A throttled, resumable backfill (see :meth:`RollupEngine.backfill`)."""
    with RollupEngine(target) as engine:
        return engine.backfill(
            granularity,
            start,
            end,
            window=window,
            pause=pause,
            max_events_per_second=max_events_per_second,
            restart=restart,
            progress=progress,
        )


def reconcile(
    target: RollupTarget,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    checks: Sequence[ReconciliationCheck] | None = None,
) -> ReconciliationReport:
    """Run the reconciliation checks against ``target`` (see :meth:`RollupEngine.reconcile`)."""
    with RollupEngine(target) as engine:
        return engine.reconcile(start=start, end=end, checks=checks)


def usage_by_organization(
    target: RollupTarget,
    *,
    start: datetime,
    end: datetime,
    granularity: str = "day",
    organization_ids: Sequence[uuid.UUID] = (),
) -> tuple[UsageRow, ...]:
    """Usage per bucket and organisation from the rollups (dashboards)."""
    with RollupEngine(target) as engine:
        return engine.usage(
            start=start, end=end, granularity=granularity, organization_ids=organization_ids
        )


def usage_by_model(
    target: RollupTarget,
    *,
    start: datetime,
    end: datetime,
    granularity: str = "day",
    organization_ids: Sequence[uuid.UUID] = (),
    model_ids: Sequence[uuid.UUID] = (),
    include_unattributed: bool = True,
) -> tuple[UsageRow, ...]:
    """Usage per bucket and model (``key`` None: not attributed to a model) from the rollups."""
    with RollupEngine(target) as engine:
        return engine.usage(
            start=start,
            end=end,
            granularity=granularity,
            by="model",
            organization_ids=organization_ids,
            model_ids=model_ids,
            include_unattributed=include_unattributed,
        )


def trigger_rollup(
    dsn: str,
    granularity: str,
    start: datetime,
    end: datetime,
    target: str = "postgres",
) -> RollupReport:
    """Run a rollup of ``[start, end)`` now (the schema management API's rollup trigger).

    ``target`` names a target of the targets file (``$AIAAS_ROLLUP_TARGETS`` or the built-in
    ``postgres``/``duckdb``); ``dsn`` is the operational PostgreSQL. Raises
    :class:`RollupWindowError` (422) for a bad granularity or window.
    """
    chosen = rollup_target(target, dsn=dsn)
    return run_rollup(chosen, granularity, start, end)
