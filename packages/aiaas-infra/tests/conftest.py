from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from aiaas_infra import (
    LinodeProvider,
    LocalStateBackend,
    PlatformSpec,
    StateStore,
    example_spec_path,
    load_spec,
    packaged_crds_dir,
)
from aiaas_infra.testing import FastClock, LinodeEmulator, emulator_provider

TESTS_DIR = Path(__file__).resolve().parent

# Timing-based hypothesis deadlines make a shared, noisy 2-core machine flaky; behaviour is what
# the properties check.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def linode_fixtures() -> Path:
    """The linode_api4 SDK's recorded API responses (see the folder's README.md)."""
    return TESTS_DIR / "fixtures" / "linode-api4"


@pytest.fixture(scope="session")
def handoff_contract_path() -> Path:
    """The handoff API contract as the platform published it (tests/contracts/README.md)."""
    return TESTS_DIR / "contracts" / "service-handoff-openapi.yaml"


@pytest.fixture(scope="session")
def crds() -> Path:
    """The ArgoCD and SealedSecret CRDs packaged with aiaas-infra."""
    return packaged_crds_dir()


@pytest.fixture
def emulator() -> Iterator[LinodeEmulator]:
    with LinodeEmulator(ready_delay=0.01, kubeconfig_delay=0.02, database_delay=0.01) as em:
        yield em


@pytest.fixture
def clock() -> FastClock:
    return FastClock()


@pytest.fixture
def provider(emulator: LinodeEmulator, clock: FastClock) -> LinodeProvider:
    return emulator_provider(emulator, clock=clock)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(LocalStateBackend(tmp_path / "state"))


@pytest.fixture(scope="session")
def spec() -> PlatformSpec:
    return load_spec(example_spec_path())
