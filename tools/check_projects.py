"""Package hygiene and the import rules of DESIGN.md, checked over every project.

Each package has its own version, README.md, a Keep a Changelog CHANGELOG.md with an
``## [Unreleased]`` section, ``src/<module>/py.typed`` and an ``__all__`` in its ``__init__``.
Imports point only down the layer list: aiaas-core imports none of ours; aiaas-telemetry only
core; db, infra and serving only core and telemetry; no package imports an example. The rule is
checked twice: in each package's declared dependencies and in the imports of its source. No
package or example imports another distribution's private modules (``aiaas_core._errors``): what
a package offers its neighbours is its public API.

    python tools/check_projects.py [--root DIR]

Exit 0 when clean, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

# What each package may import from among our own distributions.
ALLOWED: dict[str, frozenset[str]] = {
    "aiaas-core": frozenset(),
    "aiaas-telemetry": frozenset({"aiaas-core"}),
    "aiaas-db": frozenset({"aiaas-core", "aiaas-telemetry"}),
    "aiaas-infra": frozenset({"aiaas-core", "aiaas-telemetry"}),
    "aiaas-serving": frozenset({"aiaas-core", "aiaas-telemetry"}),
}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")
_SIBLING_RANGE = re.compile(r">=\s*\d+\.\d+[^,]*,\s*<\s*\d+\.\d+")


def _module(dist: str) -> str:
    return dist.replace("-", "_")


def _imports(src: Path) -> set[tuple[str, Path, int]]:
    return {(full.split(".")[0], file, line) for full, file, line in _dotted_imports(src)}


def _dotted_imports(src: Path) -> set[tuple[str, Path, int]]:
    """Every absolute import in ``src`` as a dotted name (``from a import b`` gives ``a.b``)."""
    found: set[tuple[str, Path, int]] = set()
    for file in src.rglob("*.py"):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update((a.name, file, node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update((f"{node.module}.{a.name}", file, node.lineno) for a in node.names)
    return found


def _private_imports(root: Path, project: Path, ours: set[str]) -> list[str]:
    """Imports of another of our distributions' private modules from ``project``'s source."""
    own = _module(project.name)
    problems: set[str] = set()
    for full, file, line in _dotted_imports(project / "src"):
        top, *rest = full.split(".")
        if top not in ours or top == own:
            continue
        for depth, part in enumerate(rest):
            if part.startswith("_") and not part.startswith("__"):
                private = ".".join([top, *rest[: depth + 1]])
                problems.add(
                    f"{file.relative_to(root)}:{line}: imports {private}, a private module of"
                    f" {top}: use its public API (add the name to {top}.__all__ if it is missing)"
                )
                break
    return sorted(problems)


def check(root: Path) -> list[str]:
    problems: list[str] = []
    packages = sorted(p for p in (root / "packages").glob("*") if (p / "pyproject.toml").is_file())
    examples = sorted(p for p in (root / "examples").glob("*") if (p / "pyproject.toml").is_file())
    ours = {p.name for p in packages}
    example_modules = {_module(p.name) for p in examples}
    modules = {_module(p.name) for p in (*packages, *examples)}
    for project in (*packages, *examples):
        problems.extend(_private_imports(root, project, modules))
    for pkg in packages:
        rel = pkg.relative_to(root)
        meta = tomllib.loads((pkg / "pyproject.toml").read_text())
        project = meta.get("project", {})
        name = project.get("name")
        if name != pkg.name:
            problems.append(f"{rel}: project.name {name!r} must equal the folder name")
            continue
        if not project.get("version"):
            problems.append(f"{rel}: pyproject.toml needs a static version")
        module = _module(name)
        init = pkg / "src" / module / "__init__.py"
        if not init.is_file():
            problems.append(f"{rel}: missing src/{module}/__init__.py")
        elif "__all__" not in init.read_text():
            problems.append(f"{rel}: src/{module}/__init__.py must declare __all__")
        if not (pkg / "src" / module / "py.typed").is_file():
            problems.append(f"{rel}: missing src/{module}/py.typed")
        if not (pkg / "README.md").is_file():
            problems.append(f"{rel}: missing README.md")
        changelog = pkg / "CHANGELOG.md"
        if not changelog.is_file():
            problems.append(f"{rel}: missing CHANGELOG.md")
        elif "## [Unreleased]" not in changelog.read_text():
            problems.append(f"{rel}: CHANGELOG.md needs an '## [Unreleased]' section")
        allowed = ALLOWED.get(name)
        if allowed is None:
            problems.append(f"{rel}: not in the layer list of tools/check_projects.py (DESIGN.md)")
            continue
        for req in project.get("dependencies", []):
            m = _REQ.match(req)
            if m is None:
                continue
            dep = m.group(1).lower().replace("_", "-")
            if dep in ours and dep not in allowed:
                problems.append(f"{rel}: may not depend on {dep} (imports point down the layers)")
            if dep in ours and not _SIBLING_RANGE.search(m.group(2)):
                problems.append(
                    f"{rel}: sibling dependency {req!r} needs a range like '>=0.1,<0.2'"
                )
        for mod, file, line in sorted(_imports(pkg / "src")):
            dist = mod.replace("_", "-")
            where = f"{file.relative_to(root)}:{line}"
            if mod in example_modules:
                problems.append(f"{where}: a package may not import the example {mod}")
            elif dist in ours and dist != name and dist not in allowed:
                problems.append(f"{where}: {name} may not import {mod} (imports point down)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    problems = check(args.root)
    for line in problems:
        print(line)
    print(f"check_projects: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
