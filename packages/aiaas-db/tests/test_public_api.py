from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import aiaas_db
from aiaas_core import AiaasError


def test_all_is_sorted_and_unique() -> None:
    assert aiaas_db.__all__ == sorted(aiaas_db.__all__)
    assert len(set(aiaas_db.__all__)) == len(aiaas_db.__all__)


#: The public sub-packages: narrower namespaces over the same objects.
SUBPACKAGES = {"analytics", "cli", "local", "migrations", "platform", "quality", "server"}


def test_all_is_complete_and_every_name_resolves() -> None:
    assert set(aiaas_db.__all__) == {*aiaas_db._LAZY, "__version__"}
    subpackages = set()
    for info in pkgutil.walk_packages(aiaas_db.__path__, "aiaas_db."):
        parts = info.name.split(".")[1:]
        if info.ispkg:
            assert len(parts) == 1, f"{info.name}: one level of sub-packages"
            subpackages.add(parts[0])
            package = importlib.import_module(info.name)
            assert package.__all__ == sorted(package.__all__), info.name
            for name in package.__all__:
                if name != "main":  # the CLI's entry point is not a top-level name
                    assert getattr(aiaas_db, name) is getattr(package, name), f"{info.name}.{name}"
            continue
        assert parts[-1].startswith("_"), f"module {info.name} must be private (_name)"
        module = importlib.import_module(info.name)
        owner = importlib.import_module(".".join(info.name.split(".")[:-1]))
        for name in getattr(module, "__all__", ()):
            if not name.isupper():  # constants stay in their module
                exported = name in aiaas_db.__all__ or name == "main"
                assert exported, f"{info.name}.{name} is not exported"
                if owner is not aiaas_db:
                    assert name in owner.__all__, f"{info.name}.{name} not in {owner.__name__}"
            if name in aiaas_db.__all__:
                assert getattr(aiaas_db, name) is getattr(module, name)
    assert subpackages == SUBPACKAGES
    for name in aiaas_db.__all__:
        assert getattr(aiaas_db, name) is not None, name
    assert aiaas_db.__version__ == "0.1.0"


def test_lazy_names_are_defined_where_the_map_says() -> None:
    for name, module in aiaas_db._LAZY.items():
        mod = importlib.import_module(f"aiaas_db.{module}")
        assert name in getattr(mod, "__all__", []), f"{name} missing from {module}.__all__"


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = aiaas_db.nope  # type: ignore[attr-defined]


def test_dir_lists_public_names() -> None:
    assert set(aiaas_db.__all__) <= set(dir(aiaas_db))


def test_import_is_lazy() -> None:
    code = (
        "import sys, aiaas_db; "
        "heavy = [m for m in ('psycopg', 'rich', 'click', 'opentelemetry', "
        "'aiaas_db.migrations._migrator') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_errors_are_aiaas_errors_with_stable_codes() -> None:
    codes = {
        "ApprovalRequiredError": ("MIGRATION_APPROVAL_REQUIRED", 403),
        "ChangeSetError": ("MIGRATION_SOURCE_INVALID", 422),
        "ChecksumMismatchError": ("MIGRATION_CHECKSUM_MISMATCH", 409),
        "DatabaseUnavailableError": ("DATABASE_UNAVAILABLE", 503),
        "DrillFailedError": ("MIGRATION_DRILL_FAILED", 500),
        "EmbeddedPostgresNotFoundError": ("POSTGRES_EMBEDDED_MISSING", 500),
        "LocalPostgresError": ("POSTGRES_LOCAL_FAILED", 503),
        "LockTimeoutError": ("MIGRATION_LOCK_TIMEOUT", 423),
        "MigrationCheckFailedError": ("MIGRATION_CHECK_FAILED", 500),
        "MigrationDirtyError": ("MIGRATION_DIRTY", 409),
        "MigrationFailedError": ("MIGRATION_FAILED", 500),
        "MigrationFailedHeadError": ("MIGRATION_FAILED_HEAD", 409),
        "MigrationNotFoundError": ("MIGRATION_NOT_FOUND", 404),
        "MigrationRefusedError": ("MIGRATION_REFUSED", 400),
        "MissingChangeSetError": ("MIGRATION_SOURCE_MISSING", 409),
        "NothingToRecoverError": ("MIGRATION_NOTHING_TO_RECOVER", 409),
        "OutOfOrderError": ("MIGRATION_OUT_OF_ORDER", 409),
        "PostgresNotFoundError": ("POSTGRES_NOT_FOUND", 500),
        "PostgresSourceError": ("POSTGRES_SOURCE_INVALID", 500),
    }
    for name, (code, status) in codes.items():
        cls = getattr(aiaas_db, name)
        assert issubclass(cls, AiaasError)
        assert issubclass(cls, aiaas_db.MigrationError)
        assert (cls.code, cls.status) == (code, status), name


def test_error_carries_component_versions_and_report_slot() -> None:
    err = aiaas_db.MigrationDirtyError("dirty", component="app", versions=[3, 1])
    assert err.component == "app"
    assert err.versions == (3, 1)
    assert err.report is None
    assert "MIGRATION_DIRTY" in repr(err)
    change = aiaas_db.ChangeSetError(["a", "b"], origin="/x")
    assert change.problems == ("a", "b")
    assert "2 problem(s)" in change.message
    assert "/x" in change.message
    drill = aiaas_db.DrillFailedError("bad", differences=["- x", "+ y"])
    assert drill.detail == "- x\n+ y"


def test_unknown_event_names_are_rejected() -> None:
    from aiaas_db.migrations._telemetry import EVENTS, emit

    assert "migration_start" in EVENTS
    with pytest.raises(ValueError, match="unknown migration event"):
        emit("migration_typo", "x")
