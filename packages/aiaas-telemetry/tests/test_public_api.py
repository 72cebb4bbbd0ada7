"""The public API is exactly what __all__ declares: sorted, complete, importable, lazy."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import aiaas_telemetry


def test_all_is_sorted_and_unique() -> None:
    assert list(aiaas_telemetry.__all__) == sorted(set(aiaas_telemetry.__all__))


def test_all_matches_the_lazy_table() -> None:
    assert set(aiaas_telemetry.__all__) == {*aiaas_telemetry._LAZY, "__version__"}


def test_every_exported_name_resolves() -> None:
    for name in aiaas_telemetry.__all__:
        assert getattr(aiaas_telemetry, name) is not None, name


def test_exports_are_complete() -> None:
    """Every public name a private module declares in its own __all__ is exported."""
    exported = set(aiaas_telemetry.__all__)
    for info in pkgutil.iter_modules(aiaas_telemetry.__path__):
        if info.name == "assets":
            continue  # package data, not code
        assert info.name.startswith("_"), f"module {info.name} must be private (_name)"
        module = importlib.import_module(f"aiaas_telemetry.{info.name}")
        for name in getattr(module, "__all__", ()):
            if not name.isupper():  # constants stay in their module
                assert name in exported, f"aiaas_telemetry.{info.name}.{name} is not exported"
            if name in exported:
                assert getattr(aiaas_telemetry, name) is getattr(module, name)


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="DoesNotExist"):
        aiaas_telemetry.DoesNotExist  # noqa: B018
    assert "setup" in dir(aiaas_telemetry)


def test_import_is_lazy() -> None:
    """`import aiaas_telemetry` loads neither OpenTelemetry nor prometheus-client."""
    code = (
        "import sys, aiaas_telemetry; "
        "print([m for m in ('opentelemetry', 'prometheus_client', 'attrs') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert aiaas_telemetry.__version__ == version("aiaas-telemetry")
