"""tools/release.py: CHANGELOG, versions, reproducible builds, checks, the record and the tag."""

from __future__ import annotations

import hashlib
import re
import shutil
import tomllib
from datetime import date
from pathlib import Path

import pytest
import release
from release import ReleaseError
from release_repo import MODULE, PACKAGE, add_changelog, commit_all, edit, git, make_repo

ROOT = Path(__file__).resolve().parents[2]
PKG = f"packages/{PACKAGE}"
DAY = date(2026, 12, 1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


# --- the pieces ---------------------------------------------------------------------------------

CHANGELOG = """\
# Changelog

## [Unreleased]

### Added

- `a()`: new,
  over two lines.
- `b()`.

### Changed

- `c()` takes `x`.

## [0.1.0] - 2026-11-01

### Added

- everything.
"""


def test_unreleased_entries_by_heading() -> None:
    assert release.unreleased_entries(CHANGELOG) == {
        "Added": ["`a()`: new, over two lines.", "`b()`."],
        "Changed": ["`c()` takes `x`."],
    }
    assert release.unreleased_entries("# Changelog\n\n## [Unreleased]\n\n## [0.1.0]\n- x\n") == {}
    assert release.unreleased_entries("# Changelog\n") == {}


def test_move_unreleased_leaves_an_empty_section() -> None:
    moved = release.move_unreleased(CHANGELOG, "0.2.0", DAY)
    assert moved.startswith(
        "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-12-01\n\n### Added\n"
    )
    assert "- `c()` takes `x`.\n\n## [0.1.0] - 2026-11-01\n" in moved
    assert release.unreleased_entries(moved) == {}
    sections = [s.name for s in release.changelog_sections(moved)]
    assert sections == ["Unreleased", "0.2.0", "0.1.0"]
    only = release.move_unreleased("# C\n\n## [Unreleased]\n\n- x\n", "0.1.0", DAY)
    assert only == "# C\n\n## [Unreleased]\n\n## [0.1.0] - 2026-12-01\n\n- x\n"
    with pytest.raises(ReleaseError, match="RELEASE_NO_UNRELEASED"):
        release.move_unreleased("# C\n", "0.1.0", DAY)


@pytest.mark.parametrize(
    ("last", "sections", "expected"),
    [
        (None, ["Changed"], "0.1.0"),  # the first release: the current version as is
        ("0.1.0", ["Added"], "0.1.1"),
        ("0.1.0", ["Fixed"], "0.1.1"),
        ("0.1.3", ["Added", "Changed"], "0.2.0"),
        ("0.1.3", ["Removed"], "0.2.0"),
        ("1.2.3", ["Fixed"], "1.2.4"),
        ("1.2.3", ["Added"], "1.3.0"),
        ("1.2.3", ["Deprecated"], "1.3.0"),
        ("1.2.3", ["Changed"], "1.3.0"),
        ("1.2.3", ["Removed", "Added"], "2.0.0"),
    ],
)
def test_default_version(last: str | None, sections: list[str], expected: str) -> None:
    entries = {name: ["an entry"] for name in sections}
    assert release.default_version(last, "0.1.0", entries) == expected


@pytest.mark.parametrize(
    ("last", "new", "allowed"),
    [
        ("0.1.0", "0.1.1", False),
        ("0.1.0", "0.2.0", True),
        ("0.1.0", "1.0.0", True),
        ("1.2.0", "1.3.0", False),
        ("1.2.0", "2.0.0", True),
        ("1.2.0", "1.2.1", False),
    ],
)
def test_bump_allows_breaking(last: str, new: str, allowed: bool) -> None:
    assert release.bump_allows_breaking(last, new) is allowed


def test_every_package_keeps_one_version() -> None:
    """pyproject.toml's version and the package's __version__ agree, for every package."""
    names = sorted(
        p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file()
    )
    assert names
    for name in names:
        package = release.load_package(ROOT, name)
        assert release.dunder_version(package) == package.version, name


def test_source_date_epoch_is_midnight_utc() -> None:
    assert release.source_date_epoch(date(1970, 1, 2)) == 86400


# --- releasing ----------------------------------------------------------------------------------


def test_release_records_commits_and_tags(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "notes.txt").write_text("someone else's work in progress\n")
    args = [PACKAGE, "--root", str(repo), "--date", "2026-12-01", "--offline"]
    assert release.main(args) == 0
    out = capsys.readouterr().out
    assert f"released {PACKAGE} 0.1.0" in out

    # The first release releases the current version; the entries moved under it.
    changelog = (repo / PKG / "CHANGELOG.md").read_text()
    assert "## [Unreleased]\n\n## [0.1.0] - 2026-12-01\n\n### Added\n\n- `greet(name)`" in changelog
    (record,) = tomllib.loads((repo / "releases.toml").read_text())["release"]
    commit = git(repo, "rev-parse", "HEAD~1")
    assert record == {
        "package": PACKAGE,
        "version": "0.1.0",
        "commit": commit,
        "date": "2026-12-01",
        "tag": f"{PACKAGE}-v0.1.0",
        "source_date_epoch": release.source_date_epoch(DAY),
        "wheel": f"{MODULE}-0.1.0-py3-none-any.whl",
        "wheel_sha256": _sha(repo / ".releases" / f"{MODULE}-0.1.0-py3-none-any.whl"),
        "sdist": f"{MODULE}-0.1.0.tar.gz",
        "sdist_sha256": _sha(repo / ".releases" / f"{MODULE}-0.1.0.tar.gz"),
    }
    assert git(repo, "rev-list", "-n", "1", f"{PACKAGE}-v0.1.0") == commit
    assert git(repo, "log", "--format=%s", "-2").splitlines() == [
        f"Record the release of {PACKAGE} 0.1.0",
        f"Release {PACKAGE} 0.1.0",
    ]
    # The first release keeps the version: only the CHANGELOG changed.
    assert git(repo, "show", "--name-only", "--format=", commit) == f"{PKG}/CHANGELOG.md"
    # Only the release's own files were committed.
    assert git(repo, "status", "--porcelain") == "?? notes.txt"

    # The release commit rebuilds byte for byte (what the release workflow publishes).
    built = repo.parent / "rebuilt"
    assert release.main([PACKAGE, "--root", str(repo), "--build-only", str(built)]) == 0
    assert f"sha256 {record['wheel_sha256']}" in capsys.readouterr().out
    assert _sha(built / str(record["sdist"])) == record["sdist_sha256"]

    # A fresh clone has no wheelhouse: a recorded release is rebuilt from its commit (in a git
    # worktree, gone afterwards) and kept only when it matches the recorded sha256.
    shutil.rmtree(repo / ".releases")
    wheel, sdist = release.in_wheelhouse(repo, record)
    assert (_sha(wheel), _sha(sdist)) == (record["wheel_sha256"], record["sdist_sha256"])
    assert git(repo, "worktree", "list").count("\n") == 0
    shutil.rmtree(repo / ".releases")
    with pytest.raises(ReleaseError, match="RELEASE_NOT_REPRODUCED"):
        release.in_wheelhouse(repo, {**record, "wheel_sha256": "0" * 64})
    assert not (repo / ".releases").exists()
    release.in_wheelhouse(repo, record)

    # Nothing new under Unreleased: refused, nothing changed.
    assert release.main(args) == 2
    err = capsys.readouterr().err
    assert "release: error RELEASE_NO_CHANGES:" in err
    assert "no entries under '## [Unreleased]'" in err

    # A Changed entry: the 0.x default is a minor bump, written in both places.
    add_changelog(repo, "Changed", "`greet` says hello louder.")
    commit_all(repo, "louder")
    assert release.main([PACKAGE, "--root", str(repo), "--no-tag", "--offline"]) == 0
    package = release.load_package(repo, PACKAGE)
    assert package.version == "0.2.0"
    assert release.dunder_version(package) == "0.2.0"
    second = release.last_release(repo, PACKAGE)
    assert second is not None
    assert second["version"] == "0.2.0"
    assert second["tag"] == ""
    assert git(repo, "show", "--name-only", "--format=", str(second["commit"])).splitlines() == [
        f"{PKG}/CHANGELOG.md",
        f"{PKG}/pyproject.toml",
        f"{PKG}/src/{MODULE}/__init__.py",
    ]
    assert git(repo, "tag", "--list") == f"{PACKAGE}-v0.1.0"
    assert (repo / ".releases" / f"{MODULE}-0.2.0-py3-none-any.whl").is_file()
    assert len(tomllib.loads((repo / "releases.toml").read_text())["release"]) == 2


def test_build_is_reproducible(repo: Path, tmp_path: Path) -> None:
    package = release.load_package(repo, PACKAGE)
    epoch = release.source_date_epoch(DAY)
    first = release.build(repo, package, epoch, tmp_path / "one")
    # Another mtime and mode on a file in the working tree do not matter: git's content does.
    init = repo / PKG / "src" / MODULE / "__init__.py"
    init.chmod(0o600)
    init.touch()
    second = release.build(repo, package, epoch, tmp_path / "two")
    assert [p.name for p in first] == [p.name for p in second]
    assert [_sha(p) for p in first] == [_sha(p) for p in second]
    later = release.build(repo, package, epoch + 86400, tmp_path / "three")
    assert _sha(later[0]) != _sha(first[0])


def _refused(repo: Path, version: str | None = None) -> str:
    with pytest.raises(ReleaseError) as caught:
        release.release(repo, PACKAGE, version=version, day=DAY, offline=True)
    assert caught.value.exit_status == 2
    return str(caught.value)


def test_refusals_change_nothing(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert release.main(["no-such-pkg", "--root", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "RELEASE_UNKNOWN_PACKAGE" in err
    assert f"choose one of: {PACKAGE}" in err

    assert "RELEASE_BAD_VERSION" in _refused(repo, "banana")
    assert "MAJOR.MINOR.PATCH" in _refused(repo, "1.0")
    assert "normal form: 1.0.0" in _refused(repo, "v1.0.0")

    edit(repo, f"{PKG}/src/{MODULE}/_impl.py", 'f"hello {name}', 'f"hi {name}')
    assert "RELEASE_DIRTY" in _refused(repo)
    commit_all(repo, "hi")

    edit(repo, f"{PKG}/src/{MODULE}/__init__.py", '__version__ = "0.1.0"', '__version__ = "0.0.9"')
    commit_all(repo, "skewed")
    message = _refused(repo)
    assert "RELEASE_VERSION_MISMATCH" in message
    assert "__version__ = '0.0.9'" in message
    edit(repo, f"{PKG}/src/{MODULE}/__init__.py", '__version__ = "0.0.9"', '__version__ = "0.1.0"')
    commit_all(repo, "fixed")

    git(repo, "tag", f"{PACKAGE}-v0.1.0")
    assert "RELEASE_TAG_EXISTS" in _refused(repo)
    assert git(repo, "status", "--porcelain") == ""
    assert not (repo / "releases.toml").exists()
    assert git(repo, "rev-list", "--count", f"{head}..HEAD") == "3"


def test_older_version_than_the_last_release_is_refused(repo: Path) -> None:
    (repo / "releases.toml").write_text(
        f'[[release]]\npackage = "{PACKAGE}"\nversion = "0.3.0"\ncommit = "0"\nwheel = "x"\n'
    )
    commit_all(repo, "a release")
    message = _refused(repo, "0.2.5")
    assert f"{PACKAGE} 0.3.0 is released already" in message


def test_failed_build_restores_the_files(repo: Path) -> None:
    git(repo, "rm", "--quiet", f"{PKG}/README.md")
    commit_all(repo, "no readme")
    before = {p: p.read_text() for p in (repo / PKG).rglob("*") if p.is_file()}
    with pytest.raises(ReleaseError) as caught:
        release.release(repo, PACKAGE, day=DAY, offline=True)
    assert caught.value.exit_status == 1
    assert "README.md" in str(caught.value)
    assert {p: p.read_text() for p in (repo / PKG).rglob("*") if p.is_file()} == before
    assert git(repo, "log", "--format=%s", "-1") == "no readme"
    assert not (repo / ".releases").exists()


def test_a_wheel_that_does_not_import_alone_fails(repo: Path) -> None:
    # Imports a distribution it does not declare: the clean virtualenv has no such module.
    edit(
        repo,
        f"{PKG}/src/{MODULE}/__init__.py",
        "import importlib\n",
        "import importlib\nimport yaml  # noqa: F401\n",
    )
    commit_all(repo, "undeclared import")
    with pytest.raises(ReleaseError) as caught:
        release.release(repo, PACKAGE, day=DAY, offline=True)
    assert caught.value.exit_status == 1
    assert caught.value.code == "RELEASE_INSTALL_FAILED"
    assert re.search(r"No module named 'yaml'", str(caught.value))
    assert git(repo, "status", "--porcelain") == ""


def test_an_unreleased_sibling_is_named(repo: Path) -> None:
    edit(
        repo,
        f"{PKG}/pyproject.toml",
        "dependencies = []",
        'dependencies = ["aiaas-core>=0.1,<0.2"]',
    )
    commit_all(repo, "needs core")
    with pytest.raises(ReleaseError) as caught:
        release.release(repo, PACKAGE, day=DAY, offline=True)
    assert caught.value.code == "RELEASE_SIBLING_UNRELEASED"
    assert "release aiaas-core first (nox -s release -- aiaas-core)" in str(caught.value)
    assert git(repo, "status", "--porcelain") == ""


def test_build_only_needs_a_release_commit(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = repo.parent / "out"
    assert release.main([PACKAGE, "--root", str(repo), "--build-only", str(out)]) == 2
    assert "RELEASE_NOT_A_RELEASE" in capsys.readouterr().err
    args = [PACKAGE, "--root", str(repo), "--build-only", str(out), "--version", "0.3.0"]
    assert release.main(args) == 2
    assert "expected tiny-pkg 0.3.0, but pyproject.toml says 0.1.0" in capsys.readouterr().err
    assert not out.exists()


def test_build_only_refuses_files_that_differ_from_the_record(repo: Path) -> None:
    changelog = repo / PKG / "CHANGELOG.md"
    changelog.write_text(release.move_unreleased(changelog.read_text(), "0.1.0", DAY))
    (repo / "releases.toml").write_text(
        f'[[release]]\npackage = "{PACKAGE}"\nversion = "0.1.0"\ncommit = "abc"\n'
        'wheel_sha256 = "0"\nsdist_sha256 = "0"\n'
    )
    commit_all(repo, "a release recorded with other bytes")
    assert release.release_date(changelog.read_text(), "0.1.0") == DAY
    with pytest.raises(ReleaseError) as caught:
        release.rebuild(repo, PACKAGE, repo.parent / "out")
    assert caught.value.code == "RELEASE_NOT_REPRODUCED"
    assert caught.value.exit_status == 1
