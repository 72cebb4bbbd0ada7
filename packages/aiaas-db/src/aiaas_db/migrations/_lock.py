"""Advisory locks: ours per database and component, and golang-migrate's own key.

The lock is taken by polling ``pg_try_advisory_lock`` (with back-off) until a timeout, never by
a blocking ``pg_advisory_lock``: a waiter that blocks inside the server holds a snapshot, and
``CREATE INDEX CONCURRENTLY`` run by the lock holder then waits for the waiter forever. Locks are
session-level, so a migrator that dies takes its lock with it.

golang-migrate's Postgres driver locks ``(crc32(schema NUL table NUL database) * 1486364155)
mod 2**32`` with the database named as its client named it: ``/mydb`` when opened from a URL (the
CLI), ``mydb`` when handed an open connection. We take both forms, so neither kind of
golang-migrate can run against a component's table while we hold it.
"""

from __future__ import annotations

import hashlib
import random
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_db._errors import LockTimeoutError

if TYPE_CHECKING:
    import psycopg

__all__ = ["AdvisoryLock", "golang_migrate_lock_key", "lock_keys", "migrator_lock_key"]

# Our own generator: waiting for a lock must not move the application's global ``random`` state
# (seeded simulations and Hypothesis both notice when a library does).
_JITTER: Final = random.Random()  # noqa: S311 -- jitter, not secrecy

GOLANG_MIGRATE_SALT: Final = 1486364155


def golang_migrate_lock_key(database: str, schema: str, table: str) -> int:
    """golang-migrate's advisory lock id for ``schema.table`` in ``database``.

    ``database`` is used verbatim: pass ``"/mydb"`` for golang-migrate opened from a URL.
    """
    name = "\x00".join((schema, table, database))
    return (zlib.crc32(name.encode("utf-8")) * GOLANG_MIGRATE_SALT) & 0xFFFFFFFF


def migrator_lock_key(database: str, schema: str, component: str) -> int:
    """aiaas-db's own lock id for one component of one database (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"aiaas-db\x00{database}\x00{schema}\x00{component}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_keys(database: str, schema: str, table: str, component: str) -> tuple[int, ...]:
    """Every key a migrator of ``component`` holds: its own, then golang-migrate's two forms."""
    keys = [
        migrator_lock_key(database, schema, component),
        golang_migrate_lock_key(f"/{database}", schema, table),
        golang_migrate_lock_key(database, schema, table),
    ]
    return tuple(dict.fromkeys(keys))


@attrs.define
class LockHolder:
    pid: int
    application_name: str
    backend_start: str
    state: str


class AdvisoryLock:
    """Session-level advisory locks on ``keys``, all or none, taken by polling.

    ``acquire`` tries every key with ``pg_try_advisory_lock``; if any is held elsewhere it releases
    what it got, sleeps (50 ms doubling to 1 s, with jitter) and tries again until ``timeout``
    seconds have passed, then raises :class:`LockTimeoutError` naming who holds it.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        keys: Sequence[int],
        *,
        timeout: float = 60.0,
        on_wait: Callable[[float], None] | None = None,
        component: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout < 0:
            raise ValueError(f"lock timeout must be >= 0 seconds, got {timeout!r}")
        self._conn = conn
        self.keys = tuple(keys)
        self.timeout = timeout
        self._on_wait = on_wait
        self._component = component
        self._clock = clock
        self._sleep = sleep
        self.held = False
        self.waited_s = 0.0
        self.attempts = 0

    def _try_all(self) -> bool:
        got: list[int] = []
        for key in self.keys:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                got.append(key)
                continue
            for k in got:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (k,))
            return False
        return True

    def acquire(self) -> AdvisoryLock:
        if self.held:
            return self
        start = self._clock()
        delay = 0.05
        while True:
            self.attempts += 1
            if self._try_all():
                self.held = True
                self.waited_s = self._clock() - start
                return self
            waited = self._clock() - start
            if waited >= self.timeout:
                holders = self.holders()
                who = (
                    "; held by "
                    + ", ".join(
                        f"pid {h.pid} ({h.application_name or 'no application name'}, "
                        f"since {h.backend_start}, {h.state})"
                        for h in holders
                    )
                    if holders
                    else ""
                )
                raise LockTimeoutError(
                    f"could not take the migration lock within {self.timeout:g} s{who}. Another "
                    "migrator (aiaas-db or golang-migrate) is running on this database; wait for "
                    "it, or raise --lock-timeout",
                    component=self._component,
                )
            if self._on_wait is not None:
                self._on_wait(waited)
            pause = min(delay, max(0.0, self.timeout - waited))
            self._sleep(pause * (0.75 + _JITTER.random() / 2))
            delay = min(delay * 2, 1.0)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._conn.closed:
            return
        for key in self.keys:
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def holders(self) -> list[LockHolder]:
        """Sessions holding any of the keys (needs permission to read pg_stat_activity)."""
        rows = self._conn.execute(
            """
            SELECT DISTINCT a.pid, coalesce(a.application_name, ''),
                   coalesce(a.backend_start::text, ''), coalesce(a.state, '')
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                    SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.objsubid = 1
              AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%s)
              AND a.pid <> pg_backend_pid()
            ORDER BY a.pid
            """,
            (list(self.keys),),
        ).fetchall()
        return [LockHolder(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def __enter__(self) -> AdvisoryLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()
