"""The platform in one command (what ``nox -s platform`` runs): ``inference-service`` as a process
in local mode, its banner, the printed ``curl`` line and ``openai`` snippet run as pasted, the data
directory kept between runs, ``--fresh``, ``--database-url``, and Ctrl-C leaving nothing behind.

The starts run in order against one data directory (the first one's usage is what the second
must still see and ``--fresh`` must delete), so the tests share one module-scoped state.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest
from conftest import Platform
from inference_service import load
from inference_service._cli import OTLP_ENDPOINT_VARIABLES, tracing_enabled
from inference_service._database import DatabaseError, remove_cluster
from test_process import base_env, free_port, log_lines

from aiaas_db import LocalPostgres, local_dev_api_key

READY_LINE = "Ctrl-C stops it"


@attrs.define
class Running:
    """A started ``inference-service``; stdout and stderr go to files (read while it runs)."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    port: int
    started: float

    @property
    def out(self) -> str:
        return self.stdout.read_text()

    @property
    def err(self) -> str:
        return self.stderr.read_text()

    def wait_banner(self, timeout: float = 180) -> float:
        """Seconds from the process start to the banner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.out:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise AssertionError(f"exited early ({self.proc.returncode}): {self.err[-3000:]}")
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"no banner in {timeout} s: {self.err[-3000:]}")

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=120)
        finally:
            self.kill()

    def kill(self) -> None:
        """Only after a failure: the process is gone when this returns."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def launch(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Running:
    port = free_port()
    name = uuid.uuid4().hex[:8]
    stdout, stderr = workdir / f"{name}.out", workdir / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_service", "--port", str(port), *args],
            env=env or base_env(),
            stdout=out,
            stderr=err,
        )
    return Running(proc, stdout, stderr, port, time.monotonic())


def banner_lines(banner: str, start: str, end: str) -> str:
    lines = banner.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i, line in enumerate(lines) if line.startswith(end) and i >= first)
    return "\n".join(lines[first : last + 1])


def run_curl(banner: str, env: dict[str, str] | None = None) -> str:
    """The banner's curl line, run by a shell exactly as printed."""
    assert shutil.which("curl"), "these tests run the printed curl line: install curl"
    line = banner_lines(banner, "curl ", "curl ")
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_snippet(banner: str, env: dict[str, str] | None = None) -> str:
    """The banner's openai snippet, run by Python exactly as printed."""
    code = banner_lines(banner, "from openai import OpenAI", "print(response.usage)")
    assert len(code.splitlines()) == 5
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def postgres_processes(data_dir: Path) -> list[int]:
    """PIDs of processes whose command line names ``data_dir`` (the cluster's server)."""
    found = []
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


@attrs.define
class State:
    workdir: Path
    data_dir: Path
    first_request_id: str = ""
    timings: dict[str, float] = attrs.Factory(dict)


@pytest.fixture(scope="module")
def state() -> Iterator[State]:
    workdir = Path(tempfile.mkdtemp(prefix="inference-platform-"))
    workdir.chmod(0o755)  # the server runs as another OS user when the tests run as root
    yield State(workdir, workdir / "pg")
    for pid in postgres_processes(workdir):  # pragma: no cover - only after a failed test
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)


def usage_rows(data_dir: Path, request_id: str) -> int:
    # The running service's cluster: connect only (a ``with LocalPostgres`` would stop it).
    with psycopg.connect(LocalPostgres(data_dir).url("aiaas")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM usage_events WHERE request_id = %s", (request_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_first_start_prints_the_banner_and_its_lines_work_as_pasted(state: State) -> None:
    # No --data-dir: the default data directory (aiaas-db's, here moved by AIAAS_DB_LOCAL_DIR).
    env = base_env(AIAAS_DB_LOCAL_DIR=str(state.data_dir))
    env.pop("INFERENCE_SERVICE_TRACING")  # the default: off, no collector configured
    running = launch(state.workdir, env=env)
    try:
        state.timings["first"] = running.wait_banner()
        banner = running.out
        token = local_dev_api_key()
        root = f"http://127.0.0.1:{running.port}"
        assert banner.count(READY_LINE) == 1  # printed once
        assert f"base URL  {root}/v1" in banner
        assert f"API key   {token}" in banner
        assert f"metrics   {root}/metrics" in banner
        assert f"ready     {root}/ready" in banner
        assert f"data      {state.data_dir}  (PostgreSQL " in banner

        answer = run_curl(banner)
        assert '"object":"list"' in answer.replace(" ", "")
        assert run_snippet(banner).startswith("2 embeddings of 384 floats\n")

        state.first_request_id = f"platform-{uuid.uuid4().hex}"
        response = httpx.post(
            f"{root}/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": "kept between runs"},
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": state.first_request_id},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert httpx.get(f"{root}/ready", timeout=10).status_code == 200
        assert "inference_usage" in httpx.get(f"{root}/metrics", timeout=10).text
        status = running.stop(signal.SIGINT)
    finally:
        running.kill()
    err = running.err
    assert status == 0, err[-3000:]
    assert token not in err  # the key is for the human on stdout, never in the logs
    records = log_lines(err)
    messages = [r.get("message") for r in records]
    assert "local PostgreSQL stopped" in messages
    assert not any("Exception while exporting" in str(m) for m in messages)  # tracing is off
    assert postgres_processes(state.data_dir) == []  # Ctrl-C left no process behind
    assert not LocalPostgres(state.data_dir).running


def test_second_start_reuses_the_data_dir(state: State) -> None:
    assert state.first_request_id, "runs after the first start"
    running = launch(state.workdir, "--data-dir", str(state.data_dir))
    try:
        state.timings["second"] = running.wait_banner()
        assert f"API key   {local_dev_api_key()}" in running.out
        assert usage_rows(state.data_dir, state.first_request_id) == 1  # the first run's usage
        status = running.stop(signal.SIGTERM)
    finally:
        running.kill()
    assert status == 0, running.err[-3000:]
    assert postgres_processes(state.data_dir) == []
    first, second = state.timings["first"], state.timings["second"]
    print(f"time to ready: first {first:.1f} s, second {second:.1f} s")


def test_fresh_starts_from_an_empty_database(state: State) -> None:
    assert state.first_request_id, "runs after the first start"
    running = launch(state.workdir, "--data-dir", str(state.data_dir), "--fresh")
    try:
        running.wait_banner()
        assert usage_rows(state.data_dir, state.first_request_id) == 0  # deleted
        # The seed was loaded again: the same key works on the new database.
        assert run_snippet(running.out).startswith("2 embeddings of 384 floats\n")
        status = running.stop(signal.SIGINT)
    finally:
        running.kill()
    assert status == 0, running.err[-3000:]
    fresh = [r for r in log_lines(running.err) if str(r.get("message", "")).startswith("--fresh")]
    assert fresh
    assert fresh[0]["data_dir"] == str(state.data_dir)
    assert postgres_processes(state.data_dir) == []


def test_a_database_given_by_url_prints_no_key(platform: Platform, state: State) -> None:
    env = base_env(INFERENCE_SERVICE_API_KEY_HASH_KEY=platform.hash_key)
    running = launch(state.workdir, "--database-url", platform.url, env=env)
    try:
        running.wait_banner()
        banner = running.out
        assert "aiaas_" not in banner  # no key printed
        assert platform.token not in banner
        assert "postgresql://" not in banner  # nor the URL (it may hold a password)
        assert "the database given by URL" in banner
        with_key = {**base_env(), "OPENAI_API_KEY": platform.token}
        assert '"object":"list"' in run_curl(banner, with_key).replace(" ", "")
        assert run_snippet(banner, with_key).startswith("2 embeddings of 384 floats\n")
        status = running.stop(signal.SIGTERM)
    finally:
        running.kill()
    assert status == 0, running.err[-3000:]
    assert platform.token not in running.err


def test_usage_errors_and_a_data_dir_that_is_no_cluster(state: State, tmp_path: Path) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inference_service", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=base_env(**env),
            check=False,
        )

    both = run(
        "--database-url",
        "postgresql://db/x",
        "--fresh",
        INFERENCE_SERVICE_API_KEY_HASH_KEY="ab" * 32,
    )
    assert both.returncode == 2
    assert "--fresh is for local mode" in both.stderr
    env_url = run(
        "--data-dir",
        str(tmp_path),
        INFERENCE_SERVICE_DATABASE_URL="postgresql://db/x",
        INFERENCE_SERVICE_API_KEY_HASH_KEY="ab" * 32,
    )
    assert env_url.returncode == 2
    assert "--data-dir is for local mode" in env_url.stderr

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("not a database")
    refused = run("--data-dir", str(precious), "--fresh")
    assert refused.returncode == 3
    assert "refuses to delete" in refused.stderr
    assert (precious / "notes.txt").read_text() == "not a database"  # untouched

    helped = run("--help")
    assert helped.returncode == 0
    for needle in ("--data-dir", "--fresh", "--database-url", "local_dev_api_key", "aiaas-db seed"):
        assert needle in helped.stdout


def test_remove_cluster_edge_cases(tmp_path: Path) -> None:
    assert remove_cluster(tmp_path / "missing") is False
    assert remove_cluster(tmp_path) is False  # empty
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DatabaseError, match="is a file"):
        remove_cluster(a_file)


def test_tracing_is_on_only_with_an_otlp_endpoint() -> None:
    settings = load({}, {})
    assert tracing_enabled(settings, {}) is False
    for name in OTLP_ENDPOINT_VARIABLES:
        assert tracing_enabled(settings, {name: "http://collector:4318"}) is True
        assert tracing_enabled(settings, {name: "  "}) is False
    forced = load({"INFERENCE_SERVICE_TRACING": "true"}, {})
    assert tracing_enabled(forced, {}) is True
    off = load({"INFERENCE_SERVICE_TRACING": "false"}, {})
    assert tracing_enabled(off, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is False


def test_a_port_in_use_fails_with_exit_1_and_stops_postgres(state: State) -> None:
    data_dir = state.workdir / "busy"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "inference_service", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=180,
            env=base_env(INFERENCE_SERVICE_LOCAL_DATA_DIR=str(data_dir)),
            check=False,
        )
    assert done.returncode == 1, done.stderr[-3000:]
    assert READY_LINE not in done.stdout  # never ready: no banner
    assert "could not start" in done.stderr
    assert postgres_processes(data_dir) == []


def test_sigterm_while_starting_leaves_nothing_behind(state: State) -> None:
    data_dir = state.workdir / "interrupted"
    running = launch(state.workdir, "--data-dir", str(data_dir))
    try:
        deadline = time.monotonic() + 120
        while "local PostgreSQL running" not in running.err:  # migrations and model still ahead
            assert running.proc.poll() is None, running.err[-3000:]
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.01)
        status = running.stop(signal.SIGTERM)
    finally:
        running.kill()
    assert status == 0, running.err[-3000:]
    assert postgres_processes(data_dir) == []
    assert not LocalPostgres(data_dir).running


def test_a_cluster_already_running_is_used_and_left_running(state: State) -> None:
    """``aiaas-db local start`` first: the service uses that cluster and leaves it running."""
    import asyncio

    from inference_service import open_database

    data_dir = state.workdir / "shared"
    cluster = LocalPostgres(data_dir).start()
    try:
        settings = load({"INFERENCE_SERVICE_LOCAL_DATA_DIR": str(data_dir)}, {})
        with open_database(settings, {}) as database:
            assert database.local
            assert database.data_dir == data_dir
            assert database.api_key == local_dev_api_key()
            assert database.server is not None
            assert database.server.startswith("PostgreSQL ")
            assert "api_key" not in repr(database)  # the key stays out of reprs (and logs)

            async def count_keys() -> int:
                conn = await database.connect()
                async with conn:
                    cur = await conn.execute("SELECT count(*) FROM api_keys")
                    row = await cur.fetchone()
                assert row is not None
                return int(row[0])

            assert asyncio.run(count_keys()) >= 1  # migrated and seeded
        assert cluster.running  # left running: it ran before
    finally:
        cluster.stop()
    assert postgres_processes(data_dir) == []


def test_a_data_dir_that_cannot_be_created_is_a_database_error(tmp_path: Path) -> None:
    from inference_service import open_database

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings = load({"INFERENCE_SERVICE_LOCAL_DATA_DIR": str(blocker / "pg")}, {})
    with pytest.raises(DatabaseError, match="local PostgreSQL"), open_database(settings, {}):
        pass  # pragma: no cover - never entered
    done = subprocess.run(
        [sys.executable, "-m", "inference_service", "--data-dir", str(blocker / "pg")],
        capture_output=True,
        text=True,
        timeout=120,
        env=base_env(),
        check=False,
    )
    assert done.returncode == 3
    assert "local PostgreSQL" in done.stderr


def test_the_banner_names_a_reachable_address() -> None:
    from inference_service._cli import banner
    from inference_service._database import Database

    from aiaas_db import seed_api_key_hasher

    local = Database(
        "postgresql://x/y",
        seed_api_key_hasher(),
        local=True,
        data_dir=Path("/data/pg"),
        server="PostgreSQL 18.1, embedded",
        api_key="aiaas_k_s",
    )
    for host, shown in (
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104 - a listen address, not a bind
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("example.internal", "example.internal"),
    ):
        text = banner(load({"INFERENCE_SERVICE_HOST": host}, {}), local, port=9, seconds=1.0)
        assert f"base URL  http://{shown}:9/v1" in text
        assert "(PostgreSQL 18.1, embedded; kept between runs)" in text
