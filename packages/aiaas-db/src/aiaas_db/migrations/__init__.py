"""Versioned schema changes: change sets, the migrator, its state, lock, fingerprints and
reports."""

from __future__ import annotations

from aiaas_db.migrations._changesets import (
    ChangeSet,
    ChangeSetSource,
    DirectorySource,
    PackageSource,
    Script,
    StaticSource,
    load_change_sets,
    script_checksum,
)
from aiaas_db.migrations._fingerprint import (
    CatalogFingerprint,
    catalog_fingerprint,
)
from aiaas_db.migrations._lock import (
    AdvisoryLock,
    golang_migrate_lock_key,
    lock_keys,
    migrator_lock_key,
)
from aiaas_db.migrations._migrator import (
    Migrator,
    RecoverAction,
)
from aiaas_db.migrations._models import (
    AppliedChangeSet,
    DrillReport,
    DrillStep,
    MigrationResult,
    MigrationStatus,
    PendingChangeSet,
    PreCheck,
    RunReport,
)
from aiaas_db.migrations._sqlsplit import (
    split_statements,
)
from aiaas_db.migrations._state import (
    HistoryEntry,
)

__all__ = [
    "AdvisoryLock",
    "AppliedChangeSet",
    "CatalogFingerprint",
    "ChangeSet",
    "ChangeSetSource",
    "DirectorySource",
    "DrillReport",
    "DrillStep",
    "HistoryEntry",
    "MigrationResult",
    "MigrationStatus",
    "Migrator",
    "PackageSource",
    "PendingChangeSet",
    "PreCheck",
    "RecoverAction",
    "RunReport",
    "Script",
    "StaticSource",
    "catalog_fingerprint",
    "golang_migrate_lock_key",
    "load_change_sets",
    "lock_keys",
    "migrator_lock_key",
    "script_checksum",
    "split_statements",
]
