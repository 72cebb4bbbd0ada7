"""Release one aiaas package: CHANGELOG, version, reproducible sdist and wheel, checks, record, tag.

    python tools/release.py PACKAGE [--version X.Y.Z] [--date YYYY-MM-DD] [--no-tag]
                            [--root DIR] [--offline]
    python tools/release.py PACKAGE --build-only DIR [--version X.Y.Z]

(``nox -s release -- PACKAGE ...`` runs it with ``build``, ``hatchling`` and ``twine`` installed
from ``constraints/ci.txt``.) The steps, in order; a failing step changes nothing:

1. Refuse unless ``packages/PACKAGE`` has no uncommitted change, its ``pyproject.toml`` version
   and its ``__version__`` agree, and its ``CHANGELOG.md`` has entries under ``## [Unreleased]``.
2. Pick the version. The first release of a package (none in ``releases.toml``) releases its
   current version as is. After that the default bump is, in 0.x: minor when the Unreleased
   entries include ``Changed`` or ``Removed`` (in 0.x a minor release may break), else patch;
   from 1.0: major when they include ``Removed``, minor when ``Added``, ``Changed`` or
   ``Deprecated``, else patch. ``--version`` overrides it (it must be newer than the last release).
3. Move the Unreleased entries under ``## [X.Y.Z] - DATE`` (``--date``, default today in UTC),
   leaving an empty Unreleased section, and write the version into ``pyproject.toml`` and the
   package's ``__version__``.
4. Build the sdist and the wheel (``python -m build --no-isolation``) from exactly the files git
   tracks in the package folder, with ``SOURCE_DATE_EPOCH`` set to midnight UTC of the release
   date and file modes taken from git: the same commit and date build the same bytes (the
   sha256 in ``releases.toml`` can be checked by rebuilding from the recorded commit).
5. Check them: ``twine check --strict``; the wheel installed alone into a fresh virtualenv with
   its declared dependencies only (third-party ones under ``constraints/ci.txt``; sibling aiaas
   packages from the wheels of their releases in the wheelhouse ``.releases/``), then
   ``import MODULE`` reports the new ``__version__``. A sibling's release missing from the
   wheelhouse (a fresh clone) is rebuilt from its recorded commit and checked against its sha256.
6. Commit the three changed files alone (``Release PACKAGE X.Y.Z``: the release commit), tag it
   ``PACKAGE-vX.Y.Z`` (unless ``--no-tag``), copy both files into ``.releases/`` and append the
   release (package, version, commit, date, tag, source_date_epoch, file names and sha256) to
   ``releases.toml``, committed on its own (``Record the release of PACKAGE X.Y.Z``). Other
   changes in the working tree are left as they are.

``--build-only DIR`` makes nothing but the files: at a release commit (the CHANGELOG dates the
package's current version) it rebuilds them into DIR with the same SOURCE_DATE_EPOCH and checks
them with twine; where ``releases.toml`` records that version, both sha256 must match. The release
workflow publishes what it builds (.github/workflows/release.yml).

Exit status: 0 released; 1 a build or check failed (the files are restored); 2 refused (the
message says why and what to do). Every error line starts with ``release: error CODE:``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parents[1]
RELEASES_FILE = "releases.toml"
WHEELHOUSE = ".releases"
CONSTRAINTS = Path("constraints") / "ci.txt"
EXIT_FAILED = 1
EXIT_REFUSED = 2
# A command the tool runs (git, build, twine, pip) never takes longer than this.
COMMAND_TIMEOUT_S = 1800

RELEASES_HEADER = """\
# Every release of the aiaas packages, appended by `nox -s release` (tools/release.py); do not
# edit by hand. `commit` is the release commit (tagged `<package>-v<version>` where tags could be
# made); rebuilding the package from it with SOURCE_DATE_EPOCH=`source_date_epoch` reproduces
# both files byte for byte (`wheel_sha256`, `sdist_sha256`). The files themselves are kept in
# the git-ignored wheelhouse `.releases/`.
"""

_HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\][^\n]*$", re.MULTILINE)
_SUBHEADING = re.compile(r"^### +(?P<name>.+?)\s*$")
_ENTRY = re.compile(r"^[-*] +\S")
_PROJECT_VERSION = re.compile(r'^(version\s*=\s*")([^"]*)(")', re.MULTILINE)
_DUNDER_VERSION = re.compile(r'^(__version__\s*=\s*")([^"]*)(")', re.MULTILINE)


class ReleaseError(Exception):
    """A release refused or failed; ``code`` is stable, the message says what to do."""

    def __init__(self, code: str, message: str, *, exit_status: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code
        self.exit_status = exit_status

    def __str__(self) -> str:
        return f"release: error {self.code}: {self.args[0]}"


# --- CHANGELOG ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One ``## [name]`` section of a CHANGELOG: the heading's span and the body after it."""

    name: str
    heading_start: int
    body_start: int
    end: int


def changelog_sections(text: str) -> list[Section]:
    """The ``## [...]`` sections of a Keep a Changelog file, in file order."""
    heads = list(_HEADING.finditer(text))
    return [
        Section(
            m["name"], m.start(), m.end(), heads[i + 1].start() if i + 1 < len(heads) else len(text)
        )
        for i, m in enumerate(heads)
    ]


def section_entries(body: str) -> dict[str, list[str]]:
    """The entries (``- ...`` bullets with their continuation lines) of a section, by the
    ``### Added``/``Changed``/... heading they stand under (``""`` before any heading)."""
    found: dict[str, list[list[str]]] = {}
    category = ""
    current: list[str] | None = None
    for line in body.splitlines():
        heading = _SUBHEADING.match(line)
        if heading:
            category = heading["name"]
            current = None
        elif _ENTRY.match(line):
            current = [line[2:].strip()]
            found.setdefault(category, []).append(current)
        elif current is not None and line.strip():
            current.append(line.strip())
    return {name: [" ".join(parts) for parts in items] for name, items in found.items()}


def unreleased_entries(text: str) -> dict[str, list[str]]:
    """The entries under ``## [Unreleased]`` (empty when the section is missing or empty)."""
    for section in changelog_sections(text):
        if section.name.strip().lower() == "unreleased":
            return section_entries(text[section.body_start : section.end])
    return {}


def move_unreleased(text: str, version: str, day: date) -> str:
    """The CHANGELOG with the Unreleased entries under ``## [version] - day`` and an empty
    Unreleased section above it."""
    for section in changelog_sections(text):
        if section.name.strip().lower() == "unreleased":
            body = text[section.body_start : section.end].strip("\n")
            rest = text[section.end :]
            head = text[: section.body_start]
            moved = f"{head}\n\n## [{version}] - {day.isoformat()}\n\n{body}\n"
            return f"{moved}\n{rest}" if rest else moved
    raise ReleaseError("RELEASE_NO_UNRELEASED", "the CHANGELOG has no '## [Unreleased]' section")


# --- versions -----------------------------------------------------------------------------------


def default_version(last: str | None, current: str, entries: Mapping[str, list[str]]) -> str:
    """The version a release gets without ``--version`` (see the module docstring)."""
    if last is None:
        return current
    old = Version(last)
    major, minor, patch = (*old.release, 0, 0)[:3]

    def has(*names: str) -> bool:
        return any(entries.get(name) for name in names)

    if major == 0:
        bump = "minor" if has("Changed", "Removed") else "patch"
    elif has("Removed"):
        bump = "major"
    else:
        bump = "minor" if has("Added", "Changed", "Deprecated") else "patch"
    if bump == "major":
        return f"{major + 1}.0.0"
    if bump == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def bump_allows_breaking(last: str, new: str) -> bool:
    """Whether ``last`` -> ``new`` may break the API: a major bump, or in 0.x a minor one."""
    old, nxt = Version(last), Version(new)
    old_mm = (*old.release, 0)[:2]
    new_mm = (*nxt.release, 0)[:2]
    return new_mm[0] > old_mm[0] or (old_mm[0] == 0 and new_mm > old_mm)


# --- the repository -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    path: Path  # the package folder
    module: str
    version: str
    dependencies: tuple[str, ...]

    @property
    def pyproject(self) -> Path:
        return self.path / "pyproject.toml"

    @property
    def changelog(self) -> Path:
        return self.path / "CHANGELOG.md"

    @property
    def init(self) -> Path:
        return self.path / "src" / self.module / "__init__.py"


def load_package(root: Path, name: str) -> Package:
    """The package ``packages/<name>`` (its distribution name)."""
    folder = root / "packages" / name
    if not (folder / "pyproject.toml").is_file():
        known = sorted(
            p.name for p in (root / "packages").glob("*") if (p / "pyproject.toml").is_file()
        )
        raise ReleaseError(
            "RELEASE_UNKNOWN_PACKAGE",
            f"no package {name!r} under packages/; choose one of: {', '.join(known) or 'none'}",
        )
    data = tomllib.loads((folder / "pyproject.toml").read_text())
    meta = data["project"]
    module = data.get("tool", {}).get("aiaas", {}).get("module", meta["name"].replace("-", "_"))
    return Package(
        meta["name"], folder, module, str(meta["version"]), tuple(meta.get("dependencies", []))
    )


def dunder_version(package: Package) -> str | None:
    """The ``__version__ = "..."`` of the package's ``__init__.py`` (None when it has none)."""
    match = _DUNDER_VERSION.search(package.init.read_text()) if package.init.is_file() else None
    return match.group(2) if match else None


def set_versions(package: Package, version: str) -> None:
    """Write ``version`` into ``pyproject.toml``'s ``[project]`` table and ``__version__``."""
    text = package.pyproject.read_text()
    start = text.index("[project]")
    head, tail = text[:start], text[start:]
    tail, count = _PROJECT_VERSION.subn(rf"\g<1>{version}\g<3>", tail, count=1)
    if count != 1:  # pragma: no cover -- load_package read the version from the same table
        raise ReleaseError("RELEASE_NO_VERSION", f"{package.pyproject} has no version line")
    package.pyproject.write_text(head + tail)
    package.init.write_text(
        _DUNDER_VERSION.sub(rf"\g<1>{version}\g<3>", package.init.read_text(), count=1)
    )


def run(cmd: Sequence[str | Path], *, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    """Run a command; its stdout, or a ReleaseError carrying its output when it fails."""
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise ReleaseError(
            "RELEASE_COMMAND_FAILED",
            f"`{' '.join(str(c) for c in cmd)}` exited {done.returncode}:\n{output}",
            exit_status=EXIT_FAILED,
        )
    return done.stdout


def git(root: Path, *args: str) -> str:
    return run(["git", *args], cwd=root).strip()


# --- releases.toml ------------------------------------------------------------------------------


def read_releases(root: Path) -> list[dict[str, object]]:
    """Every recorded release, in the order they were made."""
    path = root / RELEASES_FILE
    if not path.is_file():
        return []
    releases = tomllib.loads(path.read_text()).get("release", [])
    return [dict(r) for r in releases if isinstance(r, dict)]


def last_release(root: Path, package: str) -> dict[str, object] | None:
    """The package's newest recorded release (by version), or None."""
    mine = [r for r in read_releases(root) if r.get("package") == package]
    return max(mine, key=lambda r: Version(str(r["version"]))) if mine else None


def _toml_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_release(root: Path, record: Mapping[str, object]) -> None:
    path = root / RELEASES_FILE
    text = path.read_text() if path.is_file() else RELEASES_HEADER
    lines = "".join(f"{key} = {_toml_value(value)}\n" for key, value in record.items())
    path.write_text(f"{text.rstrip()}\n\n[[release]]\n{lines}")


# --- build and check ----------------------------------------------------------------------------


def source_date_epoch(day: date) -> int:
    """Midnight UTC of the release date, as SOURCE_DATE_EPOCH."""
    return int(datetime.combine(day, time(0, 0), tzinfo=UTC).timestamp())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_tracked(root: Path, package: Package, dest: Path) -> Path:
    """Copy the files git tracks in the package folder (their working-tree content) to ``dest``,
    with the modes git records (0644, or 0755 for executables) and nothing else."""
    rel = package.path.relative_to(root)
    listing = git(root, "ls-files", "-s", "-z", "--", str(rel))
    target = dest / package.path.name
    for entry in filter(None, listing.split("\0")):
        meta, _, name = entry.partition("\t")
        mode = meta.split()[0]
        if mode not in ("100644", "100755"):
            raise ReleaseError(
                "RELEASE_UNSUPPORTED_FILE",
                f"{name} is not a regular file in git (mode {mode}); a release ships only those",
            )
        out = target / Path(name).relative_to(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, out)
        out.chmod(0o755 if mode == "100755" else 0o644)
    return target


def build(root: Path, package: Package, epoch: int, outdir: Path) -> tuple[Path, Path]:
    """Build the package's sdist and wheel from its tracked files into ``outdir``."""
    with tempfile.TemporaryDirectory(prefix="aiaas-release-") as tmp:
        source = copy_tracked(root, package, Path(tmp))
        outdir.mkdir(parents=True, exist_ok=True)
        run(
            [
                sys.executable,
                "-m",
                "build",
                "--no-isolation",
                "--sdist",
                "--wheel",
                "--outdir",
                outdir,
                source,
            ],
            cwd=Path(tmp),
            env={"SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"},
        )
    wheels = sorted(outdir.glob("*.whl"))
    sdists = sorted(outdir.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:  # pragma: no cover -- build makes one of each
        raise ReleaseError("RELEASE_BUILD_FAILED", f"expected one wheel and one sdist in {outdir}")
    return wheels[0], sdists[0]


def sibling_wheels(root: Path, package: Package) -> list[Path]:
    """For each aiaas sibling the package requires, the wheel of its newest release in the
    declared range, from the wheelhouse."""
    found: list[Path] = []
    for text in package.dependencies:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ReleaseError("RELEASE_BAD_REQUIREMENT", f"{package.name}: {exc}") from exc
        name = canonicalize_name(req.name)
        if not name.startswith("aiaas-") or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        candidates = [
            r
            for r in read_releases(root)
            if r.get("package") == name
            and req.specifier.contains(str(r["version"]), prereleases=True)
        ]
        if not candidates:
            raise ReleaseError(
                "RELEASE_SIBLING_UNRELEASED",
                f"{package.name} requires {text!r}, but releases.toml has no release of {name} in "
                f"that range; release {name} first (nox -s release -- {name})",
            )
        best = max(candidates, key=lambda r: Version(str(r["version"])))
        found.append(in_wheelhouse(root, best)[0])
    return found


def in_wheelhouse(root: Path, record: Mapping[str, object]) -> tuple[Path, Path]:
    """The wheel and sdist of a recorded release from the wheelhouse ``.releases/``; when they
    are not there (a fresh clone), rebuilt from the release commit in a temporary git worktree
    with the recorded SOURCE_DATE_EPOCH, and kept only if both sha256 match the record."""
    house = root / WHEELHOUSE
    wanted = (house / str(record["wheel"]), house / str(record["sdist"]))
    if all(path.is_file() for path in wanted):
        return wanted
    label = f"{record['package']} {record['version']}"
    with tempfile.TemporaryDirectory(prefix="aiaas-release-rebuild-") as tmp:
        tree = Path(tmp) / "tree"
        git(root, "worktree", "add", "--quiet", "--detach", str(tree), str(record["commit"]))
        try:
            package = load_package(tree, str(record["package"]))
            epoch = int(str(record["source_date_epoch"]))
            built = build(tree, package, epoch, Path(tmp) / "dist")
        finally:
            git(root, "worktree", "remove", "--force", str(tree))
        for path, key in zip(built, ("wheel_sha256", "sdist_sha256"), strict=True):
            if sha256_of(path) != record.get(key):
                raise ReleaseError(
                    "RELEASE_NOT_REPRODUCED",
                    f"{label} rebuilt from {record['commit']} does not match the sha256 "
                    f"recorded in {RELEASES_FILE} ({path.name})",
                    exit_status=EXIT_FAILED,
                )
        house.mkdir(exist_ok=True)
        for path in built:
            shutil.copy2(path, house / path.name)
    return wanted


def check(
    root: Path, package: Package, version: str, wheel: Path, sdist: Path, *, offline: bool
) -> None:
    """twine check, then the wheel alone in a fresh virtualenv, imported."""
    try:
        run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], cwd=root)
    except ReleaseError as exc:
        raise ReleaseError("RELEASE_CHECK_FAILED", exc.args[0], exit_status=EXIT_FAILED) from exc
    siblings = sibling_wheels(root, package)
    with tempfile.TemporaryDirectory(prefix="aiaas-release-venv-") as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", venv], cwd=root)
        python = venv / "bin" / "python"
        constraints = root / CONSTRAINTS
        pip: list[str | Path] = [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ]
        if constraints.is_file():
            pip += ["-c", constraints]
        if offline:
            pip.append("--no-index")
        try:
            run([*pip, wheel, *siblings], cwd=Path(tmp))
            shown = run(
                [python, "-c", f"import {package.module}; print({package.module}.__version__)"],
                cwd=Path(tmp),
            ).strip()
        except ReleaseError as exc:
            raise ReleaseError(
                "RELEASE_INSTALL_FAILED",
                f"the wheel does not install and import alone with its declared dependencies: "
                f"{exc.args[0]}",
                exit_status=EXIT_FAILED,
            ) from exc
    if shown != version:
        raise ReleaseError(
            "RELEASE_INSTALL_FAILED",
            f"the installed wheel has {package.module}.__version__ == {shown!r}, not {version!r}",
            exit_status=EXIT_FAILED,
        )


# --- the release --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    package: str
    version: str
    commit: str
    date: str
    tag: str
    source_date_epoch: int
    wheel: str
    wheel_sha256: str
    sdist: str
    sdist_sha256: str


def release(
    root: Path,
    name: str,
    *,
    version: str | None = None,
    day: date | None = None,
    tag: bool = True,
    offline: bool = False,
) -> Release:
    """Release package ``name`` of the repository at ``root`` (see the module docstring)."""
    package = load_package(root, name)
    rel = package.path.relative_to(root)
    dirty = git(root, "status", "--porcelain", "--untracked-files=all", "--", str(rel))
    if dirty:
        raise ReleaseError(
            "RELEASE_DIRTY",
            f"{rel} has uncommitted changes; commit them first (a release is built from what git "
            f"tracks):\n{dirty}",
        )
    inner = dunder_version(package)
    if inner != package.version:
        raise ReleaseError(
            "RELEASE_VERSION_MISMATCH",
            f"{package.pyproject.relative_to(root)} says {package.version} but "
            f"{package.init.relative_to(root)} has __version__ = {inner!r}; make them agree",
        )
    changelog = package.changelog.read_text() if package.changelog.is_file() else ""
    entries = unreleased_entries(changelog)
    if not any(entries.values()):
        raise ReleaseError(
            "RELEASE_NO_CHANGES",
            f"{package.changelog.relative_to(root)} has no entries under '## [Unreleased]'; "
            f"there is nothing to release (add the changes there first)",
        )
    last = last_release(root, package.name)
    last_version = None if last is None else str(last["version"])
    chosen = version or default_version(last_version, package.version, entries)
    try:
        parsed = Version(chosen)
    except InvalidVersion as exc:
        raise ReleaseError("RELEASE_BAD_VERSION", f"{chosen!r} is not a version: {exc}") from exc
    if len(parsed.release) != 3:
        raise ReleaseError(
            "RELEASE_BAD_VERSION", f"{chosen!r}: write a release version as MAJOR.MINOR.PATCH"
        )
    if str(parsed) != chosen:
        raise ReleaseError("RELEASE_BAD_VERSION", f"write the version in its normal form: {parsed}")
    if last_version is not None and parsed <= Version(last_version):
        raise ReleaseError(
            "RELEASE_BAD_VERSION",
            f"{package.name} {last_version} is released already; choose a version after it",
        )
    tag_name = f"{package.name}-v{chosen}"
    if tag and git(root, "tag", "--list", tag_name):
        raise ReleaseError(
            "RELEASE_TAG_EXISTS",
            f"tag {tag_name} exists already; choose another version or delete it",
        )
    day = day or datetime.now(UTC).date()
    epoch = source_date_epoch(day)

    originals = {p: p.read_text() for p in (package.changelog, package.pyproject, package.init)}
    try:
        package.changelog.write_text(move_unreleased(changelog, chosen, day))
        set_versions(package, chosen)
        with tempfile.TemporaryDirectory(prefix="aiaas-release-dist-") as tmp:
            wheel, sdist = build(root, package, epoch, Path(tmp))
            check(root, package, chosen, wheel, sdist, offline=offline)
            house = root / WHEELHOUSE
            house.mkdir(exist_ok=True)
            kept = [Path(shutil.copy2(f, house / f.name)) for f in (wheel, sdist)]
    except BaseException:
        for path, text in originals.items():
            path.write_text(text)
        raise
    files = [str(p.relative_to(root)) for p in originals]
    git(root, "commit", "--quiet", "-m", f"Release {package.name} {chosen}", "--", *files)
    commit = git(root, "rev-parse", "HEAD")
    if tag:
        git(root, "tag", "-a", tag_name, "-m", f"{package.name} {chosen}", commit)
    record = Release(
        package=package.name,
        version=chosen,
        commit=commit,
        date=day.isoformat(),
        tag=tag_name if tag else "",
        source_date_epoch=epoch,
        wheel=kept[0].name,
        wheel_sha256=sha256_of(kept[0]),
        sdist=kept[1].name,
        sdist_sha256=sha256_of(kept[1]),
    )
    append_release(root, record.__dict__)
    git(root, "add", "--", RELEASES_FILE)
    git(
        root,
        "commit",
        "--quiet",
        "-m",
        f"Record the release of {package.name} {chosen}",
        "--",
        RELEASES_FILE,
    )
    return record


def release_date(changelog: str, version: str) -> date | None:
    """The date of the ``## [version] - YYYY-MM-DD`` heading, when the CHANGELOG has one."""
    for section in changelog_sections(changelog):
        if section.name.strip() == version:
            heading = changelog[section.heading_start : section.body_start]
            found = re.search(r"\b(\d{4}-\d{2}-\d{2})\s*$", heading)
            return date.fromisoformat(found.group(1)) if found else None
    return None


def rebuild(
    root: Path, name: str, outdir: Path, *, expect_version: str | None = None
) -> tuple[Path, Path]:
    """Build the release the checked-out commit is (publishing, or proving a recorded release):
    the package's current version, dated by its CHANGELOG heading, twine-checked; when
    ``releases.toml`` records that version, both files must match its sha256."""
    package = load_package(root, name)
    if expect_version is not None and expect_version != package.version:
        raise ReleaseError(
            "RELEASE_VERSION_MISMATCH",
            f"expected {package.name} {expect_version}, but pyproject.toml says {package.version}",
        )
    if dunder_version(package) != package.version:
        raise ReleaseError(
            "RELEASE_VERSION_MISMATCH",
            f"pyproject.toml says {package.version} but __version__ is {dunder_version(package)!r}",
        )
    changelog = package.changelog.read_text() if package.changelog.is_file() else ""
    day = release_date(changelog, package.version)
    if day is None:
        raise ReleaseError(
            "RELEASE_NOT_A_RELEASE",
            f"{package.changelog.relative_to(root)} has no '## [{package.version}] - YYYY-MM-DD' "
            f"section: check out a release commit (its tag {package.name}-v{package.version})",
        )
    rel = package.path.relative_to(root)
    dirty = git(root, "status", "--porcelain", "--untracked-files=all", "--", str(rel))
    if dirty:
        raise ReleaseError("RELEASE_DIRTY", f"{rel} has uncommitted changes:\n{dirty}")
    wheel, sdist = build(root, package, source_date_epoch(day), outdir)
    try:
        run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], cwd=root)
    except ReleaseError as exc:
        raise ReleaseError("RELEASE_CHECK_FAILED", exc.args[0], exit_status=EXIT_FAILED) from exc
    recorded = [
        r
        for r in read_releases(root)
        if r.get("package") == package.name and r.get("version") == package.version
    ]
    for record in recorded:
        if (record.get("wheel_sha256"), record.get("sdist_sha256")) != (
            sha256_of(wheel),
            sha256_of(sdist),
        ):
            raise ReleaseError(
                "RELEASE_NOT_REPRODUCED",
                f"the rebuilt files of {package.name} {package.version} differ from the sha256 "
                f"recorded in {RELEASES_FILE} (commit {record.get('commit')}); build at that one",
                exit_status=EXIT_FAILED,
            )
    return wheel, sdist


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="the distribution name, e.g. aiaas-core")
    parser.add_argument("--version", help="the version to release (default: see the rules)")
    parser.add_argument("--date", type=date.fromisoformat, help="YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--no-tag", action="store_true", help="do not tag the release commit")
    parser.add_argument("--offline", action="store_true", help="install checks use no index")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the repository (default: this one)"
    )
    parser.add_argument(
        "--build-only",
        type=Path,
        metavar="DIR",
        help="only rebuild the checked-out release commit's files into DIR (and check them); "
        "--version then names the version expected",
    )
    args = parser.parse_args(argv)
    if args.build_only is not None:
        try:
            built = rebuild(
                args.root.resolve(), args.package, args.build_only, expect_version=args.version
            )
        except ReleaseError as exc:
            print(exc, file=sys.stderr)
            return exc.exit_status
        for path in built:
            print(f"{path}  sha256 {sha256_of(path)}")
        return 0
    try:
        done = release(
            args.root.resolve(),
            args.package,
            version=args.version,
            day=args.date,
            tag=not args.no_tag,
            offline=args.offline,
        )
    except ReleaseError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_status
    print(
        f"released {done.package} {done.version} at {done.commit[:12]}"
        + (f" (tag {done.tag})" if done.tag else "")
    )
    print(f"  {done.wheel}  sha256 {done.wheel_sha256}")
    print(f"  {done.sdist}  sha256 {done.sdist_sha256}")
    print(f"  recorded in {RELEASES_FILE}; files in {WHEELHOUSE}/")
    if done.tag:
        print(f"  publish: git push origin {done.tag} (runs .github/workflows/release.yml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
