from __future__ import annotations

import sys
from pathlib import Path

import attrs
import pytest

from aiaas_db import (
    ChangeSet,
    ChangeSetError,
    ChangeSetSource,
    DirectorySource,
    PackageSource,
    Script,
    StaticSource,
    load_change_sets,
    script_checksum,
)


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)


def test_directory_source_loads_sorted_sets(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "202402010000_second.up.sql": "SELECT 2;",
            "202402010000_second.down.sql": "SELECT -2;",
            "202401010000_first.up.sql": "-- author: alice@example.com\nSELECT 1;",
            "202401010000_first.down.sql": "SELECT -1;",
            "202401010000_first.check.sql": "SELECT true;",
            "README.md": "ignored",
            "notes.txt": "ignored",
        },
    )
    (tmp_path / "sub").mkdir()
    src = DirectorySource(tmp_path)
    assert isinstance(src, ChangeSetSource)
    assert src.origin == str(tmp_path)
    sets = src.load()
    assert [cs.version for cs in sets] == [202401010000, 202402010000]
    first = sets[0]
    assert first.name == "202401010000_first"
    assert first.author == "alice@example.com"
    assert first.check is not None
    assert first.check.statements == ["SELECT true"]
    assert sets[1].check is None
    assert (
        first.checksum
        == first.up.checksum
        == script_checksum("-- author: alice@example.com\nSELECT 1;")
    )
    assert first.origin == str(tmp_path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "2024_short.up.sql": "",
            "202401010000_Bad-Slug.up.sql": "",
            "202413010000_month.up.sql": "",
            "202413010000_month.down.sql": "",
            "202401020000_only_up.up.sql": "SELECT 1;",
            "202401030000_a.up.sql": "SELECT 1;",
            "202401030000_b.down.sql": "SELECT 1;",
            "202401040000_typo.up.sql": "-- aiaas:no-transction\nSELECT 1;",
            "202401040000_typo.down.sql": "SELECT 1;",
            "202401050000_bin.up.sql": b"\xff\xfe",
            "202401050000_bin.down.sql": "SELECT 1;",
            "202401060000_x.UP.sql": "",
        },
    )
    with pytest.raises(ChangeSetError) as info:
        DirectorySource(tmp_path).load()
    problems = "\n".join(info.value.problems)
    assert "2024_short.up.sql: not a change-set file name (version must be 12 digits" in problems
    assert "202401010000_Bad-Slug.up.sql: not a change-set file name" in problems
    assert "202413010000 is not a valid YYYYMMDDHHMM time" in problems
    assert "missing 202401020000_only_up.down.sql" in problems
    assert "version 202401030000 has scripts with different slugs" in problems
    assert "unknown directive 'aiaas:no-transction'" in problems
    assert "202401050000_bin.up.sql: not UTF-8 text" in problems
    assert "202401060000_x.UP.sql" in problems
    assert info.value.code == "MIGRATION_SOURCE_INVALID"


def test_duplicate_kind_for_one_version() -> None:
    with pytest.raises(ChangeSetError, match="already has a up script"):
        load_change_sets(
            [
                ("202401010000_a.up.sql", "SELECT 1"),
                ("202401010000_a.up.sql", "SELECT 2"),
                ("202401010000_a.down.sql", "SELECT 3"),
            ]
        )


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ChangeSetError, match="is not a directory"):
        DirectorySource(tmp_path / "nope").load()


def test_checksum_normalises_line_endings_and_bom() -> None:
    unix = "CREATE TABLE t (a int);\nSELECT 1;\n"
    assert script_checksum(unix) == script_checksum(unix.replace("\n", "\r\n"))
    assert script_checksum(unix) == script_checksum(unix.replace("\n", "\r"))
    assert script_checksum(unix) == script_checksum("\ufeff" + unix)
    assert script_checksum(unix) != script_checksum(unix + " ")
    assert len(script_checksum(unix)) == 64


def test_headers() -> None:
    s = Script(
        "\n-- author: bob\n--aiaas:no-transaction\n-- aiaas:destructive\nDROP TABLE x;\n"
        "-- author: not-a-header\n"
    )
    assert (s.author, s.no_transaction, s.destructive) == ("bob", True, True)
    plain = Script("SELECT 1; -- aiaas:no-transaction")
    assert (plain.author, plain.no_transaction, plain.destructive) == (None, False, False)
    other = Script("-- just a comment\n-- author:\nSELECT 1")
    assert other.author is None
    with pytest.raises(ChangeSetError, match="unknown directive 'aiaas:nope'"):
        Script("-- aiaas:nope\nSELECT 1", name="x.up.sql")


def test_change_set_validation() -> None:
    up, down = Script("SELECT 1"), Script("SELECT 2")
    with pytest.raises(ValueError, match="slug"):
        ChangeSet(version=1, slug="Bad Slug", up=up, down=down)
    with pytest.raises(ValueError, match="version"):
        ChangeSet(version=-1, slug="ok", up=up, down=down)
    with pytest.raises(ValueError, match="version"):
        ChangeSet(version=True, slug="ok", up=up, down=down)
    with pytest.raises(TypeError):
        ChangeSet(version=1, slug="ok", up="SELECT 1", down=down)  # type: ignore[arg-type]
    cs = ChangeSet.from_sql(
        202401010000, "ok", "SELECT 1", "-- author: carol\nSELECT 2", "SELECT true"
    )
    assert cs.author == "carol"  # taken from the down script when the up has none
    assert cs.check is not None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cs.slug = "x"  # type: ignore[misc]


def test_static_source() -> None:
    a = ChangeSet.from_sql(2, "b", "SELECT 1", "SELECT 1")
    b = ChangeSet.from_sql(1, "a", "SELECT 1", "SELECT 1")
    assert [cs.version for cs in StaticSource([a, b]).load()] == [1, 2]
    with pytest.raises(ChangeSetError, match="share a version"):
        StaticSource([a, a]).load()


def test_package_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fake_schema_pkg"
    _write(
        pkg / "sql" / "operational",
        {
            "202401010000_init.up.sql": "CREATE TABLE a (id int);",
            "202401010000_init.down.sql": "DROP TABLE a;",
        },
    )
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = PackageSource("fake_schema_pkg", "sql/operational")
    assert src.origin == "fake_schema_pkg:sql/operational"
    assert [cs.slug for cs in src.load()] == ["init"]
    with pytest.raises(ChangeSetError, match="is not a resource folder"):
        PackageSource("fake_schema_pkg", "sql/missing").load()
    with pytest.raises(ChangeSetError, match="is not installed"):
        PackageSource("no_such_pkg_for_aiaas_db").load()
    assert PackageSource("fake_schema_pkg").origin == "fake_schema_pkg"
    sys.modules.pop("fake_schema_pkg", None)
