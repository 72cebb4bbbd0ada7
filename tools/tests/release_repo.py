"""A throwaway git repository with one tiny package, for the release and API-check tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

PACKAGE = "tiny-pkg"
MODULE = "tiny_pkg"

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "tiny-pkg"
version = "0.1.0"
description = "A tiny package for the release tests."
readme = "README.md"
requires-python = ">=3.11"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["src/tiny_pkg"]
"""

CHANGELOG = """\
# Changelog

All notable changes to `tiny-pkg` are recorded here.

## [Unreleased]

### Added

- `greet(name)`: says hello,
  politely.
"""

INIT = '''\
"""tiny-pkg: greetings."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Greeter": "_impl",
    "greet": "_impl",
}

__all__ = [
    "Greeter",
    "__version__",
    "greet",
]

if TYPE_CHECKING:
    from tiny_pkg._impl import Greeter, greet


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"tiny_pkg.{module}"), name)
'''

IMPL = '''\
"""The greetings."""

from __future__ import annotations


def greet(name: str, *, punctuation: str = "!") -> str:
    """Say hello to ``name``."""
    return f"hello {name}{punctuation}"


class Greeter:
    """Greets people."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def greet(self, name: str) -> str:
        """Greet ``name`` with the prefix."""
        return f"{self.prefix} {greet(name)}"
'''


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def make_repo(root: Path) -> Path:
    """A git repository at ``root`` with ``packages/tiny-pkg`` committed once."""
    pkg = root / "packages" / PACKAGE
    (pkg / "src" / MODULE).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "README.md").write_text("# tiny-pkg\n\nGreetings, for the release tests.\n")
    (pkg / "CHANGELOG.md").write_text(CHANGELOG)
    (pkg / "src" / MODULE / "__init__.py").write_text(INIT)
    (pkg / "src" / MODULE / "_impl.py").write_text(IMPL)
    (pkg / "src" / MODULE / "py.typed").write_text("")
    (root / ".gitignore").write_text(".releases/\n__pycache__/\n")
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "config", "user.email", "release-tests@example.invalid")
    git(root, "config", "user.name", "Release Tests")
    git(root, "config", "commit.gpgsign", "false")
    git(root, "config", "tag.gpgsign", "false")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "tiny-pkg")
    return root


def edit(root: Path, relative: str, old: str, new: str) -> None:
    """Replace ``old`` (which must occur exactly once) by ``new`` in a file of the repository."""
    path = root / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {relative} exactly once"
    path.write_text(text.replace(old, new))


def add_changelog(root: Path, section: str, line: str) -> None:
    """Add an entry under ``### section`` of the Unreleased section."""
    path = root / "packages" / PACKAGE / "CHANGELOG.md"
    text = path.read_text()
    head, _, rest = text.partition("## [Unreleased]\n")
    entry = textwrap.dedent(f"\n### {section}\n\n- {line}\n")
    path.write_text(f"{head}## [Unreleased]\n{entry}{rest}")


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "--quiet", "-m", message)
    return git(root, "rev-parse", "HEAD")
