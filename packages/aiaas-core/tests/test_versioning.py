from __future__ import annotations

import inspect
import itertools
import json
import logging
import operator
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import (
    AiaasDeprecationWarning,
    CompatibilityProblem,
    CompatibilityReport,
    ConfigError,
    Version,
    VersionRange,
    check_compatibility,
    deprecated,
)

THIS_FILE = str(Path(__file__).resolve())
V = Version.parse


def _line_of(marker: str) -> int:
    """The line of this file that holds ``marker`` (where a warning must point)."""
    lines = Path(THIS_FILE).read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


# --------------------------------------------------------------------------------------------
# Version: parsing


def test_parse_semver_parts() -> None:
    version = V("1.2.3-rc.1+build.5")
    assert (version.major, version.minor, version.patch) == (1, 2, 3)
    assert version.prerelease == ("rc", 1)
    assert version.build == ("build", "5")
    assert version.release == (1, 2, 3)
    assert version.is_prerelease
    assert str(version) == "1.2.3-rc.1+build.5"
    assert repr(version) == "Version('1.2.3-rc.1+build.5')"
    assert not V("1.2.3").is_prerelease


@pytest.mark.parametrize(
    ("text", "semver"),
    [
        ("0.1.0", "0.1.0"),
        ("1", "1.0.0"),
        ("0.1", "0.1.0"),
        ("0.1.0rc1", "0.1.0-rc.1"),
        ("0.1.0RC1", "0.1.0-rc.1"),
        ("0.1.0c2", "0.1.0-rc.2"),
        ("0.1.0pre3", "0.1.0-rc.3"),
        ("0.1.0preview3", "0.1.0-rc.3"),
        ("0.1.0a1", "0.1.0-alpha.1"),
        ("0.1.0alpha", "0.1.0-alpha.0"),
        ("0.1.0b2", "0.1.0-beta.2"),
        ("0.1.0.beta.2", "0.1.0-beta.2"),
        ("0.1.0.dev3", "0.1.0-0.dev.3"),
        ("0.1.0dev", "0.1.0-0.dev.0"),
        ("0.1.0.post1", "0.1.0+post.1"),
        ("0.1.0rc1.post2", "0.1.0-rc.1+post.2"),
        ("0.1.1.dev3+g1a2b3c", "0.1.1-0.dev.3+g1a2b3c"),
        ("1.0+Ubuntu-1_2", "1.0.0+ubuntu.1.2"),
        ("v2.0.0", "2.0.0"),
        (" 1.2.3 ", "1.2.3"),
    ],
)
def test_pep440_forms_map_to_semver(text: str, semver: str) -> None:
    assert str(V(text)) == semver
    assert V(str(V(text))) == V(text)


def test_pep440_mapping_keeps_pep440_order() -> None:
    ordered = ["1.0.dev1", "1.0.dev2", "1.0a1", "1.0a2", "1.0b1", "1.0rc1", "1.0rc2", "1.0"]
    ordered += ["1.0.post1", "1.0.1.dev1", "1.0.1"]
    versions = [V(t) for t in ordered]
    for low, high in itertools.pairwise(versions):
        assert low <= high
    assert V("1.0.post1") == V("1.0")  # a post-release has its release's precedence


def test_semver_wins_over_pep440_when_both_read_the_text() -> None:
    assert V("1.0.0-1").prerelease == (1,)  # semver pre-release, not a PEP 440 post-release
    assert V("0.1.0-rc1").prerelease == ("rc1",)  # semver, not PEP 440's 0.1.0rc1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected semver"),
        ("   ", "expected semver"),
        ("abc", "expected semver"),
        ("1.2.3-", "expected semver"),
        ("1.2.3+", "expected semver"),
        ("1.2.3-01", "expected semver"),
        ("1.2.3-rc..1", "expected semver"),
        ("1.2.3-rc_1+", "expected semver"),
        ("1.2.3 beta", "expected semver"),
        ("1.2.3.4", "at most three release parts"),
        ("01.2.3", "no leading zeros"),
        ("1.02", "no leading zeros"),
        ("1!1.0", "epochs"),
        ("1.0rc1.dev1", "no order-preserving semver form"),
        ("1.0.post1.dev1", "no order-preserving semver form"),
    ],
)
def test_invalid_versions_are_value_errors(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid version") as excinfo:
        V(text)
    assert why in str(excinfo.value)
    assert repr(text) in str(excinfo.value)


def test_parse_needs_text() -> None:
    with pytest.raises(TypeError, match="a version is text"):
        V(1.2)  # type: ignore[arg-type]


def test_constructor_normalises_and_validates() -> None:
    assert Version(1, 2, 3, prerelease=("rc", "1")) == V("1.2.3-rc.1")
    assert Version(1, 2, 3, prerelease=["rc", 1]).prerelease == ("rc", 1)
    assert Version(1, 2, 3, build=["b", "7"]).build == ("b", "7")
    constructions: list[Callable[[], object]] = [
        lambda: Version(-1, 0, 0),
        lambda: Version(1, True, 0),
        lambda: Version(1, 0, "0"),  # type: ignore[arg-type]
        lambda: Version(1, 0, 0, prerelease=("01",)),
        lambda: Version(1, 0, 0, prerelease=("a b",)),
        lambda: Version(1, 0, 0, prerelease=(-1,)),
        lambda: Version(1, 0, 0, prerelease=(True,)),
        lambda: Version(1, 0, 0, prerelease=(1.5,)),  # type: ignore[arg-type]
        lambda: Version(1, 0, 0, build=("",)),
        lambda: Version(1, 0, 0, build=(1,)),  # type: ignore[arg-type]
    ]
    for bad in constructions:
        with pytest.raises(ValueError):  # noqa: PT011 -- the messages vary by field
            bad()


# --------------------------------------------------------------------------------------------
# Version: ordering


def test_semver_spec_precedence_example() -> None:
    texts = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ]
    versions = [V(t) for t in texts]
    assert sorted([*versions[5:], *versions[:5]]) == versions
    assert all(a < b for a, b in itertools.pairwise(versions))


def test_build_metadata_is_ignored_for_precedence_equality_and_hash() -> None:
    assert V("1.0.0+a") == V("1.0.0+b")
    assert hash(V("1.0.0+a")) == hash(V("1.0.0"))
    assert not V("1.0.0+a") < V("1.0.0+b")
    assert len({V("1.0.0+a"), V("1.0.0+b"), V("1.0.1")}) == 2


def test_versions_do_not_compare_with_other_types() -> None:
    assert V("1.0.0") != "1.0.0"
    assert V("1.0.0").__eq__("1.0.0") is NotImplemented
    for compare in (operator.lt, operator.le, operator.gt, operator.ge):
        with pytest.raises(TypeError):
            compare(V("1.0.0"), "1.0.0")


_ALNUM = st.text("0123456789abzAZ-", min_size=1, max_size=4).filter(lambda s: not s.isdigit())
_PRE_ID = st.one_of(st.integers(0, 30), _ALNUM)
_BUILD_ID = st.text("0123456789abZ-", min_size=1, max_size=4)
versions = st.builds(
    Version,
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(0, 4),
    prerelease=st.lists(_PRE_ID, max_size=3).map(tuple),
    build=st.lists(_BUILD_ID, max_size=2).map(tuple),
)
releases = st.builds(Version, st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))


def _reference_compare(a: Version, b: Version) -> int:
    """Semver 2.0.0 section 11, step by step."""
    if a.release != b.release:
        return -1 if a.release < b.release else 1
    if not a.prerelease or not b.prerelease:
        return (not a.prerelease) - (not b.prerelease)
    for x, y in zip(a.prerelease, b.prerelease, strict=False):
        if x == y:
            continue
        if isinstance(x, int) and isinstance(y, int):
            return -1 if x < y else 1
        if isinstance(x, int):
            return -1  # numeric identifiers have lower precedence
        if isinstance(y, int):
            return 1
        return -1 if x.encode("ascii") < y.encode("ascii") else 1
    return (len(a.prerelease) > len(b.prerelease)) - (len(a.prerelease) < len(b.prerelease))


@given(versions, versions)
def test_order_matches_the_semver_reference(a: Version, b: Version) -> None:
    expected = _reference_compare(a, b)
    assert (a < b, a == b, a > b) == (expected < 0, expected == 0, expected > 0)
    assert (a <= b) == (expected <= 0)
    assert (a >= b) == (expected >= 0)


@given(versions, versions)
def test_order_is_total_and_antisymmetric(a: Version, b: Version) -> None:
    assert [a < b, a == b, a > b].count(True) == 1
    if a <= b <= a:
        assert a == b
        assert hash(a) == hash(b)
    assert (a < b) == (b > a)


@given(versions, versions, versions)
def test_order_is_transitive(a: Version, b: Version, c: Version) -> None:
    low, mid, high = sorted([a, b, c])
    assert low <= mid <= high
    assert low <= high


@given(releases, releases)
def test_release_versions_compare_like_tuples(a: Version, b: Version) -> None:
    assert (a < b) == (a.release < b.release)
    assert (a == b) == (a.release == b.release)


@given(versions)
def test_pre_release_sorts_before_its_release(version: Version) -> None:
    release = Version(*version.release)
    if version.prerelease:
        assert version < release
    else:
        assert version == release


@given(versions)
def test_text_round_trip(version: Version) -> None:
    text = str(version)
    again = V(text)
    assert again == version
    assert again.build == version.build
    assert str(again) == text


# --------------------------------------------------------------------------------------------
# VersionRange


@pytest.mark.parametrize(
    ("spec", "inside", "outside"),
    [
        (">=0.1,<0.2", ["0.1.0", "0.1.9", "0.1.0+b"], ["0.0.9", "0.2.0", "0.2.0-rc.1"]),
        (">0.1", ["0.1.1", "1.0.0"], ["0.1.0", "0.0.1"]),
        ("<=1.2", ["1.2.0", "0.9.0"], ["1.2.1"]),
        ("==1.2", ["1.2.0", "1.2.0+x"], ["1.2.1"]),
        ("!=1.2.3", ["1.2.4", "1.2.2"], ["1.2.3"]),
        ("==1.2.*", ["1.2.0", "1.2.99"], ["1.3.0", "1.1.9"]),
        ("!=1.2.*", ["1.3.0", "1.1.9"], ["1.2.0", "1.2.5"]),
        ("==1.*", ["1.0.0", "1.9.9"], ["2.0.0", "0.9.0"]),
        ("~=1.4.5", ["1.4.5", "1.4.99"], ["1.4.4", "1.5.0"]),
        ("~=1.4", ["1.4.0", "1.9.0"], ["1.3.9", "2.0.0"]),
        ("^1.2.3", ["1.2.3", "1.99.0"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4", "0.0.2"]),
        ("^0.0.0", ["0.0.0"], ["0.0.1"]),
        ("^1.2", ["1.2.0", "1.9.0"], ["2.0.0", "1.1.0"]),
        ("^0.2", ["0.2.0", "0.2.9"], ["0.3.0"]),
        ("^0.0", ["0.0.0", "0.0.9"], ["0.1.0"]),
        ("^0", ["0.0.0", "0.9.9"], ["1.0.0"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("*", ["0.0.0", "99.0.0"], ["1.0.0-rc.1"]),
        (">=1.0.0, *", ["1.0.0"], ["0.9.0"]),
        (" >= 0.1 , < 0.2 ", ["0.1.5"], ["0.2.0"]),
        (">=0.1.0rc1,<0.2", ["0.1.0-rc.1", "0.1.0-rc.2", "0.1.0"], ["0.1.0-beta.9"]),
        ("<1.0.0-rc.2", ["1.0.0-rc.1", "0.9.0"], ["1.0.0-rc.2", "1.0.0"]),
    ],
)
def test_range_contains(spec: str, inside: list[str], outside: list[str]) -> None:
    version_range = VersionRange.parse(spec)
    for text in inside:
        assert version_range.contains(text), text
        assert V(text) in version_range
    for text in outside:
        assert not version_range.contains(text), text
        assert V(text) not in version_range


def test_pre_releases_need_a_clause_naming_their_release() -> None:
    version_range = VersionRange.parse(">=1.2.3-beta.2")
    assert version_range.contains("1.2.3-beta.4")
    assert not version_range.contains("1.2.3-beta.1")
    assert not version_range.contains("1.3.0-alpha")  # npm: other releases' pre-releases are out
    assert version_range.contains("1.3.0-alpha", include_prereleases=True)
    caret = VersionRange.parse("^1.2.3-beta.2")
    assert caret.contains("1.2.3-beta.3")
    assert not caret.contains("2.0.0-rc.1", include_prereleases=True)


def test_less_than_excludes_its_own_pre_releases_even_when_included() -> None:
    assert not VersionRange.parse("<0.2").contains("0.2.0-rc.1", include_prereleases=True)
    assert VersionRange.parse("<0.2").contains("0.1.1-rc.1", include_prereleases=True)
    assert VersionRange.parse("<0.2.0-rc.2").contains("0.2.0-rc.1")


def test_membership_of_other_objects_is_false() -> None:
    assert 1 not in VersionRange.parse("*")


def test_range_str_repr_and_equality() -> None:
    version_range = VersionRange.parse(" >= 0.1 , <0.2")
    assert str(version_range) == ">=0.1,<0.2"
    assert repr(version_range) == "VersionRange('>=0.1,<0.2')"
    assert version_range == VersionRange.parse(">=0.1,<0.2")
    assert version_range != VersionRange.parse(">=0.1.0,<0.2")
    assert hash(version_range) == hash(VersionRange.parse(">=0.1,<0.2"))
    assert str(VersionRange.parse("*")) == "*"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty (use * for any version)"),
        (" ", "empty (use * for any version)"),
        (">=1,", "empty clause"),
        (",>=1", "empty clause"),
        ("1.2.3", "has no operator"),
        ("=>1.2", "has no operator"),
        (">=", "needs one version after >="),
        (">= 1 2", "needs one version after >="),
        (">=1.x", "invalid version '1.x'"),
        (">=banana", "invalid version 'banana'"),
        ("===1.0", "arbitrary equality"),
        ("^1 || ^2", "alternatives (||)"),
        (">=1.2.*", "wildcards are only for == and !="),
        ("==1.2.3-rc.*", "wildcards are only for == and !="),
        ("~=1", "~= needs at least MAJOR.MINOR"),
    ],
)
def test_malformed_ranges_are_value_errors(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid version range") as excinfo:
        VersionRange.parse(text)
    assert why in str(excinfo.value)


def test_range_parse_needs_text() -> None:
    with pytest.raises(TypeError, match="a version range is text"):
        VersionRange.parse(None)  # type: ignore[arg-type]


_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@given(st.sampled_from(sorted(_OPS)), releases, releases)
def test_single_comparators_agree_with_explicit_comparisons(
    op: str, bound: Version, version: Version
) -> None:
    assert VersionRange.parse(f"{op}{bound}").contains(version) == _OPS[op](version, bound)


@given(releases, releases, releases)
def test_two_clauses_are_both_required(low: Version, high: Version, version: Version) -> None:
    assert VersionRange.parse(f">={low},<{high}").contains(version) == (low <= version < high)


def _caret_upper(bound: Version) -> tuple[int, int, int]:
    if bound.major:
        return (bound.major + 1, 0, 0)
    if bound.minor:
        return (0, bound.minor + 1, 0)
    return (0, 0, bound.patch + 1)


@given(releases, releases)
def test_caret_and_tilde_agree_with_their_expansions(bound: Version, version: Version) -> None:
    caret = VersionRange.parse(f"^{bound}")
    assert caret.contains(version) == (bound <= version and version.release < _caret_upper(bound))
    tilde = VersionRange.parse(f"~{bound}")
    tilde_upper = (bound.major, bound.minor + 1, 0)
    assert tilde.contains(version) == (bound <= version and version.release < tilde_upper)
    compatible = VersionRange.parse(f"~={bound}")
    assert compatible.contains(version) == tilde.contains(version)


_CLAUSES = st.one_of(
    st.tuples(st.sampled_from([">=", ">", "<=", "<", "==", "!=", "^", "~"]), versions.map(str)),
    st.tuples(st.sampled_from(["^", "~", ">=", "<"]), st.sampled_from(["1", "0.2", "3.0"])),
    st.tuples(st.sampled_from(["==", "!="]), st.sampled_from(["1.*", "0.2.*", "1.2.3.*"])),
    st.tuples(st.just("~="), st.sampled_from(["1.2", "0.1.0", "2.0.0rc1"])),
    st.just(("*", "")),
)


@given(st.lists(_CLAUSES, min_size=1, max_size=4), versions)
def test_range_text_round_trips(clauses: list[tuple[str, str]], version: Version) -> None:
    text = ",".join(op + written for op, written in clauses)
    version_range = VersionRange.parse(text)
    assert str(version_range) == text
    again = VersionRange.parse(str(version_range))
    assert again == version_range
    assert again.contains(version) == version_range.contains(version)


# --------------------------------------------------------------------------------------------
# check_compatibility


def _check(dists: dict[str, tuple[str, list[str]]]) -> CompatibilityReport:
    return check_compatibility(distributions=dists, on_problem="ignore")


def test_compatible_distributions_have_no_problems() -> None:
    report = _check(
        {
            "aiaas-core": ("0.1.3", ["attrs>=23.1", "cattrs>=23.2"]),
            "aiaas-serving": ("0.2.0", ["aiaas-core>=0.1,<0.2", "numpy>=2"]),
            "aiaas-telemetry": ("0.1.0", ["aiaas-core[yaml] (>=0.1, <0.2)"]),
            "numpy": ("2.0.0", []),
        }
    )
    assert report.ok
    assert report.problems == ()
    assert report.distributions == (
        ("aiaas-core", "0.1.3"),
        ("aiaas-serving", "0.2.0"),
        ("aiaas-telemetry", "0.1.0"),
    )
    assert report.versions == {
        "aiaas-core": "0.1.3",
        "aiaas-serving": "0.2.0",
        "aiaas-telemetry": "0.1.0",
    }
    assert str(report).startswith("aiaas distributions compatible: aiaas-core 0.1.3")


def test_out_of_range_and_missing_siblings_are_problems() -> None:
    report = _check(
        {
            "aiaas-core": ("0.3.0", []),
            "aiaas_serving": ("0.2.0", ["aiaas-core>=0.1,<0.2", "AIAAS.Telemetry>=0.1"]),
        }
    )
    assert not report.ok
    skew, missing = report.problems
    assert skew == CompatibilityProblem(
        "aiaas-serving",
        "aiaas-core>=0.1,<0.2",
        "0.3.0",
        required="aiaas-core",
        distribution_version="0.2.0",
    )
    assert str(skew) == (
        "aiaas-serving 0.2.0 requires aiaas-core>=0.1,<0.2, but aiaas-core 0.3.0 is installed; "
        "install 'aiaas-core>=0.1,<0.2' or a version of aiaas-serving that supports "
        "aiaas-core 0.3.0"
    )
    assert (missing.installed, missing.required) == ("missing", "aiaas-telemetry")
    assert str(missing) == (
        "aiaas-serving 0.2.0 requires AIAAS.Telemetry>=0.1, but aiaas-telemetry is not "
        "installed; install 'AIAAS.Telemetry>=0.1'"
    )
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is False
    assert data["problems"][0]["message"] == str(skew)
    assert str(report).startswith("2 aiaas version-skew problem(s) among aiaas-core 0.3.0")


def test_markers_make_a_requirement_conditional() -> None:
    report = _check(
        {
            "aiaas-core": ("0.3.0", []),
            "aiaas-serving": (
                "0.2.0",
                [
                    'aiaas-telemetry>=0.1; extra == "otel"',  # not installed: fine
                    'aiaas-core>=0.1,<0.2 ; python_version >= "3.11"',  # installed: checked
                ],
            ),
        }
    )
    (problem,) = report.problems
    assert problem.required == "aiaas-core"
    assert "is installed; install 'aiaas-core>=0.1,<0.2'" in str(problem)


def test_pre_release_installs_count_by_precedence() -> None:
    ok = _check({"aiaas-core": ("0.1.1.dev3", []), "aiaas-x": ("1.0", ["aiaas-core>=0.1,<0.2"])})
    assert ok.ok
    too_new = _check({"aiaas-core": ("0.2.0rc1", []), "aiaas-x": ("1.0", ["aiaas-core<0.2"])})
    assert [p.installed for p in too_new.problems] == ["0.2.0rc1"]
    too_old = _check({"aiaas-core": ("0.1.0.dev3", []), "aiaas-x": ("1.0", ["aiaas-core>=0.1"])})
    assert not too_old.ok


def test_direct_references_and_bare_names() -> None:
    report = _check(
        {
            "aiaas-core": ("9.0.0", []),
            "aiaas-x": ("1.0", ["aiaas-core @ https://example.invalid/core.whl", "aiaas-core"]),
            "aiaas-y": ("1.0", ["aiaas-infra @ file:///wheels/infra.whl"]),
        }
    )
    (problem,) = report.problems  # a direct reference to a sibling still needs it installed
    assert (problem.distribution, problem.required, problem.installed) == (
        "aiaas-y",
        "aiaas-infra",
        "missing",
    )


def test_unreadable_requirements_and_versions_are_problems() -> None:
    report = _check(
        {
            "aiaas-core": ("not-a-version", []),
            "aiaas-x": ("1.0", ["aiaas-core>=0.1", "aiaas-core>=>1", "aiaas-infra[yaml >=1"]),
            "aiaas-y": ("1.0", ["!!!", "other[unclosed"]),
        }
    )
    details = {p.requirement: p.detail for p in report.problems}
    assert set(details) == {"aiaas-core>=0.1", "aiaas-core>=>1", "aiaas-infra[yaml >=1"}
    assert "invalid version 'not-a-version'" in details["aiaas-core>=0.1"]
    assert details["aiaas-core>=>1"].startswith("unreadable requirement")
    assert "unclosed [extras]" in details["aiaas-infra[yaml >=1"]
    assert "(unreadable requirement" in str(report.problems[1])


def test_warn_emits_one_user_warning_per_problem_at_the_caller() -> None:
    dists = {"aiaas-core": ("0.3.0", []), "aiaas-x": ("1.0", ["aiaas-core<0.2", "aiaas-y>=1"])}
    with pytest.warns(UserWarning, match="aiaas-x 1.0 requires") as record:
        report = check_compatibility(distributions=dists)  # warn-marker
    assert len(record) == len(report.problems) == 2
    assert [str(w.message) for w in record] == [str(p) for p in report.problems]
    assert all(type(w.message) is UserWarning for w in record)
    assert {(w.filename, w.lineno) for w in record} == {(THIS_FILE, _line_of("# warn-marker"))}


def test_warn_is_silent_without_problems() -> None:
    report = check_compatibility(distributions={"aiaas-core": ("0.1.0", [])})
    assert report.ok


def test_raise_raises_a_version_skew_config_error() -> None:
    dists = {"aiaas-core": ("0.3.0", []), "aiaas-x": ("1.0", ["aiaas-core<0.2"])}
    with pytest.raises(ConfigError) as excinfo:
        check_compatibility(distributions=dists, on_problem="raise")
    err = excinfo.value
    assert err.code == "VERSION_SKEW"
    assert err.status == 500
    assert len(err.problems) == 1
    assert isinstance(err.problems[0], CompatibilityProblem)
    assert str(err.problems[0]) in err.message
    assert check_compatibility(distributions={}, on_problem="raise").ok


def test_on_problem_must_be_known() -> None:
    with pytest.raises(ValueError, match="on_problem must be"):
        check_compatibility(distributions={}, on_problem="shout")  # type: ignore[arg-type]


def test_installed_distributions_are_examined() -> None:
    report = check_compatibility(on_problem="ignore")
    assert report.versions["aiaas-core"] == metadata.version("aiaas-core")
    assert all(name.startswith("aiaas-") for name, _ in report.distributions)


def test_consumers_are_examined_beside_the_aiaas_distributions() -> None:
    dists = {
        "aiaas-core": ("0.2.0", []),
        "World_Service": ("1.0.0", ["aiaas-core>=0.1,<0.2", "httpx>=0.27"]),
        "other-service": ("1.0.0", ["aiaas-core>=0.3"]),
    }
    report = check_compatibility(
        distributions=dists, on_problem="ignore", consumers=["world-service"]
    )
    assert report.versions == {"aiaas-core": "0.2.0", "world-service": "1.0.0"}
    (problem,) = report.problems
    assert problem.distribution == "world-service"
    assert problem.requirement == "aiaas-core>=0.1,<0.2"
    assert problem.installed == "0.2.0"
    # Without the consumer named, the same stand-ins have no problem: only aiaas-* are examined.
    assert check_compatibility(distributions=dists, on_problem="ignore").ok
    installed = check_compatibility(on_problem="ignore", consumers=("pytest",))
    assert installed.versions["pytest"] == metadata.version("pytest")
    with pytest.raises(TypeError, match="collection of distribution names"):
        check_compatibility(distributions=dists, consumers="world-service")


# --------------------------------------------------------------------------------------------
# deprecated


def test_deprecated_function_warns_at_the_caller_and_keeps_its_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @deprecated(since="0.1.0", removal="0.3.0", alternative="new_add()")
    def old_add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert old_add.__name__ == "old_add"
    assert old_add.__doc__ == "Add two numbers."
    assert str(inspect.signature(old_add)) == "(a: 'int', b: 'int' = 1) -> 'int'"
    message = old_add.__deprecated__  # type: ignore[attr-defined]
    assert message.endswith(
        "old_add() is deprecated since 0.1.0 and will be removed in 0.3.0; use new_add() instead."
    )
    with caplog.at_level(logging.WARNING, logger="aiaas.deprecation"):
        with pytest.warns(AiaasDeprecationWarning, match="removed in 0.3.0") as record:
            result = old_add(2, b=3)  # call-marker
        assert result == 5
        with pytest.warns(AiaasDeprecationWarning, match="removed in 0.3.0") as again:
            result = old_add(1)
        assert result == 2
    assert len(record) == len(again) == 1
    assert issubclass(record[0].category, DeprecationWarning)
    assert (record[0].filename, record[0].lineno) == (THIS_FILE, _line_of("# call-marker"))
    logged = [r for r in caplog.records if r.name == "aiaas.deprecation"]
    assert [r.getMessage() for r in logged] == [message]  # logged once, not per call


def test_message_without_alternative_and_public_module_name() -> None:
    def helper() -> None:
        return None

    helper.__module__ = "aiaas_core._private.sub"
    helper.__qualname__ = "helper"
    wrapped = deprecated(since="1.0.0", removal="2.0.0")(helper)
    expected = "aiaas_core.sub.helper() is deprecated since 1.0.0 and will be removed in 2.0.0."
    assert wrapped.__deprecated__ == expected  # type: ignore[attr-defined]
    with pytest.warns(AiaasDeprecationWarning) as record:
        wrapped()
    assert str(record[0].message) == expected


def test_warnings_as_errors_still_log(caplog: pytest.LogCaptureFixture) -> None:
    @deprecated(since="0.1", removal="0.2")
    def strict() -> None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AiaasDeprecationWarning), caplog.at_level(logging.WARNING):
            strict()
    assert any("strict() is deprecated" in r.getMessage() for r in caplog.records)


async def test_deprecated_coroutine_function() -> None:
    @deprecated(since="0.1.0", removal="0.2.0")
    async def fetch(x: int) -> int:
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    with pytest.warns(AiaasDeprecationWarning) as record:
        assert await fetch(4) == 8  # await-marker
    assert (record[0].filename, record[0].lineno) == (THIS_FILE, _line_of("# await-marker"))


class Service:
    def __init__(self) -> None:
        self._size = 1

    @deprecated(since="0.1.0", removal="0.2.0", alternative="Service.run()")
    def start(self) -> str:
        return "started"

    @deprecated(since="0.1.0", removal="0.2.0")
    @classmethod
    def build(cls) -> Service:
        return cls()

    @deprecated(since="0.1.0", removal="0.2.0")
    @staticmethod
    def version() -> str:
        return "1"

    @property
    def size(self) -> int:
        """The size."""
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        self._size = value

    # On a property, deprecated() goes last, once the setter is attached.
    size = deprecated(since="0.1.0", removal="0.2.0", alternative="Service.capacity")(size)


def test_deprecated_methods_classmethods_staticmethods_and_properties() -> None:
    service = Service()
    with pytest.warns(AiaasDeprecationWarning, match=r"Service\.start\(\) is deprecated"):
        assert service.start() == "started"
    with pytest.warns(AiaasDeprecationWarning, match=r"Service\.build\(\) is deprecated"):
        assert isinstance(Service.build(), Service)
    with pytest.warns(AiaasDeprecationWarning, match=r"Service\.version\(\) is deprecated"):
        assert Service.version() == "1"
    assert Service.size.__doc__ == "The size."
    with pytest.warns(AiaasDeprecationWarning, match=r"Service\.size is deprecated") as record:
        assert service.size == 1  # property-marker
    assert record[0].lineno == _line_of("# property-marker")
    with pytest.warns(AiaasDeprecationWarning, match="use Service.capacity instead"):
        service.size = 5
    assert service._size == 5


def test_deprecated_class_warns_on_instantiation_and_subclassing() -> None:
    @deprecated(since="0.1.0", removal="0.2.0", alternative="NewThing")
    @attrs.frozen
    class OldThing:
        value: int = 0

    assert OldThing.__deprecated__.endswith(  # type: ignore[attr-defined]
        "OldThing is deprecated since 0.1.0 and will be removed in 0.2.0; use NewThing instead."
    )
    with pytest.warns(AiaasDeprecationWarning) as record:
        thing = OldThing(value=3)  # new-marker
    assert thing.value == 3
    assert (record[0].filename, record[0].lineno) == (THIS_FILE, _line_of("# new-marker"))

    with pytest.warns(AiaasDeprecationWarning) as record:

        class Sub(OldThing):  # subclass-marker
            pass

    assert (record[0].filename, record[0].lineno) == (THIS_FILE, _line_of("# subclass-marker"))
    assert Sub(value=4).value == 4  # a subclass instance does not warn again


def test_deprecated_class_with_its_own_new_and_init_subclass() -> None:
    seen: list[str] = []

    @deprecated(since="0.1.0", removal="0.2.0")
    class Custom:
        def __new__(cls, label: str) -> Custom:
            instance = super().__new__(cls)
            instance.label = label  # type: ignore[attr-defined]
            return instance

        def __init_subclass__(cls, tag: str = "", **kwargs: object) -> None:
            super().__init_subclass__(**kwargs)
            seen.append(tag)

    with pytest.warns(AiaasDeprecationWarning):
        assert Custom("x").label == "x"  # type: ignore[attr-defined]
    with pytest.warns(AiaasDeprecationWarning):

        class Tagged(Custom, tag="t"):
            pass

    assert seen == ["t"]


def test_deprecated_plain_class_keeps_object_new_semantics() -> None:
    @deprecated(since="0.1.0", removal="0.2.0")
    class Plain:
        pass

    with pytest.warns(AiaasDeprecationWarning):
        assert isinstance(Plain(), Plain)
    with (
        pytest.warns(AiaasDeprecationWarning),
        pytest.raises(TypeError, match="takes no arguments"),
    ):
        Plain(1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"since": "soon", "removal": "1.0.0"}, "invalid version"),
        ({"since": "1.0.0", "removal": "later"}, "invalid version"),
        ({"since": "1.0.0", "removal": "1.0.0"}, "must come after"),
        ({"since": "1.0.0", "removal": "0.9.0"}, "must come after"),
        ({"since": "1.0.0", "removal": "2.0.0", "alternative": " "}, "non-empty"),
    ],
)
def test_deprecated_arguments_are_validated(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        deprecated(**kwargs)


def test_deprecated_rejects_what_it_cannot_wrap() -> None:
    with pytest.raises(TypeError, match="applies to functions"):
        deprecated(since="1.0.0", removal="2.0.0")(42)


def test_wrapped_function_exposes_the_original() -> None:
    def original() -> int:
        return 1

    wrapped = deprecated(since="1.0.0", removal="2.0.0")(original)
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    with pytest.warns(AiaasDeprecationWarning):
        assert wrapped() == 1


def test_requirement_parsing() -> None:
    from aiaas_core._versioning import _parse_requirement

    req = _parse_requirement("AIAAS_Core[yaml,extra] (>=0.1, <0.2) ; python_version >= '3.11'")
    assert (req.name, str(req.range), req.conditional) == ("aiaas-core", ">=0.1,<0.2", True)
    bare = _parse_requirement("aiaas-core")
    assert (str(bare.range), bare.conditional) == ("*", False)
    assert _parse_requirement("aiaas-core @ https://example.invalid/x.whl").range is None
    for bad in ("", ">=1.0", "aiaas-core[yaml", "aiaas-core >=1,"):
        with pytest.raises(ValueError, match="invalid"):
            _parse_requirement(bad)
