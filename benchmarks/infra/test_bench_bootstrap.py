"""aiaas-infra: ``bootstrap`` of the example platform against the fake Kubernetes API server.

Two measures: a first bootstrap (every object created) and a no-op re-bootstrap (nothing to
change). Each records its API calls (``extra_info["api_calls"]`` and the calls per verb), the
figure issue 8 asks for; the time includes the fake server's strict validation of every object
it accepts, so it is an upper bound for the client side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from aiaas_infra import example_spec_path, load_spec, packaged_crds_dir, render_platform
from aiaas_infra.cluster._apply import BootstrapReport, apply_objects
from aiaas_infra.secrets._sealing import SealingCertificate
from aiaas_infra.secrets._secrets import SealedStore, seal_secret
from aiaas_infra.testing import SYSTEM_NAMESPACES, FakeKubeApiServer, sealing_keypair

CRDS = packaged_crds_dir()
PREINSTALLED = (*SYSTEM_NAMESPACES, "argocd", "monitoring")


@pytest.fixture(scope="module")
def objects() -> tuple[dict[str, Any], ...]:
    spec = load_spec(example_spec_path())
    cert = SealingCertificate.from_pem(sealing_keypair().cert_pem)
    store = SealedStore()
    for env, environment in spec.environments.items():
        for item in environment.secret_items:
            store = seal_secret(store, cert, spec, env, item.name, b"benchmark-value")
    return render_platform(spec, sealed=store).objects


@pytest.fixture
def servers() -> Iterator[list[FakeKubeApiServer]]:
    started: list[FakeKubeApiServer] = []
    yield started
    for server in started:
        server.stop()


def _record(benchmark: Any, report: BootstrapReport, objects: int) -> None:
    benchmark.extra_info["objects"] = objects
    benchmark.extra_info["api_calls"] = report.api_calls
    benchmark.extra_info["calls_by_verb"] = dict(report.calls_by_verb)


def test_bootstrap(
    benchmark: Any, objects: tuple[dict[str, Any], ...], servers: list[FakeKubeApiServer]
) -> None:
    def fresh() -> tuple[tuple[FakeKubeApiServer], dict[str, Any]]:
        server = FakeKubeApiServer(crds=CRDS, namespaces=PREINSTALLED).start()
        servers.append(server)
        return (server,), {}

    def run(server: FakeKubeApiServer) -> BootstrapReport:
        return asyncio.run(apply_objects(objects, server.kubeconfig()))

    benchmark.group = "infra-bootstrap"
    report = benchmark.pedantic(run, setup=fresh, rounds=3, iterations=1)
    assert report.count("created") == len(objects)
    _record(benchmark, report, len(objects))


def test_noop_rebootstrap(
    benchmark: Any, objects: tuple[dict[str, Any], ...], servers: list[FakeKubeApiServer]
) -> None:
    server = FakeKubeApiServer(crds=CRDS, namespaces=PREINSTALLED).start()
    servers.append(server)
    asyncio.run(apply_objects(objects, server.kubeconfig()))

    def run() -> BootstrapReport:
        return asyncio.run(apply_objects(objects, server.kubeconfig()))

    benchmark.group = "infra-bootstrap"
    report = benchmark.pedantic(run, rounds=5, iterations=1)
    assert not report.changed
    _record(benchmark, report, len(objects))
