"""The command for real: configuration errors, --help, and a SIGTERM shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest

Env = Callable[..., dict[str, str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commands(service: ModuleType, script: Path) -> list[list[str]]:
    return [[str(script)], [sys.executable, "-m", service.__name__]]


def test_console_script_is_named_after_the_service(service: ModuleType, script: Path) -> None:
    assert script.name == service.SERVICE_NAME
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert f"usage: {service.SERVICE_NAME}" in done.stdout
    assert "--host" in done.stdout
    assert "--port" in done.stdout
    assert f"{service.ENV_PREFIX}PORT" in done.stdout


@pytest.mark.parametrize("how", ["console-script", "python-m"])
def test_bad_configuration_exits_2(
    service: ModuleType, script: Path, clean_env: Env, how: str
) -> None:
    command = commands(service, script)[0 if how == "console-script" else 1]
    port = f"{service.ENV_PREFIX}PORT"
    done = subprocess.run(
        command,
        env=clean_env(**{port: "eighty"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"{service.SERVICE_NAME}: 1 configuration problem(s):")
    assert f"(env {port}): expected an integer, got 'eighty'" in done.stderr
    assert f"fix or unset {port}" in done.stderr


def test_bad_configuration_in_process(
    service: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {f"{service.ENV_PREFIX}PORT": "70000", f"{service.ENV_PREFIX}TRACING": "maybe"}
    assert service.main([], environ=env) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{service.SERVICE_NAME}: 2 configuration problem(s):")
    assert service.main([], environ={"OTEL_TRACES_SAMPLER": "sometimes"}) == 2
    assert "OTEL_TRACES_SAMPLER" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        service.main(["--port", "eighty"])
    assert exc.value.code == 2


def test_a_port_in_use_exits_1(
    service: ModuleType, clean_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = clean_env(**{f"{service.ENV_PREFIX}TRACING": "false"})
    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert service.main(["--port", str(taken.getsockname()[1])], environ=env) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any("could not start" in line["message"] for line in lines)


def wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited early: {proc.communicate(timeout=30)[1]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the service did not become healthy within 30 s")


def test_serves_then_stops_gracefully_on_sigterm(
    service: ModuleType, script: Path, clean_env: Env
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(script), "--host", "127.0.0.1", "--port", str(port)],
        env=clean_env(**{f"{service.ENV_PREFIX}GRACEFUL_TIMEOUT": "5s"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        greeting = httpx.get(
            f"{base}/v1/greeting?name=ada", headers={"X-Request-ID": "sigterm-test-0001"}
        )
        metrics = httpx.get(f"{base}/metrics")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert greeting.json() == {"greeting": "Hello, Ada!"}
    assert metrics.status_code == 200
    assert stdout == ""
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    assert {line["service"] for line in lines} == {service.SERVICE_NAME}
    messages = [line["message"] for line in lines]
    assert "Shutting down" in messages  # uvicorn's own lines are JSON too
    stopped = next(line for line in lines if line["message"] == f"{service.SERVICE_NAME} stopped")
    assert stopped["signal"] == "SIGTERM"
    assert messages.index("Shutting down") < messages.index(stopped["message"])
    access = [line for line in lines if line["logger"] == "aiaas.access"]
    assert [line["request_id"] for line in access] == ["sigterm-test-0001"]
    assert len(access[0]["trace_id"]) == 32  # traced, though no collector listens
