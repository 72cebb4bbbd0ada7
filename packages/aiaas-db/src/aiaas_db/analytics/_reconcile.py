"""Reconciliation checks: the contract's, their daily equivalents and the stricter built-ins.

Each check is a query that must return no rows. The daily equivalents are derived by rewriting
the checks' syntax tree; a check is scoped to a time range by rewriting every read of raw events
or rollups into a filtered subquery.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from aiaas_db.analytics._models import ReconciliationCheck, RollupConfigError

if TYPE_CHECKING:
    from sqlglot import exp

__all__ = ["builtin_checks", "load_checks"]

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

    from aiaas_db.analytics._sql import literal  # noqa: PLC0415

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
