"""State: snapshots (last 30 kept), atomic writes, the lock, reports; local, S3 (moto) and the
emulator's own S3 endpoint."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from infra_support import apply_spec, assert_no_orphans
from s3_support import emulator_bucket
from s3_support import moto_server as moto_s3_server

from aiaas_infra import (
    LinodeProvider,
    LocalStateBackend,
    PlatformSpec,
    ResourceRecord,
    S3StateBackend,
    SnapshotNotFoundError,
    StateError,
    StateLockedError,
    StateSnapshot,
    StateStore,
    open_state,
    plan,
)
from aiaas_infra.testing import LinodeEmulator


def snapshot(serial: int, **kw: Any) -> StateSnapshot:
    return StateSnapshot(
        serial=serial,
        lineage="lin",
        created_at="2025-01-01T00:00:00Z",
        platform="aiaas",
        outcome="applied",
        run_id=f"run-{serial}",
        actor="tester",
        spec={"name": "aiaas"},
        spec_fingerprint="sha256:x",
        resources={"vpc.v": ResourceRecord("vpc", "v", "1", {"region": "us-ord"})},
        **kw,
    )


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's S3 server as a real local HTTP server."""
    with moto_s3_server() as url:
        yield url


@pytest.fixture
def s3_store(moto_server: str, request: pytest.FixtureRequest) -> StateStore:
    bucket = "state-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    return StateStore(
        S3StateBackend(
            bucket,
            "platform/aiaas",
            endpoint_url=moto_server,
            region="us-east-1",
            access_key="test",
            secret_key="test",
        )
    )


@pytest.fixture
def emulator_s3_store(emulator: LinodeEmulator) -> StateStore:
    """State in a bucket on the emulator's own S3 endpoint, as `--state s3://...` would use it."""
    access, secret = emulator_bucket(emulator, "state-bucket")
    return StateStore(
        S3StateBackend(
            "state-bucket",
            "platform/aiaas",
            endpoint_url=emulator.root,
            region="us-ord",
            access_key=access,
            secret_key=secret,
        )
    )


@pytest.fixture(params=["local", "s3", "emulator-s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "local":
        return StateStore(LocalStateBackend(tmp_path / "state"))
    if request.param == "emulator-s3":
        return request.getfixturevalue("emulator_s3_store")
    return request.getfixturevalue("s3_store")


def test_snapshots_keep_the_last_30(any_store: StateStore) -> None:
    assert any_store.latest() is None
    assert any_store.next_serial() == 1
    for serial in range(1, 34):
        any_store.write(snapshot(serial))
    infos = any_store.list()
    assert [i.serial for i in infos] == list(range(4, 34))
    assert any_store.latest().serial == 33
    assert any_store.get("000010").run_id == "run-10"
    assert any_store.get(12).serial == 12
    assert any_store.get("latest").serial == 33
    with pytest.raises(SnapshotNotFoundError, match="last 30 are kept"):
        any_store.get(2)
    with pytest.raises(SnapshotNotFoundError, match="not a serial"):
        any_store.get("yesterday")
    assert any_store.next_serial() == 34


def test_the_lock_is_exclusive(any_store: StateStore) -> None:
    with any_store.lock(holder="alice", run_id="r1") as info:
        assert info.holder == "alice"
        with pytest.raises(StateLockedError) as err, any_store.lock(holder="bob"):
            pass
        assert err.value.holder["run_id"] == "r1"
        assert "locked by alice" in err.value.message
    assert any_store.lock_info() is None
    with any_store.lock(holder="bob"):
        pass


def test_concurrent_lockers_one_wins(any_store: StateStore) -> None:
    winners: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(4)
    tried = threading.Semaphore(0)

    def contend(name: str) -> None:
        barrier.wait(timeout=30)
        try:
            with any_store.lock(holder=name):
                winners.append(name)
                # Held until the three others have tried: a condition, not a guess at how long
                # they take on a loaded machine.
                for _ in range(3):
                    if not tried.acquire(timeout=30):
                        return
        except StateLockedError:
            refused.append(name)
            tried.release()

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(winners) == 1
    assert len(refused) == 3


def test_force_unlock(any_store: StateStore) -> None:
    ctx = any_store.lock(holder="dead run")
    ctx.__enter__()
    assert any_store.force_unlock().holder == "dead run"
    assert any_store.lock_info() is None


def test_environment_records_and_reports(any_store: StateStore) -> None:
    assert any_store.environments() == {}
    now = datetime.now(UTC)
    keys = any_store.write_report(
        "drift", now - timedelta(days=100), {"json": b"{}", "md": b"# old"}
    )
    assert len(any_store.reports("drift")) == 0  # pruned at once: older than 90 days
    assert all(any_store.backend.get(k) is None for k in keys)
    any_store.write_report("drift", now, {"json": b"{}"})
    assert len(any_store.reports("drift")) == 1


def test_local_writes_are_atomic_and_clean(tmp_path: Path) -> None:
    backend = LocalStateBackend(tmp_path)
    backend.put("a/b.json", b"1")
    backend.put("a/b.json", b"2")
    assert backend.get("a/b.json") == b"2"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]  # no temp files left
    assert backend.put_if_absent("a/b.json", b"3") is False
    backend.delete("a/b.json")
    backend.delete("a/b.json")
    assert backend.list("nothing/") == []
    with pytest.raises(ValueError, match="invalid state key"):
        backend.get("../escape")


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    store = StateStore(LocalStateBackend(tmp_path))
    store.backend.put("snapshots/000001.json", b"not json")
    with pytest.raises(StateError, match="not JSON"):
        store.latest()
    store.backend.put("snapshots/000001.json", json.dumps({"format": 9}).encode())
    with pytest.raises(StateError, match="format 9"):
        store.latest()
    store.backend.put("snapshots/000001.json", json.dumps({"format": 1, "serial": 1}).encode())
    with pytest.raises(StateError, match="malformed field"):
        store.latest()


def test_open_state(tmp_path: Path, moto_server: str) -> None:
    assert isinstance(open_state(tmp_path).backend, LocalStateBackend)
    s3 = open_state(
        "s3://bucket/prefix/x",
        endpoint_url=moto_server,
        region="us-east-1",
        access_key="a",
        secret_key="b",
    )
    assert isinstance(s3.backend, S3StateBackend)
    assert s3.backend.describe() == "s3://bucket/prefix/x"
    with pytest.raises(ValueError, match="no bucket"):
        open_state("s3://")


def test_apply_with_s3_state(
    spec: PlatformSpec, provider: LinodeProvider, s3_store: StateStore, emulator: LinodeEmulator
) -> None:
    result = apply_spec(spec, provider, s3_store)
    assert result.snapshot is not None
    assert_no_orphans(emulator, s3_store)
    assert not plan(spec, provider, s3_store.latest()).has_changes
    assert s3_store.environments()["production"].status == "ready"
    text = b"".join(s3_store.backend.get(k) or b"" for k in s3_store.backend.list(""))
    for secrets in result.secrets.values():
        for secret in secrets.values():
            assert secret.get_secret_value().encode() not in text
