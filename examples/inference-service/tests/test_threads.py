"""torch's intra-op threads: one CPU is left to the event loop (the fault campaign found torch's
default of one thread per CPU 7x slower on 2 busy cores, with ``/health`` waiting behind it)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import Platform, make_service, serve
from inference_service import load
from inference_service._threads import apply_torch_threads, torch_threads, usable_cpus

from aiaas_core import ConfigError

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),
        ("50000 100000\n", 1),  # half a CPU: one
        ("150000 100000\n", min(AFFINITY, 2)),  # rounded up
        ("100000000 100000\n", AFFINITY),  # a quota above the affinity does not add CPUs
        ("garbage\n", AFFINITY),
        ("0 0\n", AFFINITY),
    ],
)
def test_usable_cpus_read_the_cgroup_quota(tmp_path: Path, cpu_max: str, expected: int) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert usable_cpus(path) == expected


def test_usable_cpus_without_a_cgroup_file(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path / "absent") == AFFINITY


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"), [(0, 1, 1), (0, 2, 1), (0, 8, 7), (3, 2, 3), (1, 16, 1)]
)
def test_auto_leaves_one_cpu_to_the_event_loop(setting: int, cpus: int, expected: int) -> None:
    assert torch_threads(setting, cpus) == expected


def test_a_negative_thread_count_is_refused() -> None:
    with pytest.raises(ValueError, match="torch_threads must be >= 0"):
        torch_threads(-1, 4)
    with pytest.raises(ConfigError) as info:
        load({"INFERENCE_SERVICE_TORCH_THREADS": "-2"}, {})
    assert "torch_threads" in str(info.value)


def test_apply_sets_torch_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, restore_threads: None
) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("300000 100000\n")
    with caplog.at_level(logging.INFO, logger="inference-service"):
        threads = apply_torch_threads(0, quota)
    assert threads == max(1, min(AFFINITY, 3) - 1)
    assert torch.get_num_threads() == threads
    (record,) = [r for r in caplog.records if "intra-op" in r.getMessage()]
    assert record.__dict__["torch_threads"] == threads


async def test_the_service_sets_its_threads_before_loading_the_model(
    platform: Platform, telemetry: Any, minilm: Any, restore_threads: None
) -> None:
    torch.set_num_threads(AFFINITY)
    service = make_service(
        platform.database(), telemetry, minilm, INFERENCE_SERVICE_TORCH_THREADS="1"
    )
    async with serve(service) as client:
        assert torch.get_num_threads() == 1
        response = await client.post(
            "/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": ["one thread"]},
            headers={"Authorization": f"Bearer {platform.token}"},
        )
        assert response.status_code == 200, response.text
