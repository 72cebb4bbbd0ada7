"""The command line: every command, its output formats and its exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from aiaas_infra import ExitCode, example_spec_path
from aiaas_infra.cli._main import main
from aiaas_infra.testing import LinodeEmulator, RemoteEmulator


@pytest.fixture
def env(emulator: LinodeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIAAS_ACTOR", "cli-tester")
    monkeypatch.setenv("AIAAS_INFRA_POLL_INTERVAL", "0.01")
    spec = tmp_path / "platform.yaml"
    shutil.copy(example_spec_path(), spec)
    return spec


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_apply_plan_drift(
    env: Path, capsys: pytest.CaptureFixture[str], emulator: LinodeEmulator
) -> None:
    code, out, _ = run(capsys, "plan", "--spec", str(env))
    assert code == ExitCode.CHANGES == 2
    assert "cluster.aiaas-main" in out
    assert "15 to create" in out

    code, out, _ = run(capsys, "plan", "--spec", str(env), "--output", "json")
    assert code == 2
    assert json.loads(out)["summary"]["create"] == 15

    code, out, err = run(capsys, "apply", "--spec", str(env), "--yes", "--output", "json")
    assert code == ExitCode.OK, err
    doc = json.loads(out)
    assert doc["outcome"] == "applied"
    assert doc["snapshot"] == "000001"
    assert (env.parent / ".aiaas-infra" / "snapshots" / "000001.json").is_file()
    assert "done" in err  # progress lines on stderr

    code, out, _ = run(capsys, "plan", "--spec", str(env))
    assert code == ExitCode.OK
    assert "No changes" in out

    code, out, _ = run(capsys, "drift", "--spec", str(env), "--output", "json")
    assert code == ExitCode.OK
    assert json.loads(out)["level"] == "none"
    emulator.delete_out_of_band("firewalls", "aiaas-nodes")
    code, out, _ = run(capsys, "drift", "--spec", str(env), "--output", "markdown")
    assert code == ExitCode.DRIFT_MAJOR == 3
    assert "| major | `firewall.aiaas-nodes` |" in out
    code, out, _ = run(capsys, "drift", "--spec", str(env), "--no-record")
    assert code == 3
    assert "major" in out

    code, out, _ = run(capsys, "apply", "--spec", str(env), "-y")
    assert code == ExitCode.OK
    assert "applied" in out
    emulator.update_out_of_band("pools", "gpu", count=2)
    code, _, _ = run(capsys, "drift", "--spec", str(env))
    assert code == ExitCode.CHANGES


def test_state_rollback_and_destroy(
    env: Path, capsys: pytest.CaptureFixture[str], emulator: LinodeEmulator
) -> None:
    assert run(capsys, "apply", "--spec", str(env), "--yes")[0] == 0
    env.write_text(env.read_text().replace("      count: 1\n", "      count: 2\n"))
    assert run(capsys, "apply", "--spec", str(env), "--yes")[0] == 0

    code, out, _ = run(capsys, "state", "list", "--spec", str(env), "--output", "json")
    assert code == 0
    assert [i["id"] for i in json.loads(out)] == ["000001", "000002"]
    code, out, _ = run(capsys, "state", "list", "--spec", str(env))
    assert "000002" in out
    code, out, _ = run(capsys, "state", "show", "--spec", str(env))
    assert code == 0
    assert "cluster.aiaas-main" in out
    assert "kubeconfig=sha256:" in out
    code, out, _ = run(capsys, "state", "show", "000001", "--spec", str(env), "-o", "json")
    assert json.loads(out)["serial"] == 1

    code, out, _ = run(capsys, "rollback", "--to", "1", "--spec", str(env), "--yes")
    assert code == 0
    assert {p["label"]: p["count"] for p in emulator.resources("pools")}["gpu"] == 1
    code, _, err = run(capsys, "rollback", "--to", "99", "--spec", str(env), "--yes")
    assert code == ExitCode.USAGE
    assert "no snapshot 000099" in err

    code, out, _ = run(capsys, "destroy", "--spec", str(env), "--yes", "-o", "json")
    assert code == 0
    assert json.loads(out)["outcome"] == "applied"
    assert emulator.resources("clusters") == []


def test_exit_codes_for_failures(
    env: Path, capsys: pytest.CaptureFixture[str], emulator: LinodeEmulator, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        env.read_text().replace('kubernetes_version: "1.31"', "kubernetes_version: 1.31")
    )
    code, _, err = run(capsys, "plan", "--spec", str(bad))
    assert code == ExitCode.INVALID
    assert "cluster.kubernetes_version" in err
    assert run(capsys, "validate", "--spec", str(bad))[0] == ExitCode.INVALID
    assert run(capsys, "validate", "--spec", str(env))[0] == ExitCode.OK

    from aiaas_infra.testing import AccountLimits, RegionConfig

    emulator.set_region(RegionConfig("us-ord", unavailable_plans=("g6-dedicated-4",)))
    code, _, err = run(capsys, "apply", "--spec", str(env), "--yes")
    assert code == ExitCode.PREFLIGHT
    assert "PLAN_UNAVAILABLE" in err
    emulator.set_region(RegionConfig("us-ord"))

    emulator.set_limits(AccountLimits(databases=1))
    code, _, err = run(capsys, "apply", "--spec", str(env), "--yes")
    assert code == ExitCode.ROLLED_BACK
    assert "rolled_back" in err
    emulator.set_limits(AccountLimits())

    code, _, err = run(capsys, "apply", "--spec", str(env))  # stdin is not a terminal
    assert code == ExitCode.ABORTED
    assert "--yes" in err

    state = env.parent / ".aiaas-infra"
    state.mkdir(exist_ok=True)
    (state / "lock.json").write_text(
        json.dumps({"holder": "ci", "run_id": "r", "acquired_at": "t", "host": "h", "pid": 1})
    )
    code, _, err = run(capsys, "apply", "--spec", str(env), "--yes")
    assert code == ExitCode.LOCKED
    assert "locked by ci" in err
    assert run(capsys, "state", "unlock", "--spec", str(env), "--yes")[0] == 0
    assert (
        run(capsys, "state", "unlock", "--spec", str(env), "--yes")[2].strip()
        == "the state is not locked"
    )

    assert run(capsys, "plan")[0] == ExitCode.USAGE  # --spec is required
    assert run(capsys, "plan", "--spec", str(env), "--output", "yaml")[0] == ExitCode.USAGE
    os.environ.pop("LINODE_TOKEN")
    code, _, err = run(capsys, "plan", "--spec", str(env))
    assert code == ExitCode.ERROR
    assert "LINODE_TOKEN" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["plan"],
        ["apply"],
        ["drift"],
        ["rollback"],
        ["destroy"],
        ["validate"],
        ["emulator"],
        ["state"],
        ["state", "list"],
        ["state", "show"],
        ["state", "unlock"],
    ],
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0
    assert "Usage: aiaas-infra" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert "0.1.0" in out


def test_an_out_of_range_sibling_stops_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiaas-core 0.9.0's metadata first on sys.path (as a pip install of it leaves it): even
    --version refuses with 78, naming each requirement the install breaks."""
    info = tmp_path / "aiaas_core-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiaas-core\nVersion: 0.9.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run(capsys, "--version")
    assert code == ExitCode.VERSION_SKEW == 78
    assert out == ""
    assert err.startswith("aiaas-infra: error VERSION_SKEW:")
    # Each line names the installed package and its declared aiaas-core range, as installed.
    for dist in ("aiaas-infra", "aiaas-telemetry"):
        wanted = next(r for r in metadata.requires(dist) or () if r.startswith("aiaas-core"))
        assert f"{dist} {metadata.version(dist)} requires {wanted}, but aiaas-core 0.9.0" in err


# The child restores Python's default SIGINT handling itself: a shell's background job starts
# its children with SIGINT ignored, and the tests must not depend on how they were started.
EMULATOR_ARGV = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from aiaas_infra.cli._main import main; sys.exit(main())",
    "emulator",
    "--port",
    "0",
    "--ready-delay",
    "0",
]


def spawn_emulator() -> subprocess.Popen[str]:
    """The emulator command as a child; killed after 60 s whatever happens, so that no read of
    its output and no wait can hang the test run."""
    proc = subprocess.Popen(
        EMULATOR_ARGV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    return proc


def stop_emulator(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    """Send ``sig``; wait (bounded) for the exit. Returns the exit code and stderr."""
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=20)
        pytest.fail(f"aiaas-infra emulator did not exit within 20 s of {sig.name}")
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_emulator_command_serves_until_interrupted(sig: signal.Signals) -> None:
    proc = spawn_emulator()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = next(
            line.split("=", 1)[1].strip()
            for line in lines
            if line.startswith("export LINODE_API_URL=")
        )
        with RemoteEmulator(url.rsplit("/v4", 1)[0]) as remote:
            assert remote.resources("clusters") == []
    finally:
        code, err = stop_emulator(proc, sig)
    assert code == 0, err
    assert "Linode API emulator on" in err
    assert "Traceback" not in err
    assert "aborted" not in err


def test_emulator_command_exits_0_on_a_signal_right_after_its_banner() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM) * 3:
        proc = spawn_emulator()
        assert proc.stderr is not None
        banner = proc.stderr.readline()  # printed before the export lines, signal at once
        code, err = stop_emulator(proc, sig)
        assert "Linode API emulator on" in banner
        assert (code, err) == (0, ""), (sig.name, err)


def test_emulator_command_does_not_depend_on_the_callers_sigint_disposition() -> None:
    """A test run from a background shell job has SIGINT ignored and its children inherit it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = spawn_emulator()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("export ")
    code, err = stop_emulator(proc, signal.SIGINT)
    assert code == 0, err


def test_emulator_command_on_a_busy_port_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with LinodeEmulator() as busy:
        code, out, err = run(capsys, "emulator", "--port", str(busy.port))
    assert code == ExitCode.ERROR == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("EMULATOR_PORT_IN_USE: cannot listen on 127.0.0.1:"), err
    assert "--port" in err
    # Signal handling is the command's own: the caller's handlers are back.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_emulator_command_on_an_address_it_cannot_use(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "emulator", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1
    assert (code, out) == (1, "")
    assert err.count("\n") == 1, err
    assert err.startswith("EMULATOR_LISTEN_FAILED: cannot listen on 192.0.2.1:0: "), err
