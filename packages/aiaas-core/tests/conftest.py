from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DIR = Path(os.environ.get("AIAAS_SHARED_DIR", REPO_ROOT.parent / "shared"))

# Timing-based hypothesis deadlines make a shared, noisy 2-core machine flaky; behaviour is what
# the properties check. More examples in CI, where time is budgeted for it.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED_DIR / "contracts").is_dir():
        pytest.fail(
            f"shared contracts not found at {SHARED_DIR}; lay shared/ beside the repository "
            "or set AIAAS_SHARED_DIR"
        )
    return SHARED_DIR


@pytest.fixture(scope="session")
def error_schema(shared_dir: Path) -> dict[str, object]:
    import json

    return json.loads((shared_dir / "contracts" / "error-response.schema.json").read_text())
