"""The start-up version-skew checks, on real installs of versions outside the declared ranges.

Each case is a real virtualenv (``python -m venv``), built once per module: the aiaas
distributions only from the wheels installed into it (``pip install --no-deps --no-index``), the
third-party ones from the interpreter running these tests (a ``.pth`` line after the venv's own
site-packages; nothing is downloaded):

* ``in_range``: aiaas-core, aiaas-telemetry, aiaas-db, aiaas-infra and world-service at HEAD;
* ``old_telemetry``: the same with aiaas-telemetry 0.1.0, the release from the wheelhouse
  ``.releases/`` (rebuilt from its commit by ``tools/release.py --build-only`` when missing, as
  ``nox -s skew`` does), below the ``>=0.2.0,<0.3`` every HEAD consumer declares;
* ``new_core``: the same with aiaas-core at HEAD rebuilt as 0.3.0, above the ``<0.3`` that
  aiaas-telemetry, aiaas-db, aiaas-infra and world-service declare (the platform upgraded
  aiaas-core; the code is HEAD's, so everything imports and the check is what speaks).

The commands are the installed console scripts (``aiaas-db --help``, ``aiaas-infra --help``):
an out-of-range install is a clear ``VERSION_SKEW`` error on stderr and exit status 78, the
in-range one their help. world-service runs as a real HTTP server: out of range it still
serves, logs one warning line per problem, exports ``aiaas_version_skew_problems`` and answers
``/ready`` degraded with the problems; in range none of that. Last, ``tools/skew.py``'s
"outside the declared range" cells: old releases beside HEAD's aiaas-core, refused at start-up.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest
import skew
from skew_plan import RELEASES_FILE, Cell, Combination, Package, Pick, load_packages, read_releases

ROOT = Path(__file__).resolve().parents[2]
EXIT_VERSION_SKEW = 78
# The aiaas distributions every case installs, with the module each one imports as.
MODULES = {
    "aiaas-core": "aiaas_core",
    "aiaas-telemetry": "aiaas_telemetry",
    "aiaas-db": "aiaas_db",
    "aiaas-infra": "aiaas_infra",
    "world-service": "world_service",
}
FOLDERS = {
    "aiaas-core": ROOT / "packages" / "aiaas-core",
    "aiaas-telemetry": ROOT / "packages" / "aiaas-telemetry",
    "aiaas-db": ROOT / "packages" / "aiaas-db",
    "aiaas-infra": ROOT / "packages" / "aiaas-infra",
    "world-service": ROOT / "examples" / "world-service",
}
OLD_TELEMETRY = "0.1.0"
NEW_CORE = "0.3.0"
START_TIMEOUT_S = 60.0

_PROBE = """
import importlib.metadata as md, importlib.util as iu, json, sys
out = {}
for name, module in json.loads(sys.argv[1]).items():
    spec = iu.find_spec(module)
    out[name] = {"version": md.version(name), "origin": spec and spec.origin}
print(json.dumps(out))
"""


def _run(
    cmd: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured; the callers check its status."""
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else dict(env),
        cwd=cwd,
        check=False,
    )


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a venv command: nothing that would put other packages on its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", NO_COLOR="1")
    env.update(extra or {})
    return env


def _new_core_wheel(out: Path) -> Path:
    """aiaas-core's working tree built as 0.3.0 (a copy with the version line changed)."""
    tree = out / "aiaas-core-0.3.0"
    shutil.copytree(
        FOLDERS["aiaas-core"],
        tree,
        ignore=shutil.ignore_patterns("tests", "build", "dist", "__pycache__", "*.egg-info"),
    )
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    current = [line for line in text.splitlines() if line.startswith("version = ")]
    assert len(current) == 1, "aiaas-core's pyproject.toml has one version line"
    pyproject.write_text(text.replace(current[0], f'version = "{NEW_CORE}"'), encoding="utf-8")
    return skew.head_wheel(Package("aiaas-core", "aiaas_core", NEW_CORE, (), tree), out / "new")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """HEAD's wheels, aiaas-telemetry 0.1.0 from the wheelhouse and aiaas-core as 0.3.0."""
    out = tmp_path_factory.mktemp("startup-wheels")
    built = {
        name: skew.head_wheel(Package(name, MODULES[name], "", (), folder), out)
        for name, folder in FOLDERS.items()
    }
    releases = read_releases((ROOT / RELEASES_FILE).read_text(encoding="utf-8"))
    old = next(r for r in releases if r.package == "aiaas-telemetry" and r.version == OLD_TELEMETRY)
    built["old-telemetry"] = skew.release_wheel(ROOT, old, ROOT / skew.WHEELHOUSE)
    built["new-core"] = _new_core_wheel(out)
    missing = [
        need
        for wheel in built.values()
        for need in skew.missing_requirements(wheel, [*MODULES, "aiaas-serving"])
    ]
    assert not missing, (
        f"the interpreter running these tests lacks {sorted(set(missing))}: run them with "
        "python -m nox -s 'tests(project=\"tools\")', which installs them"
    )
    return built


def _venv(
    root: Path, wheels: Mapping[str, Path], picks: Mapping[str, str], expect: Mapping[str, str]
) -> Path:
    """A venv holding the picked wheels (``picks``: distribution -> key of ``wheels``); checks
    that each aiaas module is imported from it, at the expected version."""
    # The venv the skew matrix installs each combination into (tools/skew.py).
    python, site = skew.combination_venv(root, [wheels[key] for key in picks.values()], _env())
    probe = _run([python, "-c", _PROBE, json.dumps(MODULES)], env=_env(), cwd=root)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for name, got in found.items():
        assert Path(got["origin"]).resolve().is_relative_to(site.resolve()), (name, got)
    for name, version in expect.items():
        assert found[name]["version"] == version, (name, found[name])
    return python.parents[1]


HEAD_PICKS = {name: name for name in MODULES}


@pytest.fixture(scope="module")
def in_range(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    expect = {"aiaas-core": "0.2.0", "aiaas-telemetry": "0.2.0"}
    return _venv(tmp_path_factory.mktemp("in-range"), wheels, HEAD_PICKS, expect)


@pytest.fixture(scope="module")
def old_telemetry(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    picks = {**HEAD_PICKS, "aiaas-telemetry": "old-telemetry"}
    expect = {"aiaas-core": "0.2.0", "aiaas-telemetry": OLD_TELEMETRY}
    return _venv(tmp_path_factory.mktemp("old-telemetry"), wheels, picks, expect)


@pytest.fixture(scope="module")
def new_core(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    picks = {**HEAD_PICKS, "aiaas-core": "new-core"}
    expect = {"aiaas-core": NEW_CORE, "aiaas-telemetry": "0.2.0"}
    return _venv(tmp_path_factory.mktemp("new-core"), wheels, picks, expect)


def _cli(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([venv / "bin" / args[0], *args[1:]], env=_env(), cwd=venv.parent)


# --- command lines ------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["aiaas-db", "aiaas-infra"])
def test_in_range_commands_run(in_range: Path, program: str) -> None:
    done = _cli(in_range, program, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "VERSION_SKEW" not in done.stdout + done.stderr


@pytest.mark.parametrize("program", ["aiaas-db", "aiaas-infra"])
def test_an_old_telemetry_release_is_refused_with_exit_78(
    old_telemetry: Path, program: str
) -> None:
    done = _cli(old_telemetry, program, "--help")
    assert done.returncode == EXIT_VERSION_SKEW, done.stdout + done.stderr
    assert done.stdout == ""  # no help, nothing run
    assert done.stderr.startswith(f"{program}: error VERSION_SKEW: ")
    assert (
        f"{program} 0.1.0 requires aiaas-telemetry<0.3,>=0.2.0, but aiaas-telemetry 0.1.0 is "
        "installed" in done.stderr
    )
    # aiaas-telemetry 0.1.0's own range is broken too (it wants aiaas-core<0.2).
    assert "aiaas-telemetry 0.1.0 requires aiaas-core<0.2,>=0.1" in done.stderr
    assert "Install versions inside the declared ranges" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("program", ["aiaas-db", "aiaas-infra"])
def test_a_newer_core_than_the_range_is_refused_with_exit_78(new_core: Path, program: str) -> None:
    # Any subcommand: the check runs before the arguments are read.
    done = _cli(new_core, program, "--help")
    assert done.returncode == EXIT_VERSION_SKEW, done.stdout + done.stderr
    assert done.stdout == ""
    assert f"{program} 0.1.0 requires aiaas-core<0.3,>=0.2.0, but aiaas-core 0.3.0" in done.stderr
    assert "aiaas-telemetry 0.2.0 requires aiaas-core<0.3,>=0.2.0" in done.stderr
    assert "Traceback" not in done.stderr


# --- world-service ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def key_env(in_range: Path) -> dict[str, str]:
    """An admin key entry (issued by the installed world-service), so that only the version
    check can make ``/ready`` degraded."""
    hash_key = secrets.token_hex(32)
    env = {"WORLD_SERVICE_API_KEY_HASH_KEY": hash_key}
    done = _run(
        [in_range / "bin" / "world-service", "--issue-key", "admin"],
        env=_env(env),
        cwd=in_range.parent,
    )
    assert done.returncode == 0, done.stderr
    entry = done.stdout.split("WORLD_SERVICE_API_KEYS entry (a digest, safe to store): ")[1]
    return {**env, "WORLD_SERVICE_API_KEYS": entry.strip(), "WORLD_SERVICE_TRACING": "false"}


class Served:
    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log

    def log_records(self) -> list[dict[str, object]]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture
def serve(key_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Path], Served]]:
    """Start the venv's world-service on a free port; yields a function venv -> Served."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(venv: Path) -> Served:
        port = _free_port()
        log = tmp_path / f"world-{port}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(venv / "bin" / "world-service"), "--port", str(port)],
                env=_env(key_env),
                cwd=tmp_path,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"world-service exited {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    return Served(base, log)
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"world-service not up in {START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _skew_lines(served: Served) -> list[dict[str, object]]:
    return [r for r in served.log_records() if r.get("event") == "aiaas.version_skew"]


def test_in_range_service_is_ready_with_no_skew(
    in_range: Path, serve: Callable[[Path], Served]
) -> None:
    served = serve(in_range)
    ready = httpx.get(f"{served.base}/ready", timeout=10)
    metrics = httpx.get(f"{served.base}/metrics", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok", body
    check = body["checks"]["version-skew"]
    assert check["status"] == "ok"
    assert check["details"]["distributions"] == {
        "aiaas-core": "0.2.0",
        "aiaas-telemetry": "0.2.0",
        "world-service": "0.1.0",
    }
    assert "aiaas_version_skew_problems 0.0" in metrics.text
    assert _skew_lines(served) == []


def test_a_newer_core_degrades_the_service_and_says_why(
    new_core: Path, serve: Callable[[Path], Served]
) -> None:
    served = serve(new_core)
    world = httpx.get(f"{served.base}/world", timeout=10)
    ready = httpx.get(f"{served.base}/ready", timeout=10)
    metrics = httpx.get(f"{served.base}/metrics", timeout=10)
    assert world.status_code == 200  # it still serves
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded", body
    check = body["checks"]["version-skew"]
    assert check["status"] == "degraded"
    assert check["critical"] is False
    assert "outside a declared range" in check["reason"]
    problems = {
        (p["distribution"], p["requirement"], p["installed"]) for p in check["details"]["problems"]
    }
    assert problems == {
        ("aiaas-telemetry", "aiaas-core<0.3,>=0.2.0", NEW_CORE),
        ("world-service", "aiaas-core[serve]<0.3,>=0.2.0", NEW_CORE),
    }, check
    assert "aiaas_version_skew_problems 2.0" in metrics.text
    lines = _skew_lines(served)
    assert len(lines) == 2, served.log.read_text()
    assert {line["level"] for line in lines} == {"warn"}
    assert all(line["installed"] == NEW_CORE for line in lines)
    assert {line["distribution"] for line in lines} == {"aiaas-telemetry", "world-service"}
    wanted = {
        "aiaas-telemetry": "aiaas-core<0.3,>=0.2.0",
        "world-service": "aiaas-core[serve]<0.3,>=0.2.0",
    }
    for line in lines:
        assert f"install '{wanted[str(line['distribution'])]}'" in str(line["message"])


# --- the skew matrix's "outside the declared range" cells ---------------------------------------


def test_the_matrix_start_up_check_refuses_old_consumers_outside_their_range(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    """``tools/skew.py`` on real releases: aiaas-db 0.1.0 and aiaas-serving 0.1.0 (which declare
    aiaas-core<0.2) beside HEAD's aiaas-core are refused; aiaas-telemetry 0.2.0, in range, is
    not, and a cell that expected a refusal there fails."""
    head = load_packages(ROOT)
    releases = read_releases((ROOT / RELEASES_FILE).read_text(encoding="utf-8"))
    ctx = skew.Context(ROOT, head, releases, False, tmp_path, lambda _: None)
    core, telemetry = (Pick(n, head[n].version, True) for n in ("aiaas-core", "aiaas-telemetry"))
    ctx.wheels.update({core: wheels["aiaas-core"], telemetry: wheels["aiaas-telemetry"]})

    def cells(combo: Combination, consumer: str, *deps: str) -> list[Cell]:
        note = "outside the declared range"
        return [Cell(consumer, dep, "last", None, note, outside=combo) for dep in deps]

    db = Combination((core, Pick("aiaas-db", "0.1.0", False), telemetry))
    outcome = skew.run_outside(ctx, db, cells(db, "aiaas-db", "aiaas-core", "aiaas-telemetry"))
    assert outcome.ok, outcome.problems
    assert outcome.refused == [
        "aiaas-db 0.1.0 requires aiaas-core<0.2,>=0.1, but aiaas-core 0.2.0 is installed (exit 78)",
        "aiaas-db 0.1.0 requires aiaas-telemetry<0.2,>=0.1, but aiaas-telemetry 0.2.0 is "
        "installed (exit 78)",
    ]

    # No aiaas-telemetry in the combination: aiaas-core's check_compatibility is the check.
    serving = Combination((core, Pick("aiaas-serving", "0.1.0", False)))
    outcome = skew.run_outside(ctx, serving, cells(serving, "aiaas-serving", "aiaas-core"))
    assert outcome.ok, outcome.problems
    assert outcome.refused == [
        "aiaas-serving 0.1.0 requires aiaas-core<0.2,>=0.1, but aiaas-core 0.2.0 is installed "
        "(aiaas_core.check_compatibility: no aiaas-telemetry here)"
    ]

    fits = Combination((core, Pick("aiaas-telemetry", "0.2.0", False)))
    outcome = skew.run_outside(ctx, fits, cells(fits, "aiaas-telemetry", "aiaas-core"))
    assert not outcome.ok
    assert outcome.refused == []
    assert outcome.problems == [
        "the start-up check of aiaas-telemetry 0.2.0 did not refuse aiaas-core HEAD (exit None): ''"
    ]
