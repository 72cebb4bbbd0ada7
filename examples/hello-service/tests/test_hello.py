"""hello-service: the greeting rules, and the command run for real."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from hello_service import format_name, greet, main
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", "Hello, Alice!"),
        ("  aLiCe  ", "Hello, Alice!"),
        ("BOB", "Hello, Bob!"),
        ("mary ann", "Hello, Mary ann!"),
        ("élodie", "Hello, Élodie!"),
        ("x", "Hello, X!"),
        ("", "Hello, there!"),
        ("   \t\n", "Hello, there!"),
        (None, "Hello, there!"),
    ],
)
def test_greet(name: str | None, expected: str) -> None:
    assert greet(name) == expected


@given(st.text())
def test_format_name_rules(name: str) -> None:
    out = format_name(name)
    trimmed = name.strip()
    if not trimmed:
        assert out == "there"
    else:
        assert out == trimmed[0].upper() + trimmed[1:].lower()
        assert greet(name) == f"Hello, {out}!"


@given(st.text(alphabet=string.ascii_letters + " \t").filter(str.strip))
def test_format_name_is_idempotent_for_ascii_names(name: str) -> None:
    # Not for every script: "ß".upper() is "SS", whose own rule gives "Ss".
    out = format_name(name)
    assert format_name(out) == out
    assert out == out.strip()


def stderr_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_main_prints_only_the_greeting_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["  aLiCe "], environ={}) == 0
    out, err = capsys.readouterr()
    assert out == "Hello, Alice!\n"
    lines = stderr_lines(err)
    assert [line["message"] for line in lines] == ["configuration loaded", "greeting printed"]
    assert lines[0]["service"] == "hello-service"
    assert lines[0]["config"] == {"log_level": "info", "greeting": "Hello"}
    assert lines[1]["name_given"] is True


def test_main_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"HELLO_SERVICE_LOG_LEVEL": "warn", "HELLO_SERVICE_GREETING": "Hi"}
    assert main([], environ=env) == 0
    out, err = capsys.readouterr()
    assert out == "Hi, there!\n"
    assert err == ""  # info lines are below the configured level


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HELLO_SERVICE_LOG_LEVEL": "loud"}, "HELLO_SERVICE_LOG_LEVEL"),
        ({"HELLO_SERVICE_GREETING": "123"}, "HELLO_SERVICE_GREETING"),
    ],
)
def test_bad_configuration_exits_2(
    env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["x"], environ=env) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hello-service: 1 configuration problem(s):")
    assert needle in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "usage: hello-service" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["two", "names"])
    assert exc.value.code == 2


def _commands() -> list[list[str]]:
    script = Path(sys.executable).parent / "hello-service"
    return [[str(script)], [sys.executable, "-m", "hello_service"]]


@pytest.mark.parametrize("command", _commands(), ids=["console-script", "python-m"])
def test_the_command_for_real(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELLO_SERVICE_")}
    done = subprocess.run(
        [*command, " wORLD "], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, World!\n"
    assert {line["message"] for line in stderr_lines(done.stderr)} == {
        "configuration loaded",
        "greeting printed",
    }
    blank = subprocess.run(
        [*command, "   "], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert blank.stdout == "Hello, there!\n"
    bad = subprocess.run(
        [*command, "x"],
        capture_output=True,
        text=True,
        env={**env, "HELLO_SERVICE_LOG_LEVEL": "loud"},
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "HELLO_SERVICE_LOG_LEVEL" in bad.stderr
    helped = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0
    assert "Hello, Name!" in helped.stdout


def test_an_out_of_range_aiaas_package_stops_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiaas-core 0.9.0's metadata first on sys.path (as a pip install of it leaves it): the
    command refuses with 78 before doing anything, and says what to install."""
    info = tmp_path / "aiaas_core-0.9.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aiaas-core\nVersion: 0.9.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["x"], environ={}) == 78
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("hello-service: error VERSION_SKEW:")
    [core] = [Requirement(r) for r in requires("hello-service") or [] if r.startswith("aiaas-core")]
    expected = f"hello-service {version('hello-service')} requires aiaas-core{core.specifier}"
    assert f"{expected}, but aiaas-core 0.9.0" in captured.err
    assert f"aiaas-telemetry {version('aiaas-telemetry')} requires aiaas-core" in captured.err
