"""The plan of the version-skew matrix (``tools/skew.py``): packages, releases, combinations.

For every package P and every aiaas package S it depends on, :class:`Planner` makes three cells
(P HEAD with S's oldest release in P's range, both at HEAD, P's last release with S HEAD), each
with the combination to install or the reason there is none. Where P's last release declares a
range that excludes S at HEAD, the cell is "outside the declared range": its combination is not
run as if supported; the start-up check of the installed combination must refuse it. Pure: it
reads what it is given.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

RELEASES_FILE = "releases.toml"

Case = Literal["oldest", "head", "last"]
CASES: tuple[Case, ...] = ("oldest", "head", "last")
CASE_TITLES: dict[Case, str] = {
    "oldest": "P HEAD, S oldest in range",
    "head": "P HEAD, S HEAD",
    "last": "P last release, S HEAD",
}


class SkewError(Exception):
    """The matrix could not be built; ``code`` is stable, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"skew: error {self.code}: {self.args[0]}"


# --- what there is: packages at HEAD and their releases ------------------------------------------


@dataclass(frozen=True)
class Package:
    """A package of the working tree: ``packages/<name>``."""

    name: str
    module: str
    version: str
    requires: tuple[str, ...]
    folder: Path


@dataclass(frozen=True)
class Release:
    """One ``[[release]]`` of ``releases.toml``."""

    package: str
    version: str
    commit: str
    wheel: str
    wheel_sha256: str


def project_fields(data: Mapping[str, Any], where: str) -> tuple[str, str, tuple[str, ...], str]:
    meta = data.get("project")
    if not isinstance(meta, dict) or "name" not in meta or "version" not in meta:
        raise SkewError("SKEW_BAD_PYPROJECT", f"{where} has no [project] name and version")
    name = canonicalize_name(str(meta["name"]))
    aiaas = data.get("tool", {}).get("aiaas", {})
    module = str(aiaas.get("module", name.replace("-", "_")))
    return name, str(meta["version"]), tuple(str(r) for r in meta.get("dependencies", [])), module


def load_packages(root: Path) -> dict[str, Package]:
    """Every ``packages/*/pyproject.toml`` of the working tree, by distribution name."""
    found: dict[str, Package] = {}
    for path in sorted((root / "packages").glob("*/pyproject.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SkewError("SKEW_BAD_PYPROJECT", f"{path} is not valid TOML: {exc}") from exc
        name, version, requires, module = project_fields(data, str(path.relative_to(root)))
        found[name] = Package(name, module, version, requires, path.parent)
    if not found:
        raise SkewError("SKEW_NO_PACKAGES", f"no packages/*/pyproject.toml under {root}")
    return found


def read_releases(text: str) -> list[Release]:
    """The ``[[release]]`` records of a ``releases.toml`` text (``tools/release.py`` writes it)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SkewError("SKEW_BAD_RELEASES", f"{RELEASES_FILE} is not valid TOML: {exc}") from exc
    records = data.get("release", [])
    if not isinstance(records, list):
        raise SkewError("SKEW_BAD_RELEASES", f"{RELEASES_FILE}: 'release' must be [[release]]")
    releases = []
    for i, record in enumerate(records, 1):
        keys = ("package", "version", "commit", "wheel", "wheel_sha256")
        if not isinstance(record, dict) or any(not isinstance(record.get(k), str) for k in keys):
            raise SkewError(
                "SKEW_BAD_RELEASES",
                f"{RELEASES_FILE}: release #{i} lacks one of {', '.join(keys)}; it is written by "
                "`nox -s release`, never by hand",
            )
        try:
            Version(record["version"])
        except InvalidVersion as exc:
            raise SkewError(
                "SKEW_BAD_RELEASES", f"{RELEASES_FILE}: release #{i} has version {exc}"
            ) from exc
        releases.append(
            Release(
                canonicalize_name(record["package"]),
                record["version"],
                record["commit"],
                record["wheel"],
                record["wheel_sha256"],
            )
        )
    return releases


def aiaas_ranges(requires: Iterable[str], names: Iterable[str]) -> dict[str, SpecifierSet]:
    """The declared ranges of the requirements on ``names`` (the aiaas packages)."""
    ours = set(names)
    ranges: dict[str, SpecifierSet] = {}
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise SkewError(
                "SKEW_BAD_REQUIREMENT", f"cannot read requirement {text!r}: {exc}"
            ) from exc
        name = canonicalize_name(req.name)
        if name in ours:
            ranges[name] = req.specifier
    return ranges


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Pick:
    """One package of a combination: HEAD (the working tree) or a recorded release."""

    package: str
    version: str
    head: bool

    @property
    def label(self) -> str:
        return f"HEAD ({self.version})" if self.head else self.version


@dataclass(frozen=True)
class Combination:
    """The aiaas packages installed together, sorted by name."""

    picks: tuple[Pick, ...]

    @property
    def key(self) -> str:
        return ", ".join(f"{p.package} {p.label}" for p in self.picks)

    @property
    def short(self) -> str:
        """Only what differs from HEAD, e.g. ``aiaas-telemetry 0.1.0`` (``all HEAD``)."""
        old = [f"{p.package} {p.version}" for p in self.picks if not p.head]
        return ", ".join(old) if old else "all HEAD"

    @property
    def slug(self) -> str:
        text = "_".join(f"{p.package}-{'head' if p.head else p.version}" for p in self.picks)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def get(self, package: str) -> Pick | None:
        return next((p for p in self.picks if p.package == package), None)


@dataclass(frozen=True)
class Cell:
    """One entry of the matrix: consumer P, dependency S, the case, what runs (or why not)."""

    consumer: str
    dependency: str
    case: Case
    combination: Combination | None
    note: str = ""
    # An old consumer whose declared range excludes S at HEAD: not run as if supported; this
    # combination is installed as it is and the start-up check must refuse it.
    outside: Combination | None = None


RequiresOf = Callable[[str, str], tuple[str, ...]]


class Planner:
    """Builds the cells of the matrix from the packages at HEAD and the recorded releases;
    ``requires_of(package, version)`` gives a release's declared dependencies."""

    def __init__(
        self, head: Mapping[str, Package], releases: Sequence[Release], requires_of: RequiresOf
    ) -> None:
        self.head = dict(head)
        self.releases = list(releases)
        self.requires_of = requires_of

    def requires(self, pick: Pick) -> dict[str, SpecifierSet]:
        reqs = (
            self.head[pick.package].requires
            if pick.head
            else self.requires_of(pick.package, pick.version)
        )
        return aiaas_ranges(reqs, self.head)

    def released(self, package: str) -> list[Version]:
        return sorted({Version(r.version) for r in self.releases if r.package == package})

    def order(self) -> list[str]:
        """The packages, each after the aiaas packages it depends on (then by name)."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in path:
                raise SkewError("SKEW_CYCLE", f"aiaas packages depend in a circle: {path}")
            for dep in sorted(self.requires(Pick(name, self.head[name].version, True))):
                visit(dep, (*path, name))
            done.append(name)

        for name in sorted(self.head):
            visit(name, ())
        return done

    def _fits(self, members: Mapping[str, Pick], candidate: Pick) -> bool:
        for dep, spec in self.requires(candidate).items():
            if dep in members and not spec.contains(members[dep].version, prereleases=True):
                return False
        for member in members.values():
            wanted = self.requires(member).get(candidate.package)
            if wanted is not None and not wanted.contains(candidate.version, prereleases=True):
                return False
        return True

    def complete(self, fixed: Mapping[str, Pick]) -> Combination | str:
        """``fixed`` plus every other package at HEAD that fits; or why the members do not."""
        members = dict(fixed)
        for name in self.order():
            if name not in members:
                candidate = Pick(name, self.head[name].version, True)
                if self._fits(members, candidate):
                    members[name] = candidate
        problems = []
        for member in sorted(members.values()):
            for dep, spec in sorted(self.requires(member).items()):
                got = members.get(dep)
                if got is None:
                    problems.append(
                        f"{member.package} {member.label} requires {dep}{spec}, which no "
                        "member admits"
                    )
                elif not spec.contains(got.version, prereleases=True):
                    problems.append(
                        f"{member.package} {member.label} requires {dep}{spec}, not {got.version}"
                    )
        if problems:
            return "; ".join(problems)
        return Combination(tuple(sorted(members.values())))

    def cells(self, packages: Iterable[str] | None = None) -> list[Cell]:
        chosen = sorted(self.head) if packages is None else sorted(set(packages))
        cells: list[Cell] = []
        for consumer in chosen:
            if consumer not in self.head:
                raise SkewError(
                    "SKEW_UNKNOWN_PACKAGE",
                    f"no package {consumer!r}; choose from {', '.join(sorted(self.head))}",
                )
            head_p = Pick(consumer, self.head[consumer].version, True)
            for dep, spec in sorted(self.requires(head_p).items()):
                head_s = Pick(dep, self.head[dep].version, True)
                cells.append(self._oldest(head_p, dep, spec))
                cells.append(self._cell(consumer, dep, "head", {consumer: head_p, dep: head_s}))
                last = self.released(consumer)
                if not last:
                    cells.append(Cell(consumer, dep, "last", None, f"no release of {consumer}"))
                    continue
                old_p = Pick(consumer, str(last[-1]), False)
                wanted = self.requires(old_p).get(dep)
                if wanted is not None and not wanted.contains(head_s.version, prereleases=True):
                    cells.append(self._outside(old_p, head_s, wanted))
                    continue
                cells.append(self._cell(consumer, dep, "last", {consumer: old_p, dep: head_s}))
        return cells

    def _oldest(self, head_p: Pick, dep: str, spec: SpecifierSet) -> Cell:
        admitted = [v for v in self.released(dep) if spec.contains(v, prereleases=True)]
        if not admitted:
            released = ", ".join(str(v) for v in self.released(dep)) or "none"
            return Cell(
                head_p.package,
                dep,
                "oldest",
                None,
                f"no release in range ({dep}{spec}; released: {released})",
            )
        old_s = Pick(dep, str(admitted[0]), False)
        return self._cell(head_p.package, dep, "oldest", {head_p.package: head_p, dep: old_s})

    def _outside(self, old_p: Pick, head_s: Pick, wanted: SpecifierSet) -> Cell:
        """P's last release beside S at HEAD, which P's declared range excludes: the members
        are the two and, at HEAD, every aiaas package they require (transitively)."""
        members = {old_p.package: old_p, head_s.package: head_s}
        pending = [old_p, head_s]
        while pending:
            for name in sorted(self.requires(pending.pop())):
                if name not in members and name in self.head:
                    members[name] = Pick(name, self.head[name].version, True)
                    pending.append(members[name])
        note = (
            f"outside the declared range: {old_p.package} {old_p.version} requires "
            f"{head_s.package}{wanted}, HEAD is {head_s.version}"
        )
        combo = Combination(tuple(sorted(members.values())))
        return Cell(old_p.package, head_s.package, "last", None, note, outside=combo)

    def _cell(self, consumer: str, dep: str, case: Case, fixed: Mapping[str, Pick]) -> Cell:
        combo = self.complete(fixed)
        if isinstance(combo, str):
            return Cell(consumer, dep, case, None, f"not installable together: {combo}")
        return Cell(consumer, dep, case, combo)


def outside_combinations(cells: Sequence[Cell]) -> list[Combination]:
    """The combinations outside a declared range whose start-up check runs, each once."""
    return list(dict.fromkeys(c.outside for c in cells if c.outside is not None))


def unique_combinations(cells: Sequence[Cell]) -> list[Combination]:
    """The combinations the cells need, each once, in the cells' order."""
    seen: dict[Combination, None] = {}
    for cell in cells:
        if cell.combination is not None:
            seen.setdefault(cell.combination, None)
    return list(seen)


def consumers_of(cells: Sequence[Cell], combination: Combination) -> list[Pick]:
    """The consumers whose own tests a combination runs (full mode), each once."""
    picks: dict[Pick, None] = {}
    for cell in cells:
        if cell.combination == combination:
            pick = combination.get(cell.consumer)
            assert pick is not None
            picks.setdefault(pick, None)
    return list(picks)
