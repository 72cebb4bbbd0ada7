"""aiaas-infra: plan and apply of 4, 16 and 64 environments against the Linode API emulator.

What is measured is our share of a provisioning run: wall time (with the emulator's readiness
delays at zero, so Linode's own provisioning time is excluded) and Linode API calls. A no-op plan
must not cost more than one call per managed resource plus pages: the benchmark checks that
budget (a behaviour, not a timing) and records both numbers. The concurrency benchmark applies
16 environments with 20 ms of injected latency per request, sequentially and 8 at a time.

SPEC targets (full provision within 45 min, incremental within 10) are dominated by Linode's
provisioning; the figures here are the tool's overhead on top.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest

from aiaas_infra import (
    LocalStateBackend,
    PlatformSpec,
    StateStore,
    apply,
    desired_resources,
    example_spec_path,
    load_spec,
    plan,
    spec_from_dict,
    spec_to_dict,
)
from aiaas_infra.testing import AccountLimits, LinodeEmulator, emulator_provider

SIZES = (4, 16, 64)


def platform(environments: int) -> PlatformSpec:
    """The example spec with ``environments`` environments, each with its own database."""
    data = copy.deepcopy(spec_to_dict(load_spec(example_spec_path())))
    for i in range(environments - len(data["environments"])):
        data["environments"][f"team{i:02d}"] = {
            "pools": ["general"],
            "quota": {"cpu": "4", "memory": "8Gi", "pods": 50},
            "database": {"type": "g6-nanode-1", "subnet": "data"},
        }
    return spec_from_dict(data)


def emulator(latency: float = 0.0) -> LinodeEmulator:
    em = LinodeEmulator(
        ready_delay=0,
        kubeconfig_delay=0,
        database_delay=0,
        limits=AccountLimits(databases=200, nodes=1000),
    ).start()
    if latency:
        em.inject_latency(latency)
    return em


def fresh_store() -> StateStore:
    return StateStore(LocalStateBackend(Path(tempfile.mkdtemp(prefix="aiaas-bench-"))))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.benchmark(group="infra-plan-noop")
def test_noop_plan(benchmark: Any, size: int) -> None:
    spec = platform(size)
    em = emulator()
    try:
        provider = emulator_provider(em)
        store = fresh_store()
        apply(plan(spec, provider), provider, store=store, actor="bench")
        state = store.latest()
        calls: list[int] = []

        def run() -> None:
            result = plan(spec, provider, state)
            assert not result.has_changes
            calls.append(result.api_calls)

        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
        managed = len(desired_resources(spec))
        assert max(calls) <= managed  # one call per managed resource at most (plus pages)
        benchmark.extra_info.update(
            environments=size, managed_resources=managed, api_calls=max(calls)
        )
    finally:
        em.stop()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.benchmark(group="infra-apply-full")
def test_full_apply(benchmark: Any, size: int) -> None:
    spec = platform(size)
    calls: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        em = emulator()
        return (em,), {}

    def run(em: LinodeEmulator) -> None:
        try:
            provider = emulator_provider(em)
            result = apply(
                plan(spec, provider), provider, store=fresh_store(), actor="bench", concurrency=8
            )
            assert result.outcome == "applied"
            calls.append(provider.calls)
        finally:
            em.stop()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info.update(
        environments=size, managed_resources=len(desired_resources(spec)), api_calls=max(calls)
    )


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.benchmark(group="infra-apply-latency")
def test_apply_under_latency(benchmark: Any, concurrency: int) -> None:
    spec = platform(16)
    calls: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (emulator(latency=0.02),), {}

    def run(em: LinodeEmulator) -> None:
        try:
            provider = emulator_provider(em)
            result = apply(plan(spec, provider), provider, actor="bench", concurrency=concurrency)
            assert result.outcome == "applied"
            calls.append(provider.calls)
        finally:
            em.stop()

    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)
    benchmark.extra_info.update(concurrency=concurrency, latency_ms=20, api_calls=max(calls))
