from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from aiaas_core import error_response_schema

# Timing-based hypothesis deadlines make a shared, noisy 2-core machine flaky; behaviour is what
# the properties check. More examples in CI, where time is budgeted for it.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def error_schema() -> dict[str, object]:
    """The error body's schema as the installed aiaas-core ships it."""
    return error_response_schema()
