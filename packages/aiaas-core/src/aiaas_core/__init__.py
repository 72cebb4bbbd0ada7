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
    "Actor": "_context",
    "ActorKind": "_context",
    "AiaasDeprecationWarning": "_versioning",
    "AiaasError": "_errors",
    "ApiKey": "_apikeys",
    "ApiKeyRecord": "_apikeys",
    "ApiKeyStatus": "_apikeys",
    "ApiKeyStore": "_apikeys",
    "ApiKeyVerifier": "_apikeys",
    "AuthAuditEvent": "_auth_middleware",
    "AuthMiddleware": "_auth_middleware",
    "AuthenticationError": "_errors",
    "BadRequestError": "_errors",
    "CheckResult": "_health",
    "CompatibilityProblem": "_versioning",
    "CompatibilityReport": "_versioning",
    "ConfigError": "_errors",
    "ConfigProblem": "_config",
    "ConflictError": "_errors",
    "Decision": "_policy",
    "ErrorRenderer": "_serving",
    "ErrorRenderers": "_serving",
    "HashKey": "_hashing",
    "HealthCheck": "_health",
    "HealthRegistry": "_health",
    "HealthReport": "_health",
    "HealthStatus": "_health",
    "InMemoryApiKeyStore": "_apikeys",
    "InternalError": "_errors",
    "KeyedHasher": "_hashing",
    "LockedError": "_errors",
    "NotFoundError": "_errors",
    "PayloadTooLargeError": "_errors",
    "PermissionDeniedError": "_errors",
    "Policy": "_policy",
    "PolicyBundle": "_policy",
    "PolicyError": "_policy",
    "PolicyRule": "_policy",
    "RateDecision": "_ratelimit",
    "RateLimit": "_ratelimit",
    "RateLimitedError": "_errors",
    "RateLimiter": "_ratelimit",
    "RouteRule": "_auth_middleware",
    "Secret": "_config",
    "ServiceUnavailableError": "_errors",
    "ValidationError": "_errors",
    "Version": "_versioning",
    "VersionRange": "_versioning",
    "accept_request_id": "_context",
    "as_aiaas_error": "_errors",
    "check_compatibility": "_versioning",
    "deprecated": "_versioning",
    "error_body": "_errors",
    "error_response": "_errors",
    "error_response_schema": "_contracts",
    "generate_api_key": "_apikeys",
    "get_actor": "_context",
    "get_request_id": "_context",
    "get_span_id": "_context",
    "get_trace_id": "_context",
    "load_policy_bundle": "_policy",
    "load_settings": "_config",
    "new_request_id": "_context",
    "normalize_email": "_hashing",
    "parse_api_key": "_apikeys",
    "problem_details": "_errors",
    "request_context": "_context",
    "run_lifespan": "_serving",
    "send_json": "_serving",
    "set_actor": "_context",
    "set_trace": "_context",
    "setting": "_config",
    "settings_summary": "_config",
    "signals_end_normally": "_serving",
}

__all__ = [
    "Actor",
    "ActorKind",
    "AiaasDeprecationWarning",
    "AiaasError",
    "ApiKey",
    "ApiKeyRecord",
    "ApiKeyStatus",
    "ApiKeyStore",
    "ApiKeyVerifier",
    "AuthAuditEvent",
    "AuthMiddleware",
    "AuthenticationError",
    "BadRequestError",
    "CheckResult",
    "CompatibilityProblem",
    "CompatibilityReport",
    "ConfigError",
    "ConfigProblem",
    "ConflictError",
    "Decision",
    "ErrorRenderer",
    "ErrorRenderers",
    "HashKey",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
    "InMemoryApiKeyStore",
    "InternalError",
    "KeyedHasher",
    "LockedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Policy",
    "PolicyBundle",
    "PolicyError",
    "PolicyRule",
    "RateDecision",
    "RateLimit",
    "RateLimitedError",
    "RateLimiter",
    "RouteRule",
    "Secret",
    "ServiceUnavailableError",
    "ValidationError",
    "Version",
    "VersionRange",
    "__version__",
    "accept_request_id",
    "as_aiaas_error",
    "check_compatibility",
    "deprecated",
    "error_body",
    "error_response",
    "error_response_schema",
    "generate_api_key",
    "get_actor",
    "get_request_id",
    "get_span_id",
    "get_trace_id",
    "load_policy_bundle",
    "load_settings",
    "new_request_id",
    "normalize_email",
    "parse_api_key",
    "problem_details",
    "request_context",
    "run_lifespan",
    "send_json",
    "set_actor",
    "set_trace",
    "setting",
    "settings_summary",
    "signals_end_normally",
]

if TYPE_CHECKING:
    from aiaas_core._apikeys import (
        ApiKey,
        ApiKeyRecord,
        ApiKeyStatus,
        ApiKeyStore,
        ApiKeyVerifier,
        InMemoryApiKeyStore,
        generate_api_key,
        parse_api_key,
    )
    from aiaas_core._auth_middleware import (
        AuthAuditEvent,
        AuthMiddleware,
        RouteRule,
    )
    from aiaas_core._config import (
        ConfigProblem,
        Secret,
        load_settings,
        setting,
        settings_summary,
    )
    from aiaas_core._context import (
        Actor,
        ActorKind,
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
    from aiaas_core._contracts import error_response_schema
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
    from aiaas_core._hashing import (
        HashKey,
        KeyedHasher,
        normalize_email,
    )
    from aiaas_core._health import (
        CheckResult,
        HealthCheck,
        HealthRegistry,
        HealthReport,
        HealthStatus,
    )
    from aiaas_core._policy import (
        Decision,
        Policy,
        PolicyBundle,
        PolicyError,
        PolicyRule,
        load_policy_bundle,
    )
    from aiaas_core._ratelimit import RateDecision, RateLimit, RateLimiter
    from aiaas_core._serving import (
        ErrorRenderer,
        ErrorRenderers,
        run_lifespan,
        send_json,
        signals_end_normally,
    )
    from aiaas_core._versioning import (
        AiaasDeprecationWarning,
        CompatibilityProblem,
        CompatibilityReport,
        Version,
        VersionRange,
        check_compatibility,
        deprecated,
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
