"""Handing an environment off: access packages and the handoff API."""

from __future__ import annotations

from aiaas_infra.access._access import (
    AccessPackage,
    AccessRequestError,
    AccessRevocation,
    KubeApiError,
    PackageNotFoundError,
    check_access_request,
    issue_access,
    kubeconfig_document,
    read_package,
    revoke_access,
    revoke_package,
)
from aiaas_infra.access._handoff import (
    EnvironmentLockedError,
    EnvironmentNotFoundError,
    create_handoff_app,
    default_handoff_policy,
    deployment_guide,
    handoff_document,
    handoff_openapi,
    is_production,
    max_ttl,
    observability_links,
)

__all__ = [
    "AccessPackage",
    "AccessRequestError",
    "AccessRevocation",
    "EnvironmentLockedError",
    "EnvironmentNotFoundError",
    "KubeApiError",
    "PackageNotFoundError",
    "check_access_request",
    "create_handoff_app",
    "default_handoff_policy",
    "deployment_guide",
    "handoff_document",
    "handoff_openapi",
    "is_production",
    "issue_access",
    "kubeconfig_document",
    "max_ttl",
    "observability_links",
    "read_package",
    "revoke_access",
    "revoke_package",
]
