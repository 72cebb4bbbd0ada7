"""Provisioning events and environment status transitions.

Events go to the stdlib logger ``aiaas.infra`` with ``extra={"event": name, ...}`` (any JSON log
formatter, aiaas-telemetry's included, renders the extra fields), and to an optional callback
(the CLI's progress display). Every event carries ``run_id``, ``actor`` and ``platform``; apply
events add ``environment``/``environments``, ``counts``, ``duration_s`` and ``outcome``.

Environment statuses move along::

    (new) -> provisioning -> ready -> degraded -> recovering -> ready
                          \\-> retired (first provisioning rolled back)
    ready | degraded -> retired (removed from the spec)

Every transition is recorded in state (``environments.json``, with its history) and emitted as
an audit event ``infra.environment.transition`` (``audit: true``).
"""

from __future__ import annotations

import enum
import getpass
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from aiaas_infra.provision._state import EnvironmentRecord, StateStore, Transition, iso, utcnow

__all__ = ["EnvironmentStatus"]

logger = logging.getLogger("aiaas.infra")

EventSink = Callable[[Mapping[str, Any]], None]


class EnvironmentStatus(enum.StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    DEGRADED = "degraded"
    RECOVERING = "recovering"
    RETIRED = "retired"


_S = EnvironmentStatus
ALLOWED: Final[Mapping[EnvironmentStatus | None, frozenset[EnvironmentStatus]]] = {
    None: frozenset({_S.PROVISIONING}),
    _S.PROVISIONING: frozenset({_S.READY, _S.DEGRADED, _S.RETIRED}),
    _S.READY: frozenset({_S.DEGRADED, _S.RETIRED}),
    _S.DEGRADED: frozenset({_S.RECOVERING, _S.RETIRED}),
    _S.RECOVERING: frozenset({_S.READY, _S.DEGRADED}),
    _S.RETIRED: frozenset({_S.PROVISIONING}),
}


def default_actor() -> str:
    """Who is acting: the aiaas-core request actor, ``AIAAS_ACTOR``, or the OS user."""
    from aiaas_core import get_actor  # noqa: PLC0415

    actor = get_actor()
    if actor is not None:
        return actor.subject
    if os.environ.get("AIAAS_ACTOR"):
        return os.environ["AIAAS_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database (some containers)
        return "unknown"


@attrs.define
class Emitter:
    """Emits events for one run."""

    run_id: str
    actor: str
    platform: str
    sink: EventSink | None = None

    def emit(
        self, event: str, *, level: int = logging.INFO, message: str = "", **fields: Any
    ) -> None:
        payload = {
            "event": event,
            "run_id": self.run_id,
            "actor": self.actor,
            "platform": self.platform,
            **fields,
        }
        logger.log(level, message or event, extra=payload)
        if self.sink is not None:
            self.sink(payload)


class StatusLedger:
    """Environment statuses, loaded from and saved to a state store (or kept in memory)."""

    def __init__(self, store: StateStore | None = None) -> None:
        self.store = store
        self.records: dict[str, EnvironmentRecord] = store.environments() if store else {}
        self.changed: list[Transition] = []

    def status(self, env: str) -> EnvironmentStatus | None:
        rec = self.records.get(env)
        return EnvironmentStatus(rec.status) if rec is not None else None

    def move(
        self,
        env: str,
        to: EnvironmentStatus,
        *,
        reason: str,
        emitter: Emitter,
    ) -> Transition:
        """Move ``env`` to ``to``; raises ValueError for a transition the lifecycle forbids."""
        current = self.status(env)
        if to not in ALLOWED[current]:
            raise ValueError(
                f"environment {env}: {current.value if current else '(new)'} -> {to.value} is "
                "not an allowed transition"
            )
        now = iso(utcnow())
        transition = Transition(
            environment=env,
            from_status=current.value if current is not None else None,
            to_status=to.value,
            at=now,
            actor=emitter.actor,
            reason=reason,
            run_id=emitter.run_id,
        )
        old = self.records.get(env)
        history = (*(old.history if old is not None else ()), transition)
        self.records[env] = EnvironmentRecord(status=to.value, since=now, history=history)
        self.changed.append(transition)
        emitter.emit(
            "infra.environment.transition",
            message=f"environment {env}: {transition.from_status or '(new)'} -> {to.value} "
            f"({reason})",
            environment=env,
            from_status=transition.from_status,
            to_status=to.value,
            reason=reason,
            audit=True,
        )
        return transition

    def save(self) -> None:
        if self.store is not None and self.changed:
            self.store.write_environments(self.records)

    def snapshot(self) -> dict[str, str]:
        return {name: rec.status for name, rec in sorted(self.records.items())}
