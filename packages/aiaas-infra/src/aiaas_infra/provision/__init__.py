"""Provisioning Linode environments: resources, plan, preflight, apply, provider, state, drift
and events."""

from __future__ import annotations

from aiaas_infra.provision._apply import (
    ApplyError,
    ApplyResult,
    StepRecord,
    apply,
)
from aiaas_infra.provision._drift import (
    DriftFinding,
    DriftReport,
    detect_drift,
)
from aiaas_infra.provision._events import (
    EnvironmentStatus,
)
from aiaas_infra.provision._plan import (
    Change,
    FieldDiff,
    Plan,
    make_plan,
    plan,
    rollback_plan,
)
from aiaas_infra.provision._preflight import (
    preflight,
)
from aiaas_infra.provision._provider import LinodeProvider
from aiaas_infra.provision._provider_api import Inventory, Scope
from aiaas_infra.provision._resources import (
    Desired,
    LiveResource,
    desired_resources,
)
from aiaas_infra.provision._state import (
    EnvironmentRecord,
    LocalStateBackend,
    LockInfo,
    ResourceRecord,
    S3StateBackend,
    SnapshotInfo,
    StateBackend,
    StateSnapshot,
    StateStore,
    Transition,
    open_state,
)

__all__ = [
    "ApplyError",
    "ApplyResult",
    "Change",
    "Desired",
    "DriftFinding",
    "DriftReport",
    "EnvironmentRecord",
    "EnvironmentStatus",
    "FieldDiff",
    "Inventory",
    "LinodeProvider",
    "LiveResource",
    "LocalStateBackend",
    "LockInfo",
    "Plan",
    "ResourceRecord",
    "S3StateBackend",
    "Scope",
    "SnapshotInfo",
    "StateBackend",
    "StateSnapshot",
    "StateStore",
    "StepRecord",
    "Transition",
    "apply",
    "desired_resources",
    "detect_drift",
    "make_plan",
    "open_state",
    "plan",
    "preflight",
    "rollback_plan",
]
