"""Before/after: the middleware's CPU per request and the exporter's encoding per span, one run.

Usage (from the repository root, in an environment with aiaas-telemetry installed from this tree
and pytest, opentelemetry-proto and opentelemetry-instrumentation-asgi available --
benchmarks/requirements.txt)::

    python benchmarks/telemetry/compare_perf.py --before HEAD --rounds 6

``--before`` is a git revision: its ``packages/aiaas-telemetry/src`` is extracted (``git
archive``, read-only) into a temporary folder and imported ahead of the installed package in the
"before" processes. Each round runs one process per variant, alternating the order (before/after,
after/before, ...) so that noise on a shared machine hits both alike. In each process:

- ``bare``, ``tracing off``, ``tracing on``, ``tracing on, no access log``: µs per request of
  one in-process ASGI request (the drivers of ``test_bench_middleware.py``: prebuilt scope, an
  inbound ``traceparent``, spans to an exporter that drops them, JSON logs to /dev/null), the
  median of 7 repetitions of 2,000 requests, variants interleaved;
- ``otel_asgi``, ``otel_asgi_no_receive_send``: the peer, OpenTelemetry's ASGI middleware
  (opentelemetry-instrumentation-asgi; with and without its ``receive``/``send`` child spans) on
  the same tracer provider, under a minimal prometheus-client histogram middleware
  (``test_bench_middleware.py``'s peer), driven the same way;
- ``encode``: µs per span to encode a batch of 128 of the middleware's own server spans for
  OTLP/HTTP the way the default exporter of that tree does (the SDK's ``encode_spans`` +
  ``SerializePartialToString`` before, ``encode_otlp_spans`` after), median of 15 repetitions.

Times are the measuring thread's CPU time (``time.thread_time``): on a shared, oversubscribed
machine the wall clock also counts the time the process waited for a core, which swamps a
difference of a few microseconds; CPU time does not (cache effects of other load remain).

Printed: each round's figures, the median over rounds and the lowest repetition per variant, with
after/before ratios, and the added cost over the bare app.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VARIANTS = ("bare", "tracing_off", "tracing_on", "tracing_on_no_log", "encode_per_span")
# OpenTelemetry's ASGI middleware (with and without its receive/send child spans) under a minimal
# prometheus-client histogram middleware: the peer, measured in the same processes.
PEERS = ("otel_asgi", "otel_asgi_no_receive_send")


def child() -> None:  # pragma: no cover - runs in the measured subprocess
    import logging
    import time

    sys.path.insert(0, str(HERE))
    import test_bench_middleware as bench
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    import aiaas_telemetry
    from aiaas_telemetry import load_profile, setup

    logging.getLogger().handlers[:] = []
    collected: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            collected.extend(spans)
            return SpanExportResult.SUCCESS

    devnull = open(os.devnull, "w")  # noqa: SIM115 -- lives as long as the process
    made = []

    def make(*, tracing: bool, exporter: Any = None) -> Any:
        profile = load_profile({"service_name": "bench"}, environ={})
        telemetry = setup(
            profile,
            tracing=tracing,
            span_exporter=(exporter or bench.DropExporter()) if tracing else None,
            log_stream=devnull,
            process_metrics=False,
            environ={},
        )
        made.append(telemetry)
        return telemetry

    off, on = make(tracing=False), make(tracing=True)
    runs = {
        "bare": bench.driver(bench.bare_app),
        "tracing_off": bench.driver(off.middleware(bench.bare_app, routes=bench.ROUTES)),
        "tracing_on": bench.driver(on.middleware(bench.bare_app, routes=bench.ROUTES)),
        "tracing_on_no_log": bench.driver(
            on.middleware(bench.bare_app, routes=bench.ROUTES, access_log=False)
        ),
    }
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from prometheus_client import CollectorRegistry

    for name, exclude in zip(PEERS, (None, ["receive", "send"]), strict=True):
        peer = OpenTelemetryMiddleware(
            bench.bare_app, tracer_provider=on.tracer_provider, exclude_spans=exclude
        )
        runs[name] = bench.driver(bench.PromHistogramMiddleware(peer, CollectorRegistry()))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        for _ in range(200):
            run()
    for _ in range(7):
        for name, run in runs.items():
            start = time.thread_time()
            for _ in range(2000):
                run()
            samples[name].append((time.thread_time() - start) / 2000 * 1e6)

    keeper = make(tracing=True, exporter=Keep())
    drive = bench.driver(keeper.middleware(bench.bare_app, routes=bench.ROUTES))
    for _ in range(128):
        drive()
    keeper.tracer_provider.force_flush()
    batch = collected[:128]
    lean = getattr(aiaas_telemetry, "encode_otlp_spans", None)
    if lean is None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        def encode(spans: Any) -> bytes:
            return encode_spans(spans).SerializePartialToString()  # type: ignore[no-any-return]
    else:
        encode = lean
    encode(batch)
    per_span = []
    for _ in range(15):
        start = time.thread_time()
        for _ in range(5):
            encode(batch)
        per_span.append((time.thread_time() - start) / 5 / len(batch) * 1e6)
    for telemetry in made:
        telemetry.shutdown(timeout_s=2)
    result: dict[str, Any] = {name: statistics.median(v) for name, v in samples.items()}
    result.update({f"min_{name}": min(v) for name, v in samples.items()})
    result["encode_per_span"] = statistics.median(per_span)
    result["min_encode_per_span"] = min(per_span)
    result["module"] = aiaas_telemetry.__file__
    print(json.dumps(result))


def extract(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", revision, "packages/aiaas-telemetry/src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "packages" / "aiaas-telemetry" / "src"


def measure(src: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, __file__, "--child"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="aiaas-telperf-") as tmp:
        before_src = extract(args.before, Path(tmp))
        for index in range(args.rounds):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            for which in order:
                result = measure(before_src if which == "before" else None)
                if which == "before" and not result["module"].startswith(tmp):
                    raise SystemExit(f"the before tree was not imported: {result['module']}")
                results[which].append(result)
                figures = "  ".join(f"{v}={result[v]:7.2f}" for v in (*VARIANTS, *PEERS))
                print(f"round {index + 1} {which:6s} {figures}", flush=True)
    shown = (*VARIANTS, *PEERS)
    print(f"\nmedian over {args.rounds} rounds (µs; per request, encode per span):")
    print(f"{'variant':26s} {'before':>9s} {'after':>9s} {'after/before':>13s}")
    for variant in shown:
        before = statistics.median(r[variant] for r in results["before"])
        after = statistics.median(r[variant] for r in results["after"])
        print(f"{variant:26s} {before:9.2f} {after:9.2f} {after / before:13.2f}")
    print("\nlowest repetition over all rounds (least disturbed by other load):")
    for variant in shown:
        before = min(r[f"min_{variant}"] for r in results["before"])
        after = min(r[f"min_{variant}"] for r in results["after"])
        print(f"{variant:26s} {before:9.2f} {after:9.2f} {after / before:13.2f}")
    print("\nadded over the bare app, median over rounds:")
    for label, minus in (
        ("tracing_on", "bare"),
        ("tracing_off", "bare"),
        *((peer, "bare") for peer in PEERS),
    ):
        before = statistics.median(r[label] - r[minus] for r in results["before"])
        after = statistics.median(r[label] - r[minus] for r in results["after"])
        name = f"{label} - {minus}"
        print(f"{name:26s} {before:9.2f} {after:9.2f} {after / before:13.2f}")
    print("\naiaas / OpenTelemetry ASGI, per request, median over rounds (same processes):")
    for ours in ("tracing_on", "tracing_off"):
        for peer in PEERS:
            before = statistics.median(r[ours] / r[peer] for r in results["before"])
            after = statistics.median(r[ours] / r[peer] for r in results["after"])
            name = f"{ours} / {peer}"
            print(f"{name:40s} before {before:5.2f}  after {after:5.2f}")


if __name__ == "__main__":
    main()
