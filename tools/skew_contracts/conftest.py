"""The cross-package contract tests of the version-skew matrix (``tools/skew.py`` runs them).

They use only the packages' public APIs and run against whatever versions are importable: the
matrix installs one combination of wheels into a folder on ``PYTHONPATH`` per run and names the
versions it intended in ``AIAAS_SKEW_EXPECT`` (JSON: distribution -> version). A package that a
combination does not hold is deselected by its marker (``-m "not aiaas_infra"``), never skipped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

PACKAGE_MARKERS = ("aiaas_db", "aiaas_infra", "aiaas_serving", "aiaas_telemetry")


def pytest_configure(config: pytest.Config) -> None:
    for marker in PACKAGE_MARKERS:
        dist = marker.replace("_", "-")
        config.addinivalue_line("markers", f"{marker}: needs {dist} in the combination")


@pytest.fixture(scope="session")
def expected_versions() -> dict[str, Any]:
    raw = os.environ.get("AIAAS_SKEW_EXPECT", "")
    if not raw.strip():
        pytest.fail(
            "AIAAS_SKEW_EXPECT is not set: these tests run inside a combination of the "
            "version-skew matrix (python -m nox -s skew)"
        )
    expected = json.loads(raw)
    assert isinstance(expected, dict)
    return expected
