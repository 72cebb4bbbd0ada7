"""Daily partitions of ``usage_events``: create ahead of time, drop past retention.

``usage_events`` is range-partitioned on ``occurred_at`` into UTC days named
``usage_events_pYYYYMMDD``, with a DEFAULT partition (``usage_events_default``) that catches
anything outside them, so an insert never fails for lack of a partition.

* :func:`ensure_partitions` creates the day partitions from ``today - behind`` to
  ``today + ahead`` (inclusive). PostgreSQL refuses a new partition while the DEFAULT partition
  holds rows of its range; those rows are moved into the new partition in the same transaction,
  so creation never fails and no row is lost or seen twice.
* :func:`retain_partitions` drops the day partitions that lie wholly before the retention cutoff
  (730 days for usage events, from ``contracts/data-classification.yml``) and deletes the rows
  of the DEFAULT partition older than it.

Both are idempotent (a second run changes nothing), serialised by a transaction-level advisory
lock, bounded by ``lock_timeout``, and audited through
:func:`~aiaas_db.platform._audit.write_audit` when
they change something and the database has ``audit_log_entries``. "Today" is the database's
UTC date unless given.
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final

import attrs
import psycopg
from psycopg import sql

from aiaas_db._errors import LockTimeoutError, MigrationRefusedError

if TYPE_CHECKING:
    from aiaas_db.platform._pii import PiiProtector

__all__ = [
    "USAGE_EVENTS_RETENTION_DAYS",
    "EnsureReport",
    "PartitionInfo",
    "RetainReport",
    "ensure_partitions",
    "list_partitions",
    "parse_days",
    "retain_partitions",
]

#: Retention of usage events in days (UsageEvent in contracts/data-classification.yml).
USAGE_EVENTS_RETENTION_DAYS: Final = 730
#: The partitioned table this module maintains.
USAGE_EVENTS: Final = "usage_events"
_MAX_DAYS: Final = 3660
_DAYS: Final = re.compile(r"\s*(\d{1,5})\s*d?\s*", re.IGNORECASE)
_BOUND: Final = re.compile(
    r"FOR VALUES FROM \((?P<lo>MINVALUE|'[^']*')\) TO \((?P<hi>MAXVALUE|'[^']*')\)"
)
_LOCK_NAMESPACE: Final = "aiaas-db partitions"


def parse_days(text: str | int) -> int:
    """Days from ``"7d"``, ``"730d"``, ``"7"`` or an int (0 to 3660); :class:`ValueError` else."""
    if isinstance(text, int) and not isinstance(text, bool):
        days = text
    else:
        match = _DAYS.fullmatch(str(text))
        if match is None:
            raise ValueError(f"expected a number of days such as 7d, got {text!r}")
        days = int(match.group(1))
    if not 0 <= days <= _MAX_DAYS:
        raise ValueError(f"days must be between 0 and {_MAX_DAYS}, got {days}")
    return days


def partition_name(table: str, day: date) -> str:
    """``<table>_pYYYYMMDD``."""
    return f"{table}_p{day:%Y%m%d}"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@attrs.frozen
class PartitionInfo:
    """One partition of the table: its bounds (``None`` for MINVALUE/MAXVALUE or DEFAULT)."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool = False
    estimated_rows: int = 0

    @property
    def day(self) -> date | None:
        """The UTC day of a conforming daily partition, else ``None``."""
        if (
            self.lower is None
            or self.upper is None
            or self.upper - self.lower != timedelta(days=1)
            or self.lower.timetz() != time(0, tzinfo=UTC)
        ):
            return None
        return self.lower.date()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lower": None if self.lower is None else self.lower.isoformat(),
            "upper": None if self.upper is None else self.upper.isoformat(),
            "default": self.is_default,
            "estimated_rows": self.estimated_rows,
        }


@attrs.frozen
class EnsureReport:
    """What :func:`ensure_partitions` did."""

    table: str
    first_day: date
    last_day: date
    created: tuple[str, ...]
    existing: tuple[str, ...]
    moved_rows: dict[str, int] = attrs.field(factory=dict)
    audit_entry_id: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "created": list(self.created),
            "existing": list(self.existing),
            "moved_rows": dict(self.moved_rows),
            "audit_entry_id": self.audit_entry_id,
        }


@attrs.frozen
class RetainReport:
    """What :func:`retain_partitions` did (or, in a dry run, would do)."""

    table: str
    cutoff: datetime
    older_than_days: int
    dry_run: bool
    dropped: tuple[PartitionInfo, ...]
    kept: int
    default_rows_deleted: int
    audit_entry_id: int | None = None

    @property
    def changed(self) -> bool:
        return not self.dry_run and bool(self.dropped or self.default_rows_deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "cutoff": self.cutoff.isoformat(),
            "older_than_days": self.older_than_days,
            "dry_run": self.dry_run,
            "dropped": [p.to_dict() for p in self.dropped],
            "kept": self.kept,
            "default_rows_deleted": self.default_rows_deleted,
            "audit_entry_id": self.audit_entry_id,
        }


def _default_actor() -> str:
    env = os.environ.get("AIAAS_DB_ACTOR")
    if env:
        return env
    try:
        return f"aiaas-db partitions ({getpass.getuser()})"
    except (KeyError, OSError):  # no passwd entry (containers)
        return "aiaas-db partitions"


def _parse_bound(text: str) -> datetime | None:
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def list_partitions(
    conn: psycopg.Connection[Any], table: str = USAGE_EVENTS
) -> list[PartitionInfo]:
    """The partitions of ``table``, ordered by lower bound (the DEFAULT partition last)."""
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")  # bounds render in the session time zone
        found = conn.execute(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (table,)
        ).fetchone()
        if found is None or found[0] != "p":
            raise MigrationRefusedError(
                f"{table} is not a partitioned table in this database; apply the platform "
                "schema first (aiaas-db migrate up --platform)",
                code="PARTITION_TABLE_MISSING",
            )
        rows = conn.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), greatest(c.reltuples, 0)::bigint
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(%s)
            """,
            (table,),
        ).fetchall()
    parts: list[PartitionInfo] = []
    for name, bound, estimate in rows:
        if bound == "DEFAULT":
            parts.append(PartitionInfo(name, None, None, is_default=True, estimated_rows=estimate))
            continue
        match = _BOUND.fullmatch(bound)
        if match is None:  # pragma: no cover - a range partition always renders this way
            raise MigrationRefusedError(f"cannot read the bounds of partition {name}: {bound}")
        parts.append(
            PartitionInfo(
                name,
                _parse_bound(match.group("lo")),
                _parse_bound(match.group("hi")),
                estimated_rows=estimate,
            )
        )
    floor = datetime.min.replace(tzinfo=UTC)
    parts.sort(key=lambda p: (p.is_default, p.lower or floor, p.name))
    return parts


def _overlaps(part: PartitionInfo, lo: datetime, hi: datetime) -> bool:
    if part.is_default:
        return False
    return (part.lower is None or part.lower < hi) and (part.upper is None or part.upper > lo)


def _begin(conn: psycopg.Connection[Any], table: str, lock_timeout: float) -> None:
    """Session settings and the advisory lock of a maintenance transaction."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms"))
    )
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, table)
    )


def _today(conn: psycopg.Connection[Any], today: date | None) -> date:
    if today is not None:
        return today
    row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    value: date = row[0]
    return value


def _audit(
    conn: psycopg.Connection[Any],
    *,
    protector: PiiProtector | None,
    actor: str | None,
    action: str,
    target: str,
    metadata: dict[str, Any],
) -> int | None:
    from aiaas_db.migrations._state import audit_table_exists  # noqa: PLC0415
    from aiaas_db.platform._audit import write_audit  # noqa: PLC0415 -- only when auditing

    if not audit_table_exists(conn):
        return None
    assert protector is not None  # resolved before anything changed
    return write_audit(
        conn,
        actor_type="service",
        actor=actor or _default_actor(),
        action=action,
        target=target,
        metadata=metadata,
        protector=protector,
    )


def _resolve_protector(
    conn: psycopg.Connection[Any], protector: PiiProtector | None
) -> PiiProtector | None:
    """The protector to audit with: given, else from the environment when auditing is needed."""
    from aiaas_db.migrations._state import audit_table_exists  # noqa: PLC0415

    if protector is not None or not audit_table_exists(conn):
        return protector
    from aiaas_db.platform._pii import PiiProtector  # noqa: PLC0415

    return PiiProtector.from_env()


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def _locked(table: str, lock_timeout: float) -> LockTimeoutError:
    return LockTimeoutError(
        f"could not lock {table} or its partitions within {lock_timeout:g} s (queries or "
        "inserts hold them); retry, or raise --lock-timeout"
    )


def _create_day(
    conn: psycopg.Connection[Any],
    table: str,
    name: str,
    *,
    bounds: tuple[datetime, datetime],
    columns: sql.Composable,
    has_default: bool,
) -> int:
    """Create one day partition; returns how many rows moved into it from the DEFAULT one."""
    lo, hi = bounds
    moving = sql.Identifier("aiaas_moving_rows")
    count = 0
    if has_default:
        # ACCESS EXCLUSIVE on the DEFAULT partition is what CREATE ... PARTITION OF takes anyway
        # (to check it); taking it first keeps inserts of the day out while its rows move.
        default = sql.Identifier(f"{table}_default")
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(default))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                moving, sql.Identifier(table)
            )
        )
        count = conn.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {default} WHERE occurred_at >= %s AND occurred_at < %s"
                " RETURNING {cols}) INSERT INTO {moving} ({cols}) SELECT {cols} FROM moved"
            ).format(default=default, moving=moving, cols=columns),
            (lo, hi),
        ).rowcount
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name),
            sql.Identifier(table),
            sql.Literal(lo.isoformat()),
            sql.Literal(hi.isoformat()),
        )
    )
    if has_default:
        if count:
            conn.execute(
                sql.SQL("INSERT INTO {} ({cols}) SELECT {cols} FROM {moving}").format(
                    sql.Identifier(name), moving=moving, cols=columns
                )
            )
        conn.execute(sql.SQL("DROP TABLE {}").format(moving))
    return max(count, 0)


def ensure_partitions(
    conn: psycopg.Connection[Any],
    *,
    ahead: int = 7,
    behind: int = 0,
    today: date | None = None,
    protector: PiiProtector | None = None,
    actor: str | None = None,
    lock_timeout: float = 10.0,
    table: str = USAGE_EVENTS,
) -> EnsureReport:
    """Create the daily partitions of ``table`` from ``today - behind`` to ``today + ahead``.

    Rows of a new day sitting in the DEFAULT partition are moved into it in the same
    transaction. Days already covered by a partition are left alone; a day only partly covered
    by a non-daily partition is refused (``PARTITION_OVERLAP``), since creating it would fail.
    """
    ahead, behind = parse_days(ahead), parse_days(behind)
    try:
        with conn.transaction():
            protector = _resolve_protector(conn, protector)
            parts = list_partitions(conn, table)
            _begin(conn, table, lock_timeout)
            start = _today(conn, today)
            first, last = start - timedelta(days=behind), start + timedelta(days=ahead)
            days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
            has_default = any(p.is_default for p in parts)
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in _columns(conn, table))
            created: list[str] = []
            existing: list[str] = []
            moved: dict[str, int] = {}
            for day in days:
                lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
                covering = [p for p in parts if _overlaps(p, lo, hi)]
                if covering:
                    whole = [
                        p
                        for p in covering
                        if (p.lower is None or p.lower <= lo) and (p.upper is None or p.upper >= hi)
                    ]
                    if not whole:
                        raise MigrationRefusedError(
                            f"day {day} is partly covered by {', '.join(p.name for p in covering)};"
                            " a daily partition cannot be created beside it. Detach or reshape "
                            "those partitions first",
                            code="PARTITION_OVERLAP",
                        )
                    existing.append(whole[0].name)
                    continue
                name = partition_name(table, day)
                count = _create_day(
                    conn, table, name, bounds=(lo, hi), columns=columns, has_default=has_default
                )
                if count:
                    moved[name] = count
                created.append(name)
                parts.append(PartitionInfo(name, lo, hi))
            audit_id = None
            if created:
                audit_id = _audit(
                    conn,
                    protector=protector,
                    actor=actor,
                    action="partitions.ensure",
                    target=table,
                    metadata={
                        "created": created,
                        "moved_rows": moved,
                        "first_day": first.isoformat(),
                        "last_day": last.isoformat(),
                    },
                )
    except psycopg.errors.LockNotAvailable:
        raise _locked(table, lock_timeout) from None
    return EnsureReport(
        table=table,
        first_day=first,
        last_day=last,
        created=tuple(created),
        existing=tuple(existing),
        moved_rows=moved,
        audit_entry_id=audit_id,
    )


def retain_partitions(
    conn: psycopg.Connection[Any],
    *,
    older_than: int = USAGE_EVENTS_RETENTION_DAYS,
    dry_run: bool = False,
    today: date | None = None,
    protector: PiiProtector | None = None,
    actor: str | None = None,
    lock_timeout: float = 10.0,
    table: str = USAGE_EVENTS,
) -> RetainReport:
    """Drop the partitions of ``table`` wholly older than ``older_than`` days before today.

    The cutoff is the UTC midnight ``older_than`` days before today: a partition whose upper
    bound is at or before it is dropped; one that straddles it is kept (whole partitions only).
    Rows of the DEFAULT partition older than the cutoff are deleted. ``dry_run`` reports what
    would go and changes nothing.
    """
    older_than = parse_days(older_than)
    if older_than < 1:
        raise MigrationRefusedError(
            "--older-than must be at least 1 day (0 would drop today's data)",
            code="PARTITION_RETENTION_INVALID",
        )
    default = f"{table}_default"
    try:
        with conn.transaction():
            protector = None if dry_run else _resolve_protector(conn, protector)
            parts = list_partitions(conn, table)
            _begin(conn, table, lock_timeout)
            cutoff = _midnight(_today(conn, today) - timedelta(days=older_than))
            doomed = tuple(
                p for p in parts if not p.is_default and p.upper is not None and p.upper <= cutoff
            )
            has_default = any(p.is_default for p in parts)
            old_default = 0
            if dry_run:
                if has_default:
                    row = conn.execute(
                        sql.SQL("SELECT count(*) FROM {} WHERE occurred_at < %s").format(
                            sql.Identifier(default)
                        ),
                        (cutoff,),
                    ).fetchone()
                    old_default = int(row[0]) if row else 0
            else:
                for p in doomed:
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(p.name)))
                if has_default:
                    old_default = conn.execute(
                        sql.SQL("DELETE FROM {} WHERE occurred_at < %s").format(
                            sql.Identifier(default)
                        ),
                        (cutoff,),
                    ).rowcount
            audit_id = None
            if not dry_run and (doomed or old_default):
                audit_id = _audit(
                    conn,
                    protector=protector,
                    actor=actor,
                    action="partitions.retain",
                    target=table,
                    metadata={
                        "dropped": [p.name for p in doomed],
                        "estimated_rows": sum(p.estimated_rows for p in doomed),
                        "default_rows_deleted": old_default,
                        "cutoff": cutoff.isoformat(),
                        "older_than_days": older_than,
                    },
                )
    except psycopg.errors.LockNotAvailable:
        raise _locked(table, lock_timeout) from None
    return RetainReport(
        table=table,
        cutoff=cutoff,
        older_than_days=older_than,
        dry_run=dry_run,
        dropped=doomed,
        kept=sum(1 for p in parts if not p.is_default) - len(doomed),
        default_rows_deleted=old_default,
        audit_entry_id=audit_id,
    )
