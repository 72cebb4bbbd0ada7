"""The version-skew matrix: every aiaas package beside older and newer releases of its siblings.

    python tools/skew.py [--quick] [--plan] [--package NAME ...] [--out DIR] [--root DIR]

(``nox -s skew`` runs it in a virtualenv holding the third-party dependencies of every package,
from ``constraints/ci.txt``, and no aiaas package.) For every package P and every aiaas package S
that P's ``pyproject.toml`` depends on, three combinations:

* ``oldest``: P at HEAD with S at the oldest release in ``releases.toml`` that P's declared range
  admits ("no release in range" when none does: a finding, not a failure);
* ``head``: P and S at HEAD (the working tree, uncommitted changes included);
* ``last``: P at its last release with S at HEAD (an old consumer on a newer library). Where
  that release's declared range excludes S at HEAD, the cell is "outside the declared range":
  the combination (with the other aiaas packages it requires, at HEAD) is installed as it is but
  not tested as if supported; the start-up check every aiaas command runs
  (``aiaas_telemetry.check_cli_compatibility``) must refuse it, exit status 78 with P's
  requirement named ("refused at start-up"), else the cell fails.

The other aiaas packages join a combination at HEAD where every declared range allows it (a
combination whose own members' ranges exclude each other is reported, not run). Equal
combinations run once. (The plan is ``skew_plan.py``; tables, JSON and plot ``skew_report.py``.)
Wheels: a release's from the wheelhouse ``.releases/`` when its sha256
matches ``releases.toml``, else rebuilt from its commit in a temporary ``git worktree`` by
``tools/release.py --build-only`` (and kept in the wheelhouse); HEAD's built from the working
tree. Each combination is installed with ``pip install --no-deps --no-index`` into its own
virtualenv (console scripts included, as users get it), whose ``.pth`` line adds this
interpreter's third-party packages after its own; its first check compares
``importlib.metadata.version``, the folder each package is imported from and the wheel it was
installed from with the plan.

Each combination runs the cross-package contract tests (``tools/skew_contracts/``) and latency
figures (``tools/skew_contracts/latency.py``): ``GET /world`` of world-service p50/p99 (HEAD's
world-service; where its declared ranges exclude the combination, the world-service of an older
member's release commit whose ranges admit it). The full mode (default) adds P's own tests
(for an old P: the release's tests, from ``git archive`` of its commit), embeddings p50/p99 on
the real MiniLM model and the migrator's per-set overhead on a throwaway PostgreSQL.
``--quick`` is the contract tests and one latency figure per combination (CI runs it).

Output: the matrix as a table on the terminal, ``DIR/matrix.md``, ``DIR/matrix.json`` and
``DIR/latency.png`` (default ``DIR``: ``.skew/``, git-ignored). A failing combination names its
failing tests. Exit status: 0 every combination that ran passed; 1 one failed; 2 the matrix
could not be built (the message says why and what to do; every such line starts with
``skew: error CODE:``).
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from skew_plan import (
    RELEASES_FILE,
    Cell,
    Combination,
    Package,
    Pick,
    Planner,
    Release,
    SkewError,
    aiaas_ranges,
    consumers_of,
    load_packages,
    outside_combinations,
    project_fields,
    read_releases,
    unique_combinations,
)
from skew_report import (
    Outcome,
    Suite,
    failure_report,
    latency_plot,
    markdown_table,
    matrix_json,
    matrix_rows,
    read_junit,
    text_table,
)

ROOT = Path(__file__).resolve().parents[1]
# This checkout's release tool rebuilds every release (--build-only, --root at its commit).
RELEASE_TOOL = Path(__file__).resolve().parent / "release.py"
WHEELHOUSE = ".releases"
OUT_DIR = ".skew"
CONTRACTS = Path("tools") / "skew_contracts"
LATENCY_SCRIPT = CONTRACTS / "latency.py"
WORLD_SERVICE = Path("examples") / "world-service"
EXIT_FAILED = 1
EXIT_ERROR = 2
# One command (a build, an install, a test suite) never runs longer than this.
COMMAND_TIMEOUT_S = 3600
# Requests per latency figure: enough for a p99 that is not the single slowest sample.
QUICK_WORLD_REQUESTS = 300
FULL_WORLD_REQUESTS = 2000
FULL_EMBEDDINGS = 200
FULL_MIGRATION_SETS = 100

# --- building and installing --------------------------------------------------------------------


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command (output captured); a SkewError with its output when it fails and
    ``check``."""
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-4000:]
        raise SkewError(
            "SKEW_COMMAND_FAILED",
            f"`{' '.join(str(c) for c in cmd)}` exited {done.returncode}:\n{output}",
        )
    return done


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def release_wheel(root: Path, release: Release, wheelhouse: Path) -> Path:
    """The release's wheel from the wheelhouse when its sha256 matches ``releases.toml``; else
    rebuilt from the release commit in a temporary git worktree (``tools/release.py
    --build-only``), checked and kept in the wheelhouse."""
    cached = wheelhouse / release.wheel
    if cached.is_file() and sha256_of(cached) == release.wheel_sha256:
        return cached
    with tempfile.TemporaryDirectory(prefix="aiaas-skew-build-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        run(["git", "worktree", "add", "--detach", "--quiet", tree, release.commit], cwd=root)
        try:
            run(
                [
                    sys.executable,
                    RELEASE_TOOL,
                    release.package,
                    "--build-only",
                    out,
                    "--version",
                    release.version,
                    "--root",
                    tree,
                ],
                cwd=root,
            )
        finally:
            run(["git", "worktree", "remove", "--force", tree], cwd=root, check=False)
            run(["git", "worktree", "prune"], cwd=root, check=False)
        built = out / release.wheel
        if not built.is_file() or sha256_of(built) != release.wheel_sha256:
            raise SkewError(
                "SKEW_NOT_REPRODUCED",
                f"rebuilding {release.package} {release.version} at {release.commit[:12]} did "
                f"not reproduce {release.wheel} (sha256 {release.wheel_sha256[:12]}...): check "
                f"{RELEASES_FILE} and the commit",
            )
        wheelhouse.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, cached)
    return cached


def head_wheel(package: Package, outdir: Path) -> Path:
    """The package's wheel built from the working tree (uncommitted changes included)."""
    dest = outdir / package.name
    if dest.is_dir():
        shutil.rmtree(dest)
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dest, "."],
        cwd=package.folder,
    )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SkewError("SKEW_BUILD_FAILED", f"expected one wheel of {package.name} in {dest}")
    return wheels[0]


def release_requires(root: Path, release: Release) -> tuple[str, ...]:
    """A release's declared dependencies: its ``pyproject.toml`` at the release commit."""
    done = run(
        ["git", "show", f"{release.commit}:packages/{release.package}/pyproject.toml"],
        cwd=root,
        check=False,
    )
    if done.returncode != 0:
        raise SkewError(
            "SKEW_MISSING_COMMIT",
            f"cannot read packages/{release.package}/pyproject.toml at {release.commit[:12]} "
            f"({release.package} {release.version}): fetch the full history (git fetch "
            "--unshallow) or fix releases.toml",
        )
    return project_fields(tomllib.loads(done.stdout), f"{release.package} {release.version}")[2]


def missing_requirements(wheel: Path, names: Iterable[str]) -> list[str]:
    """The third-party requirements of ``wheel`` (its ``Requires-Dist`` without extras, the
    aiaas ``names`` left out) that this interpreter's environment does not satisfy."""
    with zipfile.ZipFile(wheel) as archive:
        meta = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(meta) != 1:
            return [f"{wheel.name} holds {len(meta)} METADATA files, not one"]
        message = email.parser.Parser().parsestr(archive.read(meta[0]).decode("utf-8"))
    ours = {canonicalize_name(n) for n in names}
    missing = []
    for text in message.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if canonicalize_name(req.name) in ours:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            missing.append(f"{req} (installed: {have})")
    return missing


_VERSIONS_PROBE = """
import importlib.metadata as md, importlib.util as iu, json, sys
out = {}
for name, module in json.loads(sys.argv[1]).items():
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        out[name] = None
        continue
    spec = iu.find_spec(module)
    out[name] = {
        "version": dist.version,
        "origin": None if spec is None else spec.origin,
        "direct_url": dist.read_text("direct_url.json"),
    }
print(json.dumps(out))
"""


def check_installed(
    expected: Mapping[str, tuple[str, Path] | None],
    found: Mapping[str, Any],
    site: Path,
) -> list[str]:
    """Problems where the installed packages (``found``, from the probe) differ from the plan:
    ``expected`` maps each aiaas package to (version, wheel) or None (must be absent)."""
    problems = []
    for name, want in sorted(expected.items()):
        got = found.get(name)
        if want is None:
            if got is not None:
                problems.append(f"{name} {got['version']} is installed but not in the combination")
            continue
        version, wheel = want
        if got is None:
            problems.append(f"{name} {version} is not installed")
            continue
        if got["version"] != version:
            problems.append(f"{name}: importlib.metadata says {got['version']}, planned {version}")
        origin = got.get("origin")
        if not origin or not Path(origin).resolve().is_relative_to(site.resolve()):
            problems.append(f"{name} is imported from {origin}, not from the combination")
        url = json.loads(got.get("direct_url") or "{}").get("url", "")
        if not url.endswith("/" + wheel.name) or Path(url.removeprefix("file://")) != wheel:
            problems.append(f"{name} was installed from {url or 'an unknown place'}, not {wheel}")
    return problems


# --- running the matrix -------------------------------------------------------------------------


@dataclass
class Context:
    root: Path
    head: dict[str, Package]
    releases: list[Release]
    full: bool
    work: Path
    log: Callable[[str], None]
    wheels: dict[Pick, Path] = field(default_factory=dict)

    def wheel(self, pick: Pick) -> Path:
        if pick not in self.wheels:
            if pick.head:
                self.log(f"building {pick.package} HEAD")
                self.wheels[pick] = head_wheel(self.head[pick.package], self.work / "wheels")
            else:
                self.wheels[pick] = release_wheel(
                    self.root, self.release(pick), self.root / WHEELHOUSE
                )
        return self.wheels[pick]

    def release(self, pick: Pick) -> Release:
        return next(
            r for r in self.releases if r.package == pick.package and r.version == pick.version
        )

    def env(self, path: Sequence[Path], expect: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(
            PYTHONPATH=os.pathsep.join(str(p) for p in path),
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",
            AIAAS_SKEW_EXPECT=json.dumps(dict(expect), sort_keys=True),
        )
        return env


def combination_venv(
    here: Path, wheels: Sequence[Path], env: Mapping[str, str]
) -> tuple[Path, Path]:
    """A virtualenv ``here/venv`` holding exactly ``wheels`` (``pip install --no-deps
    --no-index``), as users get them: console scripts beside its interpreter, the packages in its
    own site-packages (so a test may put other copies ahead with PYTHONPATH). The third-party
    packages (pytest, torch, ...) are this interpreter's: its site-packages follow the venv's own
    through a ``.pth`` line. Returns the venv's interpreter and site-packages."""
    venv = here / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=here, env=env)
    python = venv / "bin" / "python"
    where = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=here)
    site = Path(where.stdout.strip())
    base = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_aiaas_skew_base.pth").write_text("".join(f"{p}\n" for p in base), encoding="utf-8")
    run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", *wheels],
        cwd=here,
        env=env,
    )
    return python, site


def _pytest(
    ctx: Context,
    python: Path,
    name: str,
    args: Sequence[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str],
) -> Suite:
    junit = ctx.work / f"junit-{hashlib.sha256(name.encode()).hexdigest()[:10]}.xml"
    junit.unlink(missing_ok=True)
    done = run(
        [
            python,
            "-m",
            "pytest",
            *args,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
        ],
        cwd=cwd,
        env=env,
        check=False,
    )
    if not junit.is_file():
        suite = Suite(name, failed=1)
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        suite.failing.append(f"pytest exited {done.returncode}: " + " / ".join(tail))
        return suite
    suite = read_junit(name, junit)
    if done.returncode not in (0, 1) and not suite.failed:  # collection or usage error
        suite.failed += 1
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        suite.failing.append(f"pytest exited {done.returncode}: " + " / ".join(tail))
    return suite


def world_service_fit(pyproject: str, combo: Combination, names: Iterable[str]) -> str | None:
    """None when the ranges world-service's ``pyproject`` text declares admit the combination,
    else why not."""
    data = tomllib.loads(pyproject)
    for dep, spec in sorted(aiaas_ranges(data["project"].get("dependencies", []), names).items()):
        pick = combo.get(dep)
        if pick is None or not spec.contains(pick.version, prereleases=True):
            have = "none" if pick is None else pick.version
            return f"world-service requires {dep}{spec} (combination: {have})"
    return None


def _archive(root: Path, commit: str, paths: Sequence[str], dest: Path) -> None:
    """Extract ``paths`` as they are at ``commit`` (``git archive``) under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "archive.tar"
    with archive.open("wb") as fh:
        subprocess.run(
            ["git", "archive", "--format=tar", commit, *paths],
            cwd=root,
            stdout=fh,
            check=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()


def world_service_source(ctx: Context, combo: Combination, dest: Path) -> tuple[Path | None, str]:
    """Where the world-service source of a combination's request figure comes from: HEAD's when
    its declared ranges admit the combination, else the one at the release commit of an older
    member whose ranges do (extracted under ``dest``); ``(None, why)`` when none does."""
    folder = WORLD_SERVICE.as_posix()
    head_text = (ctx.root / WORLD_SERVICE / "pyproject.toml").read_text(encoding="utf-8")
    why_not = world_service_fit(head_text, combo, ctx.head)
    if why_not is None:
        return ctx.root / WORLD_SERVICE / "src", ""
    for pick in combo.picks:
        if pick.head:
            continue
        record = ctx.release(pick)
        done = run(
            ["git", "show", f"{record.commit}:{folder}/pyproject.toml"], cwd=ctx.root, check=False
        )
        if done.returncode == 0 and world_service_fit(done.stdout, combo, ctx.head) is None:
            _archive(ctx.root, record.commit, [f"{folder}/src"], dest)
            note = (
                f"world-service from {pick.package} {pick.version}'s release commit "
                f"{record.commit[:12]} (HEAD's: {why_not})"
            )
            return dest / WORLD_SERVICE / "src", note
    return None, f"no world-service figure: HEAD's {why_not}, and no release commit's fits"


def _old_tests(ctx: Context, pick: Pick, dest: Path) -> Path:
    """The release's own tests (and the root pytest settings) from ``git archive`` of its
    commit, extracted under ``dest``."""
    paths = [f"packages/{pick.package}/tests", "pyproject.toml"]
    _archive(ctx.root, ctx.release(pick).commit, paths, dest)
    return dest / "packages" / pick.package / "tests"


def run_combination(ctx: Context, combo: Combination, consumers: Sequence[Pick]) -> Outcome:
    started = time.perf_counter()
    outcome = Outcome(combo)
    here = ctx.work / combo.slug
    if here.exists():
        shutil.rmtree(here)
    here.mkdir(parents=True)
    try:
        wheels = {p: ctx.wheel(p) for p in combo.picks}
        python, site = combination_venv(here, list(wheels.values()), ctx.env([], {}))
    except SkewError as exc:
        outcome.problems.append(str(exc))
        outcome.seconds = time.perf_counter() - started
        return outcome
    for pick, wheel in wheels.items():
        outcome.problems += [
            f"{pick.package} {pick.label} requires {need}: the base environment lacks it "
            "(python -m nox -s skew installs every package's third-party dependencies)"
            for need in missing_requirements(wheel, ctx.head)
        ]
    if outcome.problems:
        outcome.seconds = time.perf_counter() - started
        return outcome
    expect = {p.package: p.version for p in combo.picks}
    env = ctx.env([], expect)
    modules = {name: pkg.module for name, pkg in ctx.head.items()}
    probe = run([python, "-c", _VERSIONS_PROBE, json.dumps(modules)], cwd=here, env=env)
    planned: dict[str, tuple[str, Path] | None] = dict.fromkeys(ctx.head)
    planned.update({p.package: (p.version, wheels[p]) for p in combo.picks})
    outcome.problems += check_installed(planned, json.loads(probe.stdout), site)
    if outcome.problems:
        outcome.seconds = time.perf_counter() - started
        return outcome
    absent = [ctx.head[n].module for n in ctx.head if combo.get(n) is None]
    selection = ["-m", " and ".join(f"not {m}" for m in absent)] if absent else []
    contracts: list[str | Path] = [CONTRACTS, *selection]
    outcome.suites.append(_pytest(ctx, python, "contracts", contracts, cwd=ctx.root, env=env))
    if ctx.full:
        for pick in consumers:
            if pick.head:
                tests = ctx.head[pick.package].folder / "tests"
                name = f"{pick.package} tests"
                suite = _pytest(ctx, python, name, [tests], cwd=ctx.root, env=env)
            else:
                src = here / "src"
                src.mkdir()
                tests = _old_tests(ctx, pick, src)
                name = f"{pick.package} {pick.version} tests"
                suite = _pytest(ctx, python, name, [tests], cwd=src, env=env)
            outcome.suites.append(suite)
    _latency(ctx, combo, outcome, python, expect)
    outcome.seconds = time.perf_counter() - started
    return outcome


# The start-up check of every aiaas command line (aiaas_telemetry.check_cli_compatibility), for
# the consumer named on the command line, over the combination on PYTHONPATH; where the
# combination has no aiaas-telemetry, the aiaas-core function it is built on.
_STARTUP_PROBE = """
import io, json, sys
if sys.argv[2] != "aiaas-telemetry":
    from aiaas_core import check_compatibility
    report = check_compatibility(on_problem="ignore", consumers=[sys.argv[1]])
    problems = "".join(f"  - {p}\\n" for p in report.problems)
    code, stderr, check = (None if report.ok else 78), problems, "check_compatibility"
else:
    from aiaas_telemetry import check_cli_compatibility
    err = io.StringIO()
    code = check_cli_compatibility(sys.argv[1], stream=err)
    stderr, check = err.getvalue(), "exit"
print(json.dumps({"exit": code, "stderr": stderr, "check": check}))
"""
EXIT_VERSION_SKEW = 78


def refused_lines(stderr: str, consumer: Pick, dependency: str) -> list[str]:
    """The problems of a start-up check's error that name ``consumer``'s requirement on
    ``dependency`` (each up to its advice)."""
    prefix = f"- {consumer.package} {consumer.version} requires {dependency}"
    return [
        line.strip()[2:].split("; install ")[0]
        for line in stderr.splitlines()
        if line.strip().startswith(prefix)
    ]


def run_outside(ctx: Context, combo: Combination, cells: Sequence[Cell]) -> Outcome:
    """A combination outside the declared range of its old consumer: installed as it is
    (``--no-deps``), it is not tested as if supported; the start-up check must refuse it, with
    exit status 78 and the consumer's requirement named, for each cell that put it here."""
    started = time.perf_counter()
    outcome = Outcome(combo)
    site = ctx.work / f"outside-{combo.slug}" / "site"
    if site.parent.exists():
        shutil.rmtree(site.parent)
    site.mkdir(parents=True)
    try:
        wheels = [ctx.wheel(p) for p in combo.picks]
        pip: list[str | Path] = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        run(
            [*pip, "--no-index", "--target", site, *wheels],
            cwd=ctx.root,
        )
        env = ctx.env([site], {p.package: p.version for p in combo.picks})
        telemetry = "aiaas-telemetry" if combo.get("aiaas-telemetry") else "-"
        for cell in cells:
            consumer = combo.get(cell.consumer)
            assert consumer is not None
            done = run(
                [sys.executable, "-c", _STARTUP_PROBE, cell.consumer, telemetry],
                cwd=site.parent,
                env=env,
            )
            said = json.loads(done.stdout)
            lines = refused_lines(said["stderr"], consumer, cell.dependency)
            if said["exit"] == EXIT_VERSION_SKEW and lines:
                how = (
                    f"exit {EXIT_VERSION_SKEW}"
                    if said["check"] == "exit"
                    else "aiaas_core.check_compatibility: no aiaas-telemetry here"
                )
                outcome.refused += [f"{line} ({how})" for line in lines]
            else:
                outcome.problems.append(
                    f"the start-up check of {cell.consumer} {consumer.version} did not refuse "
                    f"{cell.dependency} HEAD (exit {said['exit']}): {said['stderr'].strip()!r}"
                )
    except (SkewError, ValueError, KeyError) as exc:
        outcome.problems.append(f"start-up check: {exc}")
    outcome.refused = list(dict.fromkeys(outcome.refused))
    outcome.seconds = time.perf_counter() - started
    return outcome


def _latency(
    ctx: Context, combo: Combination, outcome: Outcome, python: Path, expect: Mapping[str, str]
) -> None:
    args: list[str] = []
    world, note = world_service_source(ctx, combo, python.parents[2] / "world")
    if note:
        outcome.notes.append(note)
    if world is not None:
        args += ["--world", str(FULL_WORLD_REQUESTS if ctx.full else QUICK_WORLD_REQUESTS)]
    if ctx.full:
        if combo.get("aiaas-serving") is not None:
            args += ["--embeddings", str(FULL_EMBEDDINGS)]
        if combo.get("aiaas-db") is not None:
            args += ["--migrations", str(FULL_MIGRATION_SETS)]
    if not args:
        return
    path = [world] if world is not None else []
    done = run(
        [python, ctx.root / LATENCY_SCRIPT, *args],
        cwd=ctx.work,
        env=ctx.env(path, expect),
        check=False,
    )
    if done.returncode != 0:
        tail = " / ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        outcome.problems.append(f"latency: exited {done.returncode}: {tail}")
        return
    outcome.latency = json.loads(done.stdout)


def base_env_problems(head: Mapping[str, Package]) -> list[str]:
    """The aiaas packages this interpreter can already import (it must import none)."""
    return [p.name for p in head.values() if importlib.util.find_spec(p.module) is not None]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="contract tests and one latency figure"
    )
    parser.add_argument("--plan", action="store_true", help="print the matrix plan; run nothing")
    parser.add_argument(
        "--package", action="append", metavar="NAME", help="only this consumer (repeatable)"
    )
    parser.add_argument("--out", type=Path, help=f"output folder (default: ROOT/{OUT_DIR})")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    out: Path = (args.out or root / OUT_DIR).resolve()
    started, t0 = datetime.now(UTC), time.perf_counter()
    full = not args.quick
    try:
        head = load_packages(root)
        releases_path = root / RELEASES_FILE
        releases = (
            read_releases(releases_path.read_text(encoding="utf-8"))
            if releases_path.is_file()
            else []
        )
        by_version = {(r.package, r.version): r for r in releases}

        def requires_of(package: str, version: str) -> tuple[str, ...]:
            return release_requires(root, by_version[(package, version)])

        cells = Planner(head, releases, requires_of).cells(args.package)
        combos = unique_combinations(cells)
        if args.plan:
            header, rows = matrix_rows(cells, {}, full=full)
            print(text_table(header, rows), end="")
            print(f"{len(combos)} combinations to run")
            outside = outside_combinations(cells)
            if outside:
                print(f"{len(outside)} outside a declared range, for the start-up check")
            return 0
        clash = base_env_problems(head)
        if clash:
            raise SkewError(
                "SKEW_BASE_NOT_CLEAN",
                f"this interpreter already imports {', '.join(clash)}: run the matrix from an "
                "environment without aiaas packages (python -m nox -s skew)",
            )
        work = out / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        ctx = Context(root, head, releases, full, work, lambda m: print(f"skew: {m}", flush=True))
        outcomes: dict[Combination, Outcome] = {}
        for i, combo in enumerate(combos, 1):
            ctx.log(f"[{i}/{len(combos)}] {combo.key}")
            outcome = run_combination(ctx, combo, consumers_of(cells, combo))
            outcomes[combo] = outcome
            verdict = "pass" if outcome.ok else "FAIL"
            ctx.log(f"[{i}/{len(combos)}] {verdict} in {outcome.seconds:.1f} s")
        for combo in outside_combinations(cells):
            ctx.log(f"[outside the declared range] start-up check of {combo.key}")
            outcome = run_outside(ctx, combo, [c for c in cells if c.outside == combo])
            outcomes[combo] = outcome
            ctx.log(f"  {'refused' if outcome.ok else 'FAIL: not refused'}")
    except SkewError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    wall = time.perf_counter() - t0
    mode = "full" if full else "quick"
    header, rows = matrix_rows(cells, outcomes, full=full)
    notes = sorted({n for o in outcomes.values() for n in o.notes})
    failures = failure_report(outcomes.values())
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Version-skew matrix ({mode})", "", f"{started:%Y-%m-%d %H:%M} UTC, {wall:.0f} s.", ""]
    md += [markdown_table(header, rows)]
    md += [f"- {n}" for n in notes]
    if failures:
        md += ["", "```text", failures.rstrip(), "```"]
    (out / "matrix.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    data = matrix_json(cells, outcomes, mode=mode, started=started, wall_s=wall)
    (out / "matrix.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plotted = latency_plot([o for o in outcomes.values() if o.latency], out / "latency.png")
    print(text_table(header, rows), end="")
    for note in notes:
        print(f"note: {note}")
    print(failures, end="")
    written = ["matrix.md", "matrix.json", *(["latency.png"] if plotted else [])]
    listed = ", ".join(str(out / w) for w in written)
    print(f"{len(outcomes)} combinations in {wall:.0f} s; written: {listed}")
    return 0 if all(o.ok for o in outcomes.values()) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
