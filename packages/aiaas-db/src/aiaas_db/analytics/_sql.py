"""The canonical rollup definitions and every statement the rollup engine runs, per dialect.

Each rollup is defined once (:data:`HOURLY`, :data:`DAILY`) as data: its source, bucket unit and
measures. :func:`select_statement` builds the aggregate query from that definition as a sqlglot
expression and renders it for the target dialect; every other statement (window replacement,
state, reconciliation checks, dashboard queries) is written once in PostgreSQL's dialect and
rendered the same way. Values are bound as typed literals built by sqlglot from Python values
(aware datetimes, UUIDs, integers) -- never from user text -- so the same statement runs on
PostgreSQL and DuckDB without placeholder dialects.

Only dialects that the test suite executes are offered (:data:`DIALECTS`). Statements are
assembled from identifiers defined in this module (never from input), hence the ``S608``
suppressions.

Types are chosen so both engines compute identical results: counts and sums are cast to
``BIGINT`` (DuckDB would otherwise return ``HUGEINT``, PostgreSQL ``NUMERIC``) and cost to
``DECIMAL(18, 8)`` (exact on both: the sum of ``numeric(14,8)`` is exact before the cast).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, cast

import attrs

if TYPE_CHECKING:
    from sqlglot import exp

__all__ = ["DAILY", "DIALECTS", "HOURLY", "Granularity", "Measure", "RollupDefinition"]

Dialect = Literal["postgres", "duckdb"]
Granularity = Literal["hour", "day"]
#: The dialects rollups can target; each is executed by the test suite.
DIALECTS: Final[tuple[Dialect, ...]] = ("postgres", "duckdb")
GRANULARITIES: Final[tuple[Granularity, ...]] = ("hour", "day")
KEY_COLUMNS: Final = ("bucket_start", "organization_id", "model_id")
#: Stands in for a NULL model_id in join keys (hash joins cannot use IS NOT DISTINCT FROM on
#: PostgreSQL). Model ids are gen_random_uuid() values, never the nil UUID.
NIL_UUID: Final = "00000000-0000-0000-0000-000000000000"
STAGE_TABLE: Final = "aiaas_rollup_stage"


@attrs.frozen
class Measure:
    """One aggregated column: its name, canonical aggregate expression and result type."""

    name: str = attrs.field(validator=attrs.validators.matches_re(r"[a-z_][a-z0-9_]*"))
    expression: str = attrs.field(validator=attrs.validators.min_len(1))
    type: str = attrs.field(default="BIGINT", validator=attrs.validators.min_len(1))


@attrs.frozen
class RollupDefinition:
    """The one definition of a rollup, rendered for every dialect."""

    granularity: Granularity = attrs.field(validator=attrs.validators.in_(GRANULARITIES))
    source: str = attrs.field(validator=attrs.validators.min_len(1))
    source_time: str = attrs.field(validator=attrs.validators.min_len(1))
    target: str = attrs.field(validator=attrs.validators.min_len(1))
    measures: tuple[Measure, ...] = attrs.field(
        validator=attrs.validators.deep_iterable(
            attrs.validators.instance_of(Measure), attrs.validators.instance_of(tuple)
        )
    )

    @property
    def measure_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.measures)


HOURLY: Final = RollupDefinition(
    granularity="hour",
    source="usage_events",
    source_time="occurred_at",
    target="analytics_hourly_rollups",
    measures=(
        Measure("request_count", "COUNT(*)"),
        Measure("tokens_total", "SUM(tokens_consumed)"),
        Measure("error_count", "COUNT(*) FILTER (WHERE status = 'error')"),
        Measure("rate_limited_count", "COUNT(*) FILTER (WHERE status = 'rate_limited')"),
        Measure("cost_usd", "SUM(cost_usd)", "DECIMAL(18, 8)"),
        Measure("latency_ms_sum", "SUM(latency_ms)"),
    ),
)
"""Hourly rollups from raw usage events."""

DAILY: Final = RollupDefinition(
    granularity="day",
    source="analytics_hourly_rollups",
    source_time="bucket_start",
    target="analytics_daily_rollups",
    measures=tuple(Measure(m.name, f"SUM({m.name})", m.type) for m in HOURLY.measures),
)
"""Daily rollups from hourly rollups (never from raw events: the reference's fault)."""

DEFINITIONS: Final[Mapping[str, RollupDefinition]] = {"hour": HOURLY, "day": DAILY}


# -- rendering ---------------------------------------------------------------------------------


def literal(value: object) -> exp.Expression:
    """A typed SQL literal for a Python value (the only way values enter statements)."""
    from sqlglot import exp  # noqa: PLC0415 -- sqlglot is imported lazily

    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetimes bound into rollup statements must be timezone-aware")
        text = value.astimezone(UTC).isoformat(sep=" ")
        return exp.cast(exp.Literal.string(text), "TIMESTAMPTZ")
    if isinstance(value, uuid.UUID):
        return exp.cast(exp.Literal.string(str(value)), "UUID")
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, tuple | list):
        return exp.Tuple(expressions=[literal(v) for v in value])
    raise TypeError(f"cannot bind a {type(value).__name__} into a rollup statement")


@functools.lru_cache(maxsize=256)
def _parse(sql: str) -> exp.Expression:
    import sqlglot  # noqa: PLC0415 -- sqlglot is imported lazily

    return cast("exp.Expression", sqlglot.parse_one(sql, read="postgres"))


def bind(expression: exp.Expression, values: Mapping[str, object]) -> exp.Expression:
    """``expression`` with every ``:name`` placeholder replaced by the literal of its value."""
    from sqlglot import exp  # noqa: PLC0415 -- sqlglot is imported lazily

    missing: set[str] = set()

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder):
            name = str(node.name)
            if name not in values:
                missing.add(name)
                return node
            return literal(values[name])
        return node

    bound = expression.copy().transform(swap)
    if missing:
        raise KeyError(f"no value for placeholder(s) {sorted(missing)}")
    return bound


def render(sql: str | exp.Expression, dialect: Dialect, /, **values: object) -> str:
    """Render canonical SQL (PostgreSQL dialect, ``:name`` placeholders) for ``dialect``."""
    if dialect not in DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}; supported: {', '.join(DIALECTS)}")
    expression = _parse(sql) if isinstance(sql, str) else sql
    return bind(expression, values).sql(dialect=dialect)


def _key_match(left: str, right: str) -> str:
    return (
        f"{left}.bucket_start = {right}.bucket_start "
        f"AND {left}.organization_id = {right}.organization_id "
        f"AND COALESCE({left}.model_id, CAST('{NIL_UUID}' AS UUID)) = "
        f"COALESCE({right}.model_id, CAST('{NIL_UUID}' AS UUID))"
    )


@functools.lru_cache(maxsize=8)
def select_sql(granularity: Granularity) -> str:
    """The canonical aggregate query of a rollup over ``[:window_start, :window_end)``."""
    d = DEFINITIONS[granularity]
    measures = ", ".join(f"CAST({m.expression} AS {m.type}) AS {m.name}" for m in d.measures)
    return (
        f"SELECT DATE_TRUNC('{d.granularity}', {d.source_time}) AS bucket_start, "  # noqa: S608
        f"organization_id, model_id, {measures} "
        f"FROM {d.source} "
        f"WHERE {d.source_time} >= :window_start AND {d.source_time} < :window_end "
        "GROUP BY 1, 2, 3"
    )


@functools.lru_cache(maxsize=8)
def replacement_sql(granularity: Granularity) -> tuple[str, str, str, str, str, str]:
    """Stage, delete-vanished, update-changed, insert-new, touch and drop-stage statements.

    Together (in one transaction) they make the target's buckets in the window equal to the
    aggregate: rows whose key no longer occurs are deleted (raw events deleted), rows whose
    measures changed are updated (``updated_at`` moves), new keys are inserted, and every row
    of the window gets ``last_reconciled_at``. Re-running a window therefore keeps ids and
    ``created_at`` and leaves identical aggregates.
    """
    d = DEFINITIONS[granularity]
    t = d.target
    in_window = "t.bucket_start >= :window_start AND t.bucket_start < :window_end"
    stage = f"CREATE TEMPORARY TABLE {STAGE_TABLE} AS {select_sql(granularity)}"
    delete = (
        f"DELETE FROM {t} AS t WHERE {in_window} AND NOT EXISTS "  # noqa: S608
        f"(SELECT 1 FROM {STAGE_TABLE} AS s WHERE {_key_match('s', 't')})"
    )
    changed = " OR ".join(f"t.{m} <> s.{m}" for m in d.measure_names)
    sets = ", ".join(f"{m} = s.{m}" for m in d.measure_names)
    update = (
        f"UPDATE {t} AS t SET {sets}, updated_at = :now, last_reconciled_at = :now "  # noqa: S608
        f"FROM {STAGE_TABLE} AS s WHERE {in_window} AND {_key_match('s', 't')} AND ({changed})"
    )
    cols = ", ".join((*KEY_COLUMNS, *d.measure_names))
    s_cols = ", ".join(f"s.{c}" for c in (*KEY_COLUMNS, *d.measure_names))
    insert = (
        f"INSERT INTO {t} ({cols}, last_reconciled_at, created_at, updated_at) "  # noqa: S608
        f"SELECT {s_cols}, :now, :now, :now FROM {STAGE_TABLE} AS s WHERE NOT EXISTS "
        f"(SELECT 1 FROM {t} AS t WHERE {in_window} AND {_key_match('s', 't')})"
    )
    touch = (
        f"UPDATE {t} AS t SET last_reconciled_at = :now "  # noqa: S608
        f"WHERE {in_window} AND t.last_reconciled_at <> :now"
    )
    return stage, delete, update, insert, touch, f"DROP TABLE {STAGE_TABLE}"


STAGE_TOTALS: Final = (
    f"SELECT COUNT(*), CAST(COALESCE(SUM(request_count), 0) AS BIGINT) FROM {STAGE_TABLE}"  # noqa: S608
)

# -- state -------------------------------------------------------------------------------------

AFFECTED_HOURS: Final = (
    "SELECT DISTINCT DATE_TRUNC('hour', occurred_at) FROM usage_events "
    "WHERE ingested_at > :since AND ingested_at <= :until ORDER BY 1"
)
ALL_HOURS: Final = (
    "SELECT DISTINCT DATE_TRUNC('hour', occurred_at) FROM usage_events "
    "WHERE ingested_at <= :until ORDER BY 1"
)
INVALIDATED_DAYS: Final = (
    "SELECT bucket_start FROM analytics_daily_rollup_invalidations ORDER BY bucket_start"
)
INVALIDATE_DAY: Final = (
    "INSERT INTO analytics_daily_rollup_invalidations (bucket_start, created_at) "
    "SELECT :day, :now WHERE NOT EXISTS (SELECT 1 FROM analytics_daily_rollup_invalidations "
    "WHERE bucket_start = :day)"
)
CLEAR_INVALIDATIONS: Final = (
    "DELETE FROM analytics_daily_rollup_invalidations "
    "WHERE bucket_start >= :window_start AND bucket_start < :window_end"
)
GET_WATERMARK: Final = (
    "SELECT watermark FROM analytics_rollup_watermarks WHERE granularity = :granularity"
)
INSERT_WATERMARK: Final = (
    "INSERT INTO analytics_rollup_watermarks (granularity, watermark, last_run_id, last_run_at, "
    "created_at, updated_at) SELECT :granularity, :watermark, :run_id, :now, :now, :now "
    "WHERE NOT EXISTS (SELECT 1 FROM analytics_rollup_watermarks WHERE granularity = :granularity)"
)
UPDATE_WATERMARK: Final = (
    "UPDATE analytics_rollup_watermarks SET watermark = :watermark, last_run_id = :run_id, "
    "last_run_at = :now, updated_at = :now WHERE granularity = :granularity"
)
INSERT_RUN: Final = (
    "INSERT INTO analytics_rollup_runs (analytics_rollup_run_id, target, granularity, mode, "
    "status, window_start, window_end, watermark_before, started_at, created_at) "
    "VALUES (:run_id, :target, :granularity, :mode, 'running', :window_start, :window_end, "
    ":watermark_before, :now, :now)"
)
FINISH_RUN: Final = (
    "UPDATE analytics_rollup_runs SET status = :status, window_start = :window_start, "
    "window_end = :window_end, watermark_after = :watermark_after, windows = :windows, "
    "buckets_recomputed = :buckets, source_events = :events, rows_inserted = :inserted, "
    "rows_updated = :updated, rows_deleted = :deleted, error_code = :error_code, "
    "error_message = :error_message, finished_at = :now "
    "WHERE analytics_rollup_run_id = :run_id"
)
GET_CHECKPOINT: Final = (
    "SELECT next_start, windows_done, status FROM analytics_rollup_backfill_checkpoints "
    "WHERE granularity = :granularity AND range_start = :range_start AND range_end = :range_end"
)
INSERT_CHECKPOINT: Final = (
    "INSERT INTO analytics_rollup_backfill_checkpoints (granularity, range_start, range_end, "
    "next_start, windows_done, status, last_run_id, created_at, updated_at) "
    "VALUES (:granularity, :range_start, :range_end, :range_start, 0, 'running', :run_id, "
    ":now, :now)"
)
RESTART_CHECKPOINT: Final = (
    "UPDATE analytics_rollup_backfill_checkpoints SET next_start = range_start, "
    "windows_done = 0, status = 'running', completed_at = NULL, last_run_id = :run_id, "
    "updated_at = :now WHERE granularity = :granularity AND range_start = :range_start "
    "AND range_end = :range_end"
)
ADVANCE_CHECKPOINT: Final = (
    "UPDATE analytics_rollup_backfill_checkpoints SET next_start = :next_start, "
    "windows_done = windows_done + 1, status = :status, last_run_id = :run_id, "
    "completed_at = :completed_at, updated_at = :now WHERE granularity = :granularity "
    "AND range_start = :range_start AND range_end = :range_end"
)

# -- dashboards --------------------------------------------------------------------------------


def usage_sql(
    granularity: Granularity,
    *,
    by: Literal["organization", "model"],
    organization_ids: Sequence[uuid.UUID] = (),
    model_ids: Sequence[uuid.UUID] = (),
    with_null_model: bool = False,
) -> str:
    """Usage per bucket and organisation (or model) over ``[:range_start, :range_end)``."""
    d = DEFINITIONS[granularity]
    key = "organization_id" if by == "organization" else "model_id"
    sums = ", ".join(f"CAST(SUM({m}) AS {t})" for m, t in ((x.name, x.type) for x in d.measures))
    where = ["bucket_start >= :range_start", "bucket_start < :range_end"]
    if organization_ids:
        names = ", ".join(f":organization_{i}" for i in range(len(organization_ids)))
        where.append(f"organization_id IN ({names})")
    if model_ids or with_null_model:
        names = ", ".join(f":model_{i}" for i in range(len(model_ids)))
        parts = [f"model_id IN ({names})"] if model_ids else []
        if with_null_model:
            parts.append("model_id IS NULL")
        where.append("(" + " OR ".join(parts) + ")")
    return (
        f"SELECT bucket_start, {key}, {sums} FROM {d.target} WHERE {' AND '.join(where)} "  # noqa: S608
        f"GROUP BY bucket_start, {key} ORDER BY bucket_start, {key} NULLS FIRST"
    )
