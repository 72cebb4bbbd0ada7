"""tools/skew.py, skew_plan.py and skew_report.py: the version-skew matrix's plan, its outputs
and its failure reports.

Small fixture data (packages, releases, JUnit reports, a scratch git repository); nothing is
installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import skew
import skew_plan
import skew_report
from skew_plan import Cell, Combination, Package, Pick, Planner, Release, SkewError
from skew_report import Outcome, Suite

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("core", "tel", "db", "infra")


def pkg(name: str, version: str, *requires: str) -> Package:
    return Package(name, name.replace("-", "_"), version, requires, Path("/nowhere") / name)


def rel(name: str, version: str) -> Release:
    return Release(name, version, "c" * 40, f"{name}-{version}-py3-none-any.whl", "0" * 64)


# The round the brief describes: core and tel bumped to 0.1.1 (unreleased); db needs the new core
# but any tel; infra needs both new; every package has one release, 0.1.0.
HEAD = {
    "core": pkg("core", "0.1.1", "attrs>=24.1"),
    "tel": pkg("tel", "0.1.1", "core>=0.1.1,<0.2", "attrs"),
    "db": pkg("db", "0.1.0", "core>=0.1.1,<0.2", "tel>=0.1,<0.2", "click>=8"),
    "infra": pkg("infra", "0.1.0", "core>=0.1.1,<0.2", "tel>=0.1.1,<0.2"),
}
RELEASES = [rel(n, "0.1.0") for n in NAMES]
OLD_REQUIRES = {
    ("core", "0.1.0"): ("attrs>=24.1",),
    ("tel", "0.1.0"): ("core>=0.1,<0.2",),
    ("db", "0.1.0"): ("core>=0.1,<0.2", "tel>=0.1,<0.2"),
    ("infra", "0.1.0"): ("core>=0.1,<0.2", "tel>=0.1,<0.2"),
}


def planner(
    head: dict[str, Package] | None = None,
    releases: list[Release] | None = None,
    old: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> Planner:
    table = OLD_REQUIRES if old is None else old
    return Planner(
        HEAD if head is None else head,
        RELEASES if releases is None else releases,
        lambda p, v: table[(p, v)],
    )


def H(name: str, version: str) -> Pick:
    return Pick(name, version, True)


def R(name: str, version: str) -> Pick:
    return Pick(name, version, False)


def by_key(cells: list[Cell]) -> dict[tuple[str, str, str], Cell]:
    return {(c.consumer, c.dependency, c.case): c for c in cells}


# --- the plan -----------------------------------------------------------------------------------


def test_three_cases_for_every_package_and_each_aiaas_dependency() -> None:
    cells = planner().cells()
    assert [(c.consumer, c.dependency, c.case) for c in cells] == [
        (p, s, case)
        for p, s in [
            ("db", "core"),
            ("db", "tel"),
            ("infra", "core"),
            ("infra", "tel"),
            ("tel", "core"),
        ]
        for case in ("oldest", "head", "last")
    ]


def test_no_release_in_range_is_a_note_not_a_combination() -> None:
    cells = by_key(planner().cells())
    for consumer in ("db", "infra", "tel"):
        cell = cells[(consumer, "core", "oldest")]
        assert cell.combination is None
        assert cell.note.startswith("no release in range (core")
        assert "released: 0.1.0" in cell.note
    infra_tel = cells[("infra", "tel", "oldest")]
    assert infra_tel.combination is None
    assert "no release in range" in infra_tel.note


def test_oldest_release_in_range_with_the_others_at_head_where_they_fit() -> None:
    cell = by_key(planner().cells())[("db", "tel", "oldest")]
    assert cell.combination is not None
    # infra HEAD needs tel>=0.1.1: it cannot join a combination holding tel 0.1.0.
    assert cell.combination.picks == (H("core", "0.1.1"), H("db", "0.1.0"), R("tel", "0.1.0"))
    assert cell.combination.short == "tel 0.1.0"
    assert cell.combination.key == "core HEAD (0.1.1), db HEAD (0.1.0), tel 0.1.0"


def test_the_oldest_admitted_release_is_chosen_among_several() -> None:
    releases = [*RELEASES, rel("core", "0.1.1"), rel("core", "0.1.2"), rel("core", "0.2.0")]
    old = {**OLD_REQUIRES, **{("core", v): () for v in ("0.1.1", "0.1.2", "0.2.0")}}
    cell = by_key(planner(releases=releases, old=old).cells(["tel"]))[("tel", "core", "oldest")]
    assert cell.combination is not None
    assert cell.combination.get("core") == R("core", "0.1.1")


def test_head_and_last_release_cases() -> None:
    cells = by_key(planner().cells())
    head = cells[("db", "core", "head")].combination
    assert head is not None
    assert all(p.head for p in head.picks)
    assert head.short == "all HEAD"
    assert [p.package for p in head.picks] == ["core", "db", "infra", "tel"]
    last = cells[("db", "tel", "last")].combination
    assert last is not None
    assert last.get("db") == R("db", "0.1.0")
    assert last.get("tel") == H("tel", "0.1.1")


def test_equal_combinations_run_once_and_name_every_consumer() -> None:
    cells = planner().cells()
    combos = skew_plan.unique_combinations(cells)
    # tel's last release with core HEAD is the same set as db HEAD with tel's oldest: one run.
    assert [c.short for c in combos] == ["all HEAD", "db 0.1.0", "tel 0.1.0", "infra 0.1.0"]
    all_head = next(c for c in combos if c.short == "all HEAD")
    assert [p.package for p in skew_plan.consumers_of(cells, all_head)] == ["db", "infra", "tel"]
    old_tel = next(c for c in combos if c.short == "tel 0.1.0")
    assert skew_plan.consumers_of(cells, old_tel) == [H("db", "0.1.0"), R("tel", "0.1.0")]


def test_an_old_consumer_whose_range_excludes_head_is_outside_not_run() -> None:
    old = {**OLD_REQUIRES, ("db", "0.1.0"): ("core>=0.1,<0.1.1", "tel>=0.1,<0.2")}
    cells = planner(old=old).cells(["db"])
    cell = by_key(cells)[("db", "core", "last")]
    assert cell.combination is None
    assert (
        cell.note == "outside the declared range: db 0.1.0 requires core<0.1.1,>=0.1, HEAD is 0.1.1"
    )
    # Installed as it is for the start-up check: db's release, core HEAD and, at HEAD, what
    # they require (tel); infra is no member.
    assert cell.outside == Combination((H("core", "0.1.1"), R("db", "0.1.0"), H("tel", "0.1.1")))
    # db 0.1.0 admits tel HEAD, but tel HEAD needs the core db 0.1.0 excludes: no combination.
    other = by_key(cells)[("db", "tel", "last")]
    assert (other.outside, other.combination) == (None, None)
    assert other.note.startswith("not installable together: db 0.1.0 requires core<0.1.1,>=0.1")
    assert skew_plan.outside_combinations(cells) == [cell.outside]
    assert cell.outside not in skew_plan.unique_combinations(cells)


def test_a_package_never_released_has_no_last_case() -> None:
    head = {**HEAD, "serving": pkg("serving", "0.1.0", "core>=0.1,<0.2")}
    cells = by_key(planner(head=head).cells(["serving"]))
    assert cells[("serving", "core", "last")].note == "no release of serving"
    oldest = cells[("serving", "core", "oldest")].combination
    assert oldest is not None
    assert oldest.get("core") == R("core", "0.1.0")
    # tel HEAD needs core>=0.1.1: left out; db and infra need tel: left out too.
    assert [p.package for p in oldest.picks] == ["core", "serving"]


def test_a_dependency_no_member_admits_is_reported() -> None:
    head = {**HEAD, "app": pkg("app", "1.0.0", "tel>=0.1,<0.2")}
    old = {**OLD_REQUIRES, ("tel", "0.1.0"): ("core>=0.2",)}
    cell = by_key(planner(head=head, old=old).cells(["app"]))[("app", "tel", "oldest")]
    assert cell.combination is None
    assert "tel 0.1.0 requires core>=0.2, which no member admits" in cell.note


def test_unknown_package_and_cycles_are_errors() -> None:
    with pytest.raises(SkewError, match="SKEW_UNKNOWN_PACKAGE") as caught:
        str(planner().cells(["nope"]))
    assert "choose from core, db, infra, tel" in str(caught.value)
    cyclic = {"a": pkg("a", "1.0", "b>=1"), "b": pkg("b", "1.0", "a>=1")}
    with pytest.raises(SkewError) as cycle:
        planner(head=cyclic, releases=[]).cells()
    assert cycle.value.code == "SKEW_CYCLE"
    assert str(cycle.value).startswith("skew: error SKEW_CYCLE: ")


def test_aiaas_ranges_reads_only_our_packages() -> None:
    ranges = skew_plan.aiaas_ranges(
        ["Core>=0.1; python_version>'3'", "attrs", "tel"], ["core", "tel"]
    )
    assert {k: str(v) for k, v in ranges.items()} == {"core": ">=0.1", "tel": ""}
    with pytest.raises(SkewError, match="SKEW_BAD_REQUIREMENT"):
        skew_plan.aiaas_ranges(["core >= = 1"], ["core"])


# --- releases.toml and pyprojects ---------------------------------------------------------------

RECORD = """
[[release]]
package = "Aiaas_Core"
version = "0.1.0"
commit = "{commit}"
wheel = "aiaas_core-0.1.0-py3-none-any.whl"
wheel_sha256 = "{sha}"
"""


def test_read_releases() -> None:
    (only,) = skew_plan.read_releases(RECORD.format(commit="a" * 40, sha="b" * 64))
    assert only == Release("aiaas-core", "0.1.0", "a" * 40, only.wheel, "b" * 64)
    assert skew_plan.read_releases("") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[release]\n", "not valid TOML"),
        ("release = 3\n", "'release' must be [[release]]"),
        ('[[release]]\npackage = "x"\n', "release #1 lacks one of package, version"),
        (RECORD.format(commit="a", sha="b").replace('"0.1.0"', '"not-a-version"'), "version"),
    ],
)
def test_read_releases_refuses_bad_records(text: str, says: str) -> None:
    with pytest.raises(SkewError, match="SKEW_BAD_RELEASES") as caught:
        skew_plan.read_releases(text)
    assert says in str(caught.value)


def _write_package(root: Path, name: str, version: str, deps: list[str], module: str = "") -> None:
    folder = root / "packages" / name
    folder.mkdir(parents=True, exist_ok=True)
    tool = f'\n[tool.aiaas]\nmodule = "{module}"\n' if module else ""
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = {json.dumps(deps)}\n'
        + tool
    )


def test_load_packages(tmp_path: Path) -> None:
    with pytest.raises(SkewError, match="SKEW_NO_PACKAGES"):
        skew_plan.load_packages(tmp_path)
    _write_package(tmp_path, "aiaas-a", "1.0.0", ["attrs"], module="a_mod")
    _write_package(tmp_path, "aiaas-b", "2.0.0", ["aiaas-a>=1"])
    found = skew_plan.load_packages(tmp_path)
    assert found["aiaas-a"].module == "a_mod"
    assert found["aiaas-b"].requires == ("aiaas-a>=1",)
    assert found["aiaas-b"].module == "aiaas_b"
    (tmp_path / "packages" / "aiaas-b" / "pyproject.toml").write_text("[project\n")
    with pytest.raises(SkewError, match="SKEW_BAD_PYPROJECT"):
        skew_plan.load_packages(tmp_path)
    (tmp_path / "packages" / "aiaas-b" / "pyproject.toml").write_text("[project]\nname = 'b'\n")
    with pytest.raises(SkewError, match="has no \\[project\\] name and version"):
        skew_plan.load_packages(tmp_path)


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with two packages released at 0.1.0; HEAD then needs aiaas-a 0.2."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _write_package(root, "aiaas-a", "0.1.0", [])
    _write_package(root, "aiaas-b", "0.1.0", ["aiaas-a>=0.1,<0.2"])
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    commit = _git(root, "rev-parse", "HEAD")
    (root / "releases.toml").write_text(
        "".join(
            RECORD.format(commit=commit, sha="0" * 64)
            .replace("Aiaas_Core", name)
            .replace("aiaas_core", name.replace("-", "_"))
            for name in ("aiaas-a", "aiaas-b")
        )
    )
    _write_package(root, "aiaas-a", "0.2.0", [])
    _write_package(root, "aiaas-b", "0.2.0", ["aiaas-a>=0.2,<0.3"])
    return root


def test_release_requires_reads_the_release_commit(repo: Path) -> None:
    releases = skew_plan.read_releases((repo / "releases.toml").read_text())
    assert skew.release_requires(repo, releases[1]) == ("aiaas-a>=0.1,<0.2",)
    missing = Release("aiaas-b", "0.0.1", "f" * 40, "x.whl", "0" * 64)
    with pytest.raises(SkewError, match="SKEW_MISSING_COMMIT"):
        skew.release_requires(repo, missing)


def test_main_plan_prints_the_matrix(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert skew.main(["--plan", "--root", str(repo)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["package", "P", "depends", "on"]
    assert "no release in range (aiaas-a<0.3,>=0.2; released: 0.1.0)" in out
    last = next(ln for ln in lines if "P last release, S HEAD" in ln)
    assert "outside range" in last
    assert "aiaas-b 0.1.0 requires aiaas-a<0.2,>=0.1, HEAD is 0.2.0" in last
    assert lines[-2] == "1 combinations to run"
    assert lines[-1] == "1 outside a declared range, for the start-up check"


def test_main_refuses_an_interpreter_that_imports_the_packages(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_package(repo, "aiaas-a", "0.2.0", [], module="json")  # importable here: stdlib
    assert skew.main(["--root", str(repo), "--out", str(tmp_path / "out")]) == skew.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("skew: error SKEW_BASE_NOT_CLEAN: this interpreter already imports")
    assert "aiaas-a" in err


def test_main_reports_bad_input(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "releases.toml").write_text("[[release]]\n")
    assert skew.main(["--plan", "--root", str(repo)]) == skew.EXIT_ERROR
    assert "SKEW_BAD_RELEASES" in capsys.readouterr().err


# --- results and outputs ------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tools.skew_contracts.test_contracts" name="test_a" time="0.1"/>
<testcase classname="tools.skew_contracts.test_contracts" name="test_b[db]" time="0.1">
  <failure message="boom">AssertionError</failure></testcase>
<testcase classname="tests.test_x" name="test_c" time="0.1"><error message="e"/></testcase>
<testcase classname="tests.test_x" name="test_d" time="0.0"><skipped message="s"/></testcase>
</testsuite></testsuites>
"""


def test_read_junit_names_the_failing_tests(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    suite = skew_report.read_junit("contracts", path)
    assert (suite.passed, suite.failed, suite.skipped) == (1, 2, 1)
    assert suite.failing == [
        "tools/skew_contracts/test_contracts.py::test_b[db]",
        "tests/test_x.py::test_c",
    ]
    assert suite.summary == "1 passed, 2 failed, 1 skipped"
    assert not suite.ok


def _outcomes() -> tuple[list[Cell], dict[Combination, Outcome]]:
    cells = planner().cells(["db"])
    combos = skew_plan.unique_combinations(cells)
    good = Outcome(combos[0], suites=[Suite("contracts", passed=12)], seconds=3.2)
    good.latency = {
        "world_request_ms": {"p50": 0.4, "p99": 1.25, "n": 300},
        "migration_per_set_ms": {"per_set_overhead": 2.5, "sets": 100},
    }
    bad = Outcome(
        combos[1],
        suites=[
            Suite("contracts", passed=10, failed=1, failing=["t.py::test_usage"]),
            Suite("db tests", passed=0),
        ],
        problems=["latency: exited 1: boom"],
        notes=["no world-service figure: needs tel>=0.1.1"],
    )
    return cells, {combos[0]: good, combos[1]: bad}


def test_outcome_ok_and_failures() -> None:
    _, outcomes = _outcomes()
    good, bad = outcomes.values()
    assert good.ok
    assert good.failures == []
    assert not bad.ok
    assert bad.failures == [
        "latency: exited 1: boom",
        "contracts: t.py::test_usage",
        "db tests: no test passed",
    ]
    report = skew_report.failure_report(outcomes.values())
    assert report.splitlines()[0] == f"FAILED {bad.combination.key}:"
    assert "  - contracts: t.py::test_usage" in report.splitlines()
    assert skew_report.failure_report([good]) == ""


def test_matrix_rows_tables_and_json() -> None:
    cells, outcomes = _outcomes()
    header, rows = skew_report.matrix_rows(cells, outcomes, full=False)
    assert header[-1] == "world GET p50/p99 ms"
    assert len(rows) == len(cells) == 6
    by_case = {(r[1], r[2]): r for r in rows}
    assert by_case[("core", "P HEAD, S oldest in range")][3:5] == ["—", "not run"]
    passed = by_case[("core", "P HEAD, S HEAD")]
    assert passed[3:] == ["all HEAD", "pass", "contracts: 12 passed", "0.40 / 1.25"]
    failed = by_case[("core", "P last release, S HEAD")]
    assert failed[3:5] == ["db 0.1.0", "FAIL"]
    assert failed[5] == "contracts: 10 passed, 1 failed; db tests: 0 passed"
    assert by_case[("tel", "P HEAD, S oldest in range")][4:6] == ["not run", "only planned"]
    full_header, full_rows = skew_report.matrix_rows(cells, outcomes, full=True)
    assert full_header[-2:] == ["embeddings p50/p99 ms", "migration ms/set"]
    assert full_rows[1][-2:] == ["—", "2.50"]

    md = skew_report.markdown_table(["a|b", "c"], [["x|y", "z"]])
    assert md == "| a\\|b | c |\n| --- | --- |\n| x\\|y | z |\n"
    text = skew_report.text_table(["col", "b"], [["a", "long value"]]).splitlines()
    assert text == ["col  b", "---  ----------", "a    long value"]

    data = skew_report.matrix_json(
        cells, outcomes, mode="quick", started=datetime(2026, 12, 7, tzinfo=UTC), wall_s=61.26
    )
    assert json.loads(json.dumps(data)) == data
    assert (data["mode"], data["wall_s"], data["passed"]) == ("quick", 61.3, False)
    assert data["cells"][0] == {
        "consumer": "db",
        "dependency": "core",
        "case": "oldest",
        "combination": None,
        "note": cells[0].note,
        "outside": None,
    }
    second = data["combinations"][1]
    assert second["passed"] is False
    assert second["failures"][1] == "contracts: t.py::test_usage"
    assert second["picks"][1] == {"package": "db", "version": "0.1.0", "head": False}


def test_outside_rows_planned_refused_and_failed() -> None:
    old = {**OLD_REQUIRES, ("db", "0.1.0"): ("core>=0.1,<0.1.1", "tel>=0.1,<0.1.1")}
    cells = planner(old=old).cells(["db"])
    (outside,) = skew_plan.outside_combinations(cells)
    rows = {(r[1], r[2]): r for r in skew_report.matrix_rows(cells, {}, full=False)[1]}
    planned = rows[("core", "P last release, S HEAD")]
    assert planned[3:5] == ["db 0.1.0", "outside range"]
    assert planned[5].endswith("; start-up check only planned")

    refused = Outcome(outside)
    refused.refused = [
        "db 0.1.0 requires core<0.1.1,>=0.1, but core 0.1.1 is installed (exit 78)",
        "db 0.1.0 requires tel<0.1.1,>=0.1, but tel 0.1.1 is installed (exit 78)",
    ]
    rows = {
        (r[1], r[2]): r for r in skew_report.matrix_rows(cells, {outside: refused}, full=True)[1]
    }
    core_row, tel_row = (
        rows[("core", "P last release, S HEAD")],
        rows[("tel", "P last release, S HEAD")],
    )
    assert core_row[4] == tel_row[4] == "refused at start-up"
    assert core_row[5] == f"start-up check: {refused.refused[0]}"
    assert tel_row[5] == f"start-up check: {refused.refused[1]}"
    assert core_row[6:] == ["—", "—", "—"]

    accepted = Outcome(outside, problems=["the start-up check of db 0.1.0 did not refuse core"])
    rows = {
        (r[1], r[2]): r for r in skew_report.matrix_rows(cells, {outside: accepted}, full=False)[1]
    }
    assert rows[("core", "P last release, S HEAD")][4] == "FAIL"
    assert "did not refuse core" in rows[("core", "P last release, S HEAD")][5]

    data = skew_report.matrix_json(
        cells, {outside: refused}, mode="full", started=datetime(2026, 12, 8, tzinfo=UTC), wall_s=1
    )
    last = next(c for c in data["cells"] if c["case"] == "last")
    assert last["outside"] == outside.key
    assert last["combination"] is None
    assert data["combinations"][0]["refused"] == refused.refused
    assert data["passed"] is True


def test_refused_lines_name_the_consumers_requirement() -> None:
    stderr = (
        "aiaas-db: error VERSION_SKEW: the installed aiaas packages do not fit together, so "
        "aiaas-db will not run:\n"
        "  - aiaas-db 0.1.0 requires aiaas-core<0.2,>=0.1, but aiaas-core 0.2.0 is installed; "
        "install 'aiaas-core<0.2,>=0.1' or a version of aiaas-db that supports aiaas-core 0.2.0\n"
        "  - aiaas-telemetry 0.2.0 requires aiaas-core<0.3, but aiaas-core 0.9 is installed\n"
        "Install versions inside the declared ranges (pip install -U ...), then run it again.\n"
    )
    db = R("aiaas-db", "0.1.0")
    assert skew.refused_lines(stderr, db, "aiaas-core") == [
        "aiaas-db 0.1.0 requires aiaas-core<0.2,>=0.1, but aiaas-core 0.2.0 is installed"
    ]
    assert skew.refused_lines(stderr, db, "aiaas-telemetry") == []
    assert skew.refused_lines("", db, "aiaas-core") == []


def test_latency_plot(tmp_path: Path) -> None:
    _, outcomes = _outcomes()
    path = tmp_path / "latency.png"
    assert skew_report.latency_plot(list(outcomes.values()), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = Outcome(next(iter(outcomes)))
    assert not skew_report.latency_plot([bare], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_check_installed_compares_versions_origins_and_wheels(tmp_path: Path) -> None:
    site = tmp_path / "site"
    wheel = tmp_path / "wheels" / "core-0.1.1-py3-none-any.whl"
    url = json.dumps({"url": wheel.as_uri(), "archive_info": {}})
    fine = {"version": "0.1.1", "origin": str(site / "core" / "__init__.py"), "direct_url": url}
    expected: dict[str, tuple[str, Path] | None] = {"core": ("0.1.1", wheel), "db": None}
    assert skew.check_installed(expected, {"core": fine, "db": None}, site) == []
    problems = skew.check_installed(
        {**expected, "tel": ("0.1.0", wheel)},
        {
            "core": {"version": "0.1.0", "origin": "/elsewhere/core.py", "direct_url": None},
            "db": {"version": "0.1.0", "origin": None, "direct_url": None},
            "tel": None,
        },
        site,
    )
    assert problems == [
        "core: importlib.metadata says 0.1.0, planned 0.1.1",
        "core is imported from /elsewhere/core.py, not from the combination",
        f"core was installed from an unknown place, not {wheel}",
        "db 0.1.0 is installed but not in the combination",
        "tel 0.1.0 is not installed",
    ]


def test_world_service_fit() -> None:
    text = '[project]\nname = "world-service"\ndependencies = ["core>=0.1.1", "tel>=0.1.1", "x"]\n'
    fits = Combination((H("core", "0.1.1"), H("tel", "0.1.1")))
    assert skew.world_service_fit(text, fits, NAMES) is None
    old = Combination((H("core", "0.1.1"), R("tel", "0.1.0")))
    assert skew.world_service_fit(text, old, NAMES) == (
        "world-service requires tel>=0.1.1 (combination: 0.1.0)"
    )
    only_core = Combination((H("core", "0.1.1"),))
    assert "(combination: none)" in str(skew.world_service_fit(text, only_core, NAMES))


def test_run_raises_with_the_output_and_release_wheel_uses_the_cache(tmp_path: Path) -> None:
    with pytest.raises(SkewError, match="SKEW_COMMAND_FAILED") as caught:
        skew.run(["git", "rev-parse", "--no-such-flag"], cwd=tmp_path)
    assert "exited" in str(caught.value)
    house = tmp_path / "house"
    house.mkdir()
    wheel = house / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    record = Release("a", "1.0", "0" * 40, wheel.name, skew.sha256_of(wheel))
    assert skew.release_wheel(tmp_path, record, house) == wheel


# --- a whole run, on a small repository ---------------------------------------------------------
#
# Two packages with real wheels: aiaas-a (released 0.1.0, HEAD 0.1.1 changes ``VALUE``) and
# aiaas-b, which depends on it. The contract test of this repository holds ``VALUE == 2``: HEAD
# passes it, the release does not, so the run must fail and name that test.

A_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
description = "A package of the skew tests."
readme = "README.md"
requires-python = ">=3.11"
license = "Apache-2.0"
dependencies = {deps}

[tool.hatch.build.targets.wheel]
packages = ["src/{module}"]
"""
CONTRACT = """\
import importlib.metadata
import json
import os

import aiaas_a


def test_versions_are_the_combinations() -> None:
    expected = json.loads(os.environ["AIAAS_SKEW_EXPECT"])
    assert {n: importlib.metadata.version(n) for n in expected} == expected


def test_value_is_two() -> None:
    assert aiaas_a.VALUE == 2
"""
LATENCY = """\
import json
import sys
import time

import aiaas_a
import world_service

samples = []
for _ in range(int(sys.argv[sys.argv.index("--world") + 1])):
    start = time.perf_counter()
    world_service.handle(aiaas_a.VALUE)
    samples.append((time.perf_counter() - start) * 1000)
samples.sort()
print(json.dumps({"world_request_ms": {"p50": samples[len(samples) // 2], "p99": samples[-1]}}))
"""


def _make_package(root: Path, name: str, version: str, deps: list[str], body: str) -> None:
    module = name.replace("-", "_")
    folder = root / "packages" / name
    (folder / "src" / module).mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        A_PYPROJECT.format(name=name, version=version, deps=json.dumps(deps), module=module)
    )
    (folder / "README.md").write_text(f"# {name}\n\nA package of the skew tests.\n")
    (folder / "CHANGELOG.md").write_text(
        f"# Changelog\n\n## [Unreleased]\n\n## [{version}] - 2026-12-01\n\n### Added\n\n- It.\n"
    )
    (folder / "src" / module / "__init__.py").write_text(f'__version__ = "{version}"\n{body}')


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    root.mkdir()
    _git(root, "init", "-q")
    (root / ".gitignore").write_text(".releases/\n.skew/\n__pycache__/\n")
    _make_package(root, "aiaas-a", "0.1.0", [], "VALUE = 1\n")
    _make_package(root, "aiaas-b", "0.1.0", ["aiaas-a>=0.1,<0.2"], "import aiaas_a\n")
    tests = root / "packages" / "aiaas-b" / "tests"
    tests.mkdir()
    (tests / "test_b.py").write_text(
        "import aiaas_a\nimport aiaas_b\n\n\ndef test_b() -> None:\n"
        "    assert aiaas_b.aiaas_a.VALUE == aiaas_a.VALUE\n"
    )
    contracts = root / "tools" / "skew_contracts"
    contracts.mkdir(parents=True)
    (contracts / "test_contracts.py").write_text(CONTRACT)
    (contracts / "latency.py").write_text(LATENCY)
    world = root / "examples" / "world-service"
    (world / "src" / "world_service").mkdir(parents=True)
    (world / "pyproject.toml").write_text(
        '[project]\nname = "world-service"\nversion = "0.1.0"\ndependencies = ["aiaas-a>=0.1"]\n'
    )
    (world / "src" / "world_service" / "__init__.py").write_text(
        "def handle(value: int) -> int:\n    return value * 2\n"
    )
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    commit = _git(root, "rev-parse", "HEAD")
    built = root / ".releases"
    skew.run(
        [sys.executable, ROOT / "tools" / "release.py", "aiaas-a", "--build-only", built,
         "--root", root],
        cwd=root,
    )  # fmt: skip
    wheel = next(built.glob("*.whl"))
    (root / "releases.toml").write_text(
        RECORD.replace("Aiaas_Core", "aiaas-a").format(commit=commit, sha=skew.sha256_of(wheel))
    )
    (root / "releases.toml").write_text(
        (root / "releases.toml").read_text().replace("aiaas_core-", "aiaas_a-")
    )
    # HEAD: aiaas-a 0.1.1 with VALUE = 2 (uncommitted, as a working tree is).
    _make_package(root, "aiaas-a", "0.1.1", [], "VALUE = 2\n")
    return root


def test_a_run_installs_each_combination_and_names_the_failing_test(
    small_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (small_repo / ".releases" / "aiaas_a-0.1.0-py3-none-any.whl").unlink()  # rebuilt from git
    status = skew.main(["--quick", "--root", str(small_repo), "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == skew.EXIT_FAILED, printed
    data = json.loads((out / "matrix.json").read_text())
    assert [c["case"] for c in data["cells"]] == ["oldest", "head", "last"]
    assert data["cells"][2]["note"] == "no release of aiaas-b"
    old, head = data["combinations"]
    assert old["key"] == "aiaas-a 0.1.0, aiaas-b HEAD (0.1.0)"
    assert old["failures"] == [
        "contracts: tools/skew_contracts/test_contracts.py::test_value_is_two"
    ]
    assert old["suites"][0]["passed"] == 1
    assert head["passed"] is True
    assert head["suites"][0]["passed"] == 2
    assert set(head["latency"]["world_request_ms"]) == {"p50", "p99"}
    assert (small_repo / ".releases" / "aiaas_a-0.1.0-py3-none-any.whl").is_file()
    assert "FAILED aiaas-a 0.1.0, aiaas-b HEAD (0.1.0):" in printed
    md = (out / "matrix.md").read_text()
    assert "| aiaas-b | aiaas-a | P HEAD, S oldest in range | aiaas-a 0.1.0 | FAIL |" in md
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert _git(small_repo, "worktree", "list").count("\n") == 0  # the build's worktree is gone


def test_a_full_run_adds_the_consumers_own_tests(small_repo: Path, tmp_path: Path) -> None:
    (small_repo / "tools" / "skew_contracts" / "test_contracts.py").write_text(
        CONTRACT.replace("== 2", "in (1, 2)")
    )
    out = tmp_path / "out"
    assert skew.main(["--root", str(small_repo), "--out", str(out)]) == 0
    data = json.loads((out / "matrix.json").read_text())
    suites = [[s["name"], s["passed"]] for c in data["combinations"] for s in c["suites"]]
    assert suites == [
        ["contracts", 2],
        ["aiaas-b tests", 1],
        ["contracts", 2],
        ["aiaas-b tests", 1],
    ]


def test_a_wheel_that_does_not_reproduce_is_refused(small_repo: Path, tmp_path: Path) -> None:
    (small_repo / ".releases" / "aiaas_a-0.1.0-py3-none-any.whl").write_bytes(b"tampered")
    (small_repo / "releases.toml").write_text(
        (small_repo / "releases.toml").read_text().replace('wheel_sha256 = "', 'wheel_sha256 = "0')
    )
    (release,) = skew_plan.read_releases((small_repo / "releases.toml").read_text())
    with pytest.raises(SkewError, match="SKEW_NOT_REPRODUCED"):
        skew.release_wheel(small_repo, release, small_repo / ".releases")


def test_missing_requirements_reads_the_wheels_metadata(tmp_path: Path) -> None:
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.4",
            "Name: x",
            "Version: 1.0",
            "Requires-Dist: pytest>=1",
            "Requires-Dist: no-such-distribution-of-the-skew-tests>=1",
            "Requires-Dist: pytest<1",
            "Requires-Dist: core>=0.1",
            "Requires-Dist: colorama; extra == 'windows'",
            "",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("x-1.0.dist-info/METADATA", metadata)
    have = importlib.metadata.version("pytest")
    assert skew.missing_requirements(wheel, NAMES) == [
        "no-such-distribution-of-the-skew-tests>=1 (not installed)",
        f"pytest<1 (installed: {have})",
    ]
    empty = tmp_path / "y-1.0-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("y/__init__.py", "")
    assert skew.missing_requirements(empty, NAMES) == [
        f"{empty.name} holds 0 METADATA files, not one"
    ]
