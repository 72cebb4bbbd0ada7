"""Usage rollups: the targets file, the SQL backends, the engine and reconciliation."""

from __future__ import annotations

from aiaas_db.analytics._engine import (
    RollupEngine,
    backfill,
    reconcile,
    run_rollup,
    trigger_rollup,
    usage_by_model,
    usage_by_organization,
)
from aiaas_db.analytics._models import (
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
    UsageRow,
)
from aiaas_db.analytics._reconcile import builtin_checks, load_checks
from aiaas_db.analytics._sql import (
    Granularity,
    Measure,
    RollupDefinition,
)
from aiaas_db.analytics._targets import load_rollup_targets, rollup_target

__all__ = [
    "CheckResult",
    "Granularity",
    "Measure",
    "ReconciliationCheck",
    "ReconciliationReport",
    "RollupConfigError",
    "RollupDefinition",
    "RollupEngine",
    "RollupError",
    "RollupFailedError",
    "RollupLockedError",
    "RollupProgress",
    "RollupReport",
    "RollupSchemaMissingError",
    "RollupTarget",
    "RollupUnavailableError",
    "RollupWindowError",
    "UsageRow",
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
