"""aiaas-infra: declare a platform's environments in one file; plan, apply, detect drift and
roll back on Akamai Linode through the official ``linode_api4`` SDK.

::

    from aiaas_infra import LinodeProvider, StateStore, LocalStateBackend, apply, load_spec, plan

    spec = load_spec("platform.yaml")
    provider = LinodeProvider.from_env()  # LINODE_TOKEN, LINODE_API_URL
    store = StateStore(LocalStateBackend(".aiaas-infra"))
    changes = plan(spec, provider, store.latest())
    result = apply(changes, provider, store=store)

``import aiaas_infra`` is cheap: each name is imported from its private module on first use.
The Linode API emulator for tests lives in :mod:`aiaas_infra.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> private module that defines it. Kept in step with __all__ by tests/test_public_api.py.
_LAZY: dict[str, str] = {
    # _apply
    "ApplyResult": "_apply",
    "StepRecord": "_apply",
    "apply": "_apply",
    # _cli
    "ExitCode": "_cli",
    # _drift
    "DriftFinding": "_drift",
    "DriftReport": "_drift",
    "detect_drift": "_drift",
    # _errors
    "AccountLimitError": "_errors",
    "ApplyError": "_errors",
    "LinodeApiError": "_errors",
    "PreflightError": "_errors",
    "PreflightProblem": "_errors",
    "ReadinessTimeoutError": "_errors",
    "SnapshotNotFoundError": "_errors",
    "SpecError": "_errors",
    "SpecProblem": "_errors",
    "StateError": "_errors",
    "StateLockedError": "_errors",
    # _events
    "EnvironmentStatus": "_events",
    # _model
    "Desired": "_model",
    "LiveResource": "_model",
    "desired_resources": "_model",
    # _plan
    "Change": "_plan",
    "FieldDiff": "_plan",
    "Plan": "_plan",
    "make_plan": "_plan",
    "plan": "_plan",
    "rollback_plan": "_plan",
    # _preflight
    "preflight": "_preflight",
    # _provider
    "Inventory": "_provider",
    "LinodeProvider": "_provider",
    "Scope": "_provider",
    # _retry
    "Clock": "_retry",
    "RetryPolicy": "_retry",
    "SystemClock": "_retry",
    # _spec
    "AccessKey": "_spec",
    "Addresses": "_spec",
    "Autoscaler": "_spec",
    "Bucket": "_spec",
    "BucketGrant": "_spec",
    "Cluster": "_spec",
    "Database": "_spec",
    "Environment": "_spec",
    "Firewall": "_spec",
    "FirewallRule": "_spec",
    "LifecycleRule": "_spec",
    "NodePool": "_spec",
    "ObjectStorage": "_spec",
    "PlatformSpec": "_spec",
    "Quota": "_spec",
    "Subnet": "_spec",
    "Taint": "_spec",
    "Vpc": "_spec",
    "example_spec_path": "_spec",
    "is_gpu_type": "_spec",
    "load_spec": "_spec",
    "spec_fingerprint": "_spec",
    "spec_from_dict": "_spec",
    "spec_to_dict": "_spec",
    # _state
    "EnvironmentRecord": "_state",
    "LocalStateBackend": "_state",
    "LockInfo": "_state",
    "ResourceRecord": "_state",
    "S3StateBackend": "_state",
    "SnapshotInfo": "_state",
    "StateBackend": "_state",
    "StateSnapshot": "_state",
    "StateStore": "_state",
    "Transition": "_state",
    "open_state": "_state",
}

__all__ = [
    "AccessKey",
    "AccountLimitError",
    "Addresses",
    "ApplyError",
    "ApplyResult",
    "Autoscaler",
    "Bucket",
    "BucketGrant",
    "Change",
    "Clock",
    "Cluster",
    "Database",
    "Desired",
    "DriftFinding",
    "DriftReport",
    "Environment",
    "EnvironmentRecord",
    "EnvironmentStatus",
    "ExitCode",
    "FieldDiff",
    "Firewall",
    "FirewallRule",
    "Inventory",
    "LifecycleRule",
    "LinodeApiError",
    "LinodeProvider",
    "LiveResource",
    "LocalStateBackend",
    "LockInfo",
    "NodePool",
    "ObjectStorage",
    "Plan",
    "PlatformSpec",
    "PreflightError",
    "PreflightProblem",
    "Quota",
    "ReadinessTimeoutError",
    "ResourceRecord",
    "RetryPolicy",
    "S3StateBackend",
    "Scope",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "SpecError",
    "SpecProblem",
    "StateBackend",
    "StateError",
    "StateLockedError",
    "StateSnapshot",
    "StateStore",
    "StepRecord",
    "Subnet",
    "SystemClock",
    "Taint",
    "Transition",
    "Vpc",
    "__version__",
    "apply",
    "desired_resources",
    "detect_drift",
    "example_spec_path",
    "is_gpu_type",
    "load_spec",
    "make_plan",
    "open_state",
    "plan",
    "preflight",
    "rollback_plan",
    "spec_fingerprint",
    "spec_from_dict",
    "spec_to_dict",
]

if TYPE_CHECKING:
    from aiaas_infra._apply import (
        ApplyResult,
        StepRecord,
        apply,
    )
    from aiaas_infra._cli import (
        ExitCode,
    )
    from aiaas_infra._drift import (
        DriftFinding,
        DriftReport,
        detect_drift,
    )
    from aiaas_infra._errors import (
        AccountLimitError,
        ApplyError,
        LinodeApiError,
        PreflightError,
        PreflightProblem,
        ReadinessTimeoutError,
        SnapshotNotFoundError,
        SpecError,
        SpecProblem,
        StateError,
        StateLockedError,
    )
    from aiaas_infra._events import (
        EnvironmentStatus,
    )
    from aiaas_infra._model import (
        Desired,
        LiveResource,
        desired_resources,
    )
    from aiaas_infra._plan import (
        Change,
        FieldDiff,
        Plan,
        make_plan,
        plan,
        rollback_plan,
    )
    from aiaas_infra._preflight import (
        preflight,
    )
    from aiaas_infra._provider import (
        Inventory,
        LinodeProvider,
        Scope,
    )
    from aiaas_infra._retry import (
        Clock,
        RetryPolicy,
        SystemClock,
    )
    from aiaas_infra._spec import (
        AccessKey,
        Addresses,
        Autoscaler,
        Bucket,
        BucketGrant,
        Cluster,
        Database,
        Environment,
        Firewall,
        FirewallRule,
        LifecycleRule,
        NodePool,
        ObjectStorage,
        PlatformSpec,
        Quota,
        Subnet,
        Taint,
        Vpc,
        example_spec_path,
        is_gpu_type,
        load_spec,
        spec_fingerprint,
        spec_from_dict,
        spec_to_dict,
    )
    from aiaas_infra._state import (
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiaas_infra' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aiaas_infra.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
