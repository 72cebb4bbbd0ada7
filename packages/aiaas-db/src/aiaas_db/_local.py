"""A local PostgreSQL cluster from the machine's server binaries: the embedded default.

``LocalPostgres.temporary()`` gives a throwaway cluster (tests, examples) in a fresh temporary
directory, removed on :meth:`LocalPostgres.stop`. ``LocalPostgres(data_dir)`` is a persistent
cluster for local work: created on first start, reused afterwards, its port and generated password
kept in ``aiaas-local.json`` (mode 0600) beside the data.

PostgreSQL refuses to run as root. When this process is root, every server command runs as the
``postgres`` OS user (``runuser -u postgres -- ...``) and the cluster directory is handed to that
user. The server listens on 127.0.0.1 only, on a free port, with no Unix socket. Throwaway
clusters trust local TCP connections; persistent ones use SCRAM with a generated password that is
passed to ``initdb`` through a file and never appears on a command line or in a log.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import attrs

from aiaas_db._errors import LocalPostgresError, PostgresNotFoundError

__all__ = [
    "LocalPostgres",
    "LocalPostgresInfo",
    "PostgresBinaries",
    "default_data_dir",
    "find_postgres_binaries",
]

_REQUIRED: Final = ("initdb", "pg_ctl", "postgres")
_STATE_FILE: Final = "aiaas-local.json"
_INSTALL_HINT: Final = (
    "Install the PostgreSQL server: Debian/Ubuntu `apt-get install postgresql` "
    "(binaries land in /usr/lib/postgresql/<major>/bin), Fedora/RHEL `dnf install "
    "postgresql-server`, macOS `brew install postgresql@15`; or put initdb, pg_ctl and postgres on "
    "PATH, or set AIAAS_PG_BIN to the folder that holds them, or pass a DSN instead "
    "(--dsn / AIAAS_DB_URL)."
)
# Settings that make a throwaway cluster fast; durability does not matter for it.
_THROWAWAY_SETTINGS: Final = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


@attrs.frozen
class PostgresBinaries:
    """The folder holding a PostgreSQL server's binaries, and its major version."""

    bindir: Path
    version: str

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


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


def find_postgres_binaries(
    *, path: str | None = None, debian_glob: str = "/usr/lib/postgresql/*/bin"
) -> PostgresBinaries:
    """Find ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for in ``$AIAAS_PG_BIN``, on ``PATH`` (or ``path``), in ``pg_config --bindir``, then in
    Debian's ``/usr/lib/postgresql/<major>/bin`` (newest first). Raises
    :class:`PostgresNotFoundError` saying what to install when none holds all three.
    """
    looked: list[str] = []
    for how, folder in _candidates(path, debian_glob):
        if _has_server(folder):
            return PostgresBinaries(bindir=folder, version=_version_of(folder))
        looked.append(f"{folder} ({how})")
    where = "; looked in " + ", ".join(looked) if looked else ""
    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH, via "
        f"pg_config, or under /usr/lib/postgresql/*/bin{where}. {_INSTALL_HINT}"
    )


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
    """What ``status`` reports about a local cluster (never its password)."""

    data_dir: str
    running: bool
    port: int | None
    pid: int | None
    version: str
    persistent: bool
    url: str | None  # password masked

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
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binaries: PostgresBinaries | None = None,
        settings: dict[str, str] | None = None,
        database: str = "postgres",
    ) -> None:
        self._throwaway = data_dir is None
        self._base = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._binaries = binaries
        self._settings = dict(settings or {})
        self.database = database
        self.port: int | None = None
        self._password: str | None = None
        self._started_here = False
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
        if self._binaries is None:
            self._binaries = find_postgres_binaries()
        return self._binaries

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

    @staticmethod
    def _as_root() -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _command(self, args: Sequence[str]) -> list[str]:
        if self._as_root():
            runuser = shutil.which("runuser")
            if runuser is None:
                raise LocalPostgresError(
                    "running as root needs `runuser` (util-linux) to start PostgreSQL as the "
                    "postgres user; install util-linux or run as an ordinary user"
                )
            return [runuser, "-u", "postgres", "--", *args]
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
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise LocalPostgresError(f"{what} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def _give_to_postgres(self, path: Path) -> None:
        if not self._as_root():
            return
        import pwd  # noqa: PLC0415 -- POSIX only, and only when running as root

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise LocalPostgresError(
                "running as root, PostgreSQL must run as the `postgres` OS user, which does not "
                "exist; create it (`useradd --system postgres`) or run as an ordinary user"
            ) from None
        os.chown(path, pw.pw_uid, pw.pw_gid)
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001 and parent.stat().st_uid != pw.pw_uid:
                raise LocalPostgresError(
                    f"the postgres OS user cannot reach {path}: {parent} is not searchable by "
                    "others; choose a data directory outside it (for example /var/lib/aiaas-db)"
                )

    # -- state ---------------------------------------------------------------------------------

    def _state_path(self) -> Path | None:
        return None if self._base is None else self._base / _STATE_FILE

    def _load_state(self) -> None:
        path = self._state_path()
        if path is None or not path.is_file():
            return
        state = json.loads(path.read_text())
        self._password = state.get("password")
        if self._requested_port is None:
            self._requested_port = state.get("port")

    def _save_state(self) -> None:
        path = self._state_path()
        if path is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"port": self.port, "password": self._password}, fh)

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
            self._give_to_postgres(pwfile)
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
        self._give_to_postgres(self._base)
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
            self._give_to_postgres(log)
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
        """Where the cluster lives, whether it runs, and its masked URL."""
        running = self.running
        port = self._running_port() if running else None
        masked = None
        if running and port is not None:
            self.port = port
            masked = self.url(mask_password=True)
        version = self.binaries.version if self._binaries is not None or running else "unknown"
        return LocalPostgresInfo(
            data_dir=str(self.data_dir) if self.data_dir else "",
            running=running,
            port=port,
            pid=self._pid(),
            version=version,
            persistent=self.persistent,
            url=masked,
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
    """Where ``aiaas-db local`` keeps its persistent cluster.

    ``$AIAAS_DB_LOCAL_DIR`` when set; as root ``/var/lib/aiaas-db/postgres`` (the postgres OS user
    must be able to reach it); otherwise ``$XDG_DATA_HOME/aiaas-db/postgres``.
    """
    env = os.environ.get("AIAAS_DB_LOCAL_DIR")
    if env:
        return Path(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/aiaas-db/postgres")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "aiaas-db" / "postgres"
