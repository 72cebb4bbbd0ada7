"""world-service end to end at 500 requests/s, open loop: p95 with the middleware vs a bare app.

The platform's rule: the request middleware may add at most 5 % to p95 latency. This benchmark
measures that added p95 on real servers and real sockets, and reports it (benchmarks report; the
figure is not asserted).

Servers, each its own process with one uvicorn worker on a free port of 127.0.0.1:

- ``world``: the real world-service, started from its source tree (``python -m world_service``
  with ``examples/world-service/src`` on ``PYTHONPATH``; examples are not installed in the
  benchmark session): telemetry middleware (request id, server span, metrics, one JSON access-log
  line per request), auth middleware and routes. Tracing is on with the shipped defaults (sampler
  ``always_on``, export in batches of at most 128 spans every 200 ms, GIL switch interval
  1 ms: world-service's defaults) and the OTLP/HTTP exporter pointed at a tiny local
  collector (``_otlp_sink.py``, its own process, which answers 200 and counts the spans, so
  export costs what it costs against a healthy collector). Its JSON logs go to a file.
- ``bare``: ``_bare_world.py``, the same ``GET /world`` body and headers built the same way, with
  no middleware, under ``python -m uvicorn``.

Both run uvicorn with the same settings: the ones world-service's CLI sets (``lifespan on``, no
access log, no ``server`` header, 1 s graceful shutdown here) and uvicorn's defaults for the rest,
``--http auto`` and ``--loop auto`` included, which resolve alike for both (same interpreter and
packages; the resolved names are recorded). Only logging differs: world-service sends uvicorn's
few start/stop lines through its JSON handler.

Also recorded, to explain the figures: each server's CPU time per request (``/proc``, so Linux),
and the spans world exported.

Load: an open-loop generator in this process. Request ``k`` is due at ``start + k * 2 ms``
(absolute times, whatever earlier requests are doing) and its latency runs from that due time to
the last byte of its response, so a stall in the server or in the generator counts in full
(no coordinated omission). Raw non-blocking sockets and ``select`` (microsecond timeouts, unlike
asyncio's millisecond epoll waits; no HTTP client library in the path) over a pool of 64
keep-alive connections used round-robin, grown up to 256 when all are busy, so a request never
waits for a connection. How late the generator itself sent each request is recorded too
(``*_send_lag_p99_ms``): it is part of both servers' figures alike.

Procedure: both servers are warmed up (2 s each at the full rate), then measured in 3 rounds of
5 s each, interleaved ``world bare | bare world | world bare`` so that noise on this shared machine
hits both alike; each round opens fresh connections and runs 1 s of unmeasured load first (which
also covers the tail of world's last span export). Percentiles are over all measured requests of
a server (7,500 each). The run takes about 45 s.

Behaviour is asserted: every response is a 200 with the right body, world's responses carry
``X-Request-ID`` and bare's do not, world exported a span for each request and wrote an access
line for each, and the achieved rate is within 10 % of 500/s (otherwise the measurement is
invalid and the test fails saying so).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORLD_SRC = ROOT / "examples" / "world-service" / "src"

RATE = 500.0  # requests per second, open loop
INTERVAL = 1.0 / RATE
WARMUP_S = 2.0  # per server, before the first round
ROUNDS = 3
ROUND_S = 5.0  # measured, per server and round
ROUND_WARMUP_S = 1.0  # unmeasured load at the start of each round
DRAIN_S = 3.0  # how long answers may take after the last request of a phase is due
POOL = 64  # keep-alive connections opened per phase, used round-robin
MAX_CONNECTIONS = 256  # the pool grows to this when every connection is busy
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 8.0
RATE_TOLERANCE = 0.10
P95_BUDGET_PCT = 5.0  # the platform's rule (reported, not asserted)
MAX_ERROR_SAMPLES = 5

REQUEST = (
    "GET /world HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    "User-Agent: aiaas-bench/1.0\r\nAccept: application/json\r\n\r\n"
)
BODY = re.compile(
    rb'\{"message":"Hello, world-service!",'
    rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"\}'
)
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)
REQUEST_ID = re.compile(rb"\r\nx-request-id:", re.IGNORECASE)
CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
# Variables that would change what either server does; the children get none of them.
SCRUBBED_PREFIXES = ("OTEL_", "WORLD_SERVICE_", "AIAAS_TELEMETRY_")
SCRUBBED = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME")


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SCRUBBED_PREFIXES) and k not in SCRUBBED
    }
    paths = [str(WORLD_SRC), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaps the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=60)


def start(
    stack: ExitStack, name: str, port: int, argv: Sequence[str], *, env: dict[str, str], log: Path
) -> Server:
    stream = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT
    )
    stack.callback(stop, process)  # runs before the log file is closed
    return Server(name, port, process, log)


def wait_ready(server: Server, deadline: float, *, http: bool) -> None:
    while True:
        if server.process.poll() is not None:
            pytest.fail(
                f"{server.name} exited with status {server.process.returncode} before it was"
                f" ready; its log ends with:\n{server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            if not http:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                return
            if fetch_once(server.port)[0] == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{server.name} did not answer within {START_TIMEOUT_S:.0f} s;"
                f" its log ends with:\n{server.log_tail()}"
            )
        time.sleep(0.05)


def fetch_once(port: int) -> tuple[int, bytes]:
    """One blocking ``GET /world`` on a fresh connection (readiness probe)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(REQUEST.format(port=port).encode())
        buf = b""
        while (parsed := parse_response(buf)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a full response")
            buf += chunk
        return parsed[0], parsed[1]


# --- load generator ------------------------------------------------------------------------------


class BadResponseError(Exception):
    pass


def parse_response(buf: bytes) -> tuple[int, bytes, bool, bool] | None:
    """``(status, body, has X-Request-ID, Connection: close)``, or ``None`` while incomplete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[: head_end + 2]
    length = CONTENT_LENGTH.search(head)
    if length is None or not buf.startswith(b"HTTP/1.1 "):
        raise BadResponseError(f"not an HTTP/1.1 response with Content-Length: {head[:200]!r}")
    end = head_end + 4 + int(length[1])
    if len(buf) < end:
        return None
    if len(buf) > end:
        raise BadResponseError("bytes after the response (a request was never sent)")
    return (
        int(buf[9:12]),
        buf[head_end + 4 : end],
        REQUEST_ID.search(head) is not None,
        CONNECTION_CLOSE.search(head) is not None,
    )


@dataclass
class Phase:
    """One run of the schedule against one server: ``warmup_s`` unmeasured, then ``measure_s``."""

    server: str
    latencies: list[float] = field(default_factory=list)  # measured: due time -> last byte
    send_lags: list[float] = field(default_factory=list)  # measured: due time -> sent
    measured: int = 0  # requests due in the measured part
    ok: int = 0  # measured requests answered 200 with the right body
    answered: int = 0  # every complete response, warm-up included
    with_request_id: int = 0  # responses that carried X-Request-ID
    window_s: float = 0.0  # first measured due time -> max(schedule end, last measured answer)
    extra_connections: int = 0  # opened because every pooled connection was busy
    sent: int = 0  # requests sent, warm-up included
    server_cpu_s: float = math.nan  # the server process's CPU time over the phase
    generator_cpu_s: float = 0.0  # this process's CPU time over the phase
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{self.server}: {kind}: {detail}")


class Conn:
    __slots__ = ("buf", "due", "measured", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.due = 0.0
        self.measured = False


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(server: Server, *, warmup_s: float, measure_s: float) -> Phase:
    """Send ``GET /world`` every INTERVAL against absolute due times; bounded by DRAIN_S."""
    phase = Phase(server.name)
    request = REQUEST.format(port=server.port).encode()
    n_warm = round(warmup_s * RATE)
    n = n_warm + round(measure_s * RATE)
    phase.measured = n - n_warm
    idle: deque[Conn] = deque()
    busy: dict[socket.socket, Conn] = {}
    backlog: deque[int] = deque()
    connections = 0

    def drop(conn: Conn, kind: str, detail: str) -> None:
        nonlocal connections
        phase.error(kind, detail)
        busy.pop(conn.sock, None)
        conn.sock.close()
        connections -= 1

    gc_was_enabled = gc.isenabled()
    gc.disable()  # the generator allocates no cycles; keep collector pauses out of its timing
    server_cpu, generator_cpu = process_cpu_s(server.process.pid), time.process_time()
    try:
        for _ in range(POOL):
            idle.append(Conn(server.port))
            connections += 1
        start = time.perf_counter() + 0.005
        measure_start = start + n_warm * INTERVAL
        schedule_end = start + n * INTERVAL
        deadline = schedule_end + DRAIN_S
        last_answer = measure_start
        i = 0
        while True:
            now = time.perf_counter()
            while i < n and start + i * INTERVAL <= now:
                backlog.append(i)
                i += 1
            while backlog:
                if idle:
                    conn = idle.popleft()
                elif connections < MAX_CONNECTIONS:
                    conn = Conn(server.port)  # counted in this request's latency
                    connections += 1
                    phase.extra_connections += 1
                else:
                    break
                k = backlog.popleft()
                conn.due = start + k * INTERVAL
                conn.measured = k >= n_warm
                conn.buf = b""
                busy[conn.sock] = conn
                try:
                    sent = conn.sock.send(request)
                except OSError as exc:
                    drop(conn, "send failed", repr(exc))
                    continue
                if sent != len(request):
                    drop(conn, "send failed", f"{sent} of {len(request)} bytes sent")
                    continue
                phase.sent += 1
                if conn.measured:
                    phase.send_lags.append(time.perf_counter() - conn.due)
            if i >= n and not backlog and not busy:
                break
            now = time.perf_counter()
            if now >= deadline:
                for conn in list(busy.values()):
                    drop(conn, "no answer", f"within {DRAIN_S} s after the last request was due")
                for _ in range(len(backlog) + n - i):
                    phase.error("not sent", "no free connection before the deadline")
                break
            wait = deadline - now if i >= n else min(deadline, start + i * INTERVAL) - now
            if not busy:
                time.sleep(max(wait, 0.0))
                continue
            readable, _, _ = select.select(list(busy), [], [], max(wait, 0.0))
            answered_at = time.perf_counter()
            for sock in readable:
                conn = busy[sock]
                try:
                    chunk = sock.recv(65536)
                except OSError as exc:
                    drop(conn, "receive failed", repr(exc))
                    continue
                if not chunk:
                    drop(conn, "connection closed", "the server closed a busy connection")
                    continue
                conn.buf += chunk
                try:
                    parsed = parse_response(conn.buf)
                except BadResponseError as exc:
                    drop(conn, "bad response", str(exc))
                    continue
                if parsed is None:
                    continue
                status, body, has_request_id, close = parsed
                del busy[sock]
                phase.answered += 1
                phase.with_request_id += has_request_id
                if status != 200 or BODY.fullmatch(body) is None:
                    phase.error("wrong answer", f"{status} {body[:200]!r}")
                elif conn.measured:
                    phase.ok += 1
                    phase.latencies.append(answered_at - conn.due)
                    last_answer = max(last_answer, answered_at)
                if close:
                    sock.close()
                    connections -= 1
                else:
                    idle.append(conn)
        phase.window_s = max(schedule_end, last_answer) - measure_start
        phase.server_cpu_s = process_cpu_s(server.process.pid) - server_cpu
        phase.generator_cpu_s = time.process_time() - generator_cpu
    finally:
        for conn in [*idle, *busy.values()]:
            conn.sock.close()
        if gc_was_enabled:
            gc.enable()
    return phase


def measure(world: Server, bare: Server) -> dict[str, list[Phase]]:
    """Warm both up, then ROUNDS interleaved rounds (order alternating each round)."""
    phases: dict[str, list[Phase]] = {"world": [], "bare": [], "warmup": []}
    for server in (world, bare):
        phases["warmup"].append(run_phase(server, warmup_s=WARMUP_S, measure_s=0.0))
    for round_index in range(ROUNDS):
        order = (world, bare) if round_index % 2 == 0 else (bare, world)
        for server in order:
            phases[server.name].append(
                run_phase(server, warmup_s=ROUND_WARMUP_S, measure_s=ROUND_S)
            )
    return phases


# --- reporting -----------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def summarize(name: str, phases: Sequence[Phase]) -> dict[str, Any]:
    latencies = sorted(x for p in phases for x in p.latencies)
    lags = sorted(x for p in phases for x in p.send_lags)
    window = sum(p.window_s for p in phases)
    ok = sum(p.ok for p in phases)
    sent = max(1, sum(p.sent for p in phases))
    server_cpu = sum(p.server_cpu_s for p in phases)
    generator_cpu = sum(p.generator_cpu_s for p in phases)
    return {
        f"{name}_p50_ms": ms(percentile(latencies, 50)),
        f"{name}_p95_ms": ms(percentile(latencies, 95)),
        f"{name}_p99_ms": ms(percentile(latencies, 99)),
        f"{name}_max_ms": ms(latencies[-1]) if latencies else math.nan,
        f"{name}_p95_by_round_ms": [ms(percentile(sorted(p.latencies), 95)) for p in phases],
        f"{name}_rate_rps": round(ok / window, 1) if window > 0 else 0.0,
        f"{name}_requests": sum(p.measured for p in phases),
        f"{name}_errors": sum(sum(p.errors.values()) for p in phases),
        f"{name}_send_lag_p99_ms": ms(percentile(lags, 99)),
        f"{name}_extra_connections": sum(p.extra_connections for p in phases),
        f"{name}_server_cpu_us_per_request": (
            round(1e6 * server_cpu / sent, 1) if math.isfinite(server_cpu) else None
        ),
        f"{name}_generator_cpu_us_per_request": round(1e6 * generator_cpu / sent, 1),
    }


def read_sink(record: Path) -> tuple[int, int]:
    """``(exports, spans)`` the collector received."""
    exports = spans = 0
    if record.is_file():
        for line in record.read_text(encoding="utf-8").splitlines():
            exports += 1
            spans += int(line.split()[1])
    return exports, spans


def scan_world_log(path: Path) -> tuple[int, list[str], str]:
    """``(access-log lines, error lines, sampler)`` from world-service's JSON log."""
    access = 0
    problems: list[str] = []
    sampler = "?"
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"logger":"aiaas.access"' in line:
            access += 1
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(line[:300])  # not JSON: something wrote past the log handler
            continue
        if record.get("level") in ("error", "critical"):
            problems.append(line[:300])
        config = record.get("config")
        if isinstance(config, dict) and "sampler" in config:
            sampler = str(config["sampler"])
    return access, problems, sampler


def summary_text(info: dict[str, Any]) -> str:
    lines = [
        f"world-service end to end, {RATE:.0f} req/s open loop, {ROUNDS} x {ROUND_S:.0f} s"
        f" per server (uvicorn http={info['uvicorn_http']} loop={info['uvicorn_loop']},"
        f" tracing sampler={info['world_sampler']}):"
    ]
    for name, label in (("world", "world-service"), ("bare", "bare app")):
        lines.append(
            f"  {label:14} p50 {info[f'{name}_p50_ms']:.3f}  p95 {info[f'{name}_p95_ms']:.3f}"
            f"  p99 {info[f'{name}_p99_ms']:.3f}  max {info[f'{name}_max_ms']:.3f} ms;"
            f" p95 by round {info[f'{name}_p95_by_round_ms']};"
            f" {info[f'{name}_rate_rps']} req/s, {info[f'{name}_errors']} errors,"
            f" generator send lag p99 {info[f'{name}_send_lag_p99_ms']:.3f} ms;"
            f" server CPU {info[f'{name}_server_cpu_us_per_request']} µs/request"
        )
    lines.append(
        f"  added p95: {info['added_p95_ms']:+.3f} ms ({info['added_p95_pct']:+.1f} %;"
        f" the platform's budget is {P95_BUDGET_PCT:.0f} %)"
    )
    return "\n".join(lines)


# --- the benchmark -------------------------------------------------------------------------------


@pytest.mark.benchmark(group="world-service-e2e")
def test_world_service_p95_with_middleware_vs_bare_app(
    benchmark: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if find_spec("uvicorn") is None:
        pytest.fail("uvicorn is not installed: it belongs in benchmarks/requirements.txt")
    if not (WORLD_SRC / "world_service" / "_app.py").is_file():
        pytest.fail(f"world-service sources not found under {WORLD_SRC}")
    env = child_env()
    sink_port, world_port, bare_port = free_port(), free_port(), free_port()
    record = tmp_path / "spans.txt"
    uvicorn_flags = ["--lifespan", "on", "--no-access-log", "--no-server-header"]
    uvicorn_flags += ["--http", "auto", "--loop", "auto", "--timeout-graceful-shutdown", "1"]

    with ExitStack() as stack:
        sink = start(
            stack,
            "otlp-sink",
            sink_port,
            [sys.executable, str(HERE / "_otlp_sink.py"), str(sink_port), str(record)],
            env=env,
            log=tmp_path / "sink.log",
        )
        world_env = {
            **env,
            "WORLD_SERVICE_TRACING": "true",
            "WORLD_SERVICE_GRACEFUL_TIMEOUT": "1s",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        }
        world = start(
            stack,
            "world",
            world_port,
            [
                sys.executable,
                "-m",
                "world_service",
                "--host",
                "127.0.0.1",
                "--port",
                str(world_port),
            ],
            env=world_env,
            log=tmp_path / "world.log",
        )
        bare = start(
            stack,
            "bare",
            bare_port,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "_bare_world:app",
                "--app-dir",
                str(HERE),
                "--host",
                "127.0.0.1",
                "--port",
                str(bare_port),
                *uvicorn_flags,
            ],
            env=env,
            log=tmp_path / "bare.log",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        wait_ready(sink, deadline, http=False)
        wait_ready(world, deadline, http=True)
        wait_ready(bare, deadline, http=True)

        phases: dict[str, list[Phase]] = benchmark.pedantic(
            measure, args=(world, bare), rounds=1, iterations=1
        )
        stop(world.process)  # flushes its last spans to the sink
        stop(bare.process)

    exports, spans = read_sink(record)
    access_lines, log_problems, sampler = scan_world_log(world.log_path)
    world_stats, bare_stats = summarize("world", phases["world"]), summarize("bare", phases["bare"])
    added = world_stats["world_p95_ms"] - bare_stats["bare_p95_ms"]
    info: dict[str, Any] = {
        **world_stats,
        **bare_stats,
        "added_p95_ms": round(added, 3),
        "added_p95_pct": round(100 * added / bare_stats["bare_p95_ms"], 2),
        "p95_budget_pct": P95_BUDGET_PCT,
        "target_rate_rps": RATE,
        "uvicorn_http": "httptools" if find_spec("httptools") else "h11",
        "uvicorn_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "world_sampler": sampler,
        "world_spans_exported": spans,
        "world_span_exports": exports,
    }
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print("\n" + summary_text(info))

    # Behaviour: what was measured is what it claims to be.
    all_phases = [p for group in phases.values() for p in group]
    samples = [s for p in all_phases for s in p.error_samples]
    errors = sum(sum(p.errors.values()) for p in all_phases)
    assert errors == 0, f"{errors} failed requests, for example: {samples}"
    world_answers = sum(p.answered for p in all_phases if p.server == "world")
    bare_answers = sum(p.answered for p in all_phases if p.server == "bare")
    assert sum(p.with_request_id for p in all_phases if p.server == "world") == world_answers
    assert sum(p.with_request_id for p in all_phases if p.server == "bare") == 0
    assert world_answers > 0
    assert bare_answers > 0
    assert access_lines >= world_answers, "world-service wrote fewer access-log lines than answers"
    assert spans >= world_answers, f"world-service exported {spans} spans for {world_answers}"
    assert not log_problems, f"world-service logged errors: {log_problems[:3]}"

    # Validity of the measurement itself.
    low = RATE * (1 - RATE_TOLERANCE)
    slow = {
        name: rate
        for name in ("world", "bare")
        if (rate := info[f"{name}_rate_rps"]) < low or rate > RATE * (1 + RATE_TOLERANCE)
    }
    if slow:
        pytest.fail(
            f"measurement invalid: achieved {slow} req/s, not within {RATE_TOLERANCE:.0%} of"
            f" {RATE:.0f}/s; this machine could not sustain the load, so the latencies above"
            " do not describe the service at that rate"
        )
