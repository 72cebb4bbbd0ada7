"""A liveness prober, run as its own process so the load generator cannot delay its clock:
``python chaos/_prober.py URL OUT.json [INTERVAL_S]`` sends ``GET URL`` every interval over one
kept-alive connection until SIGTERM, then writes ``{"latencies_ms": [...], "failures": [...]}``
(a failure: no 200 within 5 s, or a broken connection; it is reconnected) and ``"slow"``: the
``time.monotonic()`` (system-wide) and latency of each probe over 100 ms or failed."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from types import FrameType
from urllib.parse import urlsplit

TIMEOUT_S = 5.0
SLOW_MS = 100.0


def main(argv: list[str]) -> int:
    url, out = argv[0], argv[1]
    interval = float(argv[2]) if len(argv) > 2 else 0.05
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    stop = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    latencies: list[float] = []
    failures: list[str] = []
    slow: list[tuple[float, float]] = []
    conn: http.client.HTTPConnection | None = None
    next_at = time.monotonic()
    while not stop:
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        started = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if elapsed > SLOW_MS:
                slow.append((time.monotonic(), elapsed))
            if response.status == 200:
                latencies.append(elapsed)
            else:
                failures.append(f"status {response.status} after {elapsed:.1f} ms")
        except (OSError, http.client.HTTPException) as exc:
            slow.append((time.monotonic(), (time.perf_counter() - started) * 1000))
            failures.append(
                f"{type(exc).__name__} after {(time.perf_counter() - started) * 1000:.1f} ms"
            )
            conn.close()
            conn = None
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    if conn is not None:
        conn.close()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"latencies_ms": latencies, "failures": failures, "slow": slow}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
