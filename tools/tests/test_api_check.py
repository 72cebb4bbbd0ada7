"""tools/api_check.py: the public API against its last release, on a fixture repository."""

from __future__ import annotations

from pathlib import Path

import api_check
import pytest
from release_repo import MODULE, PACKAGE, add_changelog, commit_all, edit, git, make_repo

ROOT = Path(__file__).resolve().parents[2]
PKG = f"packages/{PACKAGE}"
IMPL = f"{PKG}/src/{MODULE}/_impl.py"
INIT = f"{PKG}/src/{MODULE}/__init__.py"
PYPROJECT = f"{PKG}/pyproject.toml"


def _record(repo: Path, version: str = "0.1.0") -> None:
    """Record HEAD as the package's release ``version`` (what tools/release.py writes)."""
    commit = git(repo, "rev-parse", "HEAD")
    with (repo / "releases.toml").open("a") as out:
        out.write(
            f'[[release]]\npackage = "{PACKAGE}"\nversion = "{version}"\ncommit = "{commit}"\n'
        )
    git(repo, "add", "releases.toml")
    git(repo, "commit", "--quiet", "-m", "record")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo")
    _record(root)
    return root


def _run(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = api_check.main(["--root", str(repo)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def _change_signature(repo: Path) -> None:
    edit(
        repo,
        IMPL,
        'def greet(name: str, *, punctuation: str = "!")',
        "def greet(name: str, punctuation: str)",
    )


def test_unchanged_and_added_names_pass(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(repo, capsys) == (
        0,
        f"{PACKAGE}: compared with 0.1.0 ({git(repo, 'rev-parse', 'HEAD~1')[:12]}), next 0.1.1: "
        "0 breaking change(s)\napi: ok\n",
    )
    edit(repo, IMPL, "class Greeter:", 'def wave() -> str:\n    return "o/"\n\n\nclass Greeter:')
    edit(repo, INIT, '    "greet",\n', '    "greet",\n    "wave",\n')
    edit(repo, INIT, '"greet": "_impl",', '"greet": "_impl",\n    "wave": "_impl",')
    # A new optional parameter is no break either.
    edit(repo, IMPL, "def greet(self, name: str)", "def greet(self, name: str, times: int = 1)")
    status, out = _run(repo, capsys)
    assert status == 0, out
    assert "0 breaking change(s)" in out


def test_a_removed_name_fails_whatever_the_bump(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(repo, INIT, '    "Greeter",\n', "")
    add_changelog(repo, "Removed", "`Greeter`: use `greet`.")
    edit(repo, PYPROJECT, 'version = "0.1.0"', 'version = "0.2.0"')
    status, out = _run(repo, capsys)
    assert status == 1
    assert (
        f"FAIL: {MODULE}.Greeter: public name removed without a release of aiaas_core.deprecated"
        in out
    )
    assert "api: breaking changes not allowed" in out


def test_a_removed_method_fails(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(
        repo,
        IMPL,
        "    def greet(self, name: str) -> str:",
        "    def _greet(self, name: str) -> str:",
    )
    add_changelog(repo, "Removed", "`Greeter.greet`.")
    status, out = _run(repo, capsys)
    assert status == 1
    assert f"FAIL: {MODULE}.Greeter.greet: Public object was removed without a release" in out


def test_a_signature_change_with_a_minor_bump_and_a_changelog_entry_passes(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _change_signature(repo)
    add_changelog(repo, "Changed", "`greet` needs its `punctuation`.")
    edit(repo, PYPROJECT, 'version = "0.1.0"', 'version = "0.2.0"')
    status, out = _run(repo, capsys)
    assert status == 0, out
    assert "next 0.2.0: 1 breaking change(s)\n" in out
    assert f"  ok: {MODULE}.greet: Parameter is now required (punctuation)\n" in out


def test_the_default_bump_counts_when_the_version_is_not_bumped_yet(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _change_signature(repo)
    add_changelog(repo, "Changed", "`greet` needs its `punctuation`.")
    status, out = _run(repo, capsys)
    assert status == 0, out
    assert "next 0.2.0" in out


def test_a_signature_change_without_a_changelog_entry_fails(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _change_signature(repo)
    edit(repo, PYPROJECT, 'version = "0.1.0"', 'version = "0.2.0"')
    add_changelog(repo, "Changed", "`Greeter` is friendlier.")  # names something else
    status, out = _run(repo, capsys)
    assert status == 1
    assert "the CHANGELOG does not name `greet` under Changed or Removed since 0.1.0" in out


def test_a_signature_change_in_a_patch_release_fails(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _change_signature(repo)
    add_changelog(repo, "Changed", "`greet` needs its `punctuation`.")
    edit(repo, PYPROJECT, 'version = "0.1.0"', 'version = "0.1.1"')
    status, out = _run(repo, capsys)
    assert status == 1
    assert "0.1.0 -> 0.1.1 (pyproject.toml) does not allow a break" in out


def test_a_deprecated_name_may_go_with_a_removed_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    edit(
        repo, IMPL, "class Greeter:", '@deprecated(since="0.1.0", removal="0.2.0")\nclass Greeter:'
    )
    edit(
        repo,
        IMPL,
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nfrom aiaas_core import deprecated\n",
    )
    commit_all(repo, "deprecate Greeter")
    _record(repo)
    edit(repo, INIT, '    "Greeter",\n', "")
    edit(repo, PYPROJECT, 'version = "0.1.0"', 'version = "0.2.0"')
    status, out = _run(repo, capsys)
    assert status == 1
    assert (
        "public name removed (deprecated in the last release); breaking, and the CHANGELOG" in out
    )
    add_changelog(repo, "Removed", "`Greeter` (deprecated in 0.1.0).")
    status, out = _run(repo, capsys)
    assert status == 0, out


def test_a_lazy_name_without_a_type_checking_import_is_followed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(
        repo,
        INIT,
        "    from tiny_pkg._impl import Greeter, greet\n",
        "    from tiny_pkg._impl import Greeter\n",
    )
    commit_all(repo, "greet only through _LAZY")
    _record(repo, "0.1.1")
    _change_signature(repo)
    status, out = _run(repo, capsys)
    assert status == 1
    assert f"FAIL: {MODULE}.greet: Parameter is now required (punctuation)" in out


def test_no_release_yet_passes_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    edit(repo, INIT, '    "Greeter",\n', "")
    assert _run(repo, capsys) == (
        0,
        f"{PACKAGE}: no release recorded yet; nothing to compare\napi: ok\n",
    )


def test_usage_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert api_check.main(["--root", str(repo), "no-such-pkg"]) == 2
    assert "api: error: no package 'no-such-pkg' under packages/" in capsys.readouterr().err
    (repo / "releases.toml").write_text(
        f'[[release]]\npackage = "{PACKAGE}"\nversion = "0.1.0"\ncommit = "{"0" * 40}"\n'
    )
    assert api_check.main(["--root", str(repo), PACKAGE]) == 2
    assert f"cannot read {PKG}/src at release commit {'0' * 40}" in capsys.readouterr().err


def test_every_exported_name_of_our_packages_is_read() -> None:
    """The real packages: every name their public modules export resolves to its definition."""
    for folder in sorted((ROOT / "packages").glob("*/src")):
        module = next(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())
        api = api_check.read_api(folder, module)
        assert module in api.modules
        for public, exports in api.modules.items():
            assert exports, public
            assert [name for name, obj in exports.items() if obj is None] == [], public
        assert api_check.compare(api, api) == []


def test_a_renamed_constant_with_the_same_value_is_no_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    edit(repo, IMPL, "\n\ndef greet(name", '\n\n_BANG = "!"\n\n\ndef greet(name')
    edit(repo, IMPL, 'punctuation: str = "!"', "punctuation: str = _BANG")
    commit_all(repo, "a constant")
    _record(repo)
    edit(repo, IMPL, '_BANG = "!"', 'BANG = "!"\nQUESTION = "?"')
    edit(repo, IMPL, "punctuation: str = _BANG", "punctuation: str = BANG")
    status, out = _run(repo, capsys)
    assert status == 0, out
    assert "0 breaking change(s)" in out
    edit(repo, IMPL, "punctuation: str = BANG", "punctuation: str = QUESTION")
    status, out = _run(repo, capsys)
    assert status == 1
    assert f"FAIL: {MODULE}.greet: Parameter default was changed (punctuation)" in out


def test_a_constructor_change_may_be_named_by_its_class(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(
        repo,
        IMPL,
        "def __init__(self, prefix: str)",
        "def __init__(self, prefix: str, suffix: str)",
    )
    status, out = _run(repo, capsys)
    assert status == 1
    assert "Greeter.__init__: Parameter was added as required (suffix)" in out
    add_changelog(repo, "Changed", "`Greeter(prefix, suffix)` needs a suffix.")
    status, out = _run(repo, capsys)
    assert status == 0, out
