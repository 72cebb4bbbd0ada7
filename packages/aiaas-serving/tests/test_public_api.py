"""The public API is exactly what __all__ declares, sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import aiaas_serving

# Public sub-packages, imported on their own (``aiaas_serving.generation`` needs torch).
PUBLIC_SUBPACKAGES = frozenset({"generation"})


def test_all_is_sorted_and_unique() -> None:
    assert list(aiaas_serving.__all__) == sorted(set(aiaas_serving.__all__))


def test_every_exported_name_resolves() -> None:
    for name in aiaas_serving.__all__:
        assert getattr(aiaas_serving, name) is not None, name


def test_lazy_map_and_all_agree() -> None:
    assert set(aiaas_serving._LAZY) | {"__version__"} == set(aiaas_serving.__all__)


def test_exports_are_complete() -> None:
    """Every public name a private module declares in its own __all__ is exported."""
    exported = set(aiaas_serving.__all__)
    for info in pkgutil.iter_modules(aiaas_serving.__path__):
        if info.ispkg and info.name in PUBLIC_SUBPACKAGES:
            continue  # imported on its own (it needs torch): see the sub-package test below
        assert info.name.startswith("_"), f"module {info.name} must be private (_name)"
        module = importlib.import_module(f"aiaas_serving.{info.name}")
        for name in getattr(module, "__all__", ()):
            if name in exported:
                assert getattr(aiaas_serving, name) is getattr(module, name)
            elif not name.isupper() and info.name not in {"_queue", "_device"}:
                raise AssertionError(f"aiaas_serving.{info.name}.{name} is not exported")


@pytest.mark.parametrize("name", sorted(PUBLIC_SUBPACKAGES))
def test_public_subpackages_declare_a_sorted_resolvable_api(name: str) -> None:
    package = importlib.import_module(f"aiaas_serving.{name}")
    assert list(package.__all__) == sorted(set(package.__all__))
    for exported in package.__all__:
        assert getattr(package, exported) is not None, exported
    for info in pkgutil.iter_modules(package.__path__):
        assert info.name.startswith("_"), f"module {name}.{info.name} must be private (_name)"


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="DoesNotExist"):
        aiaas_serving.DoesNotExist  # noqa: B018
    assert "Runtime" in dir(aiaas_serving)


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, aiaas_serving; "
        "from aiaas_serving import BatchPolicy, Overloaded, InMemoryMetrics, OpenAIEmbeddings; "
        "print(sorted(m for m in ('torch', 'numpy', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert aiaas_serving.__version__ == version("aiaas-serving")
