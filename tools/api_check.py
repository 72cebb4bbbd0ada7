"""Compare each package's public API with its last release (``nox -s api``).

    python tools/api_check.py [PACKAGE ...] [--root DIR]

The public API of a package is what the ``__all__`` of each public module exports (the package
itself and any module or sub-package whose dotted path has no ``_``-prefixed part, e.g.
``aiaas_serving.generation``), with the signatures of those objects and of their public members.
``griffe`` reads it statically from the source, so nothing is imported (no torch): a name that
``__init__`` exports lazily is followed through its ``if TYPE_CHECKING:`` import, or through the
``_LAZY`` table (name -> private module) when there is none, to the object that defines it.

The last release is the package's newest entry in ``releases.toml``; its source is read from the
release commit (``git archive``). The working tree's source is compared with it, and:

- a public name (or public member) removed without ``@aiaas_core.deprecated`` on it in the last
  release fails in any case: a removal needs one release of deprecation warnings first;
- any other breaking change (a removal after deprecation, a parameter removed, moved, made
  required or given another default, a changed return or attribute type, a lost base class...)
  fails unless the next version's bump allows it -- a major bump, or in 0.x a minor one -- AND
  the CHANGELOG names it (its dotted name, e.g. ``greet`` or ``Greeter.greet``) under
  ``### Changed`` or ``### Removed`` among the changes after the last release. The next version
  is ``pyproject.toml``'s when it is newer than the last release, else the one
  ``nox -s release`` would choose by default (see tools/release.py);
- a package with no release recorded yet has nothing to compare with: it passes, and says so.

Exit status: 0 when every package passes, 1 when one fails (each problem on its own line), 2 on
a usage error (an unknown package).
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import griffe
import release as release_tool
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 300
# Decorators that mark a deprecation: aiaas_core.deprecated (however it was imported).
_DEPRECATED_PATHS = frozenset({"aiaas_core.deprecated", "aiaas_core._versioning.deprecated"})


@dataclass(frozen=True)
class Change:
    """One difference between the released API and the working tree's."""

    name: str  # dotted, relative to its public module: ``greet``, ``Greeter.greet``
    module: str  # the public module that exports it
    what: str
    fatal: bool  # a removal without deprecation: no bump or CHANGELOG entry excuses it

    def __str__(self) -> str:
        return f"{self.module}.{self.name}: {self.what}"


# --- reading an API -----------------------------------------------------------------------------


def _siblings(src: Path) -> list[Path]:
    """The other packages' ``src`` folders in the same tree (``<tree>/packages/*/src``), so that
    a name re-exported from a sibling (``aiaas_serving.GatewayTimeoutError`` is aiaas-core's)
    resolves to its definition. A release's source extracted alone has none."""
    own = (
        {p.name for p in src.iterdir() if (p / "__init__.py").is_file()} if src.is_dir() else set()
    )
    found = []
    for folder in sorted(src.resolve().parents[1].glob("*/src")):
        names = {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        if folder.resolve() != src.resolve() and not names & own:
            found.append(folder)
    return found


def _load(src: Path, module: str) -> griffe.Module:
    collection = griffe.ModulesCollection()
    lines = griffe.LinesCollection()
    siblings = _siblings(src)
    for folder in siblings:  # loaded first, so aliases into them resolve
        for package in sorted(p.name for p in folder.iterdir() if (p / "__init__.py").is_file()):
            griffe.load(
                package,
                search_paths=[folder],
                allow_inspection=False,
                resolve_aliases=False,
                modules_collection=collection,
                lines_collection=lines,
            )
    loaded = griffe.load(
        module,
        search_paths=[src, *siblings],
        allow_inspection=False,
        resolve_aliases=True,
        resolve_external=False,
        modules_collection=collection,
        lines_collection=lines,
    )
    if not isinstance(loaded, griffe.Module):  # pragma: no cover -- a package is a module
        raise TypeError(f"{module} is not a module")
    return loaded


def _public_modules(root: griffe.Module) -> Iterator[griffe.Module]:
    yield root
    for name, member in root.members.items():
        if isinstance(member, griffe.Module) and not name.startswith("_"):
            yield from _public_modules(member)


def _exports(module: griffe.Module) -> list[str]:
    return [str(name) for name in module.exports or []]


def _lazy_table(module: griffe.Module) -> dict[str, str]:
    """The module's ``_LAZY = {name: private module}`` literal, when it has one."""
    path = module.filepath
    if not isinstance(path, Path) or not path.is_file():  # pragma: no cover -- a namespace
        return {}
    for node in ast.parse(path.read_text()).body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == "_LAZY" and value is not None:
            table = ast.literal_eval(value)
            if isinstance(table, dict):
                return {str(k): str(v) for k, v in table.items()}
    return {}


def _target(module: griffe.Module, name: str) -> griffe.Object | griffe.Alias | None:
    """The object ``module`` exports as ``name``, aliases followed to their definition."""
    member = module.members.get(name)
    if isinstance(member, griffe.Alias):
        try:
            return member.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            member = None
    if member is None:
        private = _lazy_table(module).get(name)
        holder = module.members.get(private) if private else None
        if isinstance(holder, griffe.Module):
            return _target(holder, name)
    return member


@dataclass(frozen=True)
class Api:
    """Every public module's exports, by module path."""

    modules: dict[str, dict[str, griffe.Object | griffe.Alias | None]]


def read_api(src: Path, module: str) -> Api:
    """The public API of ``module`` whose source lies under ``src``."""
    root = _load(src, module)
    return Api(
        {
            public.path: {name: _target(public, name) for name in _exports(public)}
            for public in _public_modules(root)
            if public.exports is not None
        }
    )


# --- comparing ----------------------------------------------------------------------------------


def _is_deprecated(obj: object) -> bool:
    decorators = getattr(obj, "decorators", None) or []
    return any(d.callable_path in _DEPRECATED_PATHS for d in decorators)


def _relative(
    obj: griffe.Object | griffe.Alias, base: griffe.Object | griffe.Alias, name: str
) -> str:
    path = obj.path
    if path == base.path:
        return name
    if path.startswith(base.path + "."):
        return f"{name}{path[len(base.path) :]}"
    # A parameter's breakage names the function; anything else keeps its own name.
    return name


def _default_text(default: object) -> str:
    """A parameter default as text, a named constant replaced by the value it is assigned."""
    if isinstance(default, griffe.ExprName):
        try:
            target: object = default.resolved
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):  # pragma: no cover
            target = None
        value = getattr(target, "value", None) if getattr(target, "is_attribute", False) else None
        if value is not None:
            return str(value)
    return str(default)


def _same_default(breakage: griffe.Breakage) -> bool:
    """A "default changed" that only renamed the constant holding the same value."""
    old, new = breakage.old_value, breakage.new_value
    return (
        breakage.kind is griffe.BreakageKind.PARAMETER_CHANGED_DEFAULT
        and isinstance(old, griffe.Parameter)
        and isinstance(new, griffe.Parameter)
        and _default_text(old.default) == _default_text(new.default)
    )


def _explain(breakage: griffe.Breakage) -> str:
    what = str(breakage.kind.value)
    old, new = breakage.old_value, breakage.new_value
    if isinstance(old, griffe.Parameter):
        what += f" ({old.name})"
    elif isinstance(new, griffe.Parameter):
        what += f" ({new.name})"
    elif breakage.kind not in (griffe.BreakageKind.OBJECT_REMOVED,) and (old or new):
        what += f": {old} -> {new}"
    return what


def compare(old: Api, new: Api) -> list[Change]:
    """Every breaking difference from ``old`` to ``new``."""
    changes: list[Change] = []
    for module, exports in old.modules.items():
        current = new.modules.get(module)
        for name, before in exports.items():
            if name.startswith("__") and name.endswith("__"):
                continue  # __version__ changes with every release
            if current is None or name not in current:
                deprecated = _is_deprecated(before)
                what = "public name removed" + (
                    " (deprecated in the last release)"
                    if deprecated
                    else " without a release of aiaas_core.deprecated warnings: deprecate it "
                    "first (@aiaas_core.deprecated), release, then remove it"
                )
                changes.append(Change(name, module, what, fatal=not deprecated))
                continue
            after = current[name]
            if before is None or after is None:
                continue  # not resolvable statically on one side: nothing to compare
            # find_breaking_changes compares the members of what it is given: hand it one
            # holder per side with the exported object as its only member.
            old_holder, new_holder = griffe.Module("api"), griffe.Module("api")
            old_holder.members[name] = before
            new_holder.members[name] = after
            for breakage in griffe.find_breaking_changes(old_holder, new_holder):
                if _same_default(breakage):
                    continue
                removed = breakage.kind is griffe.BreakageKind.OBJECT_REMOVED
                target = breakage.old_value if removed else breakage.obj
                dotted = _relative(breakage.obj, before, name)
                if removed and isinstance(breakage.old_value, griffe.Object | griffe.Alias):
                    dotted = _relative(breakage.old_value, before, name)
                fatal = removed and not _is_deprecated(target)
                what = _explain(breakage)
                if fatal:
                    what += (
                        " without a release of aiaas_core.deprecated warnings: deprecate it "
                        "first, release, then remove it"
                    )
                changes.append(Change(dotted, module, what, fatal=fatal))
    return changes


# --- the policy ---------------------------------------------------------------------------------


def changelog_since(text: str, last: str) -> str:
    """The ``### Changed`` and ``### Removed`` entries of every section newer than ``last``."""
    parts: list[str] = []
    for section in release_tool.changelog_sections(text):
        label = section.name.strip()
        if label.lower() != "unreleased":
            try:
                if Version(label) <= Version(last):
                    continue
            except ValueError:
                continue
        entries = release_tool.section_entries(text[section.body_start : section.end])
        parts.extend(entries.get("Changed", []) + entries.get("Removed", []))
    return "\n".join(parts)


def names_it(text: str, dotted: str) -> bool:
    """Whether ``text`` names ``dotted`` (a constructor's change may name its class)."""
    names = [dotted]
    owner, _, leaf = dotted.rpartition(".")
    if owner and leaf in ("__init__", "__new__"):
        names.append(owner)
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text) for n in names)


def _extract_src(root: Path, commit: str, src_rel: str, dest: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "--", src_rel],
        cwd=root,
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if archive.returncode != 0:
        raise ApiCheckError(
            f"cannot read {src_rel} at release commit {commit}: "
            f"{archive.stderr.decode(errors='replace').strip()} (is the commit in this clone? "
            f"`git fetch --tags` brings the release tags)"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / src_rel


class ApiCheckError(Exception):
    """The check could not be made (an unknown package, a release commit that is missing)."""


@dataclass(frozen=True)
class Outcome:
    package: str
    ok: bool
    lines: tuple[str, ...]


def check_package(root: Path, name: str) -> Outcome:
    """Compare package ``name`` with its last release; see the module docstring."""
    try:
        package = release_tool.load_package(root, name)
    except release_tool.ReleaseError as exc:
        raise ApiCheckError(str(exc.args[0])) from exc
    last = release_tool.last_release(root, package.name)
    if last is None:
        return Outcome(
            package.name, True, (f"{package.name}: no release recorded yet; nothing to compare",)
        )
    last_version, commit = str(last["version"]), str(last["commit"])
    src_rel = str((package.path / "src").relative_to(root))
    with tempfile.TemporaryDirectory(prefix="aiaas-api-") as tmp:
        old = read_api(_extract_src(root, commit, src_rel, Path(tmp)), package.module)
        new = read_api(package.path / "src", package.module)
        changes = compare(old, new)
    changelog = package.changelog.read_text() if package.changelog.is_file() else ""
    if Version(package.version) > Version(last_version):
        upcoming, how = package.version, "pyproject.toml"
    else:
        entries = release_tool.unreleased_entries(changelog)
        upcoming = release_tool.default_version(last_version, package.version, entries)
        how = "the default bump of the Unreleased entries"
    allowed = release_tool.bump_allows_breaking(last_version, upcoming)
    named = changelog_since(changelog, last_version)
    lines: list[str] = []
    ok = True
    for found in changes:
        change = found
        if change.fatal:
            verdict = "FAIL"
        elif not allowed:
            verdict = "FAIL"
            change = Change(
                change.name,
                change.module,
                f"{change.what}; breaking, but {last_version} -> {upcoming} ({how}) does not "
                f"allow a break (a major bump, or in 0.x a minor one)",
                fatal=False,
            )
        elif not names_it(named, change.name):
            verdict = "FAIL"
            change = Change(
                change.name,
                change.module,
                f"{change.what}; breaking, and the CHANGELOG does not name `{change.name}` "
                f"under Changed or Removed since {last_version}",
                fatal=False,
            )
        else:
            verdict = "ok"
        ok = ok and verdict == "ok"
        lines.append(f"  {verdict}: {change}")
    summary = (
        f"{package.name}: compared with {last_version} ({commit[:12]}), next {upcoming}: "
        f"{len(changes)} breaking change(s)" + ("" if ok else ", not allowed")
    )
    return Outcome(package.name, ok, (summary, *lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", help="distribution names (default: every package)")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the repository (default: this one)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    names = args.packages or sorted(
        p.name for p in (root / "packages").glob("*") if (p / "pyproject.toml").is_file()
    )
    failed = False
    for name in names:
        try:
            outcome = check_package(root, name)
        except ApiCheckError as exc:
            print(f"api: error: {exc}", file=sys.stderr)
            return 2
        print("\n".join(outcome.lines))
        failed = failed or not outcome.ok
    print("api: breaking changes not allowed (see above)" if failed else "api: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
