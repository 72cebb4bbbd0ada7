"""Audit events: the event, the logging sink, the auditor, and AuthMiddleware's audit hook."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from aiaas_core import (
    Actor,
    ApiKeyVerifier,
    AuthMiddleware,
    HashKey,
    InMemoryApiKeyStore,
    KeyedHasher,
    Policy,
    PolicyRule,
    RouteRule,
    request_context,
)
from aiaas_telemetry import (
    AuditEvent,
    Auditor,
    AuditSink,
    LoggingAuditSink,
    auth_audit_hook,
    load_profile,
)


class ListSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent, /) -> None:
        self.events.append(event)


class BrokenSink:
    def emit(self, event: AuditEvent, /) -> None:
        raise OSError("disk full")


def test_event_validation_and_json() -> None:
    with pytest.raises(ValueError, match="outcome"):
        AuditEvent(type="authorization", outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="type"):
        AuditEvent(type=" ", outcome="allow")
    event = AuditEvent(
        type="model.deploy",
        outcome="applied",
        action="deploy",
        resource="minilm",
        actor=Actor("ann", ("platform-engineer",)),
        timestamp=datetime(2024, 5, 1, 12, tzinfo=UTC),
        attributes={"version": "3", "api_key": "k-123", "nested": {"token": "t"}},
    )
    data = event.to_dict()
    assert data["timestamp"] == "2024-05-01T12:00:00Z"
    assert data["actor"] == {"subject": "ann", "roles": ["platform-engineer"], "kind": "user"}
    assert data["attributes"] == {
        "version": "3",
        "api_key": "[REDACTED]",
        "nested": {"token": "[REDACTED]"},
    }
    assert json.loads(json.dumps(data)) == data
    assert isinstance(ListSink(), AuditSink)


def test_authorization_event_takes_the_request_context() -> None:
    actor = Actor("key_abc", ("reader",), "api_key")
    with request_context("audit-req-0001", trace_id="c" * 32, span_id="d" * 16, actor=actor):
        event = AuditEvent.authorization(
            allowed=False, action="config", resource="reload", reason="default deny", rule=None
        )
    assert event.outcome == "deny"
    assert event.actor == actor
    assert event.request_id == "audit-req-0001"
    assert event.trace_id == "c" * 32
    assert event.attributes == {"rule": None}


def test_config_override_never_records_secret_values() -> None:
    event = AuditEvent.config_override(
        setting="otel_exporter.headers", source="env X", value="Bearer leaked", secret=True
    )
    assert "leaked" not in json.dumps(event.to_dict())
    assert event.attributes == {
        "setting": "otel_exporter.headers",
        "source": "env X",
        "sensitive": True,
    }
    plain = AuditEvent.config_override(setting="log.level", source="override", value="warn")
    assert plain.attributes["value"] == "warn"
    assert plain.outcome == "applied"


def test_logging_sink_writes_one_json_line(make_telemetry: Any, log_stream: Any) -> None:
    make_telemetry(tracing=False)
    sink = LoggingAuditSink()
    sink.emit(AuditEvent.authorization(allowed=True, action="a", resource="r", reason="ok"))
    event = AuditEvent(
        type="authorization",
        outcome="deny",
        actor=Actor("bob", ("x",)),
        request_id="queued-req-1",
        trace_id="e" * 32,
    )
    sink.emit(event)
    allow, deny = log_stream.by_logger("aiaas.audit")
    assert allow["level"] == "info"
    assert allow["audit"]["outcome"] == "allow"
    assert deny["level"] == "warn"
    assert deny["message"] == "audit authorization deny"
    assert deny["request_id"] == "queued-req-1"
    assert deny["trace_id"] == "e" * 32
    assert deny["actor.subject"] == "bob"


def test_auditor_counts_and_survives_sink_failures(make_telemetry: Any, log_stream: Any) -> None:
    tel = make_telemetry(tracing=False, audit_sink=BrokenSink())
    tel.audit.authorization(allowed=True, action="a", resource="b", reason="fine")
    tel.audit.config_override(setting="log.level", source="override", value="info")
    assert tel.registry.get_sample_value("aiaas_telemetry_audit_failures_total") == 2
    warnings = [r for r in log_stream.by_logger("aiaas.telemetry") if "dropped" in r["message"]]
    assert len(warnings) == 2
    with pytest.raises(TypeError, match="emit"):
        Auditor(object())  # type: ignore[arg-type]


def test_setup_audits_configuration_overrides(make_telemetry: Any) -> None:
    sink = ListSink()
    profile = load_profile(
        {"service_name": "audited"},
        environ={"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20very-secret"},
        overrides={"log.level": "debug"},
    )
    make_telemetry(profile, tracing=False, audit_sink=sink)
    assert [(e.type, e.resource) for e in sink.events] == [
        ("config.override", "otel_exporter.headers"),
        ("config.override", "log.level"),
    ]
    assert "very-secret" not in json.dumps([e.to_dict() for e in sink.events])


# --------------------------------------------------------------------------- AuthMiddleware


@pytest.fixture
def auth_service(make_telemetry: Any) -> Any:
    hasher = KeyedHasher([HashKey.generate("v1")], current="v1")
    store = InMemoryApiKeyStore()
    verifier = ApiKeyVerifier(store, hasher, background=False, touch_interval=None)
    admin_key, admin_record = verifier.issue(subject="admin-bot", roles=["admin"])
    reader_key, reader_record = verifier.issue(subject="reader-bot", roles=["reader"])
    store._insert(admin_record)
    store._insert(reader_record)
    policy = Policy(
        [
            PolicyRule(id="admins", effect="allow", roles=["admin"], permissions=["config:*"]),
            PolicyRule(id="readers", effect="allow", roles=["reader"], permissions=["items:read"]),
        ]
    )
    sink = ListSink()
    tel = make_telemetry(tracing=False, audit_sink=sink)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"reloaded"})

    auth = AuthMiddleware(
        inner,
        authenticate=verifier.verify,
        policy=policy,
        rules=[RouteRule("POST", "/admin/reload", "config:reload")],
        audit=tel.audit.auth_hook(),
    )
    app = tel.middleware(auth, routes=["/admin/reload"])
    return app, sink, admin_key.token, reader_key.token


def test_auth_decisions_reach_the_audit_sink(
    auth_service: Any, server: Any, log_stream: Any, error_validator: Any
) -> None:
    app, sink, admin, reader = auth_service
    with server(app) as base, httpx.Client(base_url=base) as client:
        anonymous = client.post("/admin/reload")
        denied = client.post("/admin/reload", headers={"Authorization": f"Bearer {reader}"})
        allowed = client.post(
            "/admin/reload",
            headers={"Authorization": f"Bearer {admin}", "X-Request-ID": "admin-call-0001"},
        )
    assert anonymous.status_code == 401
    error_validator(anonymous.json())
    assert denied.status_code == 403
    error_validator(denied.json())
    assert allowed.status_code == 200
    kinds = [(e.type, e.outcome) for e in sink.events]
    assert kinds == [
        ("authentication", "deny"),
        ("authorization", "deny"),
        ("authorization", "allow"),
    ]
    deny, allow = sink.events[1], sink.events[2]
    assert deny.actor is not None
    assert deny.actor.subject == "reader-bot"
    assert (deny.action, deny.resource) == ("config", "reload")
    assert deny.request_id == denied.headers["x-request-id"]
    assert allow.request_id == "admin-call-0001"
    assert allow.attributes["rule"] == "admins"
    assert allow.attributes["path"] == "/admin/reload"
    # The access log line of the allowed call names the actor authenticated inside it.
    access = [
        r for r in log_stream.by_logger("aiaas.access") if r["request_id"] == "admin-call-0001"
    ]
    assert access[0]["actor.subject"] == "admin-bot"
    text = log_stream.getvalue()
    assert admin not in text
    assert reader not in text


def test_auth_audit_hook_for_any_sink() -> None:
    sink = ListSink()
    hook = auth_audit_hook(sink)

    class Fake:
        kind = "authentication"
        allowed = False
        reason = "no credential"
        actor = None
        action = None
        resource = None
        rule = None
        code = "AUTH_UNAUTHENTICATED"
        method = "GET"
        path = "/x"
        request_id = "r-12345678"
        trace_id = None
        timestamp = datetime(2024, 1, 1, tzinfo=UTC)

    hook(Fake())
    (event,) = sink.events
    assert event.type == "authentication"
    assert event.attributes == {"code": "AUTH_UNAUTHENTICATED", "method": "GET", "path": "/x"}
