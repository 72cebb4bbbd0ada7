"""world-service for real: the command under uvicorn, httpx against it, SIGTERM to stop it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from world_service import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WORLD_SERVICE_", "OTEL_", "AIAAS_TELEMETRY_"))
    }
    # No collector runs here: exports fail fast and are counted; requests never notice.
    env.update(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "200"}
    )
    env.update(extra)
    return env


def wait_ready(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"world-service exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("world-service did not become healthy")


def test_serves_and_stops_gracefully_on_sigterm(keys: Any, error_validator: Any) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "world_service", "--host", "127.0.0.1", "--port", str(port)],
        env=base_env(**keys.env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=5) as client:
            world = client.get("/world", headers={"X-Request-ID": "sigterm-test-0001"})
            ready = client.get("/ready")
            anonymous = client.get("/admin/config")
            reader = client.get("/admin/config", headers={"X-API-Key": keys.reader})
            admin = client.get("/admin/config", headers={"Authorization": f"Bearer {keys.admin}"})
            metrics = client.get("/metrics")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert world.status_code == 200
    assert world.json()["message"] == "Hello, world-service!"
    assert world.headers["x-request-id"] == "sigterm-test-0001"
    assert ready.json()["status"] == "ok"
    assert anonymous.status_code == 401
    error_validator(anonymous.json())
    assert reader.status_code == 403
    error_validator(reader.json())
    assert admin.status_code == 200
    samples = {
        (s.name, s.labels.get("route"), s.labels.get("status_class")): s.value
        for f in text_string_to_metric_families(metrics.text)
        for s in f.samples
    }
    assert samples[("http_server_request_duration_seconds_count", "/world", "2xx")] == 1
    assert samples[("http_server_request_duration_seconds_count", "/admin/config", "4xx")] == 2

    assert stdout == ""
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is JSON
    messages = [line["message"] for line in lines]
    assert "world-service stopped" in messages
    stopped = next(line for line in lines if line["message"] == "world-service stopped")
    assert stopped["signal"] == "SIGTERM"
    assert "Shutting down" in messages  # uvicorn's own lines are JSON too
    access = [line for line in lines if line["logger"] == "aiaas.access"]
    assert access[0]["request_id"] == "sigterm-test-0001"
    assert len(access[0]["trace_id"]) == 32
    audits = [line["audit"] for line in lines if line["logger"] == "aiaas.audit"]
    overrides = [a["resource"] for a in audits if a["type"] == "config.override"]
    assert overrides == ["otel_exporter.endpoint", "otel_exporter.timeout_ms"]
    assert [(a["type"], a["outcome"]) for a in audits if a["type"] != "config.override"] == [
        ("authentication", "deny"),
        ("authorization", "deny"),
        ("authorization", "allow"),
    ]
    for secret in (keys.admin, keys.reader, keys.hash_key):
        assert secret not in stderr


def test_bad_configuration_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "world_service"],
        env=base_env(WORLD_SERVICE_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("world-service: 1 configuration problem(s):")
    assert "WORLD_SERVICE_PORT" in done.stderr


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "world-service"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert "--port" in done.stdout
    assert "--host" in done.stdout


def test_main_in_process_until_stopped(
    monkeypatch: pytest.MonkeyPatch, keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """main() itself, run in this process; the server is told to stop once it has answered."""
    import uvicorn

    port = free_port()
    answers: dict[str, int] = {}

    class StoppingServer(uvicorn.Server):
        def run(self, sockets: Any = None) -> None:
            def client() -> None:
                deadline = time.monotonic() + 20
                while not self.started and time.monotonic() < deadline:
                    time.sleep(0.02)
                answers["world"] = httpx.get(f"http://127.0.0.1:{port}/world").status_code
                self.should_exit = True

            threading.Thread(target=client, daemon=True).start()
            super().run(sockets)

    monkeypatch.setattr(uvicorn, "Server", StoppingServer)
    env = base_env(**keys.env(), WORLD_SERVICE_TRACING="false")
    before = signal.getsignal(signal.SIGTERM)
    assert main(["--port", str(port)], environ=env) == 0
    assert answers == {"world": 200}
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are put back
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[-1]["message"] == "world-service stopped"
    assert lines[-1]["signal"] is None


def test_main_reports_a_port_in_use(keys: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = base_env(WORLD_SERVICE_TRACING="false")
        assert main(["--port", str(port)], environ=env) == 1
    assert "could not start" in capsys.readouterr().err
