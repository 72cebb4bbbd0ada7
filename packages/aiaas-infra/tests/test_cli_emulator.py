"""The README's CLI lines against `aiaas-infra emulator`, as written: LINODE_TOKEN and
LINODE_API_URL only. Bucket lifecycle rules (S3) must reach the emulator, not Linode's real
Object Storage hosts; and the S3 endpoint rule that makes it so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from linode_api4 import LinodeClient
from s3_support import emulator_bucket, free_port, s3_client, wait_for_port

from aiaas_infra import (
    LinodeProvider,
    S3StateBackend,
    example_spec_path,
    load_spec,
    open_state,
)
from aiaas_infra.provision._provider_api import DEFAULT_API_URL, api_s3_endpoint
from aiaas_infra.provision._provider_write import _rule_from_s3
from aiaas_infra.provision._resources import LiveResource
from aiaas_infra.testing import LinodeEmulator, RemoteEmulator

# Variables a developer's shell may hold that would make the test pass for the wrong reason.
SCRUBBED = ("LINODE_", "AIAAS_INFRA_STATE", "AIAAS_STATE_S3_ENDPOINT", "AWS_")


def cli() -> list[str]:
    script = Path(sys.executable).parent / "aiaas-infra"
    if not script.is_file():
        found = shutil.which("aiaas-infra")
        if found is None:
            pytest.fail("the aiaas-infra console script is not installed")
        return [found]
    return [str(script)]


@pytest.fixture
def emulator_process() -> Iterator[dict[str, str]]:
    """`aiaas-infra emulator --port N` as a process; yields the variables it printed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    proc = subprocess.Popen(
        [
            *cli(),
            "emulator",
            "--port",
            str(port),
            "--ready-delay",
            "0.05",
            "--kubeconfig-delay",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(300, proc.kill)  # no read of its output can hang the run
    watchdog.daemon = True
    watchdog.start()
    try:
        assert proc.stdout is not None
        printed: dict[str, str] = {}
        for line in proc.stdout:
            name, _, value = line.strip().removeprefix("export ").partition("=")
            printed[name] = value
            if "LINODE_OBJ_ENDPOINT" in printed:  # the last line it prints
                break
        wait_for_port(port, proc, "aiaas-infra emulator")
        assert printed["LINODE_API_URL"] == f"http://127.0.0.1:{port}/v4"
        yield printed
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def test_readme_cli_lines_apply_the_example_against_the_emulator(
    emulator_process: dict[str, str], tmp_path: Path
) -> None:
    spec_path = tmp_path / "platform.yaml"
    shutil.copyfile(example_spec_path(), spec_path)
    # Exactly the README's variables (plus the documented poll interval, so waits are short).
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
    env |= {
        "LINODE_TOKEN": "any-token",
        "LINODE_API_URL": emulator_process["LINODE_API_URL"],
        "AIAAS_INFRA_POLL_INTERVAL": "0.05",
    }
    spec_args = ["--spec", str(spec_path)]
    root = emulator_process["LINODE_API_URL"].removesuffix("/v4")
    remote = RemoteEmulator(root)

    first_plan = run(["plan", *spec_args], env, tmp_path)
    assert first_plan.returncode == 2, first_plan.stdout + first_plan.stderr

    applied = run(["apply", *spec_args, "--yes"], env, tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "linodeobjects.com" not in applied.stdout + applied.stderr
    lifecycle_calls = [r for r in remote.s3_requests() if r.path == "/aiaas-metrics?lifecycle"]
    assert [(r.method, r.status) for r in lifecycle_calls] == [("PUT", 200)]

    # The rules are on the emulator's bucket: read back with boto3 and a key of our own.
    client = LinodeClient("any-token", base_url=emulator_process["LINODE_API_URL"], retry=False)
    key = client.object_storage.keys_create("inspector")
    s3 = s3_client(root, key.access_key, key._raw_json["secret_key"])
    got = s3.get_bucket_lifecycle_configuration(Bucket="aiaas-metrics")["Rules"]
    spec = load_spec(spec_path)
    (metrics,) = [b for b in spec.object_storage.buckets if b.label == "aiaas-metrics"]
    assert sorted((_rule_from_s3(r) for r in got), key=lambda r: r["id"]) == sorted(
        (attrs.asdict(r) for r in metrics.lifecycle), key=lambda r: r["id"]
    )

    again = run(["plan", *spec_args], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout

    # A second apply is a no-op: no write reaches the Linode API or S3.
    remote.reset_requests()
    second = run(["apply", *spec_args, "--yes"], env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes" in second.stdout
    assert [r for r in remote.requests() if r.method != "GET"] == []
    assert remote.s3_requests() == []

    drift = run(["drift", *spec_args, "--check-lifecycle"], env, tmp_path)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert [r.path for r in remote.s3_requests() if r.method == "GET"] == [
        "/aiaas-artifacts?lifecycle",
        "/aiaas-metrics?lifecycle",
    ]
    remote.close()


@pytest.mark.parametrize(
    ("api_url", "expected"),
    [
        (DEFAULT_API_URL, None),
        ("https://api.linode.com/v4beta", None),
        ("https://API.Linode.com/v4", None),
        ("https://linode.com/v4", None),
        ("http://127.0.0.1:8080/v4", "http://127.0.0.1:8080"),
        ("http://localhost:9000/v4/", "http://localhost:9000"),
        ("https://emulator.internal/v4", "https://emulator.internal"),
        ("https://api.linode.com.evil.example/v4", "https://api.linode.com.evil.example"),
        ("", None),
        ("not a url", None),
    ],
)
def test_the_s3_endpoint_a_linode_api_url_implies(api_url: str, expected: str | None) -> None:
    assert api_s3_endpoint(api_url) == expected


def test_s3_endpoint_precedence() -> None:
    bucket = LiveResource(
        "bucket",
        "logs",
        "us-ord/logs",
        {"region": "us-ord"},
        raw={"s3_endpoint": "us-ord-10.linodeobjects.com"},
    )
    real = LinodeProvider.from_env({"LINODE_TOKEN": "t"})
    assert real.s3_endpoint_url(bucket) == "https://us-ord-10.linodeobjects.com"
    beta = LinodeProvider.from_env(
        {"LINODE_TOKEN": "t", "LINODE_API_URL": "https://api.linode.com/v4beta"}
    )
    assert beta.s3_endpoint_url(bucket) == "https://us-ord-10.linodeobjects.com"
    emulated = LinodeProvider.from_env(
        {"LINODE_TOKEN": "t", "LINODE_API_URL": "http://127.0.0.1:8080/v4"}
    )
    assert emulated.s3_endpoint_url(bucket) == "http://127.0.0.1:8080"
    explicit = LinodeProvider.from_env(
        {
            "LINODE_TOKEN": "t",
            "LINODE_API_URL": "http://127.0.0.1:8080/v4",
            "LINODE_OBJ_ENDPOINT": "https://gateway.example",
        }
    )
    assert explicit.s3_endpoint_url(bucket) == "https://gateway.example"
    no_record = LiveResource("bucket", "logs", "us-sea/logs", {"region": "us-sea"}, raw={})
    assert real.s3_endpoint_url(no_record) == "https://us-sea-1.linodeobjects.com"


def test_open_state_finds_the_emulator_s3_endpoint(
    emulator: LinodeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, secret = emulator_bucket(emulator, "state-bucket")
    for name in list(os.environ):
        if name.startswith(SCRUBBED):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LINODE_API_URL", emulator.url)
    monkeypatch.setenv("LINODE_OBJ_ACCESS_KEY", access)
    monkeypatch.setenv("LINODE_OBJ_SECRET_KEY", secret)
    store = open_state("s3://state-bucket/platform")
    assert isinstance(store.backend, S3StateBackend)
    store.backend.put("probe.json", b"{}")
    assert store.backend.get("probe.json") == b"{}"
    assert store.backend.list("") == ["probe.json"]
    assert emulator.resources("buckets")[0]["objects"] == 1

    # AIAAS_STATE_S3_ENDPOINT still wins over what LINODE_API_URL implies.
    monkeypatch.setenv("AIAAS_STATE_S3_ENDPOINT", "http://127.0.0.1:9")
    elsewhere = open_state("s3://state-bucket/platform")
    assert isinstance(elsewhere.backend, S3StateBackend)
    assert elsewhere.backend._s3.meta.endpoint_url == "http://127.0.0.1:9"
