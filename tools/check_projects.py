"""Package hygiene and the import rules of DESIGN.md, checked over every project.

Each package has its own version, README.md, a Keep a Changelog CHANGELOG.md with an
``## [Unreleased]`` section, ``src/<module>/py.typed`` and an ``__all__`` in its ``__init__``.
Imports point only down the layer list: aiaas-core imports none of ours; aiaas-telemetry only
core; db, infra and serving only core and telemetry; no package imports an example. The rule is
checked twice: in each package's declared dependencies and in the imports of its source. No
package or example imports another distribution's private modules (``aiaas_core._errors``): what
a package offers its neighbours is its public API.

The layout shows the architecture: no import circle among a project's modules (every import
counts, those under ``if TYPE_CHECKING:`` and inside functions too: a circle hidden from the
interpreter is still one for the reader); no module over :data:`MAX_MODULE_LINES` lines unless
:data:`LARGE_MODULES` names it with the reason it is one cohesive thing; no folder with more than
:data:`MAX_FOLDER_MODULES` modules (``__init__`` aside).

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
#: The most lines a module may have, unless LARGE_MODULES names it.
MAX_MODULE_LINES = 1000
#: The most modules (``__init__.py`` aside) in one folder of a project's ``src/``.
MAX_FOLDER_MODULES = 15
#: Modules allowed past MAX_MODULE_LINES (path below the repository root -> why it is one thing).
LARGE_MODULES: dict[str, str] = {}
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


def _module_graph(src: Path) -> dict[str, tuple[Path, set[str]]]:
    """Each module under ``src`` (dotted) -> its file and the modules of ``src`` it imports."""
    files: dict[str, Path] = {}
    for file in sorted(src.rglob("*.py")):
        parts = list(file.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            files[".".join(parts)] = file
    graph: dict[str, tuple[Path, set[str]]] = {}
    for name, file in files.items():
        package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[: len(package) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # ``from pkg import mod`` names the module; ``from pkg import name``, the package
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            for imported in targets:
                target = imported
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = (file, deps)
    return graph


def _circles(graph: dict[str, tuple[Path, set[str]]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start][1])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child][1]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return sorted(found)


def _layout(root: Path, project: Path) -> list[str]:
    """Import circles, oversized modules and crowded folders in ``project``'s source."""
    problems: list[str] = []
    src = project / "src"
    if not src.is_dir():
        return problems
    graph = _module_graph(src)
    problems.extend(
        f"{project.relative_to(root)}: import circle {' -> '.join([*group, group[0]])}:"
        " move what both sides need into a module of its own"
        for group in _circles(graph)
    )
    folders: dict[Path, int] = {}
    for file, _ in graph.values():
        rel = file.relative_to(root).as_posix()
        lines = len(file.read_text().splitlines())
        if lines > MAX_MODULE_LINES and rel not in LARGE_MODULES:
            problems.append(
                f"{rel}: {lines} lines (> {MAX_MODULE_LINES}): split it by job, or name it in"
                " LARGE_MODULES of tools/check_projects.py with the reason it is one thing"
            )
        if file.name != "__init__.py":
            folders[file.parent] = folders.get(file.parent, 0) + 1
    for folder, count in sorted(folders.items()):
        if count > MAX_FOLDER_MODULES:
            problems.append(
                f"{folder.relative_to(root).as_posix()}: {count} modules (> {MAX_FOLDER_MODULES}):"
                " group them into sub-packages by domain"
            )
    return problems


def check(root: Path) -> list[str]:
    problems: list[str] = []
    packages = sorted(p for p in (root / "packages").glob("*") if (p / "pyproject.toml").is_file())
    examples = sorted(p for p in (root / "examples").glob("*") if (p / "pyproject.toml").is_file())
    ours = {p.name for p in packages}
    example_modules = {_module(p.name) for p in examples}
    modules = {_module(p.name) for p in (*packages, *examples)}
    for project in (*packages, *examples):
        problems.extend(_private_imports(root, project, modules))
        problems.extend(_layout(root, project))
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
