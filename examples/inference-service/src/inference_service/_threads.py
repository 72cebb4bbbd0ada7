"""How many threads torch's matrix work may use (intra-op threads).

torch's default is one thread per CPU it can see, on every core the event loop needs as well.
On a busy machine its OpenMP threads wait for each other at every barrier while the scheduler
runs something else: measured on 2 shared cores (load ~10), a batch of 32 short inputs took
1.8-2.0 s with 2 threads and 0.24-0.31 s with 1, and ``/health`` waited up to 0.7 s behind it.
So the service leaves one CPU to the event loop: ``auto`` is the usable CPUs minus one (at least
one). The usable CPUs are the process's CPU affinity, capped by a cgroup v2 CPU quota
(``cpu.max``, what a Kubernetes CPU limit sets), which torch does not read.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Final

__all__ = ["apply_torch_threads", "torch_threads", "usable_cpus"]

CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")

logger = logging.getLogger("inference-service")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup v2 quota (rounded
    up); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cpus)
    if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
        cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def torch_threads(setting: int, cpus: int) -> int:
    """The intra-op threads for ``setting`` (0: auto, the usable CPUs minus one, at least 1)."""
    if setting < 0:
        raise ValueError(f"torch_threads must be >= 0 (0: auto), got {setting}")
    return setting if setting > 0 else max(1, cpus - 1)


def apply_torch_threads(setting: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Set torch's intra-op threads (process-wide) from ``setting``; returns the number set."""
    import torch  # noqa: PLC0415 -- torch loads with the model, never on import

    cpus = usable_cpus(cpu_max)
    threads = torch_threads(setting, cpus)
    torch.set_num_threads(threads)
    logger.info(
        "torch uses %d intra-op thread(s) of %d usable CPU(s)",
        threads,
        cpus,
        extra={"torch_threads": threads, "usable_cpus": cpus},
    )
    return threads
