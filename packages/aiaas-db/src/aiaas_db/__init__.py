"""aiaas-db: safe, versioned PostgreSQL schema changes with the platform's guardrails.

Change sets (``YYYYMMDDHHMM_slug.up.sql`` / ``.down.sql``) from a directory or package resources,
applied under an advisory lock with history, audit, dry runs, checks, dual approval, explicit
recovery and drills; state kept compatible with golang-migrate's ``schema_migrations``; and a local
PostgreSQL cluster from the machine's binaries for tests and local work.

``import aiaas_db`` is cheap: each name is imported from its private module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> private module that defines it. Kept in step with __all__ by tests/test_public_api.py.
_LAZY: dict[str, str] = {
    # _errors
    "ApprovalRequiredError": "_errors",
    "ChangeSetError": "_errors",
    "ChecksumMismatchError": "_errors",
    "DatabaseUnavailableError": "_errors",
    "DrillFailedError": "_errors",
    "LocalPostgresError": "_errors",
    "LockTimeoutError": "_errors",
    "MigrationCheckFailedError": "_errors",
    "MigrationDirtyError": "_errors",
    "MigrationError": "_errors",
    "MigrationFailedError": "_errors",
    "MigrationFailedHeadError": "_errors",
    "MigrationNotFoundError": "_errors",
    "MigrationRefusedError": "_errors",
    "MissingChangeSetError": "_errors",
    "NothingToRecoverError": "_errors",
    "OutOfOrderError": "_errors",
    "PostgresNotFoundError": "_errors",
    # _changesets
    "ChangeSet": "_changesets",
    "ChangeSetSource": "_changesets",
    "DirectorySource": "_changesets",
    "PackageSource": "_changesets",
    "Script": "_changesets",
    "StaticSource": "_changesets",
    "load_change_sets": "_changesets",
    "script_checksum": "_changesets",
    # _sqlsplit
    "split_statements": "_sqlsplit",
    # _local
    "LocalPostgres": "_local",
    "LocalPostgresInfo": "_local",
    "PostgresBinaries": "_local",
    "default_data_dir": "_local",
    "find_postgres_binaries": "_local",
    # _lock
    "AdvisoryLock": "_lock",
    "golang_migrate_lock_key": "_lock",
    "lock_keys": "_lock",
    "migrator_lock_key": "_lock",
    # _state
    "HistoryEntry": "_state",
    # _models
    "AppliedChangeSet": "_models",
    "DrillReport": "_models",
    "DrillStep": "_models",
    "MigrationResult": "_models",
    "MigrationStatus": "_models",
    "PendingChangeSet": "_models",
    "PreCheck": "_models",
    "RunReport": "_models",
    # _fingerprint
    "CatalogFingerprint": "_fingerprint",
    "catalog_fingerprint": "_fingerprint",
    # _migrator
    "PROTECTED_ENVIRONMENTS": "_migrator",
    "Migrator": "_migrator",
    "RecoverAction": "_migrator",
}

__all__ = [
    "AdvisoryLock",
    "AppliedChangeSet",
    "ApprovalRequiredError",
    "CatalogFingerprint",
    "ChangeSet",
    "ChangeSetError",
    "ChangeSetSource",
    "ChecksumMismatchError",
    "DatabaseUnavailableError",
    "DirectorySource",
    "DrillFailedError",
    "DrillReport",
    "DrillStep",
    "HistoryEntry",
    "LocalPostgres",
    "LocalPostgresError",
    "LocalPostgresInfo",
    "LockTimeoutError",
    "MigrationCheckFailedError",
    "MigrationDirtyError",
    "MigrationError",
    "MigrationFailedError",
    "MigrationFailedHeadError",
    "MigrationNotFoundError",
    "MigrationRefusedError",
    "MigrationResult",
    "MigrationStatus",
    "Migrator",
    "MissingChangeSetError",
    "NothingToRecoverError",
    "OutOfOrderError",
    "PROTECTED_ENVIRONMENTS",
    "PackageSource",
    "PendingChangeSet",
    "PostgresBinaries",
    "PostgresNotFoundError",
    "PreCheck",
    "RecoverAction",
    "RunReport",
    "Script",
    "StaticSource",
    "__version__",
    "catalog_fingerprint",
    "default_data_dir",
    "find_postgres_binaries",
    "golang_migrate_lock_key",
    "load_change_sets",
    "lock_keys",
    "migrator_lock_key",
    "script_checksum",
    "split_statements",
]

if TYPE_CHECKING:
    from aiaas_db._changesets import (
        ChangeSet,
        ChangeSetSource,
        DirectorySource,
        PackageSource,
        Script,
        StaticSource,
        load_change_sets,
        script_checksum,
    )
    from aiaas_db._errors import (
        ApprovalRequiredError,
        ChangeSetError,
        ChecksumMismatchError,
        DatabaseUnavailableError,
        DrillFailedError,
        LocalPostgresError,
        LockTimeoutError,
        MigrationCheckFailedError,
        MigrationDirtyError,
        MigrationError,
        MigrationFailedError,
        MigrationFailedHeadError,
        MigrationNotFoundError,
        MigrationRefusedError,
        MissingChangeSetError,
        NothingToRecoverError,
        OutOfOrderError,
        PostgresNotFoundError,
    )
    from aiaas_db._fingerprint import CatalogFingerprint, catalog_fingerprint
    from aiaas_db._local import (
        LocalPostgres,
        LocalPostgresInfo,
        PostgresBinaries,
        default_data_dir,
        find_postgres_binaries,
    )
    from aiaas_db._lock import (
        AdvisoryLock,
        golang_migrate_lock_key,
        lock_keys,
        migrator_lock_key,
    )
    from aiaas_db._migrator import PROTECTED_ENVIRONMENTS, Migrator, RecoverAction
    from aiaas_db._models import (
        AppliedChangeSet,
        DrillReport,
        DrillStep,
        MigrationResult,
        MigrationStatus,
        PendingChangeSet,
        PreCheck,
        RunReport,
    )
    from aiaas_db._sqlsplit import split_statements
    from aiaas_db._state import HistoryEntry


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiaas_db' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aiaas_db.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
