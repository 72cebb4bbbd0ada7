"""Personal-data purge: ``aiaas-db purge`` anonymises users whose deletion was requested.

Policy (``contracts/data-classification.yml``: User retention 30 days): a user whose
``deletion_requested_at`` is more than ``window`` ago (30 days by default, never more) is
anonymised in place:

* ``email_digest`` becomes ``anonymized$<user_id>`` (a marker that keeps the per-organisation
  uniqueness and says what happened), ``email_ciphertext`` and ``email_key_version`` are removed;
* ``anonymized_at`` is set, the user is disabled and soft-deleted (``deleted_at``);
* each anonymisation is audited (``user.anonymized``, target ``user:<user_id>``) with no
  personal data in the audit row.

Rows are kept (API keys and history refer to them); nothing else in the schema holds an e-mail
address -- rollups are per organisation and model only. The run is idempotent (anonymised users
are not candidates again) and takes ``FOR UPDATE SKIP LOCKED`` so two purges never fight. When
:func:`purge` opens its own connection it also ``VACUUM``s ``users``, so the old row versions do
not linger in the table files.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_db._errors import MigrationRefusedError
from aiaas_db.platform._dbops import (
    ConnOrDsn,
    connect,
    format_window,
    open_connection,
    parse_window,
)

if TYPE_CHECKING:
    from aiaas_db.platform._pii import PiiProtector

__all__ = ["PURGE_POLICY_WINDOW", "PurgeError", "PurgeReport", "anonymized_marker", "purge"]

#: The longest a requested deletion may wait (data-classification policy: 30 days).
PURGE_POLICY_WINDOW: Final = timedelta(days=30)
_ACTOR: Final = "aiaas-db purge"
_CANDIDATES: Final = (
    "SELECT user_id, deletion_requested_at FROM users"
    " WHERE deletion_requested_at IS NOT NULL AND deletion_requested_at <= %s"
    " AND anonymized_at IS NULL ORDER BY deletion_requested_at, user_id"
)
_LOCK_CANDIDATES: Final = _CANDIDATES + " FOR UPDATE SKIP LOCKED"


class PurgeError(MigrationRefusedError):
    """The purge was refused: ``PURGE_WINDOW_INVALID`` or ``PURGE_SCHEMA_MISSING``."""

    code = "PURGE_REFUSED"
    title = "Purge refused"


def anonymized_marker(user_id: uuid.UUID | str) -> str:
    """What an anonymised user's ``email_digest`` holds: ``anonymized$<user_id>``."""
    return f"anonymized${uuid.UUID(str(user_id))}"


@attrs.frozen(kw_only=True)
class PurgeReport:
    """What :func:`purge` did (or, with ``dry_run``, would do)."""

    window: timedelta
    cutoff: datetime
    dry_run: bool
    user_ids: tuple[uuid.UUID, ...]

    @property
    def count(self) -> int:
        """Users anonymised (dry run: users that would be)."""
        return len(self.user_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": format_window(self.window),
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "anonymized": 0 if self.dry_run else self.count,
            "candidates": self.count,
            "user_ids": [str(u) for u in self.user_ids],
        }


def _check_window(window: str | timedelta) -> timedelta:
    try:
        value = parse_window(window)
    except ValueError as exc:
        raise PurgeError(str(exc), code="PURGE_WINDOW_INVALID") from None
    if value > PURGE_POLICY_WINDOW:
        raise PurgeError(
            f"the purge window {format_window(value)} is longer than the policy allows "
            f"({format_window(PURGE_POLICY_WINDOW)}): personal data must be purged within 30 "
            "days of a deletion request",
            code="PURGE_WINDOW_INVALID",
        )
    return value


def purge(
    conn_or_dsn: ConnOrDsn,
    *,
    window: str | timedelta = PURGE_POLICY_WINDOW,
    dry_run: bool = False,
    protector: PiiProtector,
    now: datetime | None = None,
    request_id: str | None = None,
) -> PurgeReport:
    """Anonymise users whose deletion was requested more than ``window`` (at most 30 days) ago.

    ``protector`` digests the audit actor (``aiaas-db purge``). ``dry_run`` only reports the
    candidates. Raises :class:`PurgeError` for a bad window or a missing schema.
    """
    span = _check_window(window)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    cutoff = current - span
    own = isinstance(conn_or_dsn, str)
    with open_connection(conn_or_dsn, "purge") as conn:
        from aiaas_db.platform._dbops import require_tables  # noqa: PLC0415

        require_tables(
            conn,
            ("users", "audit_log_entries"),
            code="PURGE_SCHEMA_MISSING",
            error=PurgeError,
            what="the purge",
        )
        with conn.transaction():
            rows = conn.execute(_CANDIDATES if dry_run else _LOCK_CANDIDATES, (cutoff,)).fetchall()
            ids = tuple(r[0] for r in rows)
            if not dry_run and ids:
                from aiaas_db.platform._audit import write_audit  # noqa: PLC0415

                conn.execute(
                    "UPDATE users SET email_digest = 'anonymized$' || user_id::text,"
                    " email_ciphertext = NULL, email_key_version = NULL, anonymized_at = %s,"
                    " status = 'disabled', deleted_at = COALESCE(deleted_at, %s)"
                    " WHERE user_id = ANY(%s)",
                    (current, current, list(ids)),
                )
                for user_id, requested in rows:
                    write_audit(
                        conn,
                        actor_type="service",
                        actor=_ACTOR,
                        action="user.anonymized",
                        target=f"user:{user_id}",
                        metadata={
                            "deletion_requested_at": requested.isoformat(),
                            "policy_window": format_window(span),
                        },
                        request_id=request_id,
                        protector=protector,
                    )
    if own and ids and not dry_run:
        # Old row versions still hold the digests until vacuumed; do it now, outside the
        # transaction (VACUUM cannot run inside one).
        with connect(str(conn_or_dsn), "purge vacuum", autocommit=True) as vac:
            vac.execute("VACUUM users")
    return PurgeReport(window=span, cutoff=cutoff, dry_run=dry_run, user_ids=ids)
