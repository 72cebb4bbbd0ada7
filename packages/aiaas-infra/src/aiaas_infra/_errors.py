"""The errors aiaas-infra raises, on the aiaas-core error tree.

::

    aiaas_core.ValidationError
    ├── SpecError               SPEC_INVALID            the platform spec is malformed or invalid
    └── PreflightError          PREFLIGHT_FAILED        the account or region cannot take the plan
    aiaas_core.AiaasError
    ├── LinodeApiError          LINODE_API_ERROR        the Linode API refused a request
    │   └── AccountLimitError   LINODE_ACCOUNT_LIMIT    an account limit was reached
    ├── ReadinessTimeoutError   READINESS_TIMEOUT       a resource did not become ready in time
    ├── ApplyError              APPLY_FAILED            an apply failed (``result`` says what);
    │                                                   in provision._apply, beside ApplyResult
    └── StateError              STATE_INVALID           a state document cannot be read
    aiaas_core.NotFoundError
    └── SnapshotNotFoundError   SNAPSHOT_NOT_FOUND
    aiaas_core.LockedError
    └── StateLockedError        STATE_LOCKED            another apply holds the state lock

Every problem-carrying error (:class:`SpecError`, :class:`PreflightError`) lists *all* problems
found, each naming the exact place (``cluster.pools[1].autoscaler.max``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from aiaas_core import AiaasError, LockedError, NotFoundError, ValidationError

__all__ = [
    "AccountLimitError",
    "LinodeApiError",
    "PreflightError",
    "PreflightProblem",
    "ReadinessTimeoutError",
    "SnapshotNotFoundError",
    "SpecError",
    "SpecProblem",
    "StateError",
    "StateLockedError",
]


@attrs.frozen
class SpecProblem:
    """One problem in a platform spec: where (a dotted path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@attrs.frozen
class PreflightProblem:
    """One reason the plan cannot be applied: a stable ``code``, where, and what to do."""

    code: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.subject}: {self.message}"


def _listing(header: str, items: Iterable[object]) -> str:
    lines = [str(i) for i in items]
    return f"{header} ({len(lines)}):\n  - " + "\n  - ".join(lines) if lines else header


class SpecError(ValidationError):
    """The platform spec could not be loaded; ``problems`` holds every problem found."""

    code = "SPEC_INVALID"
    title = "Invalid platform spec"

    def __init__(self, problems: Iterable[SpecProblem], *, source: str | None = None) -> None:
        self.problems: tuple[SpecProblem, ...] = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(_listing(f"invalid platform spec{where}", self.problems))


class PreflightError(ValidationError):
    """Preflight found problems; nothing was created. ``problems`` lists all of them."""

    code = "PREFLIGHT_FAILED"
    title = "Preflight failed"

    def __init__(self, problems: Iterable[PreflightProblem]) -> None:
        self.problems: tuple[PreflightProblem, ...] = tuple(problems)
        super().__init__(
            _listing("preflight failed, nothing was created; fix these", self.problems)
        )


class LinodeApiError(AiaasError):
    """The Linode API answered with an error that retrying did not fix.

    ``api_status`` is the HTTP status Linode returned; ``reasons`` are its error reasons
    (``field: reason``). The token never appears here.
    """

    code = "LINODE_API_ERROR"
    status = 502
    title = "Linode API error"

    def __init__(
        self,
        message: str,
        *,
        api_status: int | None = None,
        reasons: Iterable[str] = (),
        operation: str | None = None,
    ) -> None:
        self.api_status = api_status
        self.reasons = tuple(reasons)
        self.operation = operation
        super().__init__(message)


class AccountLimitError(LinodeApiError):
    """Linode refused a create because an account limit was reached."""

    code = "LINODE_ACCOUNT_LIMIT"
    title = "Account limit reached"


class ReadinessTimeoutError(AiaasError):
    """A resource did not become ready before its timeout."""

    code = "READINESS_TIMEOUT"
    status = 504
    title = "Timed out waiting for readiness"


class StateError(AiaasError):
    """A state document is missing fields, of an unknown format, or not JSON."""

    code = "STATE_INVALID"
    title = "Invalid state"


class SnapshotNotFoundError(NotFoundError):
    code = "SNAPSHOT_NOT_FOUND"
    title = "Snapshot not found"


class StateLockedError(LockedError):
    """Another run holds the state lock. ``holder`` describes it (who, when, which run)."""

    code = "STATE_LOCKED"
    title = "State is locked"

    def __init__(self, message: str, *, holder: dict[str, Any] | None = None) -> None:
        self.holder = dict(holder or {})
        super().__init__(message)
