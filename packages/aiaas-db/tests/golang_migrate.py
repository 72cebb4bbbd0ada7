"""A faithful emulation of golang-migrate v4.19 (database/postgres + migrate.go) for interop tests.

It does what golang-migrate does to the database, statement for statement: the advisory lock
(``pg_advisory_lock`` of ``crc32(schema NUL table NUL database) * 1486364155`` in uint32
arithmetic, database named ``/db`` when opened from a URL), the existence check and
``CREATE TABLE IF NOT EXISTS`` of ``schema_migrations``, ``SELECT version, dirty ... LIMIT 1``,
SetVersion as ``TRUNCATE`` + ``INSERT`` in one transaction (no row for a clean nil version), and
for each migration SetVersion(target, dirty=true), the whole file as one multi-statement Exec,
SetVersion(target, false). A down's target is the previous version, or -1.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from urllib.parse import urlparse

import psycopg
from psycopg import sql

NIL = -1
_FILE = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")


class ErrDirty(Exception):  # noqa: N818 -- golang-migrate's own name
    def __init__(self, version: int) -> None:
        super().__init__(f"Dirty database version {version}. Fix and force version.")
        self.version = version


class ErrNoChange(Exception):  # noqa: N818 -- golang-migrate's own name
    pass


def advisory_lock_id(database: str, *additional: str) -> int:
    name = "\x00".join([*additional, database]) if additional else database
    return (zlib.crc32(name.encode()) * 1486364155) & 0xFFFFFFFF


class GolangMigrate:
    def __init__(
        self, url: str, source: Path, *, table: str = "schema_migrations", from_url: bool = True
    ) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.schema = self.conn.execute("SELECT CURRENT_SCHEMA()").fetchone()[0]  # type: ignore[index]
        database = (
            urlparse(url).path
            if from_url
            else self.conn.execute("SELECT CURRENT_DATABASE()").fetchone()[0]
        )  # type: ignore[index]
        self.table = table
        self.lock_id = advisory_lock_id(database, self.schema, table)
        self.source = source
        self._ensure_version_table()

    def close(self) -> None:
        self.conn.close()

    # -- database driver ---------------------------------------------------------------------

    def _qualified(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))

    def lock(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.lock_id,))

    def unlock(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_id,))

    def _ensure_version_table(self) -> None:
        self.lock()
        try:
            count = self.conn.execute(
                "SELECT COUNT(1) FROM information_schema.tables WHERE table_schema = %s AND "
                "table_name = %s LIMIT 1",
                (self.schema, self.table),
            ).fetchone()
            if count == (1,):
                return
            self.conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, "
                    "dirty boolean not null)"
                ).format(self._qualified())
            )
        finally:
            self.unlock()

    def version(self) -> tuple[int, bool]:
        row = self.conn.execute(
            sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(self._qualified())
        ).fetchone()
        if row is None:
            return NIL, False
        return int(row[0]), bool(row[1])

    def set_version(self, version: int, dirty: bool) -> None:
        with self.conn.transaction():
            self.conn.execute(sql.SQL("TRUNCATE {}").format(self._qualified()))
            if version >= 0 or (version == NIL and dirty):
                self.conn.execute(
                    sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(
                        self._qualified()
                    ),
                    (version, dirty),
                )

    def run(self, body: str) -> None:
        self.conn.execute(body.encode())  # one multi-statement Exec: simple query protocol

    # -- source ------------------------------------------------------------------------------

    def _files(self) -> dict[int, dict[str, Path]]:
        out: dict[int, dict[str, Path]] = {}
        for path in self.source.iterdir():
            m = _FILE.match(path.name)
            if m:
                out.setdefault(int(m.group(1)), {})[m.group(3)] = path
        return out

    def _versions(self) -> list[int]:
        return sorted(self._files())

    # -- migrate.go --------------------------------------------------------------------------

    def _run_migration(self, body: str | None, target: int) -> None:
        if body is not None:
            self.set_version(target, True)
            self.run(body)
        self.set_version(target, False)

    def steps(self, n: int) -> None:
        self.lock()
        try:
            current, dirty = self.version()
            if dirty:
                raise ErrDirty(current)
            versions = self._versions()
            if current != NIL and current not in versions:
                raise FileNotFoundError(f"no migration found for version {current}")
            files = self._files()
            done = 0
            while done < abs(n):
                if n > 0:
                    later = [v for v in versions if v > current] if current != NIL else versions
                    if not later:
                        break
                    target = later[0]
                    self._run_migration(files[target]["up"].read_text(), target)
                    current = target
                else:
                    if current == NIL:
                        break
                    earlier = [v for v in versions if v < current]
                    target = earlier[-1] if earlier else NIL
                    self._run_migration(files[current]["down"].read_text(), target)
                    current = target
                done += 1
            if done == 0:
                raise ErrNoChange()
        finally:
            self.unlock()

    def up(self) -> None:
        self.steps(10**6)

    def down(self) -> None:
        self.steps(-(10**6))

    def force(self, version: int) -> None:
        self.lock()
        try:
            self.set_version(version, False)
        finally:
            self.unlock()
