"""Change sets and where they come from.

A change set is a pair of scripts named ``YYYYMMDDHHMM_slug.up.sql`` and
``YYYYMMDDHHMM_slug.down.sql`` (both required), optionally with ``YYYYMMDDHHMM_slug.check.sql``:
queries run after the up script whose rows must all be ``true``. golang-migrate reads the same
up/down files (its pattern ``^([0-9]+)_(.*)\\.(down|up)\\.(.*)$``) and ignores the check file.

A script may start with header comment lines::

    -- author: alice@example.com
    -- aiaas:no-transaction
    -- aiaas:destructive

``aiaas:no-transaction`` runs the script statement by statement outside a transaction (for
``CREATE INDEX CONCURRENTLY``); ``aiaas:destructive`` marks a script that drops data, which the
migrator refuses to run unless destruction is explicitly allowed. Unknown ``aiaas:`` directives are
errors, so a typo never silently turns a guardrail off.

Checksums are SHA-256 over the script with line endings normalised (CRLF and CR become LF, a
leading byte-order mark is dropped), so a checkout on Windows never looks like tampering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import attrs

from aiaas_db._errors import ChangeSetError
from aiaas_db.migrations._sqlsplit import split_statements

__all__ = [
    "ChangeSet",
    "ChangeSetSource",
    "DirectorySource",
    "PackageSource",
    "Script",
    "StaticSource",
    "load_change_sets",
    "script_checksum",
]

FILE_PATTERN: Final = re.compile(
    r"^(?P<version>\d{12})_(?P<slug>[a-z0-9][a-z0-9_]*)\.(?P<kind>up|down|check)\.sql$"
)
_LOOSE_PATTERN: Final = re.compile(r"^(\d+)_(.*)\.(down|up|check)\.(.*)$")
_AUTHOR_LINE: Final = re.compile(r"^--\s*author\s*:\s*(?P<value>.*?)\s*$", re.IGNORECASE)
_DIRECTIVES: Final = frozenset({"aiaas:no-transaction", "aiaas:destructive"})


def normalise_script(text: str) -> str:
    """The text a checksum is taken over: LF line endings, no byte-order mark."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def script_checksum(text: str) -> str:
    """SHA-256 (hex) of ``text`` with line endings normalised."""
    return hashlib.sha256(normalise_script(text).encode("utf-8")).hexdigest()


def _parse_header(text: str) -> tuple[dict[str, str], set[str], list[str]]:
    """Leading ``--`` lines: (key: value pairs, directives, problems)."""
    values: dict[str, str] = {}
    directives: set[str] = set()
    problems: list[str] = []
    for raw in normalise_script(text).split("\n"):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        body = line[2:].strip()
        if body.lower().startswith("aiaas:"):
            directive = body.split()[0].lower()
            if directive in _DIRECTIVES:
                directives.add(directive)
            else:
                problems.append(
                    f"unknown directive {directive!r} (known: {', '.join(sorted(_DIRECTIVES))})"
                )
            continue
        m = _AUTHOR_LINE.match(line)
        if m and m.group("value"):
            values["author"] = m.group("value")
    return values, directives, problems


@attrs.frozen
class Script:
    """One SQL script of a change set (up, down or check)."""

    sql: str = attrs.field(validator=attrs.validators.instance_of(str), repr=False)
    name: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    checksum: str = attrs.field(init=False)
    no_transaction: bool = attrs.field(init=False)
    destructive: bool = attrs.field(init=False)
    author: str | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        values, directives, problems = _parse_header(self.sql)
        if problems:
            raise ChangeSetError([f"{self.name or 'script'}: {p}" for p in problems])
        object.__setattr__(self, "checksum", script_checksum(self.sql))
        object.__setattr__(self, "no_transaction", "aiaas:no-transaction" in directives)
        object.__setattr__(self, "destructive", "aiaas:destructive" in directives)
        object.__setattr__(self, "author", values.get("author") or None)

    @property
    def statements(self) -> list[str]:
        """The script's statements, split as PostgreSQL's lexer would."""
        return split_statements(normalise_script(self.sql))


def _version_ok(_inst: object, _attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"version must be a non-negative integer, got {value!r}")


def _slug_ok(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", value):
        raise ValueError(f"slug must be lowercase letters, digits and underscores, got {value!r}")


@attrs.frozen
class ChangeSet:
    """A versioned change: up and down scripts, and an optional check script."""

    version: int = attrs.field(validator=_version_ok)
    slug: str = attrs.field(validator=_slug_ok)
    up: Script = attrs.field(validator=attrs.validators.instance_of(Script))
    down: Script = attrs.field(validator=attrs.validators.instance_of(Script))
    check: Script | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Script))
    )
    origin: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @property
    def name(self) -> str:
        """``<version>_<slug>``, as in the file names."""
        return f"{self.version}_{self.slug}"

    @property
    def author(self) -> str | None:
        """The author named in the up script's header (else the down script's)."""
        return self.up.author or self.down.author

    @property
    def checksum(self) -> str:
        """Checksum of the up script: what tamper evidence compares."""
        return self.up.checksum

    @classmethod
    def from_sql(
        cls,
        version: int,
        slug: str,
        up: str,
        down: str,
        check: str | None = None,
        *,
        origin: str = "",
    ) -> ChangeSet:
        """Build a change set from script text (handy for tests and generated sets)."""
        stem = f"{version}_{slug}"
        return cls(
            version=version,
            slug=slug,
            up=Script(up, name=f"{stem}.up.sql"),
            down=Script(down, name=f"{stem}.down.sql"),
            check=None if check is None else Script(check, name=f"{stem}.check.sql"),
            origin=origin,
        )


@runtime_checkable
class ChangeSetSource(Protocol):
    """Anything that yields change sets: a directory, package resources, a list in memory."""

    @property
    def origin(self) -> str:
        """Where the sets come from, for messages (a path or ``package:subdir``)."""
        ...

    def load(self) -> tuple[ChangeSet, ...]:
        """All change sets, validated and sorted by version."""
        ...


def _valid_timestamp(version: str) -> bool:
    try:
        datetime.strptime(version, "%Y%m%d%H%M")  # noqa: DTZ007 - a name, not a moment
    except ValueError:
        return False
    return True


def load_change_sets(
    files: Iterable[tuple[str, str]], *, origin: str = ""
) -> tuple[ChangeSet, ...]:
    """Validate ``(file name, text)`` pairs and build sorted change sets.

    Every problem is collected before raising :class:`ChangeSetError`: bad names, a missing up or
    down script, two slugs for one version, unknown header directives.
    """
    problems: list[str] = []
    groups: dict[int, dict[str, tuple[str, str, str]]] = {}
    for name, text in files:
        if not name.endswith(".sql"):
            continue
        m = FILE_PATTERN.match(name)
        if m is None:
            loose = _LOOSE_PATTERN.match(name)
            hint = (
                "version must be 12 digits YYYYMMDDHHMM"
                if loose and not re.fullmatch(r"\d{12}", loose.group(1))
                else "expected YYYYMMDDHHMM_slug.(up|down|check).sql with a lowercase slug"
            )
            problems.append(f"{name}: not a change-set file name ({hint})")
            continue
        version_text = m.group("version")
        if not _valid_timestamp(version_text):
            problems.append(f"{name}: version {version_text} is not a valid YYYYMMDDHHMM time")
            continue
        version = int(version_text)
        kinds = groups.setdefault(version, {})
        kind = m.group("kind")
        if kind in kinds:
            problems.append(
                f"{name}: version {version} already has a {kind} script ({kinds[kind][0]})"
            )
            continue
        kinds[kind] = (name, m.group("slug"), text)

    sets: list[ChangeSet] = []
    for version in sorted(groups):
        kinds = groups[version]
        slugs = {slug for _name, slug, _text in kinds.values()}
        if len(slugs) > 1:
            problems.append(f"version {version} has scripts with different slugs: {sorted(slugs)}")
            continue
        slug = next(iter(slugs))
        missing = [k for k in ("up", "down") if k not in kinds]
        if missing:
            names = " and ".join(f"{version}_{slug}.{k}.sql" for k in missing)
            problems.append(
                f"{version}_{slug}: missing {names} (every change set needs both an up and a "
                "down script)"
            )
            continue
        scripts: dict[str, Script] = {}
        for kind, (name, _slug, text) in kinds.items():
            try:
                scripts[kind] = Script(text, name=name)
            except ChangeSetError as exc:
                problems.extend(exc.problems)
        if len(scripts) != len(kinds):
            continue
        sets.append(
            ChangeSet(
                version=version,
                slug=slug,
                up=scripts["up"],
                down=scripts["down"],
                check=scripts.get("check"),
                origin=origin,
            )
        )
    if problems:
        raise ChangeSetError(problems, origin=origin or None)
    return tuple(sets)


def _read(entry: Traversable | Path, problems: list[str]) -> str | None:
    try:
        return entry.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{entry.name}: not UTF-8 text")
        return None


def _load_entries(entries: Sequence[Traversable | Path], origin: str) -> tuple[ChangeSet, ...]:
    problems: list[str] = []
    files: list[tuple[str, str]] = []
    for entry in sorted(entries, key=lambda e: e.name):
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        text = _read(entry, problems)
        if text is not None:
            files.append((entry.name, text))
    try:
        sets = load_change_sets(files, origin=origin)
    except ChangeSetError as exc:
        raise ChangeSetError([*problems, *exc.problems], origin=origin) from None
    if problems:
        raise ChangeSetError(problems, origin=origin)
    return sets


@attrs.frozen
class DirectorySource:
    """Change sets in a directory of ``.sql`` files (a user's own)."""

    path: Path = attrs.field(converter=Path)

    @property
    def origin(self) -> str:
        return str(self.path)

    def load(self) -> tuple[ChangeSet, ...]:
        if not self.path.is_dir():
            raise ChangeSetError(
                [f"{self.path} is not a directory (pass the folder holding the .sql change sets)"]
            )
        return _load_entries(list(self.path.iterdir()), self.origin)


@attrs.frozen
class PackageSource:
    """Change sets shipped as package resources (the platform's own sets)."""

    package: str = attrs.field(validator=attrs.validators.instance_of(str))
    subdir: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @property
    def origin(self) -> str:
        return f"{self.package}:{self.subdir}" if self.subdir else self.package

    def load(self) -> tuple[ChangeSet, ...]:
        try:
            root = resources.files(self.package)
        except ModuleNotFoundError:
            raise ChangeSetError([f"package {self.package!r} is not installed"]) from None
        folder = root.joinpath(*self.subdir.split("/")) if self.subdir else root
        if not folder.is_dir():
            raise ChangeSetError([f"{self.origin} is not a resource folder of {self.package!r}"])
        return _load_entries(list(folder.iterdir()), self.origin)


@attrs.frozen
class StaticSource:
    """Change sets held in memory (tests, generated sets)."""

    change_sets: tuple[ChangeSet, ...] = attrs.field(converter=tuple)
    origin: str = "memory"

    def load(self) -> tuple[ChangeSet, ...]:
        versions = [cs.version for cs in self.change_sets]
        if len(set(versions)) != len(versions):
            raise ChangeSetError(["two change sets share a version"], origin=self.origin)
        return tuple(sorted(self.change_sets, key=lambda cs: cs.version))
