"""The platform's own data: its schema components, seeds, PII handling, purge, partitions,
classification, audit, API keys, budgets, usage events and synthetic data."""

from __future__ import annotations

from aiaas_db.platform._apikey_store import (
    PostgresApiKeyStore,
)
from aiaas_db.platform._audit import (
    AuditActorType,
    AuditRow,
    reveal_actor,
    write_audit,
    write_audit_async,
)
from aiaas_db.platform._budget import (
    Budget,
    BudgetPeriod,
    BudgetTracker,
    BudgetUnavailableError,
)
from aiaas_db.platform._classification import (
    Classification,
    ClassificationError,
    ClassifiedEntity,
    ClassifiedField,
    contract_coverage_problems,
    load_classification,
    platform_classification,
)
from aiaas_db.platform._components import (
    PLATFORM_COMPONENTS,
    PlatformComponent,
    platform_source,
)
from aiaas_db.platform._partitions import (
    EnsureReport,
    PartitionInfo,
    RetainReport,
    ensure_partitions,
    list_partitions,
    parse_days,
    retain_partitions,
)
from aiaas_db.platform._pii import (
    PiiDecryptionError,
    PiiKeyError,
    PiiProtector,
)
from aiaas_db.platform._purge import (
    PurgeError,
    PurgeReport,
    anonymized_marker,
    purge,
)
from aiaas_db.platform._seeds import (
    SEED_PACKAGES,
    LoadProgress,
    SeedError,
    SeedReport,
    derive_api_key,
    local_dev_api_key,
    resolve_seed_secret,
    rich_progress,
    seed,
    seed_api_key_hash_key,
    seed_api_key_hasher,
    seed_uuid,
)
from aiaas_db.platform._synthetic import (
    SyntheticError,
    SyntheticReport,
    load_synthetic,
    load_synthetic_audit,
)
from aiaas_db.platform._usage import (
    USAGE_EVENT_COLUMNS,
    UsageEvent,
    UsageStats,
    UsageStatus,
    UsageWriter,
)

__all__ = [
    "AuditActorType",
    "AuditRow",
    "Budget",
    "BudgetPeriod",
    "BudgetTracker",
    "BudgetUnavailableError",
    "Classification",
    "ClassificationError",
    "ClassifiedEntity",
    "ClassifiedField",
    "EnsureReport",
    "LoadProgress",
    "PLATFORM_COMPONENTS",
    "PartitionInfo",
    "PiiDecryptionError",
    "PiiKeyError",
    "PiiProtector",
    "PlatformComponent",
    "PostgresApiKeyStore",
    "PurgeError",
    "PurgeReport",
    "RetainReport",
    "SEED_PACKAGES",
    "SeedError",
    "SeedReport",
    "SyntheticError",
    "SyntheticReport",
    "USAGE_EVENT_COLUMNS",
    "UsageEvent",
    "UsageStats",
    "UsageStatus",
    "UsageWriter",
    "anonymized_marker",
    "contract_coverage_problems",
    "derive_api_key",
    "ensure_partitions",
    "list_partitions",
    "load_classification",
    "load_synthetic",
    "load_synthetic_audit",
    "local_dev_api_key",
    "parse_days",
    "platform_classification",
    "platform_source",
    "purge",
    "resolve_seed_secret",
    "retain_partitions",
    "reveal_actor",
    "rich_progress",
    "seed",
    "seed_api_key_hash_key",
    "seed_api_key_hasher",
    "seed_uuid",
    "write_audit",
    "write_audit_async",
]
