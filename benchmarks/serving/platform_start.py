"""Time to ready of the platform in a box (``inference-service`` in local mode, what ``nox -s
platform`` runs): a first start with an empty data directory (initdb, both platform components
migrated, the local-dev seed, the model loaded), then starts with the same data directory.

    python benchmarks/serving/platform_start.py [--runs 3] [--data-dir DIR]

Each run spawns the command, waits for its ready banner on stdout (the seconds from the spawn are
what a user waits), sends SIGINT and checks it exits 0. Run it with the Python of an environment
that has inference-service installed (``.nox/platform/bin/python`` after ``nox -s platform``, or
the dev virtualenv). Prints a JSON document with every time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

READY = b"Ctrl-C stops it"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_once(data_dir: Path, *, fresh: bool = False, timeout: float = 300) -> tuple[float, str]:
    """Seconds from spawning ``inference-service`` to its banner, and the banner's data line;
    stops it with SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_SERVICE_")}
    args = [sys.executable, "-m", "inference_service", "--port", str(_free_port())]
    args += ["--data-dir", str(data_dir), *(["--fresh"] if fresh else [])]
    with tempfile.TemporaryFile() as log:  # the JSON logs (stderr), read only on failure
        return _time_to_ready(args, env, log, timeout)


def _time_to_ready(
    args: list[str], env: dict[str, str], log: IO[bytes], timeout: float
) -> tuple[float, str]:
    began = time.monotonic()
    # SIGINT stops it as Ctrl-C would, even when this script runs from a background shell job
    # (which starts children with SIGINT ignored): the child starts with the default handling.
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert proc.stdout is not None

    def tail() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    seen = b""
    try:
        while READY not in seen:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=timeout)
                raise SystemExit(f"inference-service exited early: {tail()}")
            seen += line
            if time.monotonic() - began > timeout:
                raise SystemExit(f"no ready banner within {timeout:.0f} s")
        ready = time.monotonic() - began
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"exit status {proc.returncode}: {tail()}")
        data = [line.strip() for line in seen.decode().splitlines() if line.startswith("  data ")]
        return ready, data[0] if data else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="starts with the same data directory")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary folder, removed after")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="platform-start-"))
    workdir.chmod(0o755)  # as root, PostgreSQL runs as another OS user that must reach it
    data_dir = args.data_dir or workdir / "pg"
    try:
        first, where = start_once(data_dir, fresh=True)
        again = [start_once(data_dir)[0] for _ in range(args.runs)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "data": where,
        "first_start_s": round(first, 2),
        "second_start_s": [round(t, 2) for t in again],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
