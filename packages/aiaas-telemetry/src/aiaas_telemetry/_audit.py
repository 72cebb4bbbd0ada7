"""Audit events: authorisation decisions and configuration overrides, to a pluggable sink.

An :class:`AuditEvent` says who (actor), did or tried what (action on resource), with which
outcome and why, in which request and trace. Sinks implement :class:`AuditSink` (one method,
``emit(event)``); the default, :class:`LoggingAuditSink`, writes one JSON log line per event to the
``aiaas.audit`` logger, the event under the ``audit`` key::

    {"time": "...", "level": "warn", "service": "world-service", "logger": "aiaas.audit",
     "message": "audit authorization deny", "request_id": "...", "trace_id": "...",
     "audit": {"type": "authorization", "outcome": "deny", "actor": {"subject": "key_abc",
               "roles": ["reader"], "kind": "api_key"}, "action": "config",
               "resource": "reload", "reason": "no rule allows config:reload ...", ...}}

:class:`Auditor` is what :func:`aiaas_telemetry.setup` hands a service: it fills in request and
trace ids from the request context, never lets a failing sink break a request (failures are
counted in ``aiaas_telemetry_audit_failures_total`` and logged), and offers
:meth:`Auditor.auth_hook` -- the callable to pass as ``AuthMiddleware(audit=...)`` so every
authentication failure and authorisation decision of :class:`aiaas_core.AuthMiddleware` lands in
the same sink.

Attributes are redacted (:func:`aiaas_telemetry.redact`) before they reach a sink; credentials
never appear in an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import attrs

from aiaas_core import Actor, get_actor, get_request_id, get_trace_id
from aiaas_telemetry._redact import redact

if TYPE_CHECKING:
    from prometheus_client import Counter

__all__ = ["AuditEvent", "AuditSink", "Auditor", "LoggingAuditSink", "auth_audit_hook"]

Outcome = Literal["allow", "deny", "applied"]
_OUTCOMES: Final = frozenset({"allow", "deny", "applied"})


def _check_outcome(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if value not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(_OUTCOMES)}, got {value!r}")


def _check_type(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("type must be a non-empty string such as 'authorization'")


def _now() -> datetime:
    return datetime.now(UTC)


def _to_attributes(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return redact(dict(value or {}))  # type: ignore[no-any-return]


@attrs.frozen(kw_only=True)
class AuditEvent:
    """One audited fact.

    ``type`` is ``"authorization"``, ``"authentication"``, ``"config.override"`` or a service's
    own (``"model.deploy"``). ``outcome`` is ``allow``/``deny`` for decisions and ``applied`` for
    changes. ``attributes`` are extra JSON data, redacted on the way in.
    """

    type: str = attrs.field(validator=_check_type)
    outcome: Outcome = attrs.field(validator=_check_outcome)
    action: str | None = None
    resource: str | None = None
    reason: str | None = None
    actor: Actor | None = None
    request_id: str | None = None
    trace_id: str | None = None
    timestamp: datetime = attrs.field(factory=_now)
    attributes: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_to_attributes, eq=False, hash=False
    )

    @classmethod
    def authorization(
        cls,
        *,
        allowed: bool,
        action: str | None,
        resource: str | None,
        reason: str,
        actor: Actor | None = None,
        **attributes: Any,
    ) -> AuditEvent:
        """An authorisation decision; ids and actor default to the current request's."""
        return cls(
            type="authorization",
            outcome="allow" if allowed else "deny",
            action=action,
            resource=resource,
            reason=reason,
            actor=actor if actor is not None else get_actor(),
            request_id=get_request_id(),
            trace_id=get_trace_id(),
            attributes=attributes,
        )

    @classmethod
    def config_override(
        cls, *, setting: str, source: str, value: str | None, secret: bool = False
    ) -> AuditEvent:
        """A configuration value taken from the environment or an explicit override.

        A secret setting's value is never recorded, whatever ``value`` holds.
        """
        attributes: dict[str, Any] = {"setting": setting, "source": source, "sensitive": secret}
        if not secret and value is not None:
            attributes["value"] = value
        return cls(
            type="config.override",
            outcome="applied",
            action="configure",
            resource=setting,
            reason=f"{setting} set from {source}",
            request_id=get_request_id(),
            trace_id=get_trace_id(),
            attributes=attributes,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (timestamp in ISO-8601 UTC)."""
        actor = self.actor
        return {
            "type": self.type,
            "outcome": self.outcome,
            "action": self.action,
            "resource": self.resource,
            "reason": self.reason,
            "actor": None
            if actor is None
            else {"subject": actor.subject, "roles": list(actor.roles), "kind": actor.kind},
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "timestamp": self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "attributes": dict(self.attributes),
        }


@runtime_checkable
class AuditSink(Protocol):
    """Where audit events go. ``emit`` must be quick and must not block (enqueue if slow)."""

    def emit(self, event: AuditEvent, /) -> None: ...


class LoggingAuditSink:
    """Write each event as one log record on ``logger`` (``aiaas.audit`` by default).

    Denials are logged at WARNING, everything else at INFO; the event is under ``audit``.
    """

    def __init__(self, logger: logging.Logger | str = "aiaas.audit") -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger

    def emit(self, event: AuditEvent, /) -> None:
        level = logging.WARNING if event.outcome == "deny" else logging.INFO
        extra: dict[str, Any] = {"audit": event.to_dict()}
        # The request context may be gone (a queued sink): carry the event's own ids.
        if event.request_id is not None:
            extra["request_id"] = event.request_id
        if event.trace_id is not None:
            extra["trace_id"] = event.trace_id
        if event.actor is not None:
            extra["actor.subject"] = event.actor.subject
        self.logger.log(level, "audit %s %s", event.type, event.outcome, extra=extra)


class Auditor:
    """The service's audit handle: forwards to a sink, never raises, counts failures."""

    def __init__(self, sink: AuditSink, *, failures: Counter | None = None) -> None:
        if not callable(getattr(sink, "emit", None)):
            raise TypeError(f"audit sink must have an emit(event) method, got {sink!r}")
        self.sink = sink
        self._failures = failures

    def emit(self, event: AuditEvent, /) -> None:
        """Send ``event`` to the sink; a sink failure is logged and counted, never raised."""
        try:
            self.sink.emit(event)
        except Exception as exc:
            if self._failures is not None:
                self._failures.inc()
            logging.getLogger("aiaas.telemetry").warning(
                "audit sink %s raised %s; audit event %s dropped",
                type(self.sink).__name__,
                type(exc).__name__,
                event.type,
                exc_info=True,
            )

    def authorization(
        self,
        *,
        allowed: bool,
        action: str | None,
        resource: str | None,
        reason: str,
        actor: Actor | None = None,
        **attributes: Any,
    ) -> None:
        """Audit an authorisation decision made by the service's own code."""
        self.emit(
            AuditEvent.authorization(
                allowed=allowed,
                action=action,
                resource=resource,
                reason=reason,
                actor=actor,
                **attributes,
            )
        )

    def config_override(
        self, *, setting: str, source: str, value: str | None, secret: bool = False
    ) -> None:
        """Audit a configuration value that came from the environment or an override."""
        self.emit(
            AuditEvent.config_override(setting=setting, source=source, value=value, secret=secret)
        )

    def auth_hook(self) -> Callable[[Any], None]:
        """The callable for ``aiaas_core.AuthMiddleware(audit=...)``.

        Each ``AuthAuditEvent`` (authentication failure, or authorisation allow/deny) becomes an
        :class:`AuditEvent` of type ``authentication`` / ``authorization`` with the same actor,
        action, resource, reason, request and trace ids; the rule, error code, method and path go
        into ``attributes``.
        """

        def hook(event: Any) -> None:
            self.emit(_from_auth_event(event))

        return hook


def _from_auth_event(event: Any) -> AuditEvent:
    """Convert an ``aiaas_core`` ``AuthAuditEvent`` into an :class:`AuditEvent`."""
    attributes = {
        "rule": event.rule,
        "code": event.code,
        "method": event.method,
        "path": event.path,
    }
    return AuditEvent(
        type=event.kind,
        outcome="allow" if event.allowed else "deny",
        action=event.action,
        resource=event.resource,
        reason=event.reason,
        actor=event.actor,
        request_id=event.request_id,
        trace_id=event.trace_id,
        timestamp=event.timestamp,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def auth_audit_hook(sink: AuditSink) -> Callable[[Any], None]:
    """An ``AuthMiddleware(audit=...)`` callable feeding any :class:`AuditSink`.

    Same as ``Auditor(sink).auth_hook()``: a failing sink is logged, never raised.
    """
    return Auditor(sink).auth_hook()
