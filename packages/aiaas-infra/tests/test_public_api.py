"""The public API is exactly what __all__ declares, sorted, complete and importable."""

from __future__ import annotations

import ast
import importlib
import itertools
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import aiaas_infra
import aiaas_infra.testing


def test_all_is_a_sorted_unique_literal() -> None:
    assert list(aiaas_infra.__all__) == sorted(set(aiaas_infra.__all__))
    source = Path(aiaas_infra.__file__).read_text()
    tree = ast.parse(source)
    literal = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    )
    assert isinstance(literal, ast.List), "__all__ must be a literal list"
    assert [e.value for e in literal.elts] == list(aiaas_infra.__all__)  # type: ignore[attr-defined]


def test_all_matches_the_lazy_table() -> None:
    assert set(aiaas_infra.__all__) == {*aiaas_infra._LAZY, "__version__"}


def test_every_exported_name_resolves() -> None:
    for name in aiaas_infra.__all__:
        if name in aiaas_infra._DEPRECATED:
            continue  # the test doubles warn here: test_testing_namespace.py resolves them
        assert getattr(aiaas_infra, name) is not None, name
    for name in aiaas_infra.testing.__all__:
        assert getattr(aiaas_infra.testing, name) is not None, name


#: The public sub-packages: narrower namespaces over the same objects (the doubles: .testing).
SUBPACKAGES = {"access", "cli", "cluster", "provision", "secrets", "spec", "testing"}


def test_exports_are_complete() -> None:
    """Every public name a private module declares is exported by its sub-package, and by the
    top level (the test doubles only by .testing)."""
    exported = set(aiaas_infra.__all__)
    subpackages = set()
    for info in pkgutil.walk_packages(aiaas_infra.__path__, "aiaas_infra."):
        parts = info.name.split(".")[1:]
        if info.ispkg:
            if parts[-1].startswith("_"):
                continue  # a sub-package's private package (testing._linode): modules below
            assert len(parts) == 1, f"{info.name}: one level of sub-packages"
            subpackages.add(parts[0])
            package = importlib.import_module(info.name)
            assert package.__all__ == sorted(package.__all__), info.name
            continue
        assert parts[-1].startswith("_"), f"module {info.name} must be private (_name)"
        module = importlib.import_module(info.name)
        public = itertools.takewhile(lambda part: not part.startswith("_"), parts[:-1])
        owner = importlib.import_module(".".join(["aiaas_infra", *public]))
        for name in getattr(module, "__all__", ()):
            if name.isupper():
                continue  # constants stay in their module
            if owner is not aiaas_infra:
                assert name in owner.__all__, f"{info.name}.{name} not in {owner.__name__}"
                assert getattr(owner, name) is getattr(module, name)
            if owner is aiaas_infra.testing or name == "main":
                continue
            assert name in exported, f"{info.name}.{name} is not exported"
            assert getattr(aiaas_infra, name) is getattr(module, name)
    assert subpackages == SUBPACKAGES


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="DoesNotExist"):
        aiaas_infra.DoesNotExist  # noqa: B018
    assert "plan" in dir(aiaas_infra)


def test_import_is_lazy() -> None:
    heavy = ("linode_api4", "cattrs", "boto3", "rich", "requests")
    code = f"import sys, aiaas_infra; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    assert aiaas_infra.__version__ == version("aiaas-infra")


def test_example_spec_is_package_data() -> None:
    path = aiaas_infra.example_spec_path()
    assert path.name == "platform.yaml"
    assert path.is_file()
