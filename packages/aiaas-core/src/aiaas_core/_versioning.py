"""Versions, version ranges, version-skew checks between aiaas distributions, and deprecations.

Versions
--------
:class:`Version` is a `Semantic Versioning 2.0.0 <https://semver.org>`_ version, ordered exactly
by semver precedence: ``major.minor.patch`` numerically, a pre-release sorts before its release,
pre-release identifiers compare one by one (numeric ones numerically and below alphanumeric ones,
which compare in ASCII order; a longer list wins when all before are equal), and build metadata
is ignored -- also by ``==`` and ``hash``, so that ordering and equality agree.

:meth:`Version.parse` also takes the PEP 440 forms our distributions carry, mapped so that the
PEP 440 order is kept:

=======================  ==========================  =========================================
PEP 440                  semver                      note
=======================  ==========================  =========================================
``1``, ``1.2``           ``1.0.0``, ``1.2.0``        missing release parts are zero
``1.2.3a4``              ``1.2.3-alpha.4``           also ``alpha4``; ``a`` alone is ``a0``
``1.2.3b4``              ``1.2.3-beta.4``            also ``beta4``
``1.2.3rc4``             ``1.2.3-rc.4``              also ``c4``, ``pre4``, ``preview4``
``1.2.3.dev4``           ``1.2.3-0.dev.4``           the leading ``0`` sorts a dev release
                                                     before every alpha, beta and rc
``1.2.3.post4``          ``1.2.3+post.4``            a post-release only fixes packaging: it has
                                                     its release's precedence
``1.2.3+ubuntu.1``       ``1.2.3+ubuntu.1``          local labels are build metadata
=======================  ==========================  =========================================

Separators (``1.2.3-rc.4``, ``1.2.3_rc4``), upper case and a leading ``v`` are accepted as PEP 440
allows. Not accepted, with a :class:`ValueError` that says so: epochs (``1!2.0``), more than three
release parts, leading zeros, and a dev release of a pre- or post-release (``1.0rc1.dev2``), which
has no order-preserving semver form. Text that is valid semver is read as semver first
(``1.0.0-1`` is a pre-release, not PEP 440's post-release).

Version ranges
--------------
:meth:`VersionRange.parse` reads comma-separated clauses, all of which must hold:

* ``>=V``, ``>V``, ``<=V``, ``<V``, ``==V``, ``!=V``, where ``V`` may be partial and is padded
  with zeros (``>=0.1`` is ``>=0.1.0``, as in PEP 440); ``<V`` also excludes the pre-releases of
  ``V`` itself (PEP 440: ``<0.2`` rejects ``0.2.0-rc.1``);
* ``==1.2.*`` and ``!=1.2.*``: any (no) version starting with ``1.2``;
* ``~=V`` (PEP 440 compatible release): ``~=1.4.5`` is ``>=1.4.5, ==1.4.*``; ``~=1.4`` is
  ``>=1.4, ==1.*``;
* ``^V`` (npm caret): up to the next change of the first non-zero part: ``^1.2.3`` is
  ``>=1.2.3, <2.0.0``, ``^0.2.3`` is ``>=0.2.3, <0.3.0``, ``^0.0.3`` is ``>=0.0.3, <0.0.4``; a
  partial ``^0.0`` is ``<0.1.0`` and ``^0`` is ``<1.0.0``;
* ``~V`` (npm tilde): patch changes: ``~1.2.3`` is ``>=1.2.3, <1.3.0``, ``~1`` is ``<2.0.0``;
* ``*``: any version.

Pre-releases follow the npm rule: a pre-release version satisfies a range only when some clause
names a pre-release of the same ``major.minor.patch`` (``>=1.2.3-beta.2`` admits ``1.2.3-beta.4``
but not ``1.3.0-alpha``), unless the caller passes ``include_prereleases=True``.
``str(range)`` gives back the clauses as written, without spaces, so ``parse(str(r)) == r``.

Version skew
------------
Every aiaas distribution declares the sibling versions it supports in its ``Requires-Dist``
metadata (``aiaas-core>=0.1,<0.2``). :func:`check_compatibility` reads them for the installed
distributions whose names start with ``aiaas-`` and reports each requirement the installed
sibling does not meet, or a sibling that is not installed. See its docstring for the details.

Deprecations
------------
:func:`deprecated` marks a function, method, class or property: using it emits an
:class:`AiaasDeprecationWarning` pointing at the caller and logs the message once on the
``aiaas.deprecation`` logger. Like every :class:`DeprecationWarning`, Python shows it by default
only for code in ``__main__`` (and test runners show it); the log line reaches everyone else.
"""

from __future__ import annotations

import functools
import re
import threading
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, ParamSpec, TypeVar, cast

import attrs

from aiaas_core._errors import ConfigError

__all__ = [
    "AiaasDeprecationWarning",
    "CompatibilityProblem",
    "CompatibilityReport",
    "Version",
    "VersionRange",
    "check_compatibility",
    "deprecated",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")

_NUMERIC: Final = r"(?:0|[1-9][0-9]*)"
_ALNUM: Final = r"(?:[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_PRE_ID: Final = rf"(?:{_NUMERIC}|{_ALNUM})"
_SEMVER: Final = re.compile(
    rf"(?P<major>{_NUMERIC})\.(?P<minor>{_NUMERIC})\.(?P<patch>{_NUMERIC})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)
_PEP440: Final = re.compile(
    r"v?"
    r"(?:(?P<epoch>[0-9]+)!)?"
    r"(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?"
    r"(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n>[0-9]+)?)?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?",
    re.ASCII | re.IGNORECASE,
)
_IDENTIFIER: Final = re.compile(r"[0-9A-Za-z-]+", re.ASCII)
_PRE_LABELS: Final = {
    "a": "alpha",
    "alpha": "alpha",
    "b": "beta",
    "beta": "beta",
    "c": "rc",
    "rc": "rc",
    "pre": "rc",
    "preview": "rc",
}
_PARTIAL: Final = re.compile(rf"{_NUMERIC}(?:\.{_NUMERIC}){{0,2}}", re.ASCII)

_PreKey = tuple[tuple[int, int, str], ...]


# --------------------------------------------------------------------------------------------
# Version


def _to_prerelease(value: Iterable[int | str]) -> tuple[int | str, ...]:
    out: list[int | str] = []
    for ident in value:
        if isinstance(ident, str) and ident.isdigit() and ident.isascii():
            if len(ident) > 1 and ident.startswith("0"):
                raise ValueError(f"numeric pre-release identifier {ident!r} has a leading zero")
            out.append(int(ident))
        else:
            out.append(ident)
    return tuple(out)


def _to_build(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_release(_inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _check_prerelease(
    _inst: object, _attribute: attrs.Attribute[tuple[int | str, ...]], value: tuple[object, ...]
) -> None:
    for ident in value:
        if isinstance(ident, bool) or not isinstance(ident, int | str):
            raise ValueError(f"pre-release identifiers are ints or strings, got {ident!r}")
        if isinstance(ident, int) and ident < 0:
            raise ValueError(f"numeric pre-release identifiers are >= 0, got {ident!r}")
        if isinstance(ident, str) and not _IDENTIFIER.fullmatch(ident):
            raise ValueError(f"pre-release identifier {ident!r} is not [0-9A-Za-z-]+")


def _check_build(
    _inst: object, _attribute: attrs.Attribute[tuple[str, ...]], value: tuple[object, ...]
) -> None:
    for ident in value:
        if not isinstance(ident, str) or not _IDENTIFIER.fullmatch(ident):
            raise ValueError(f"build identifier {ident!r} is not [0-9A-Za-z-]+")


@attrs.frozen(eq=False, order=False)
class Version:
    """A semantic version (semver 2.0.0); see the module documentation for parsing and order.

    Build a ``Version`` with :meth:`parse` or from its parts
    (``Version(1, 2, 3, prerelease=("rc", 1))``). ``str()`` renders the semver form.
    """

    major: int = attrs.field(validator=_check_release)
    minor: int = attrs.field(validator=_check_release)
    patch: int = attrs.field(validator=_check_release)
    prerelease: tuple[int | str, ...] = attrs.field(
        default=(), converter=_to_prerelease, validator=_check_prerelease
    )
    build: tuple[str, ...] = attrs.field(default=(), converter=_to_build, validator=_check_build)
    _key: tuple[int, int, int, int, _PreKey] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        pre: _PreKey = tuple(
            (0, ident, "") if isinstance(ident, int) else (1, 0, ident) for ident in self.prerelease
        )
        # A release (1) sorts after all of its pre-releases (0).
        key = (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)
        object.__setattr__(self, "_key", key)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse semver text, or one of the PEP 440 forms in the module documentation."""
        return _parse_version(text)[0]

    @property
    def release(self) -> tuple[int, int, int]:
        """``(major, minor, patch)``."""
        return (self.major, self.minor, self.patch)

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(i) for i in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key < other._key

    def __le__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key <= other._key

    def __gt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key > other._key

    def __ge__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key >= other._key


def _invalid(text: object, why: str) -> ValueError:
    return ValueError(f"invalid version {text!r}: {why}")


def _parse_version(text: str) -> tuple[Version, int]:
    """The version, and how many release parts the text wrote (for partial versions)."""
    if not isinstance(text, str):
        raise TypeError(f"a version is text, got {type(text).__name__}")
    stripped = text.strip()
    match = _SEMVER.fullmatch(stripped)
    if match:
        pre = match["pre"]
        build = match["build"]
        return (
            Version(
                int(match["major"]),
                int(match["minor"]),
                int(match["patch"]),
                prerelease=tuple(pre.split(".")) if pre else (),
                build=tuple(build.split(".")) if build else (),
            ),
            3,
        )
    match = _PEP440.fullmatch(stripped)
    if not match:
        raise _invalid(
            text,
            "expected semver MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] (e.g. 1.2.3-rc.1) or "
            "a PEP 440 release such as 1.2.3, 1.2.3rc1 or 1.2.3.dev4",
        )
    if match["epoch"] is not None:
        raise _invalid(text, "PEP 440 epochs (N!) have no semver form")
    parts = match["release"].split(".")
    if len(parts) > 3:
        raise _invalid(text, "at most three release parts (MAJOR.MINOR.PATCH)")
    if any(len(p) > 1 and p.startswith("0") for p in parts):
        raise _invalid(text, "release parts have no leading zeros")
    release = [int(p) for p in parts] + [0] * (3 - len(parts))
    prerelease: tuple[int | str, ...] = ()
    metadata: list[str] = []
    if match["dev_l"] is not None:
        if match["pre_l"] is not None or match["post_l"] is not None:
            raise _invalid(
                text, "a dev release of a pre- or post-release has no order-preserving semver form"
            )
        prerelease = (0, "dev", int(match["dev_n"] or 0))
    elif match["pre_l"] is not None:
        prerelease = (_PRE_LABELS[match["pre_l"].lower()], int(match["pre_n"] or 0))
    if match["post_l"] is not None:
        metadata += ["post", str(int(match["post_n"] or 0))]
    if match["local"] is not None:
        metadata += re.split(r"[-_.]", match["local"].lower())
    version = Version(release[0], release[1], release[2], prerelease, tuple(metadata))
    return version, len(parts)


# --------------------------------------------------------------------------------------------
# VersionRange


def _floor(release: Sequence[int]) -> Version:
    """The lowest version of all with this release prefix: ``1.3`` -> ``1.3.0-0``."""
    padded = [*release, 0, 0, 0][:3]
    return Version(padded[0], padded[1], padded[2], prerelease=(0,))


def _bump(release: Sequence[int], index: int) -> Version:
    """The lowest version above every version that starts with ``release[: index + 1]``."""
    head = [*release[:index], release[index] + 1]
    return _floor(head)


@attrs.frozen
class _Clause:
    op: str
    text: str
    low: Version | None = attrs.field(default=None, eq=False)
    low_inclusive: bool = attrs.field(default=True, eq=False)
    high: Version | None = attrs.field(default=None, eq=False)
    high_inclusive: bool = attrs.field(default=False, eq=False)
    negate: bool = attrs.field(default=False, eq=False)
    named: Version | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return f"{self.op}{self.text}"

    def matches(self, version: Version) -> bool:
        inside = True
        if self.low is not None:
            inside = version >= self.low if self.low_inclusive else version > self.low
        if inside and self.high is not None:
            inside = version <= self.high if self.high_inclusive else version < self.high
        return inside != self.negate


_OPERATORS: Final = ("===", "~=", "==", "!=", ">=", "<=", ">", "<", "^", "~")


def _clause(raw: str, whole: str) -> _Clause:
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid version range {whole!r}: {why}")

    text = raw.strip()
    if not text:
        raise bad("empty clause (a stray comma?)")
    if text == "*":
        return _Clause("*", "")
    op = next((o for o in _OPERATORS if text.startswith(o)), None)
    if op is None:
        raise bad(
            f"clause {text!r} has no operator; use >=, >, <=, <, ==, !=, ~=, ^, ~ or *"
            " (for an exact version, ==1.2.3)"
        )
    if op == "===":
        raise bad("arbitrary equality (===) is not supported")
    written = text[len(op) :].strip()
    if not written or any(ch.isspace() for ch in written):
        raise bad(f"clause {text!r} needs one version after {op}")
    if written.endswith(".*"):
        prefix = written[:-2]
        if op not in ("==", "!=") or not _PARTIAL.fullmatch(prefix):
            raise bad(
                f"wildcards are only for == and != with release parts, as in ==1.2.*: {text!r}"
            )
        release = [int(p) for p in prefix.split(".")]
        low, high = _floor(release), _bump(release, len(release) - 1)
        return _Clause(op, written, low, True, high, False, negate=op == "!=")
    try:
        version, parts = _parse_version(written)
    except ValueError as exc:
        raise bad(str(exc)) from None
    named = version if version.prerelease else None
    release = list(version.release)
    if op == ">=":
        return _Clause(op, written, low=version, named=named)
    if op == ">":
        return _Clause(op, written, low=version, low_inclusive=False, named=named)
    if op == "<=":
        return _Clause(op, written, high=version, high_inclusive=True, named=named)
    if op == "<":
        # PEP 440: <V does not admit pre-releases of V itself unless V is a pre-release.
        high = version if version.prerelease else _floor(release)
        return _Clause(op, written, high=high, named=named)
    if op in ("==", "!="):
        return _Clause(op, written, version, True, version, True, negate=op == "!=", named=named)
    if op == "~=":
        if parts < 2:
            raise bad(f"~= needs at least MAJOR.MINOR: {text!r}")
        return _Clause(op, written, low=version, high=_bump(release, parts - 2), named=named)
    if op == "~":
        index = 1 if parts >= 2 else 0
        return _Clause(op, written, low=version, high=_bump(release, index), named=named)
    # "^": bump the first non-zero written part, or the last written part when all are zero.
    index = next((i for i in range(parts) if release[i] != 0), parts - 1)
    return _Clause(op, written, low=version, high=_bump(release, index), named=named)


@attrs.frozen
class VersionRange:
    """A set of version clauses that must all hold; see the module documentation.

    Build one with :meth:`parse`. Two ranges are equal when their clauses are written the same.
    """

    clauses: tuple[_Clause, ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        """Parse ``">=0.1,<0.2"``, ``"^1.2.3"``, ``"*"`` and the like; ValueError if malformed."""
        if not isinstance(text, str):
            raise TypeError(f"a version range is text, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"invalid version range {text!r}: empty (use * for any version)")
        if "||" in text:
            raise ValueError(f"invalid version range {text!r}: alternatives (||) are not supported")
        return cls(tuple(_clause(part, text) for part in text.split(",")))

    def contains(self, version: Version | str, *, include_prereleases: bool = False) -> bool:
        """Whether ``version`` satisfies every clause.

        A pre-release satisfies the range only when a clause names a pre-release of the same
        ``major.minor.patch``, or when ``include_prereleases`` is true.
        """
        if isinstance(version, str):
            version = Version.parse(version)
        if version.prerelease and not include_prereleases:
            allowed = any(
                c.named is not None and c.named.release == version.release for c in self.clauses
            )
            if not allowed:
                return False
        return all(clause.matches(version) for clause in self.clauses)

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, Version | str):
            return False
        return self.contains(version)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.clauses)

    def __repr__(self) -> str:
        return f"VersionRange({str(self)!r})"


# --------------------------------------------------------------------------------------------
# Requirements and version skew


_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)


def _normalize(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.frozen
class _Requirement:
    name: str
    range: VersionRange | None  # None: a direct reference (name @ url), no version to check
    conditional: bool  # it has an environment marker


def _parse_requirement(text: str) -> _Requirement:
    """Name, version range and whether a PEP 508 requirement has a marker."""
    body, _, marker = text.partition(";")
    body = body.strip()
    match = _NAME.match(body)
    if not match:
        raise ValueError(f"invalid requirement {text!r}: it does not start with a name")
    rest = body[match.end() :].lstrip()
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"invalid requirement {text!r}: unclosed [extras]")
        rest = rest[end + 1 :].lstrip()
    spec: VersionRange | None
    if rest.startswith("@"):
        spec = None
    else:
        if rest.startswith("(") and rest.endswith(")"):
            rest = rest[1:-1].strip()
        spec = VersionRange.parse(rest) if rest else VersionRange.parse("*")
    return _Requirement(_normalize(match.group()), spec, bool(marker.strip()))


MISSING: Final = "missing"


@attrs.frozen
class CompatibilityProblem:
    """An aiaas distribution's requirement on a sibling that the installed sibling does not meet.

    ``distribution`` declares ``requirement`` (as written in its metadata, e.g.
    ``aiaas-core>=0.1,<0.2``); ``installed`` is the version of the required sibling that is
    installed, or ``"missing"``. ``required`` is the sibling's name, ``distribution_version``
    the declaring distribution's version, and ``detail`` says why when the reason is not simply
    a version outside the range (an unparseable version or requirement).
    """

    distribution: str
    requirement: str
    installed: str
    required: str = ""
    distribution_version: str = ""
    detail: str = ""

    def __str__(self) -> str:
        who = f"{self.distribution} {self.distribution_version}".strip()
        required = self.required or "the required distribution"
        if self.installed == MISSING:
            text = f"{who} requires {self.requirement}, but {required} is not installed"
        else:
            text = (
                f"{who} requires {self.requirement}, but {required} {self.installed} is installed"
            )
        if self.detail:
            text += f" ({self.detail})"
        wanted = self.requirement.partition(";")[0].strip()
        if self.installed == MISSING:
            return f"{text}; install {wanted!r}"
        return (
            f"{text}; install {wanted!r} or a version of {self.distribution} "
            f"that supports {required} {self.installed}"
        )


@attrs.frozen
class CompatibilityReport:
    """The outcome of :func:`check_compatibility`.

    ``distributions`` lists the aiaas distributions examined as ``(name, version)`` pairs,
    sorted by name; ``problems`` every unsupported combination found.
    """

    distributions: tuple[tuple[str, str], ...]
    problems: tuple[CompatibilityProblem, ...]

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def versions(self) -> dict[str, str]:
        """Distribution name -> installed version."""
        return dict(self.distributions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary, e.g. for a health or info endpoint."""
        return {
            "ok": self.ok,
            "distributions": self.versions,
            "problems": [
                {
                    "distribution": p.distribution,
                    "requirement": p.requirement,
                    "installed": p.installed,
                    "message": str(p),
                }
                for p in self.problems
            ],
        }

    def __str__(self) -> str:
        names = ", ".join(f"{n} {v}" for n, v in self.distributions) or "none"
        if self.ok:
            return f"aiaas distributions compatible: {names}"
        lines = "\n  - ".join(str(p) for p in self.problems)
        return f"{len(self.problems)} aiaas version-skew problem(s) among {names}:\n  - {lines}"


def _installed(consumers: frozenset[str]) -> dict[str, tuple[str, list[str]]]:
    from importlib import metadata  # noqa: PLC0415 -- slow to import; only needed here

    found: dict[str, tuple[str, list[str]]] = {}
    for dist in metadata.distributions():
        names = dist.metadata.get_all("Name") or []  # no KeyError/warning when it is absent
        if not names:  # pragma: no cover -- a broken install without a name
            continue
        key = _normalize(str(names[0]))
        # The first one on sys.path wins, as for importlib.metadata.version().
        if (key.startswith("aiaas-") or key in consumers) and key not in found:
            found[key] = (dist.version, list(dist.requires or []))
    return found


def _problems_of(
    name: str, version: str, requirements: Iterable[str], found: Mapping[str, tuple[str, Any]]
) -> list[CompatibilityProblem]:
    problems: list[CompatibilityProblem] = []
    for text in requirements:
        target = _NAME.match(text.strip())
        if target is None or not _normalize(target.group()).startswith("aiaas-"):
            continue
        required = _normalize(target.group())
        found_version = found[required][0] if required in found else None
        detail = ""
        try:
            req = _parse_requirement(text)
        except ValueError as exc:
            detail = f"unreadable requirement: {exc}"
        else:
            if found_version is None:
                if req.conditional:
                    continue
            elif req.range is None:
                continue
            else:
                try:
                    current = Version.parse(found_version)
                except ValueError as exc:
                    detail = str(exc)
                else:
                    # Like `pip check`: an installed pre-release counts by its precedence.
                    if req.range.contains(current, include_prereleases=True):
                        continue
        problems.append(
            CompatibilityProblem(
                name,
                text.strip(),
                MISSING if found_version is None else found_version,
                required=required,
                distribution_version=version,
                detail=detail,
            )
        )
    return problems


def check_compatibility(
    *,
    distributions: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    on_problem: Literal["warn", "raise", "ignore"] = "warn",
    consumers: Collection[str] = (),
) -> CompatibilityReport:
    """Check that the installed aiaas distributions support each other's versions.

    Examines the distributions whose (PEP 503 normalised) names start with ``aiaas-``: the
    installed ones (``importlib.metadata``), or ``distributions``, a mapping of name to
    ``(version, [requirement strings])`` standing in for what is installed. Each ``Requires-Dist``
    entry naming another aiaas distribution is checked: the installed sibling must be in the
    requirement's range (an installed pre-release counts by its precedence, as in
    ``pip check``), and a required sibling must be installed. Requirements on other
    distributions are not examined. Extras are ignored; a requirement with an environment marker
    (``; extra == "otel"``, ``; python_version < "3.12"``) is conditional: it is checked when the
    sibling is installed, and a missing sibling is not a problem. A direct reference
    (``aiaas-core @ https://...``) has no range to check.

    ``on_problem`` decides what else happens when there are problems: ``"warn"`` (the default)
    emits one :class:`UserWarning` per problem; ``"raise"`` raises
    :class:`~aiaas_core.ConfigError` with code ``VERSION_SKEW`` whose ``problems`` lists them;
    ``"ignore"`` only reports. The report is returned in every case that does not raise.

    ``consumers`` names distributions examined besides the ``aiaas-*`` ones, e.g. the service or
    tool that composes them (``consumers=["world-service"]``): their requirements on aiaas
    distributions are checked the same way, and they are listed in the report.
    """
    if on_problem not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_problem must be 'warn', 'raise' or 'ignore', got {on_problem!r}")
    if isinstance(consumers, str):
        raise TypeError("consumers must be a collection of distribution names, not one string")
    extra = frozenset(_normalize(name) for name in consumers)
    if distributions is None:
        found = _installed(extra)
    else:
        found = {
            _normalize(name): (str(version), list(requirements))
            for name, (version, requirements) in distributions.items()
            if _normalize(name).startswith("aiaas-") or _normalize(name) in extra
        }
    problems: list[CompatibilityProblem] = []
    for name in sorted(found):
        version, requirements = found[name]
        problems.extend(_problems_of(name, version, requirements, found))
    report = CompatibilityReport(
        tuple((name, found[name][0]) for name in sorted(found)), tuple(problems)
    )
    if problems and on_problem == "raise":
        raise ConfigError(
            f"{len(problems)} aiaas version-skew problem(s):\n  - "
            + "\n  - ".join(str(p) for p in problems),
            problems=problems,
            code="VERSION_SKEW",
        )
    if on_problem == "warn":
        for problem in problems:
            warnings.warn(str(problem), UserWarning, stacklevel=2)
    return report


# --------------------------------------------------------------------------------------------
# Deprecations


class AiaasDeprecationWarning(DeprecationWarning):
    """Emitted when deprecated aiaas API is used; names the removal version and alternative."""


_logged: set[str] = set()
_logged_lock = threading.Lock()


def _emit(message: str, stacklevel: int) -> None:
    """Log ``message`` once per process, then warn ``stacklevel`` frames above the caller."""
    with _logged_lock:
        first = message not in _logged
        _logged.add(message)
    if first:
        import logging  # noqa: PLC0415 -- only when deprecated API is used

        logging.getLogger("aiaas.deprecation").warning(message)
    # Log before warning: with warnings turned into errors the warning raises.
    warnings.warn(message, AiaasDeprecationWarning, stacklevel=stacklevel + 1)


def _public_name(obj: Any) -> str:
    module = str(getattr(obj, "__module__", "") or "")
    parts = [p for i, p in enumerate(module.split(".")) if i == 0 or not p.startswith("_")]
    qualname = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj)))
    return ".".join([*(p for p in parts if p), qualname])


def _wrap_function(func: Callable[_P, _R], message: str) -> Callable[_P, _R]:
    import inspect  # noqa: PLC0415 -- at decoration time only

    if inspect.iscoroutinefunction(func):
        coroutine = cast(Callable[_P, Any], func)

        @functools.wraps(func)
        async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            _emit(message, stacklevel=2)
            return await coroutine(*args, **kwargs)

        async_wrapper.__deprecated__ = message  # type: ignore[attr-defined]
        return cast(Callable[_P, _R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        _emit(message, stacklevel=2)
        return func(*args, **kwargs)

    wrapper.__deprecated__ = message  # type: ignore[attr-defined]
    return wrapper


def _wrap_class(cls: type[Any], message: str) -> type[Any]:
    original_new: Any = cls.__new__

    @functools.wraps(original_new)
    def __new__(klass: type[Any], *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        if klass is cls:
            _emit(message, stacklevel=2)
        if original_new is not object.__new__:
            return original_new(klass, *args, **kwargs)
        if klass.__init__ is object.__init__ and (args or kwargs):
            raise TypeError(f"{klass.__name__}() takes no arguments")
        return original_new(klass)

    cls.__new__ = staticmethod(__new__)  # type: ignore[assignment]

    original_init_subclass = cls.__dict__.get("__init_subclass__")

    def __init_subclass__(klass: type[Any], /, **kwargs: Any) -> None:  # noqa: N807
        _emit(message, stacklevel=2)
        if original_init_subclass is not None:
            original_init_subclass.__func__(klass, **kwargs)
        else:
            super(cls, klass).__init_subclass__(**kwargs)

    cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
    cls.__deprecated__ = message
    return cls


def deprecated(*, since: str, removal: str, alternative: str | None = None) -> Callable[[_T], _T]:
    """Mark a function, method, class, classmethod, staticmethod or property as deprecated.

    Each use (a call, an instantiation or subclassing of a class, a property access) emits an
    :class:`AiaasDeprecationWarning` attributed to the caller's line, and the first use in the
    process also logs the message at WARNING on the ``aiaas.deprecation`` logger. The message
    names the version it was deprecated in (``since``), the version that removes it
    (``removal``) and, when given, what to use instead (``alternative``)::

        @deprecated(since="0.2.0", removal="0.4.0", alternative="load_settings()")
        def read_config() -> Settings: ...

    The decorated object keeps its name, docstring and signature (``functools.wraps``), and
    carries the message in ``__deprecated__`` (PEP 702). Apply it above ``@classmethod`` and
    ``@staticmethod``; on a property, apply it last, once ``.setter`` is attached. ``since`` and
    ``removal`` must be versions with ``removal`` after ``since``; anything else is a
    :class:`ValueError`.
    """
    since_version = Version.parse(since)
    removal_version = Version.parse(removal)
    if removal_version <= since_version:
        raise ValueError(f"removal ({removal}) must come after since ({since})")
    if alternative is not None and not alternative.strip():
        raise ValueError("alternative must be a non-empty description, or None")

    def message_for(obj: Any, call: str) -> str:
        text = (
            f"{_public_name(obj)}{call} is deprecated since {since} "
            f"and will be removed in {removal}"
        )
        return f"{text}; use {alternative} instead." if alternative else f"{text}."

    def decorate(obj: _T) -> _T:
        if isinstance(obj, type):
            return cast(_T, _wrap_class(obj, message_for(obj, "")))
        if isinstance(obj, classmethod | staticmethod):
            func = obj.__func__
            return cast(_T, type(obj)(_wrap_function(func, message_for(func, "()"))))
        if isinstance(obj, property):
            getter = obj.fget
            message = message_for(getter if getter is not None else obj, "")
            return cast(
                _T,
                property(
                    _wrap_function(getter, message) if getter is not None else None,
                    _wrap_function(obj.fset, message) if obj.fset is not None else None,
                    _wrap_function(obj.fdel, message) if obj.fdel is not None else None,
                    obj.__doc__,
                ),
            )
        if callable(obj):
            return cast(_T, _wrap_function(obj, message_for(obj, "()")))
        raise TypeError(
            f"deprecated() applies to functions, methods, classes and properties, "
            f"not {type(obj).__name__}"
        )

    return decorate
