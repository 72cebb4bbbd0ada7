"""``aiaas-infra handoff serve`` as a process (uvicorn + httpx, SIGTERM), ``handoff issue-key``,
and ``access issue`` refusing bad requests before it touches a cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from handoff_support import free_port

from aiaas_infra import example_spec_path
from aiaas_infra.cli._access import parse_duration
from aiaas_infra.cli._main import main

# `python -m aiaas_infra.cli._main` would load _cli twice (as __main__ and as itself).
CLI = [sys.executable, "-c", "import sys; from aiaas_infra.cli._main import main; sys.exit(main())"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIAAS_", "OTEL_"))}
    env.update(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    )
    env.update(extra)
    return env


def _issue_key(role: str, hash_key: str) -> tuple[str, str]:
    out = subprocess.run(
        [*CLI, "handoff", "issue-key", "--role", role],
        env=_env(AIAAS_HANDOFF_API_KEY_HASH_KEY=hash_key),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    token = re.search(r"API key \(shown once\): (\S+)", out)
    entry = re.search(r"AIAAS_HANDOFF_API_KEYS entry: (\S+)", out)
    assert token is not None
    assert entry is not None
    assert token.group(1) not in entry.group(1)  # the entry holds a digest only
    return token.group(1), entry.group(1)


def test_serve_as_a_process(tmp_path: Path) -> None:
    hash_key = "0123456789abcdef" * 4
    token, entry = _issue_key("app-team", hash_key)
    port = free_port()
    proc = subprocess.Popen(
        [
            *CLI,
            "handoff",
            "serve",
            "--spec",
            str(example_spec_path()),
            "--port",
            str(port),
            "--package-base-url",
            "https://packages.example.net",
        ],
        env=_env(AIAAS_HANDOFF_API_KEY_HASH_KEY=hash_key, AIAAS_HANDOFF_API_KEYS=entry),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=5) as client:
            anonymous = client.get("/v1/environments")
            listed = client.get("/v1/environments", headers={"X-API-Key": token})
            package = client.get(
                "/v1/environments/staging/handoff", headers={"Authorization": f"Bearer {token}"}
            )
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
    assert anonymous.status_code == 401
    assert listed.status_code == 200
    assert [e["name"] for e in listed.json()["data"]] == [
        "development",
        "staging",
        "production",
        "system",
    ]
    assert (
        package.json()["kubeconfigUrl"]
        == "https://packages.example.net/staging/app-team/kubeconfig"
    )
    assert proc.returncode == 0
    assert token not in stderr


def test_serve_needs_the_hash_key(capsys: pytest.CaptureFixture[str]) -> None:
    os.environ.pop("AIAAS_HANDOFF_API_KEY_HASH_KEY", None)
    code = main(["handoff", "serve", "--spec", str(example_spec_path())])
    assert code == 64
    assert "AIAAS_HANDOFF_API_KEY_HASH_KEY" in capsys.readouterr().err


def test_serve_refuses_a_short_hash_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIAAS_HANDOFF_API_KEY_HASH_KEY", "short-and-secret")
    assert main(["handoff", "serve", "--spec", str(example_spec_path())]) == 64
    err = capsys.readouterr().err
    assert "AIAAS_HANDOFF_API_KEY_HASH_KEY" in err
    assert "short-and-secret" not in err


def test_serve_refuses_malformed_key_entries(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIAAS_HANDOFF_API_KEYS", "alice:plaintext-secret")
    code = main(["handoff", "serve", "--spec", str(example_spec_path())])
    assert code == 64
    err = capsys.readouterr().err
    assert "AIAAS_HANDOFF_API_KEYS entry 1:" in err
    assert "plaintext-secret" not in err


def test_serve_refuses_a_key_id_listed_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiaas_core import HashKey, KeyedHasher

    hasher = KeyedHasher([HashKey.from_text("v1", "0123456789abcdef" * 4)], "v1")
    digest = hasher.digest("some-secret")
    entries = f"alice:K1a2B3c4D5e6:admin:{digest}, bob:K1a2B3c4D5e6:reader:{digest}"
    monkeypatch.setenv("AIAAS_HANDOFF_API_KEYS", entries)
    assert main(["handoff", "serve", "--spec", str(example_spec_path())]) == 64
    err = capsys.readouterr().err
    assert "AIAAS_HANDOFF_API_KEYS entry 2: key id K1a2B3c4D5e6 is listed twice" in err
    assert digest not in err


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--env", "qa", "--role", "app-team"], "ACCESS_ENVIRONMENT_UNKNOWN"),
        (["--env", "staging", "--role", "admin"], "ACCESS_ROLE_UNKNOWN"),
        (["--env", "staging", "--role", "app-team", "--ttl", "25h"], "ACCESS_TTL_TOO_LONG"),
        (["--env", "production", "--role", "app-team", "--ttl", "8h1m"], "ACCESS_TTL_TOO_LONG"),
        (["--env", "staging", "--role", "app-team", "--ttl", "5m"], "ACCESS_TTL_INVALID"),
        (["--env", "production", "--role", "break-glass"], "ACCESS_INCIDENT_REQUIRED"),
        (
            ["--env", "production", "--role", "break-glass", "--incident", "x"],
            "ACCESS_INCIDENT_INVALID",
        ),
    ],
)
def test_access_issue_refuses_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: str
) -> None:
    argv = ["access", "issue", "--spec", str(example_spec_path()), "--out", str(tmp_path / "p")]
    assert main([*argv, *args]) == 64
    err = capsys.readouterr().err
    assert f"refused [{code}]" in err
    assert not (tmp_path / "p").exists()
    assert main([*argv, *args, "--output", "json"]) == 64
    assert json.loads(capsys.readouterr().out)["code"] == code


def test_access_revoke_usage(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(example_spec_path())
    assert main(["access", "revoke", "--spec", spec]) == 64
    assert main(["access", "revoke", "--spec", spec, "--env", "staging"]) == 64
    assert "--package DIR, or --env and --id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("8h", 28800), ("90m", 5400), ("1h30m", 5400), ("600s", 600), ("3600", 3600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "8 hours", "h", "-1h", "1d"])
def test_parse_duration_refuses(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["access", "issue", "--spec", str(example_spec_path()), "--out", "x"]
    assert main([*argv, "--env", "staging", "--role", "app-team", "--ttl", text]) == 64
    assert "is not a duration" in capsys.readouterr().err


def test_serve_in_process_until_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    import uvicorn

    hash_key = "fedcba9876543210" * 4
    monkeypatch.setenv("AIAAS_HANDOFF_API_KEY_HASH_KEY", hash_key)
    assert main(["handoff", "issue-key", "--role", "read-only", "--subject", "dashboards"]) == 0
    printed = capsys.readouterr().out
    token = printed.split("API key (shown once): ")[1].split()[0]
    entry = printed.split("AIAAS_HANDOFF_API_KEYS entry: ")[1].split()[0]
    assert entry.startswith("dashboards:")
    monkeypatch.setenv("AIAAS_HANDOFF_API_KEYS", entry)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    port = free_port()
    answers: list[int] = []

    class StoppingServer(uvicorn.Server):
        def run(self, sockets: object = None) -> None:
            def client() -> None:
                deadline = time.monotonic() + 20
                while not self.started and time.monotonic() < deadline:
                    time.sleep(0.02)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
                    headers = {"X-API-Key": token}
                    answers.append(c.get("/v1/environments", headers=headers).status_code)
                    answers.append(
                        c.get(
                            "/v1/environments/staging/handoff",
                            params={"role": "app-team"},
                            headers=headers,
                        ).status_code
                    )
                self.should_exit = True

            threading.Thread(target=client, daemon=True).start()
            super().run(sockets=sockets)  # type: ignore[arg-type]

    monkeypatch.setattr(uvicorn, "Server", StoppingServer)
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    spec = str(example_spec_path())
    code = main(["handoff", "serve", "--spec", spec, "--port", str(port), "--state", str(state)])
    assert code == 0
    assert answers == [200, 403]  # read-only may not take an app-team package


def test_serve_reports_a_port_in_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    monkeypatch.setenv("AIAAS_HANDOFF_API_KEY_HASH_KEY", "ab" * 32)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["handoff", "serve", "--spec", str(example_spec_path()), "--port", str(port)])
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert f"the handoff API could not start: the server could not start on 127.0.0.1:{port}" in err
