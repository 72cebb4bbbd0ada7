"""The provider: retries with Retry-After, lost creates found by tag, errors, inventory cost."""

from __future__ import annotations

import pytest

from aiaas_core import ConfigError
from aiaas_infra import (
    AccountLimitError,
    LinodeApiError,
    LinodeProvider,
    PlatformSpec,
    ReadinessTimeoutError,
    RetryPolicy,
    SystemClock,
    desired_resources,
)
from aiaas_infra.provision._plan import scope_for
from aiaas_infra.testing import FastClock, LinodeEmulator, emulator_provider


def firewall(spec: PlatformSpec):
    return desired_resources(spec)["firewall.aiaas-nodes"]


def test_from_env_reads_the_token_and_url(emulator: LinodeEmulator) -> None:
    env = {**emulator.env(), "LINODE_OBJ_ACCESS_KEY": "AK", "LINODE_OBJ_SECRET_KEY": "SK"}
    provider = LinodeProvider.from_env(env)
    assert provider.base_url == emulator.url
    assert provider.obj_credentials is not None
    assert provider.obj_credentials[0] == "AK"
    assert "SK" not in repr(provider)
    assert "emulator-token" not in repr(provider)
    with pytest.raises(ConfigError, match="LINODE_TOKEN"):
        LinodeProvider.from_env({})
    with pytest.raises(LinodeApiError, match="AIAAS_INFRA_POLL_INTERVAL"):
        LinodeProvider.from_env({**env, "AIAAS_INFRA_POLL_INTERVAL": "soon"})
    tuned = LinodeProvider.from_env({**env, "AIAAS_INFRA_POLL_INTERVAL": "0.5"})
    assert tuned.poll_interval == 0.5


def test_retry_after_is_honoured(
    emulator: LinodeEmulator, clock: FastClock, spec: PlatformSpec
) -> None:
    provider = emulator_provider(emulator, clock=clock)
    emulator.inject_status(
        429, path="/networking/firewalls$", method="POST", times=3, retry_after=7
    )
    outcome = provider.create(firewall(spec), {})
    assert outcome.resources[0].name == "aiaas-nodes"
    assert clock.sleeps[:3] == [7.0, 7.0, 7.0]
    assert len(emulator.resources("firewalls")) == 1
    assert emulator.request_count("POST", "/networking/firewalls") == 4


def test_backoff_without_retry_after(emulator: LinodeEmulator, clock: FastClock) -> None:
    provider = emulator_provider(
        emulator, clock=clock, retry=RetryPolicy(base_delay=1, max_delay=3, jitter=0)
    )
    emulator.inject_status(502, path="^/regions/us-ord$", times=3)
    assert provider.region("us-ord")["id"] == "us-ord"
    assert clock.sleeps == [1.0, 2.0, 3.0]


def test_gives_up_after_max_attempts(emulator: LinodeEmulator, clock: FastClock) -> None:
    provider = emulator_provider(
        emulator, clock=clock, retry=RetryPolicy(max_attempts=3, base_delay=0.1)
    )
    emulator.inject_status(503, path="^/regions/us-ord$", times=None)
    with pytest.raises(LinodeApiError) as info:
        provider.region("us-ord")
    assert info.value.api_status == 503
    assert info.value.code == "LINODE_API_ERROR"
    assert emulator.request_count("GET", "^/regions/us-ord$") == 3


def test_a_lost_create_is_found_by_tag_not_duplicated(
    emulator: LinodeEmulator, spec: PlatformSpec
) -> None:
    provider = emulator_provider(emulator)
    emulator.lose_response(path="/networking/firewalls$")
    outcome = provider.create(firewall(spec), {})
    assert outcome.adopted
    assert len(emulator.resources("firewalls")) == 1
    assert emulator.request_count("POST", "/networking/firewalls") == 1


def test_a_lost_key_create_is_replaced_because_its_secret_is_lost(
    emulator: LinodeEmulator, spec: PlatformSpec
) -> None:
    provider = emulator_provider(emulator)
    desired = desired_resources(spec)
    refs = {}
    for addr in ("bucket.aiaas-artifacts",):
        refs[addr] = provider.create(desired[addr], refs).resources[0]
    emulator.lose_response(path="/object-storage/keys$")
    outcome = provider.create(desired["object_key.aiaas-artifacts-reader"], refs)
    keys = emulator.resources("keys")
    assert [k["label"] for k in keys] == ["aiaas-artifacts-reader"]
    assert str(keys[0]["id"]) == outcome.resources[0].id
    assert "secret_key" in outcome.secrets


def test_timeouts_are_retried_safely(emulator: LinodeEmulator, spec: PlatformSpec) -> None:
    provider = emulator_provider(emulator, request_timeout=0.2)
    emulator.inject_timeout(0.5, path="/vpcs$", method="POST")
    vpc = desired_resources(spec)["vpc.aiaas-vpc"]
    outcome = provider.create(vpc, {})
    assert outcome.adopted
    assert len(emulator.resources("vpcs")) == 1


def test_connection_failures_give_a_clear_error(clock: FastClock) -> None:
    provider = LinodeProvider(
        "t",
        base_url="http://127.0.0.1:9/v4",
        clock=clock,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
        request_timeout=0.5,
    )
    with pytest.raises(LinodeApiError, match="no answer from the Linode API after 2 attempts"):
        provider.region("us-ord")


def test_errors_are_translated(emulator: LinodeEmulator, spec: PlatformSpec) -> None:
    from aiaas_infra.testing import AccountLimits

    emulator.set_limits(AccountLimits(firewalls=0))
    provider = emulator_provider(emulator)
    with pytest.raises(AccountLimitError) as info:
        provider.create(firewall(spec), {})
    assert info.value.api_status == 400
    assert info.value.code == "LINODE_ACCOUNT_LIMIT"
    assert "Account Limit reached" in info.value.message
    bad = LinodeProvider("wrong", base_url=emulator.url)
    emulator.token = "right"
    with pytest.raises(LinodeApiError, match="check LINODE_TOKEN"):
        bad.region("us-ord")


def test_inventory_costs_one_call_per_list(emulator: LinodeEmulator, spec: PlatformSpec) -> None:
    provider = emulator_provider(emulator)
    desired = desired_resources(spec)
    before = provider.calls
    inventory = provider.inventory(scope_for(spec, desired, None))
    assert inventory.resources == {}
    # firewalls, vpcs, clusters, buckets, keys, databases (nothing exists yet: no children)
    assert provider.calls - before == 6


def test_readiness_timeout(spec: PlatformSpec) -> None:
    slow = LinodeEmulator(database_delay=60).start()
    try:
        provider = emulator_provider(slow, poll_interval=10)
        desired = desired_resources(spec)
        refs: dict = {}
        for addr in ("vpc.aiaas-vpc", "subnet.aiaas-vpc/data"):
            for live in provider.create(desired[addr], refs).resources:
                refs[live.address] = live
        made = provider.create(desired["database.aiaas-development"], refs).resources[0]
        with pytest.raises(ReadinessTimeoutError, match="not ready after 30s"):
            provider.wait_ready(made, timeout=30)
    finally:
        slow.stop()


def test_system_clock_really_sleeps() -> None:
    clock = SystemClock()
    start = clock.monotonic()
    clock.sleep(0.01)
    clock.sleep(-1)
    assert clock.monotonic() - start >= 0.01


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=10, jitter=0, max_retry_after=60)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert policy.delay(1, retry_after=120) == 60
    jittered = RetryPolicy(base_delay=10, jitter=0.5)
    assert all(5 <= jittered.delay(1) <= 15 for _ in range(50))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
