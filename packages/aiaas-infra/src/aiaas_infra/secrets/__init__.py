"""Secrets: the store, sealing for sealed-secrets and rotation."""

from __future__ import annotations

from aiaas_infra.secrets._sealing import (
    SealingCertificate,
    SealingError,
    SealingScope,
    UnsealError,
    oaep_label,
    seal,
    unseal,
)
from aiaas_infra.secrets._secrets import (
    FreshnessItem,
    FreshnessReport,
    SealedItem,
    SealedStore,
    SecretNotSealedError,
    SecretsError,
    freshness_report,
    rotate_secret,
    seal_secret,
    sealed_secret_manifest,
    secret_name,
    value_digest,
)

__all__ = [
    "FreshnessItem",
    "FreshnessReport",
    "SealedItem",
    "SealedStore",
    "SealingCertificate",
    "SealingError",
    "SealingScope",
    "SecretNotSealedError",
    "SecretsError",
    "UnsealError",
    "freshness_report",
    "oaep_label",
    "rotate_secret",
    "seal",
    "seal_secret",
    "sealed_secret_manifest",
    "secret_name",
    "unseal",
    "value_digest",
]
