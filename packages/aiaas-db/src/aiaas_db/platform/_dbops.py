"""Shared plumbing of the data commands (seed, purge, synthetic): connections, windows, checks.

Nothing here is public; :mod:`aiaas_db.platform._seeds`, :mod:`aiaas_db.platform._purge` and
:mod:`aiaas_db.platform._synthetic` re-export what callers need.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import psycopg

from aiaas_db._errors import DatabaseUnavailableError, MigrationRefusedError, mask_password

if TYPE_CHECKING:
    from aiaas_db.platform._pii import PiiProtector

__all__: list[str] = []

#: Connection or DSN: what the data functions accept.
ConnOrDsn = psycopg.Connection[Any] | str

_WINDOW: Final = re.compile(r"\s*(\d{1,6})\s*([dhw])\s*", re.ASCII)
_UNIT: Final = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}

#: The tables of the operational platform schema the data commands write.
OPERATIONAL_TABLES: Final = (
    "organizations",
    "users",
    "api_keys",
    "model_registry_entries",
    "usage_events",
    "audit_log_entries",
)


def parse_window(text: str | timedelta, *, what: str = "window") -> timedelta:
    """``7d``, ``24h``, ``2w`` (or a :class:`~datetime.timedelta`) as a non-negative timedelta.

    Raises :class:`ValueError` naming the accepted forms.
    """
    if isinstance(text, timedelta):
        if text < timedelta(0):
            raise ValueError(f"{what} must not be negative, got {text}")
        return text
    match = _WINDOW.fullmatch(str(text))
    if match is None:
        raise ValueError(
            f"{what} {text!r} is not a duration: use a whole number followed by h (hours), "
            "d (days) or w (weeks), such as 7d"
        )
    return int(match.group(1)) * _UNIT[match.group(2)]


def format_window(value: timedelta) -> str:
    """The shortest ``<n>d`` / ``<n>h`` / ``<n>s`` text for ``value``."""
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"


def mask(text: str, dsn: str) -> str:
    """``text`` with the DSN's password replaced by ``***``."""
    return mask_password(text, dsn)


def connect(dsn: str, purpose: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection named ``aiaas-db <purpose>``; :class:`DatabaseUnavailableError` when the
    server cannot be reached (the message never carries the password)."""
    try:
        return psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=10, application_name=f"aiaas-db {purpose}"
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL: {mask(str(exc), dsn)}. Check that the server runs "
            "and the DSN (--dsn / AIAAS_DB_URL) is right"
        ) from None


@contextmanager
def open_connection(conn_or_dsn: ConnOrDsn, purpose: str) -> Iterator[psycopg.Connection[Any]]:
    """Use the caller's connection as is, or open (and close) one for a DSN."""
    if isinstance(conn_or_dsn, psycopg.Connection):
        yield conn_or_dsn
        return
    if not isinstance(conn_or_dsn, str):
        raise TypeError(
            f"expected a psycopg Connection or a DSN string, got {type(conn_or_dsn).__name__}"
        )
    conn = connect(conn_or_dsn, purpose)
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def missing_tables(conn: psycopg.Connection[Any], tables: Iterable[str]) -> list[str]:
    """Which of ``tables`` do not exist on the connection's search path."""
    names = list(tables)
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS t(name) WHERE to_regclass(name) IS NULL",
        (names,),
    ).fetchall()
    return sorted(str(r[0]) for r in rows)


def require_tables(
    conn: psycopg.Connection[Any],
    tables: Iterable[str],
    *,
    code: str,
    what: str,
    error: type[MigrationRefusedError] = MigrationRefusedError,
) -> None:
    """Refuse (``error`` with ``code``) when the platform schema is not there."""
    missing = missing_tables(conn, tables)
    if missing:
        raise error(
            f"{what} needs the platform schema, but table(s) {', '.join(missing)} do not exist: "
            "apply it first with `aiaas-db migrate up` (the platform change sets)",
            code=code,
        )


def ensure_usage_partitions(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    *,
    protector: PiiProtector,
    actor: str,
) -> int:
    """Make sure ``usage_events`` has a daily partition for every UTC day in ``[start, end)``.

    Loads must create partitions *before* writing, so that rows land in their day rather than in
    ``usage_events_default``. Delegates to :func:`aiaas_db.platform._partitions.ensure_partitions`
    (idempotent, locked, audited as ``actor`` when it creates any). Returns how many partitions
    were created.
    """
    from aiaas_db.platform._partitions import ensure_partitions  # noqa: PLC0415

    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    report = ensure_partitions(
        conn,
        ahead=0,
        behind=max((last - first).days, 0),
        today=last,
        protector=protector,
        actor=actor,
    )
    return len(report.created)
