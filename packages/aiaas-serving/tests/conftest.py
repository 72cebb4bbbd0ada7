from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Timing-based hypothesis deadlines make a shared, noisy 2-core machine flaky; behaviour is what
# the properties check. More examples in CI, where time is budgeted for it.
settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=250, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def minilm_dir():
    from aiaas_serving import minilm_model_dir

    return minilm_model_dir()


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    """One loaded all-MiniLM-L6-v2 adapter for the session (weights ~90 MB)."""
    from aiaas_serving import SentenceEmbeddingAdapter

    return SentenceEmbeddingAdapter.from_directory(minilm_dir)
