from __future__ import annotations

from pathlib import Path

import pytest

import check_projects

PYPROJECT = """[project]
name = "{name}"
version = "0.1.0"
dependencies = [{deps}]
"""


def _package(
    root: Path, name: str, *, deps: str = "", source: str = "", changelog: bool = True
) -> Path:
    pkg = root / "packages" / name
    module = name.replace("-", "_")
    src = pkg / "src" / module
    src.mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT.format(name=name, deps=deps))
    (pkg / "README.md").write_text("# x\n")
    if changelog:
        (pkg / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n")
    (src / "__init__.py").write_text("__all__: list[str] = []\n" + source)
    (src / "py.typed").write_text("")
    return pkg


def test_clean_tree_has_no_problems(tmp_path: Path) -> None:
    _package(tmp_path, "aiaas-core")
    _package(
        tmp_path,
        "aiaas-telemetry",
        deps='"aiaas-core>=0.1,<0.2"',
        source="import aiaas_core\nfrom aiaas_core import x\n",
    )
    assert check_projects.check(tmp_path) == []


def test_upward_imports_and_dependencies_are_reported(tmp_path: Path) -> None:
    _package(tmp_path, "aiaas-core", source="from aiaas_telemetry import setup\n")
    _package(tmp_path, "aiaas-telemetry", deps='"aiaas-core>=0.1,<0.2"')
    _package(
        tmp_path,
        "aiaas-db",
        deps='"aiaas-core", "aiaas-infra>=0.1,<0.2"',
        source="import hello_service\n",
    )
    _package(tmp_path, "aiaas-infra", deps='"aiaas-core>=0.1,<0.2"')
    example = tmp_path / "examples" / "hello-service"
    example.mkdir(parents=True)
    (example / "pyproject.toml").write_text(PYPROJECT.format(name="hello-service", deps=""))
    problems = "\n".join(check_projects.check(tmp_path))
    assert "aiaas-core may not import aiaas_telemetry" in problems
    assert "sibling dependency 'aiaas-core' needs a range" in problems
    assert "may not depend on aiaas-infra" in problems
    assert "may not import the example hello_service" in problems


def test_hygiene_problems_are_reported(tmp_path: Path) -> None:
    pkg = _package(tmp_path, "aiaas-core", changelog=False)
    (pkg / "src" / "aiaas_core" / "py.typed").unlink()
    (pkg / "src" / "aiaas_core" / "__init__.py").write_text("x = 1\n")
    other = _package(tmp_path, "aiaas-serving")
    (other / "CHANGELOG.md").write_text("# Changelog\n")
    stray = _package(tmp_path, "aiaas-extra")
    (stray / "README.md").unlink()
    problems = "\n".join(check_projects.check(tmp_path))
    assert "aiaas-core: missing CHANGELOG.md" in problems
    assert "missing src/aiaas_core/py.typed" in problems
    assert "must declare __all__" in problems
    assert "aiaas-serving: CHANGELOG.md needs an '## [Unreleased]' section" in problems
    assert "aiaas-extra: missing README.md" in problems
    assert "not in the layer list" in problems


def test_name_must_match_folder_and_main_exit_codes(tmp_path: Path) -> None:
    pkg = _package(tmp_path, "aiaas-core")
    assert check_projects.main(["--root", str(tmp_path)]) == 0
    (pkg / "pyproject.toml").write_text(PYPROJECT.format(name="other", deps=""))
    assert check_projects.main(["--root", str(tmp_path)]) == 1


def test_the_repository_itself_is_clean() -> None:
    root = Path(check_projects.__file__).resolve().parents[1]
    assert check_projects.check(root) == []


def test_private_modules_of_another_distribution_are_refused(tmp_path: Path) -> None:
    _package(tmp_path, "aiaas-core", source="from aiaas_core._own import fine\n")
    _package(
        tmp_path,
        "aiaas-telemetry",
        deps='"aiaas-core>=0.1,<0.2"',
        source=(
            "from aiaas_core._errors import AiaasError\n"
            "from aiaas_core import _hashing\n"
            "import aiaas_core.sub._private.deep\n"
            "from aiaas_core import __version__, PublicName\n"
            "from aiaas_telemetry._mine import ok\n"
        ),
    )
    problems = check_projects.check(tmp_path)
    init = "packages/aiaas-telemetry/src/aiaas_telemetry/__init__.py"
    hint = "use its public API (add the name to aiaas_core.__all__ if it is missing)"
    assert problems == [
        f"{init}:2: imports aiaas_core._errors, a private module of aiaas_core: {hint}",
        f"{init}:3: imports aiaas_core._hashing, a private module of aiaas_core: {hint}",
        f"{init}:4: imports aiaas_core.sub._private, a private module of aiaas_core: {hint}",
    ]


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_import_circles_are_reported_however_they_hide(tmp_path: Path) -> None:
    """A circle through TYPE_CHECKING, a function-level or a relative import is still a circle."""
    _package(tmp_path, "aiaas-core")
    src = "packages/aiaas-core/src/aiaas_core"
    _write(
        tmp_path,
        f"{src}/_a.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aiaas_core._b import B\n",
    )
    _write(tmp_path, f"{src}/_b.py", "def f():\n    from . import _a\n")
    _write(tmp_path, f"{src}/sub/__init__.py", "from aiaas_core.sub._c import C\n")
    _write(tmp_path, f"{src}/sub/_c.py", "from ..sub import _d\n")
    _write(tmp_path, f"{src}/sub/_d.py", "import aiaas_core.sub._c\n")
    _write(tmp_path, f"{src}/_e.py", "from aiaas_core import _a\nimport json\n")  # not a circle
    problems = check_projects.check(tmp_path)
    hint = "move what both sides need into a module of its own"
    assert problems == [
        "packages/aiaas-core: import circle aiaas_core._a -> aiaas_core._b -> "
        f"aiaas_core._a: {hint}",
        "packages/aiaas-core: import circle aiaas_core.sub._c -> aiaas_core.sub._d -> "
        f"aiaas_core.sub._c: {hint}",
    ]


def test_large_modules_and_crowded_folders_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(tmp_path, "aiaas-core")
    src = "packages/aiaas-core/src/aiaas_core"
    limit = check_projects.MAX_MODULE_LINES
    _write(tmp_path, f"{src}/_big.py", "x = 1\n" * (limit + 1))
    _write(tmp_path, f"{src}/_named.py", "x = 1\n" * (limit + 1))
    _write(tmp_path, f"{src}/_edge.py", "x = 1\n" * limit)
    for i in range(check_projects.MAX_FOLDER_MODULES + 1):
        _write(tmp_path, f"{src}/crowd/_m{i}.py", "")
    for i in range(check_projects.MAX_FOLDER_MODULES):
        _write(tmp_path, f"{src}/roomy/_m{i}.py", "")
    monkeypatch.setattr(check_projects, "LARGE_MODULES", {f"{src}/_named.py": "one thing"})
    problems = check_projects.check(tmp_path)
    assert problems == [
        f"{src}/_big.py: {limit + 1} lines (> {limit}): split it by job, or name it in"
        " LARGE_MODULES of tools/check_projects.py with the reason it is one thing",
        f"{src}/crowd: {check_projects.MAX_FOLDER_MODULES + 1} modules"
        f" (> {check_projects.MAX_FOLDER_MODULES}): group them into sub-packages by domain",
    ]


def test_every_named_large_module_exists_and_is_large() -> None:
    """LARGE_MODULES names no module that has gone or shrunk (the list only holds real cases)."""
    root = Path(check_projects.__file__).resolve().parents[1]
    for rel, why in check_projects.LARGE_MODULES.items():
        assert why.strip(), rel
        lines = len((root / rel).read_text().splitlines())
        assert lines > check_projects.MAX_MODULE_LINES, f"{rel} has {lines} lines: drop it"
