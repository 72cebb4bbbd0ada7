"""Fault injection: 429 storms, 5xx, timeouts and lost responses converge or roll back cleanly,
never leaving a duplicate or an orphaned resource."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from infra_support import apply_spec, assert_no_orphans, live_ids

from aiaas_infra import ApplyError, LocalStateBackend, PlatformSpec, RetryPolicy, StateStore, plan
from aiaas_infra.testing import FastClock, Fault, LinodeEmulator, emulator_provider

CREATE_PATHS = (
    "/networking/firewalls$",
    "/vpcs$",
    r"/vpcs/\d+/subnets$",
    "/lke/clusters$",
    "/object-storage/buckets$",
    "/object-storage/keys$",
    "/databases/postgresql/instances$",
)


@pytest.fixture
def quick() -> Iterator[LinodeEmulator]:
    with LinodeEmulator(ready_delay=0, kubeconfig_delay=0, database_delay=0) as em:
        yield em


def converged(spec: PlatformSpec, em: LinodeEmulator, store: StateStore) -> None:
    assert_no_orphans(em, store)
    em.clear_faults()
    assert not plan(spec, emulator_provider(em), store.latest()).has_changes


def test_a_429_storm_is_ridden_out_honouring_retry_after(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    clock = FastClock()
    provider = emulator_provider(quick, clock=clock)
    for path in CREATE_PATHS:
        quick.inject_status(429, path=path, method="POST", times=2, retry_after=2)
    result = apply_spec(spec, provider, store)
    assert result.outcome == "applied"
    assert clock.sleeps.count(2.0) >= 2 * len(CREATE_PATHS)
    assert sum(1 for r in quick.requests if r.status == 429) >= 2 * len(CREATE_PATHS)
    converged(spec, quick, store)


def test_5xx_bursts_on_reads_and_writes(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    provider = emulator_provider(quick)
    quick.inject_status(503, path="", method="GET", times=4, retry_after=1)
    quick.inject_status(502, path="/lke/clusters", method="PUT", times=2)
    quick.inject_status(500, path="/databases/postgresql/instances$", method="POST", times=2)
    assert apply_spec(spec, provider, store).outcome == "applied"
    converged(spec, quick, store)


def test_every_create_answer_lost_once(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    provider = emulator_provider(quick)
    for path in CREATE_PATHS:
        quick.lose_response(path=path, times=1)
    result = apply_spec(spec, provider, store)
    assert result.outcome == "applied"
    adopted = {s.address for s in result.steps if s.note.startswith("adopted")}
    assert {"firewall.aiaas-nodes", "vpc.aiaas-vpc", "cluster.aiaas-main"} <= adopted
    assert quick.request_count("POST", "/lke/clusters$") == 1  # never re-sent blindly
    converged(spec, quick, store)
    # The keys' secrets were in the lost answers: fresh keys replaced them, one per label.
    assert sorted(k["label"] for k in quick.resources("keys")) == [
        "aiaas-artifacts-reader",
        "aiaas-metrics-writer",
    ]


def test_timeouts_on_creates(spec: PlatformSpec, quick: LinodeEmulator, store: StateStore) -> None:
    provider = emulator_provider(quick, request_timeout=0.15)
    quick.inject_timeout(0.3, path="/lke/clusters$", method="POST")
    quick.inject_timeout(0.3, path="/databases/postgresql/instances$", method="POST", times=2)
    assert apply_spec(spec, provider, store).outcome == "applied"
    converged(spec, quick, store)


def test_a_persistent_5xx_rolls_back_cleanly(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    provider = emulator_provider(quick, retry=RetryPolicy(max_attempts=3, base_delay=0.1))
    quick.lose_response(path="/lke/clusters$")  # adopted first...
    quick.inject_status(500, path="/databases/postgresql/instances$", method="POST", times=None)
    with pytest.raises(ApplyError) as info:
        apply_spec(spec, provider, store)
    assert info.value.result.outcome == "rolled_back"
    assert all(ids == [] for ids in live_ids(quick).values()), live_ids(quick)
    assert "cluster.aiaas-main" in {r.address for r in info.value.result.rollback}


def test_a_create_lost_for_good_is_swept_by_the_rollback(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    """The create happened, every answer was lost, and the probe itself kept failing."""
    from aiaas_infra import apply

    provider = emulator_provider(quick, retry=RetryPolicy(max_attempts=2, base_delay=0.1))
    changes = plan(spec, provider, store.latest())
    quick.lose_response(path="/vpcs$", times=None)
    quick.inject_status(503, path="^/vpcs$", method="GET", times=2)  # the lookups fail too
    with pytest.raises(ApplyError) as info:
        apply(changes, provider, store=store)
    assert info.value.result.outcome == "rolled_back"
    assert live_ids(quick)["vpc"] == []
    notes = {r.note for r in info.value.result.rollback}
    assert "removed a create whose answer was lost" in notes


def test_faults_during_the_rollback_are_retried(
    spec: PlatformSpec, quick: LinodeEmulator, store: StateStore
) -> None:
    provider = emulator_provider(quick)
    quick.inject(
        Fault(
            "status",
            path="/databases/postgresql/instances$",
            method="POST",
            status=400,
            times=None,
            reason="Account Limit reached",
        )
    )
    quick.inject_status(429, path="", method="DELETE", times=5, retry_after=1)
    with pytest.raises(ApplyError) as info:
        apply_spec(spec, provider, store)
    assert info.value.result.outcome == "rolled_back"
    assert all(ids == [] for ids in live_ids(quick).values())


def test_readiness_timeouts_roll_back(spec: PlatformSpec, store: StateStore) -> None:
    with LinodeEmulator(ready_delay=60, kubeconfig_delay=60, database_delay=0) as slow:
        provider = emulator_provider(slow)
        with pytest.raises(ApplyError) as info:
            apply_spec(spec, provider, store, readiness_timeout=5)
        assert info.value.result.outcome == "rolled_back"
        assert "not ready after 5s" in (info.value.result.error or "")
        assert all(ids == [] for ids in live_ids(slow).values())


FAULTS = st.builds(
    Fault,
    kind=st.sampled_from(["status", "drop", "timeout", "latency"]),
    path=st.sampled_from(["", *CREATE_PATHS, "/pools", "/kubeconfig"]),
    method=st.sampled_from([None, "GET", "POST", "PUT", "DELETE"]),
    status=st.sampled_from([429, 500, 502, 503, 504]),
    retry_after=st.sampled_from([None, 1.0, 3.0]),
    delay=st.just(0.25),
    times=st.integers(1, 3),
)


@settings(max_examples=8)
@given(faults=st.lists(FAULTS, max_size=6))
def test_random_faults_converge_or_roll_back(
    spec: PlatformSpec, tmp_path_factory: pytest.TempPathFactory, faults: list[Fault]
) -> None:
    store = StateStore(LocalStateBackend(Path(tmp_path_factory.mktemp("state"))))
    with LinodeEmulator(ready_delay=0, kubeconfig_delay=0, database_delay=0) as em:
        # Waits are real (up to 0.3 s): a request that timed out may land late, as on Linode.
        clock = FastClock(scale=1.0, max_real=0.3)
        policy = RetryPolicy(max_attempts=4, base_delay=0.3, max_delay=0.3, jitter=0)
        provider = emulator_provider(em, clock=clock, request_timeout=0.15, retry=policy)
        for fault in faults:
            em.inject(fault)
        failure: ApplyError | None = None
        try:
            result = apply_spec(spec, provider, store)
        except ApplyError as exc:
            failure = exc
        if failure is not None:
            assert failure.result.outcome == "rolled_back", failure.result.to_dict()
            em.clear_faults()
            assert all(ids == [] for ids in live_ids(em).values()), live_ids(em)
        else:
            assert result.outcome == "applied"
            converged(spec, em, store)
