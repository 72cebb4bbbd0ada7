"""The repository needs nothing outside itself: no test, benchmark, session or tool reads beside it.

A copy of the repository's files (tracked, plus untracked files git does not ignore, so the check
holds before a commit too) in a temporary directory with nothing beside it lists its nox sessions
and passes one package's tests there. A cheap static check first: no file but Markdown names the
old out-of-tree contract folder or the variable that pointed to it, and no Markdown tells users to
lay that folder beside the clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Spelled in pieces so this file does not match what it looks for.
_OUTSIDE = "|".join(
    [
        "AIAAS_" + "SHARED_DIR",
        r"\.\./" + "shared",
        r"parent ?/ ?" + '"shared"',
    ]
)
OUTSIDE_REFERENCE = re.compile(_OUTSIDE.encode())
LAY_BESIDE = re.compile(rb"(lay|put|place)s? `?shared/?`? beside", re.IGNORECASE)

# The package whose tests the copy runs: the cheapest one, and the one every other depends on.
PACKAGE = "aiaas-core"


def repository_files(root: Path = ROOT) -> list[Path]:
    """The repository's files as a fresh clone plus uncommitted work would have them."""
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        pytest.fail(f"{root} is not a git checkout (or git is not installed): clone the repository")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    names = sorted({n for n in listed.decode().split("\0") if n})
    # A tracked file deleted in the working tree is not part of what would be committed.
    return [Path(n) for n in names if (root / n).is_file() and not (root / n).is_symlink()]


def copy_repository(files: list[Path], dest: Path, root: Path = ROOT) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def child_env(tmp: Path) -> dict[str, str]:
    """This environment without anything that points into the real checkout or its tooling."""
    dropped = ("AIAAS_", "COVERAGE_", "COV_CORE_", "NOX_", "PYTEST_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(dropped) and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env["AIAAS_METRICS_DB"] = str(tmp / "ci-metrics.sqlite3")  # not the checkout's store
    # The properties' CI profile is for the package's own session; here the point is the copy.
    env.pop("CI", None)
    return env


def references_outside(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path: line`` for each file that points outside the repository (Markdown excepted)."""
    found: list[str] = []
    for rel in files:
        data = (root / rel).read_bytes()
        pattern = LAY_BESIDE if rel.suffix == ".md" else OUTSIDE_REFERENCE
        for number, line in enumerate(data.splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{rel}:{number}: {line.decode(errors='replace').strip()}")
    return found


@pytest.fixture(scope="module")
def files() -> list[Path]:
    return repository_files()


def test_no_file_reads_outside_the_repository(files: list[Path]) -> None:
    assert Path("noxfile.py") in files
    assert Path("packages/aiaas-core/src/aiaas_core/contracts/error-response.schema.json") in files
    assert references_outside(files) == []


def test_the_static_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import os\n"
        'SHARED = os.environ["AIAAS_' + 'SHARED_DIR"]\n'
        'OTHER = ROOT.parent / "sha' + 'red"\n'
        "ok = 1\n"
    )
    (tmp_path / "run.sh").write_text("cp ../" + "shared/contracts/x.json .\n")
    (tmp_path / "README.md").write_text("Contracts come from `../" + "shared`.\n")
    (tmp_path / "GUIDE.md").write_text("First lay `shared/` beside the repository.\n")
    found = references_outside(
        [Path("conftest.py"), Path("run.sh"), Path("README.md"), Path("GUIDE.md")], tmp_path
    )
    assert [f.split(": ", 1)[0] for f in found] == [
        "conftest.py:2",
        "conftest.py:3",
        "run.sh:1",
        "GUIDE.md:1",
    ]


@pytest.mark.slow
def test_a_copy_with_nothing_beside_it_works(
    files: list[Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = tmp_path / "aiaas"
    copy_repository(files, copy)
    # nothing beside the copy: no contracts folder to fall back on
    assert list(tmp_path.iterdir()) == [copy]
    assert not copy.parent.joinpath("shared").exists()
    assert not (copy / ".git").exists()
    env = child_env(tmp_path_factory.mktemp("scratch"))

    listed = subprocess.run(
        [sys.executable, "-m", "nox", "--no-color", "-l"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    sessions = re.findall(r"^[*-] (\S+)", listed.stdout, flags=re.M)
    assert "lint" in sessions, listed.stdout
    assert f"tests(project='{PACKAGE}')" in sessions, listed.stdout
    assert "tests(project='tools')" in sessions, listed.stdout

    ran = subprocess.run(
        [sys.executable, "-m", "nox", "--no-color", "-s", f"tests(project='{PACKAGE}')"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-6000:]
    assert re.search(r"\d+ passed", output), output[-6000:]
    assert f"Session tests(project='{PACKAGE}') was successful" in output, output[-6000:]
    # the session ran inside the copy: its venv and its test report are there
    assert (copy / ".nox" / "_scratch" / f"junit-{PACKAGE}.xml").is_file()
    assert not (tmp_path / "shared").exists()
    shutil.rmtree(copy / ".nox")  # the session's virtualenv: hundreds of MB pytest would keep
