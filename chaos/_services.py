"""What the serving, telemetry and fuzzing campaigns share: services started as real processes
(their log on a file, every wait bounded), a platform database on a real PostgreSQL that can be
stopped and started again, and the service's own ``/metrics``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

MODEL = "all-MiniLM-L6-v2"
#: The seed secret of the platform database the campaigns create (its local-dev key derives
#: from it; the key is looked for in every log the campaigns capture).
SEED_SECRET = "chaos-serving-seed-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any service, telemetry or aiaas-db settings, plus
    ``extra``."""
    prefixes = ("INFERENCE_SERVICE_", "WORLD_SERVICE_", "OTEL_", "AIAAS_DB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


@dataclass
class Process:
    """A service process whose stdout and stderr go to ``log`` (a pipe could fill and block
    it under load)."""

    proc: subprocess.Popen[bytes]
    log: Path
    base: str
    _fh: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines."""
        out = []
        for line in self.text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def wait_ready(self, path: str = "/ready", timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.base}: exited early:\n{self.text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}{path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"{self.base}: not ready in {timeout} s:\n{self.text()[-3000:]}")

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM, then wait (bounded): the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.base}: still running {timeout} s after SIGTERM:\n{self.text()[-3000:]}"
            ) from None
        self._fh.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._fh.close()

    def vm_kib(self, field: str) -> int:
        """``VmHWM`` (peak resident set), ``VmRSS``... of the process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")


def spawn(argv: list[str], env: Mapping[str, str], port: int, log: Path) -> Process:
    fh = log.open("wb")
    proc = subprocess.Popen(argv, env=dict(env), stdout=fh, stderr=subprocess.STDOUT)
    return Process(proc, log, f"http://127.0.0.1:{port}", fh)


@contextmanager
def running(argv: list[str], env: Mapping[str, str], port: int, log: Path) -> Iterator[Process]:
    """The process, killed (bounded) if the block leaves it running."""
    process = spawn(argv, env, port, log)
    try:
        yield process
    finally:
        process.kill()


def inference_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "inference_service", "--port", str(port)]


@dataclass
class Platform:
    """A platform database (schema and local-dev seed) on a cluster that can stop and start."""

    cluster: Any  # aiaas_db.LocalPostgres
    url: str
    token: str
    hash_key: str

    def service_env(self, **extra: str) -> dict[str, str]:
        """The service's environment on this database; ``extra`` adds or overrides settings."""
        defaults = {
            "OTEL_SDK_DISABLED": "true",
            "INFERENCE_SERVICE_TRACING": "false",
            "INFERENCE_SERVICE_DEVICE": "cpu",
            # Embeddings only (unless overridden): most campaigns load the embedding model only.
            "INFERENCE_SERVICE_CHAT": "false",
            "INFERENCE_SERVICE_DATABASE_URL": self.url,
            "INFERENCE_SERVICE_API_KEY_HASH_KEY": self.hash_key,
        }
        return clean_env(**{**defaults, **extra})


@contextmanager
def platform_database() -> Iterator[Platform]:
    """A persistent cluster in a temporary folder on a fixed port (so it can be stopped and
    started again at the same URL), migrated and seeded; removed afterwards."""
    from inference_service import prepare_platform

    from aiaas_db import (
        LocalPostgres,
        local_dev_api_key,
        seed_api_key_hash_key,
    )

    base = tempfile.mkdtemp(prefix="chaos-pg-")
    os.chmod(base, 0o755)  # noqa: S103 -- PostgreSQL runs as another user when we are root
    cluster = LocalPostgres(Path(base) / "cluster", port=free_port())
    try:
        cluster.start()
        url = cluster.create_database("platform")
        prepare_platform(url, seed_secret=SEED_SECRET)
        yield Platform(
            cluster=cluster,
            url=url,
            token=local_dev_api_key(SEED_SECRET),
            hash_key=seed_api_key_hash_key(SEED_SECRET),
        )
    finally:
        try:
            cluster.stop(timeout=30)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for sample, have, value in metric_samples(text)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]
