"""The public API is exactly what __all__ declares, sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import aiaas_core


def test_all_is_sorted_and_unique() -> None:
    assert list(aiaas_core.__all__) == sorted(set(aiaas_core.__all__))


def test_every_exported_name_resolves() -> None:
    for name in aiaas_core.__all__:
        assert getattr(aiaas_core, name) is not None, name


def test_exports_are_complete() -> None:
    """Every public name a private module declares in its own __all__ is exported."""
    exported = set(aiaas_core.__all__)
    for info in pkgutil.iter_modules(aiaas_core.__path__):
        assert info.name.startswith("_"), f"module {info.name} must be private (_name)"
        module = importlib.import_module(f"aiaas_core.{info.name}")
        for name in getattr(module, "__all__", ()):
            if not name.isupper():  # constants stay in their module
                assert name in exported, f"aiaas_core.{info.name}.{name} is not exported"
            if name in exported:
                assert getattr(aiaas_core, name) is getattr(module, name)


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="DoesNotExist"):
        aiaas_core.DoesNotExist  # noqa: B018
    assert "Actor" in dir(aiaas_core)


def test_import_is_lazy() -> None:
    """`import aiaas_core` must not pull in attrs or cattrs (the 50 ms import budget)."""
    code = "import sys, aiaas_core; print([m for m in ('attrs', 'cattrs') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "attrs" not in out.stdout
    assert "cattrs" not in out.stdout


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert aiaas_core.__version__ == version("aiaas-core")
