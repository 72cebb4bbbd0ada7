"""lazy_exports: a package's PEP 562 hooks, exercised on real packages written to disk."""

from __future__ import annotations

import importlib
import itertools
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import aiaas_core
from aiaas_core import AiaasDeprecationWarning, lazy_exports

_counter = itertools.count()

_INIT = """
from aiaas_core import lazy_exports

EAGER = 1
_LAZY: dict[str, str] = {table}
{all_line}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, deprecated={deprecated})
"""

MakePackage = Callable[..., types.ModuleType]


@pytest.fixture
def make_package(tmp_path: Path) -> Iterator[MakePackage]:
    """Write and import ``lazypkg_N``: ``_impl`` defines Thing and Other, ``sub._deep`` Deep."""
    names: list[str] = []
    sys.path.insert(0, str(tmp_path))

    def make(
        table: dict[str, str],
        *,
        all_names: list[str] | None = None,
        deprecated: dict[str, str] | None = None,
    ) -> types.ModuleType:
        name = f"lazypkg_{next(_counter)}"
        names.append(name)
        root = tmp_path / name
        (root / "sub").mkdir(parents=True)
        (root / "_impl.py").write_text("class Thing: ...\n\nclass Other: ...\n", encoding="utf-8")
        (root / "sub" / "__init__.py").write_text("", encoding="utf-8")
        (root / "sub" / "_deep.py").write_text("Deep = object()\n", encoding="utf-8")
        all_line = "" if all_names is None else f"__all__ = {all_names!r}"
        init = _INIT.format(table=repr(table), all_line=all_line, deprecated=repr(deprecated))
        (root / "__init__.py").write_text(textwrap.dedent(init), encoding="utf-8")
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


def test_resolves_relative_modules_and_caches(make_package: MakePackage) -> None:
    pkg = make_package({"Thing": "_impl", "Deep": "sub._deep"}, all_names=["Deep", "Thing"])
    assert "Thing" not in vars(pkg)
    assert f"{pkg.__name__}._impl" not in sys.modules  # nothing imported before first use
    thing = pkg.Thing
    assert thing is sys.modules[f"{pkg.__name__}._impl"].Thing
    assert vars(pkg)["Thing"] is thing  # cached in the package's globals
    assert pkg.Deep is sys.modules[f"{pkg.__name__}.sub._deep"].Deep
    namespace: dict[str, object] = {}
    exec(f"from {pkg.__name__} import Deep, Thing", namespace)  # noqa: S102 -- the import form
    assert namespace["Thing"] is thing


@pytest.mark.parametrize(
    "hostile",
    ["Missing", "", "_impl.Thing", "../_impl", "os", "__class__x", "\x00", "Thing ", "x" * 10_000],
)
def test_unknown_names_raise_attribute_error_like_a_module(
    make_package: MakePackage, hostile: str
) -> None:
    pkg = make_package({"Thing": "_impl"})
    with pytest.raises(AttributeError) as info:
        getattr(pkg, hostile)
    assert str(info.value) == f"module {pkg.__name__!r} has no attribute {hostile!r}"
    assert not hasattr(pkg, hostile)
    with pytest.raises(ImportError, match="cannot import name"):
        exec(f"from {pkg.__name__} import Missing", {})  # noqa: S102


def test_missing_module_propagates_the_import_error(make_package: MakePackage) -> None:
    pkg = make_package({"Thing": "_impl", "Gone": "_nowhere"})
    with pytest.raises(ModuleNotFoundError, match=rf"{pkg.__name__}\._nowhere"):
        pkg.Gone  # noqa: B018
    assert "Gone" not in vars(pkg)


def test_module_without_the_name_raises_attribute_error(make_package: MakePackage) -> None:
    pkg = make_package({"Absent": "_impl"})
    with pytest.raises(AttributeError, match="Absent"):
        pkg.Absent  # noqa: B018


def test_deprecated_names_warn_at_the_callers_line_on_every_access(
    make_package: MakePackage,
) -> None:
    message = "lazypkg.Other is deprecated; import it from lazypkg.sub instead (removed in 0.3)"
    pkg = make_package(
        {"Thing": "_impl", "Other": "_impl"}, all_names=["Thing"], deprecated={"Other": message}
    )
    for _ in range(2):  # every access warns: the name is never cached
        with pytest.warns(AiaasDeprecationWarning, match="import it from lazypkg.sub") as record:
            value = pkg.Other
        assert value is sys.modules[f"{pkg.__name__}._impl"].Other
        assert record[0].filename == __file__
        assert "Other" not in vars(pkg)
    with pytest.warns(DeprecationWarning, match="is deprecated") as record:
        exec(f"from {pkg.__name__} import Other", {"__file__": __file__})  # noqa: S102
    assert str(record[0].message) == message
    assert "Other" not in dir(pkg)


def test_dir_lists_globals_and_all(make_package: MakePackage) -> None:
    pkg = make_package({"Thing": "_impl", "Deep": "sub._deep"}, all_names=["Deep", "Thing"])
    listing = dir(pkg)
    assert listing == sorted(listing)
    assert {"Deep", "Thing", "EAGER", "lazy_exports", "__name__"} <= set(listing)
    without_all = make_package({"Thing": "_impl"})
    assert "Thing" in dir(without_all)


@pytest.mark.parametrize(
    ("table", "deprecated", "problem"),
    [
        ({"not valid": "_impl"}, None, "not a valid attribute name"),
        ({"": "_impl"}, None, "not a valid attribute name"),
        ({"Thing": "../_impl"}, None, "not a module path relative to the package"),
        ({"Thing": ".._impl"}, None, "not a module path relative to the package"),
        ({"Thing": "/etc/passwd"}, None, "not a module path relative to the package"),
        ({"Thing": ""}, None, "not a module path relative to the package"),
        ({"Thing": "sub..x"}, None, "not a module path relative to the package"),
        ({"Thing": "_impl"}, {"Other": "gone"}, "deprecated name 'Other' is not in the table"),
    ],
)
def test_bad_tables_are_refused(
    table: dict[str, str], deprecated: dict[str, str] | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        lazy_exports("aiaas_core", table, deprecated=deprecated)


def test_non_string_table_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid attribute name"):
        lazy_exports("aiaas_core", {1: "_impl"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="not a module path"):
        lazy_exports("aiaas_core", {"Thing": None})  # type: ignore[dict-item]


def test_unimported_module_is_refused() -> None:
    with pytest.raises(ValueError, match="no module of that name is imported"):
        lazy_exports("no_such_package_xyz", {})


def test_aiaas_core_uses_it() -> None:
    assert aiaas_core.__getattr__.__qualname__ == "lazy_exports.<locals>.__getattr__"
    assert aiaas_core.lazy_exports is lazy_exports
