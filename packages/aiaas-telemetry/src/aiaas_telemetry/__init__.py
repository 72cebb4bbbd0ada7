"""aiaas-telemetry: logs, traces, metrics and audit events the aiaas way.

One call configures a service from its telemetry profile::

    import aiaas_telemetry

    profile = aiaas_telemetry.load_profile({"service_name": "world-service"})
    telemetry = aiaas_telemetry.setup(profile)
    app = aiaas_telemetry.service_stack(  # telemetry -> auth -> app, the request id made once
        my_asgi_app,
        telemetry=telemetry,
        auth=aiaas_telemetry.ServiceAuth(authenticate=verify, policy=policy, rules=rules),
        routes=["/world", "/items/{id}"],
    )
    ...
    telemetry.shutdown()  # bounded: returns within 3 s whatever the collector does

``import aiaas_telemetry`` is cheap: each name is imported from its private module the first time
it is used (OpenTelemetry and prometheus-client load only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiaas_core import lazy_exports

__version__ = "0.2.0"

# name -> private module that defines it. Kept in step with __all__ by tests/test_public_api.py.
_LAZY: dict[str, str] = {
    # _assets
    "load_asset": "_assets",
    "load_grafana_dashboard": "_assets",
    "load_prometheus_rules": "_assets",
    # _audit
    "AuditEvent": "_audit",
    "AuditSink": "_audit",
    "Auditor": "_audit",
    "LoggingAuditSink": "_audit",
    "auth_audit_hook": "_audit",
    # _body
    "UnsupportedMediaTypeError": "_body",
    "is_json_content_type": "_body",
    "parse_json": "_body",
    "read_body": "_body",
    "read_json": "_body",
    # _compatibility
    "EXIT_VERSION_SKEW": "_compatibility",
    "VERSION_SKEW_PROBLEMS": "_compatibility",
    "check_cli_compatibility": "_compatibility",
    "check_service_compatibility": "_compatibility",
    # _logging
    "JsonFormatter": "_logging",
    "configure_logging": "_logging",
    "emit_json": "_logging",
    "remove_logging": "_logging",
    # _metrics
    "TelemetryMetrics": "_metrics",
    "metrics_app": "_metrics",
    # _middleware
    "ErrorResponse": "_middleware",
    "TelemetryMiddleware": "_middleware",
    "error_handler": "_middleware",
    # _otlp
    "LeanOTLPSpanExporter": "_otlp",
    "encode_otlp_spans": "_otlp",
    # _profile
    "ConfigOverride": "_profile",
    "HistogramSpec": "_profile",
    "LogSettings": "_profile",
    "MetricsSettings": "_profile",
    "OtelExporterSettings": "_profile",
    "TelemetryProfile": "_profile",
    "TracingSettings": "_profile",
    # _profile_load
    "load_profile": "_profile_load",
    # _redact
    "is_secret_key": "_redact",
    "redact": "_redact",
    # _routes
    "RouteResolver": "_routes",
    "RouterRoutes": "_routes",
    "TemplateRoutes": "_routes",
    "as_route_resolver": "_routes",
    # _setup
    "Telemetry": "_setup",
    "setup": "_setup",
    # _stack
    "ServiceAuth": "_stack",
    "service_stack": "_stack",
    # _tracing
    "CountingBatchSpanProcessor": "_tracing",
    "SpanBatchSettings": "_tracing",
}

__all__ = [
    "AuditEvent",
    "AuditSink",
    "Auditor",
    "ConfigOverride",
    "CountingBatchSpanProcessor",
    "EXIT_VERSION_SKEW",
    "ErrorResponse",
    "HistogramSpec",
    "JsonFormatter",
    "LeanOTLPSpanExporter",
    "LogSettings",
    "LoggingAuditSink",
    "MetricsSettings",
    "OtelExporterSettings",
    "RouteResolver",
    "RouterRoutes",
    "ServiceAuth",
    "SpanBatchSettings",
    "Telemetry",
    "TelemetryMetrics",
    "TelemetryMiddleware",
    "TelemetryProfile",
    "TemplateRoutes",
    "TracingSettings",
    "UnsupportedMediaTypeError",
    "VERSION_SKEW_PROBLEMS",
    "__version__",
    "as_route_resolver",
    "auth_audit_hook",
    "check_cli_compatibility",
    "check_service_compatibility",
    "configure_logging",
    "emit_json",
    "encode_otlp_spans",
    "error_handler",
    "is_json_content_type",
    "is_secret_key",
    "load_asset",
    "load_grafana_dashboard",
    "load_profile",
    "load_prometheus_rules",
    "metrics_app",
    "parse_json",
    "read_body",
    "read_json",
    "redact",
    "remove_logging",
    "service_stack",
    "setup",
]

if TYPE_CHECKING:
    from aiaas_telemetry._assets import load_asset, load_grafana_dashboard, load_prometheus_rules
    from aiaas_telemetry._audit import (
        AuditEvent,
        Auditor,
        AuditSink,
        LoggingAuditSink,
        auth_audit_hook,
    )
    from aiaas_telemetry._body import (
        UnsupportedMediaTypeError,
        is_json_content_type,
        parse_json,
        read_body,
        read_json,
    )
    from aiaas_telemetry._compatibility import (
        EXIT_VERSION_SKEW,
        VERSION_SKEW_PROBLEMS,
        check_cli_compatibility,
        check_service_compatibility,
    )
    from aiaas_telemetry._logging import (
        JsonFormatter,
        configure_logging,
        emit_json,
        remove_logging,
    )
    from aiaas_telemetry._metrics import TelemetryMetrics, metrics_app
    from aiaas_telemetry._middleware import ErrorResponse, TelemetryMiddleware, error_handler
    from aiaas_telemetry._otlp import LeanOTLPSpanExporter, encode_otlp_spans
    from aiaas_telemetry._profile import (
        ConfigOverride,
        HistogramSpec,
        LogSettings,
        MetricsSettings,
        OtelExporterSettings,
        TelemetryProfile,
        TracingSettings,
    )
    from aiaas_telemetry._profile_load import load_profile
    from aiaas_telemetry._redact import is_secret_key, redact
    from aiaas_telemetry._routes import (
        RouteResolver,
        RouterRoutes,
        TemplateRoutes,
        as_route_resolver,
    )
    from aiaas_telemetry._setup import Telemetry, setup
    from aiaas_telemetry._stack import ServiceAuth, service_stack
    from aiaas_telemetry._tracing import CountingBatchSpanProcessor, SpanBatchSettings


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
