"""Start a new service: copy ``examples/service-template`` under a new name.

    python tools/new_service.py NAME [--dest examples] [--force]

``NAME`` is the new distribution name (``orders-api``: lower-case letters, digits and single
hyphens, 3 to 42 characters, starting with a letter). The template's names are replaced in file
contents and in file and folder names, keeping their shape:

=====================  =====================  =========================
in the template        becomes                for ``orders-api``
=====================  =====================  =========================
``service-template``   the distribution       ``orders-api``
``service_template``   the module             ``orders_api``
``SERVICE_TEMPLATE``   the module, upper-case ``ORDERS_API`` (env prefix)
``Service Template``   the name as a title    ``Orders Api``
``service template``   the name as a phrase   ``orders api``
=====================  =====================  =========================

Caches and build artefacts (``__pycache__``, ``*.pyc``, ``build/``, ``*.egg-info`` ...) are not
copied. ``nox -s new_service -- NAME`` runs this, then installs the copy and runs its tests.

Exit status: 0 when created, 2 for a bad name or an existing folder (``--force`` replaces it),
1 when the template cannot be read.
"""

from __future__ import annotations

import argparse
import keyword
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_NAME = "service-template"
DEFAULT_TEMPLATE = ROOT / "examples" / TEMPLATE_NAME
DEFAULT_DEST = ROOT / "examples"

NAME_RULE = re.compile(r"^[a-z][a-z0-9-]{1,40}[a-z0-9]$")
# The template's name in any of its shapes: service-template, service_template, Service Template.
TEMPLATE_PATTERN = re.compile(r"service([-_ ])template", re.IGNORECASE)
SKIP_DIRS = frozenset(
    {
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        ".nox",
        ".venv",
        "build",
        "dist",
        "htmlcov",
    }
)
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
SKIP_FILES = frozenset({".coverage", "coverage.xml"})


class UsageError(Exception):
    """A bad name or destination: the message says what to do (exit status 2)."""


@dataclass(frozen=True)
class Names:
    """The shapes of a service's name."""

    dist: str  # orders-api
    module: str  # orders_api
    upper: str  # ORDERS_API
    title: str  # Orders Api
    phrase: str  # orders api

    @classmethod
    def of(cls, dist: str) -> Names:
        words = dist.split("-")
        return cls(
            dist=dist,
            module="_".join(words),
            upper="_".join(words).upper(),
            title=" ".join(w.capitalize() for w in words),
            phrase=" ".join(words),
        )


def check_name(name: str) -> Names:
    """The names for ``name``, or :class:`UsageError` saying why it cannot be a service name."""
    if not NAME_RULE.fullmatch(name):
        raise UsageError(
            f"invalid service name {name!r}: use 3 to 42 lower-case letters, digits and hyphens,"
            " starting with a letter and not ending with a hyphen (for example orders-api)"
        )
    if "--" in name:
        raise UsageError(
            f"invalid service name {name!r}: no double hyphens (they would make '__' in the"
            " environment prefix, the settings' nesting separator)"
        )
    names = Names.of(name)
    if keyword.iskeyword(names.module):
        raise UsageError(
            f"invalid service name {name!r}: its module {names.module!r} is a Python keyword"
        )
    if names.module in sys.stdlib_module_names:
        raise UsageError(
            f"invalid service name {name!r}: its module {names.module!r} would shadow the"
            " standard library module of that name; pick another name"
        )
    if name == TEMPLATE_NAME or name.startswith("aiaas"):
        raise UsageError(
            f"invalid service name {name!r}: {TEMPLATE_NAME} and aiaas* are the SDK's own names"
        )
    return names


def rename(text: str, names: Names) -> str:
    """``text`` with every shape of the template's name replaced by the same shape of ``names``."""
    words = names.dist.split("-")

    def shape(match: re.Match[str]) -> str:
        found, separator = match.group(0), match.group(1)
        first, second = found.split(separator)
        if found.isupper():
            parts = [w.upper() for w in words]
        elif first[0].isupper() and second[0].isupper():
            parts = [w.capitalize() for w in words]
        elif first[0].isupper():
            parts = [words[0].capitalize(), *words[1:]]
        else:
            parts = words
        return separator.join(parts)

    return TEMPLATE_PATTERN.sub(shape, text)


def _skipped(relative: Path) -> bool:
    return (
        any(part in SKIP_DIRS or part.endswith(SKIP_SUFFIXES) for part in relative.parts)
        or relative.name in SKIP_FILES
        or relative.name.startswith(".coverage.")
    )


def template_files(template: Path) -> list[Path]:
    """The template's files to copy (relative paths, sorted), without caches and artefacts."""
    return sorted(
        path.relative_to(template)
        for path in template.rglob("*")
        if path.is_file() and not _skipped(path.relative_to(template))
    )


def create(
    name: str, *, dest: Path, template: Path = DEFAULT_TEMPLATE, force: bool = False
) -> Path:
    """Copy ``template`` to ``dest/name``, renamed; returns the new folder.

    Raises :class:`UsageError` for a bad name or an existing folder (unless ``force``, which
    replaces it), :class:`FileNotFoundError` when ``template`` is not a folder. The copy is made
    beside its destination and moved into place whole, so a failure leaves nothing half-made.
    """
    names = check_name(name)
    if not template.is_dir():
        raise FileNotFoundError(f"the template folder {template} does not exist")
    target = dest / name
    if target.exists() or target.is_symlink():
        if not force:
            raise UsageError(
                f"{target} already exists: pick another name, or pass --force to replace it"
            )
        if target.resolve() == template.resolve() or template.resolve().is_relative_to(
            target.resolve()
        ):
            raise UsageError(f"refusing to replace {target}: it holds the template itself")
    files = template_files(template)
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
    try:
        staging.chmod(template.stat().st_mode & 0o777)  # mkdtemp makes it private (0o700)
        for relative in files:
            source = template / relative
            copy = staging / rename(relative.as_posix(), names)
            copy.parent.mkdir(parents=True, exist_ok=True)
            data = source.read_bytes()
            try:
                copy.write_text(rename(data.decode("utf-8"), names), encoding="utf-8")
            except UnicodeDecodeError:  # not text: copied as it is
                copy.write_bytes(data)
            shutil.copymode(source, copy)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="new_service.py",
        description="Create a new service by copying examples/service-template under NAME.",
        epilog="Then: look for the CHANGE: comments. Exit status 2 for a bad name or folder.",
    )
    parser.add_argument("name", metavar="NAME", help="distribution name, for example orders-api")
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help="folder to create NAME in (default: the repository's examples/)",
    )
    parser.add_argument(
        "--template", type=Path, default=DEFAULT_TEMPLATE, help="the folder to copy"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing NAME folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        target = create(args.name, dest=args.dest, template=args.template, force=args.force)
    except UsageError as exc:
        print(f"new_service.py: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"new_service.py: could not create the service: {exc}", file=sys.stderr)
        return 1
    created = sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    names = Names.of(args.name)
    print(f"created {target} ({len(created)} files) from {args.template}:")
    for path in created:
        print(f"  {path.as_posix()}")
    print(
        f"module {names.module}, console script {names.dist}, environment {names.upper}_*.\n"
        "Next: follow the CHANGE: comments; under examples/, test it with"
        f" nox -s \"tests(project='{names.dist}')\"."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
