"""The one writer of ``audit_log_entries``.

Every audited action -- a migration, a partition change, a seed, a purge, an API call -- goes
through :func:`write_audit` (or :func:`write_audit_async`), so the actor is always protected the
same way: ``actor_id`` is the keyed digest of the actor identity (searchable, never reversible
without the key) and ``actor_ciphertext`` an AES-256-GCM copy bound to that digest (associated
data: the UTF-8 bytes of ``actor_id``), readable with :func:`reveal_actor`.

The row is inserted in the caller's transaction: an action and its audit entry commit together or
not at all. The table itself refuses UPDATE, DELETE and TRUNCATE (``AUDIT_APPEND_ONLY``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import attrs

from aiaas_core import ValidationError

if TYPE_CHECKING:
    import psycopg

    from aiaas_db.platform._pii import PiiProtector

__all__ = [
    "AUDIT_ACTOR_TYPES",
    "AUDIT_INSERT_SQL",
    "AuditActorType",
    "AuditRow",
    "reveal_actor",
    "write_audit",
    "write_audit_async",
]

AuditActorType = Literal["user", "service", "migration"]
#: The actor types audit_log_entries accepts.
AUDIT_ACTOR_TYPES: Final[tuple[AuditActorType, ...]] = get_args(AuditActorType)

#: The INSERT statement (``RETURNING audit_log_entry_id``) for :attr:`AuditRow.params`.
AUDIT_INSERT_SQL: Final = (
    "INSERT INTO audit_log_entries (occurred_at, actor_type, actor_id, actor_ciphertext,"
    " actor_key_version, action, target, metadata, request_id)"
    " VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
    " RETURNING audit_log_entry_id"
)


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="AUDIT_ENTRY_INVALID")


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"audit {name} must be a non-empty string, got {type(value).__name__}")
    if len(value) > limit:
        raise _invalid(f"audit {name} is {len(value)} characters; at most {limit} are stored")
    return value


@attrs.frozen
class AuditRow:
    """One protected audit entry, ready to insert (what :func:`write_audit` writes)."""

    actor_type: AuditActorType
    actor_id: str
    actor_ciphertext: bytes = attrs.field(repr=False)
    actor_key_version: str
    action: str
    target: str
    metadata_json: str
    request_id: str | None = None
    occurred_at: datetime | None = None

    @classmethod
    def build(
        cls,
        *,
        actor_type: str,
        actor: str,
        action: str,
        target: str,
        protector: PiiProtector,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> AuditRow:
        """Validate the entry and protect the actor (digest + ciphertext)."""
        if actor_type not in AUDIT_ACTOR_TYPES:
            raise _invalid(
                f"audit actor_type must be one of {', '.join(AUDIT_ACTOR_TYPES)}, "
                f"got {actor_type!r}"
            )
        actor = _text("actor", actor, 10_000)
        action = _text("action", action, 200)
        target = _text("target", target, 1000)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise _invalid(f"audit metadata must be a mapping, got {type(metadata).__name__}")
        if request_id is not None and not isinstance(request_id, str):
            raise _invalid(f"audit request_id must be a string, got {type(request_id).__name__}")
        if occurred_at is not None and (
            type(occurred_at) is not datetime or occurred_at.utcoffset() is None
        ):
            raise _invalid("audit occurred_at must be a timezone-aware datetime")
        actor_id = protector.digest(actor)
        ciphertext, version = protector.encrypt(actor, actor_id.encode("utf-8"))
        return cls(
            actor_type=actor_type,
            actor_id=actor_id,
            actor_ciphertext=ciphertext,
            actor_key_version=version,
            action=action,
            target=target,
            metadata_json=json.dumps(dict(metadata or {}), sort_keys=True, default=str),
            request_id=request_id,
            occurred_at=occurred_at,
        )

    @property
    def params(self) -> tuple[Any, ...]:
        """Parameters of :data:`AUDIT_INSERT_SQL`, in order."""
        return (
            self.occurred_at,
            self.actor_type,
            self.actor_id,
            self.actor_ciphertext,
            self.actor_key_version,
            self.action,
            self.target,
            self.metadata_json,
            self.request_id,
        )


def write_audit(
    conn: psycopg.Connection[Any],
    *,
    actor_type: str,
    actor: str,
    action: str,
    target: str,
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    protector: PiiProtector,
    occurred_at: datetime | None = None,
) -> int:
    """Append one audit entry in ``conn``'s current transaction; returns its id.

    ``actor`` is the raw identity (a user id, a service name, who ran a migration): only its
    digest and ciphertext are stored. ``metadata`` must be JSON-serialisable (other values are
    stored as their ``str``). Raises :class:`aiaas_core.ValidationError` (``AUDIT_ENTRY_INVALID``)
    for a bad entry before touching the database.
    """
    row = AuditRow.build(
        actor_type=actor_type,
        actor=actor,
        action=action,
        target=target,
        protector=protector,
        metadata=metadata,
        request_id=request_id,
        occurred_at=occurred_at,
    )
    result = conn.execute(AUDIT_INSERT_SQL, row.params).fetchone()
    assert result is not None  # INSERT ... RETURNING always returns the row
    return int(result[0])


async def write_audit_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    actor_type: str,
    actor: str,
    action: str,
    target: str,
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    protector: PiiProtector,
    occurred_at: datetime | None = None,
) -> int:
    """:func:`write_audit` for an async psycopg connection."""
    row = AuditRow.build(
        actor_type=actor_type,
        actor=actor,
        action=action,
        target=target,
        protector=protector,
        metadata=metadata,
        request_id=request_id,
        occurred_at=occurred_at,
    )
    cur = await conn.execute(AUDIT_INSERT_SQL, row.params)
    result = await cur.fetchone()
    assert result is not None
    return int(result[0])


def reveal_actor(
    protector: PiiProtector,
    *,
    actor_id: str,
    actor_ciphertext: bytes | None,
    actor_key_version: str | None,
) -> str | None:
    """The actor identity of an audit row (``None`` when the row holds no ciphertext).

    Raises :class:`~aiaas_db.PiiDecryptionError` when the ciphertext does not belong to this
    ``actor_id`` or the key is wrong.
    """
    if actor_ciphertext is None or actor_key_version is None:
        return None
    return protector.decrypt(actor_ciphertext, actor_id.encode("utf-8"), actor_key_version)
