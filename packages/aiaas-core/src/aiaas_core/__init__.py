"""aiaas-core: the conventions every aiaas library and service shares.

Configuration, errors, auth (RBAC and API keys), keyed hashing, request context, health and
versioning. ``import aiaas_core`` is cheap: each name is imported from its private module the
first time it is used, so a service pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> private module that defines it. Kept in step with __all__ by tests/test_public_api.py.
_LAZY: dict[str, str] = {
    # _errors
    "AiaasError": "_errors",
    "AuthenticationError": "_errors",
    "BadRequestError": "_errors",
    "ConfigError": "_errors",
    "ConflictError": "_errors",
    "InternalError": "_errors",
    "LockedError": "_errors",
    "NotFoundError": "_errors",
    "PayloadTooLargeError": "_errors",
    "PermissionDeniedError": "_errors",
    "RateLimitedError": "_errors",
    "ServiceUnavailableError": "_errors",
    "ValidationError": "_errors",
    "as_aiaas_error": "_errors",
    "error_body": "_errors",
    "error_response": "_errors",
    "problem_details": "_errors",
    # _context
    "Actor": "_context",
    "accept_request_id": "_context",
    "get_actor": "_context",
    "get_request_id": "_context",
    "get_span_id": "_context",
    "get_trace_id": "_context",
    "new_request_id": "_context",
    "request_context": "_context",
    "set_actor": "_context",
    "set_trace": "_context",
    # _config
    "ConfigProblem": "_config",
    "Secret": "_config",
    "load_settings": "_config",
    "setting": "_config",
    "settings_summary": "_config",
    # _versioning
    "AiaasDeprecationWarning": "_versioning",
    "CompatibilityProblem": "_versioning",
    "CompatibilityReport": "_versioning",
    "Version": "_versioning",
    "VersionRange": "_versioning",
    "check_compatibility": "_versioning",
    "deprecated": "_versioning",
    # _hashing
    "HashKey": "_hashing",
    "KeyedHasher": "_hashing",
    "normalize_email": "_hashing",
    # _policy
    "Decision": "_policy",
    "Policy": "_policy",
    "PolicyBundle": "_policy",
    "PolicyError": "_policy",
    "PolicyRule": "_policy",
    "load_policy_bundle": "_policy",
    # _apikeys
    "ApiKey": "_apikeys",
    "ApiKeyRecord": "_apikeys",
    "ApiKeyStore": "_apikeys",
    "ApiKeyVerifier": "_apikeys",
    "InMemoryApiKeyStore": "_apikeys",
    "generate_api_key": "_apikeys",
    "parse_api_key": "_apikeys",
    # _auth_middleware
    "AuthMiddleware": "_auth_middleware",
    "RouteRule": "_auth_middleware",
    # _health
    "CheckResult": "_health",
    "HealthCheck": "_health",
    "HealthRegistry": "_health",
    "HealthReport": "_health",
    "HealthStatus": "_health",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:
    from aiaas_core._context import (
        Actor,
        accept_request_id,
        get_actor,
        get_request_id,
        get_span_id,
        get_trace_id,
        new_request_id,
        request_context,
        set_actor,
        set_trace,
    )
    from aiaas_core._errors import (
        AiaasError,
        AuthenticationError,
        BadRequestError,
        ConfigError,
        ConflictError,
        InternalError,
        LockedError,
        NotFoundError,
        PayloadTooLargeError,
        PermissionDeniedError,
        RateLimitedError,
        ServiceUnavailableError,
        ValidationError,
        as_aiaas_error,
        error_body,
        error_response,
        problem_details,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiaas_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"aiaas_core.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
