"""Summarise a pytest-benchmark JSON file as a table: one row per benchmark, grouped.

    python tools/bench_summary.py .benchmarks/latest.json [--markdown]

Times are shown in the unit that suits them (ns, µs, ms, s). ``extra_info`` that a benchmark
records (ratios against peers, throughput, peak memory) is printed after the row, so side-by-side
comparisons measured in one run can be read straight from the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def rows(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or bench.get("fullname", "").split("::")[0]].append(bench)
    return dict(sorted(groups.items()))


def render(data: dict[str, Any], *, markdown: bool = False) -> str:
    out: list[str] = []
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    out.append(
        f"Benchmarks on {machine.get('node', '?')} ({cpu}),"
        f" python {machine.get('python_version', '?')}, {data.get('datetime', '?')}"
    )
    sep = " | " if markdown else "  "
    head = ["benchmark", "min", "median", "mean", "stddev", "ops/s", "rounds"]
    for group, benches in rows(data).items():
        out.append("")
        out.append(f"## {group}" if markdown else f"[{group}]")
        table = [head]
        extras: list[str] = []
        for b in sorted(benches, key=lambda b: b["stats"]["median"]):
            s = b["stats"]
            table.append(
                [
                    b["name"],
                    fmt_time(s["min"]),
                    fmt_time(s["median"]),
                    fmt_time(s["mean"]),
                    fmt_time(s["stddev"]),
                    f"{s['ops']:.4g}",
                    str(s["rounds"]),
                ]
            )
            if b.get("extra_info"):
                info = ", ".join(f"{k}={v}" for k, v in sorted(b["extra_info"].items()))
                extras.append(f"  {b['name']}: {info}")
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        for n, r in enumerate(table):
            line = sep.join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            out.append(f"| {line} |" if markdown else line)
            if markdown and n == 0:
                out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out.extend(extras)
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if not args.json_file.is_file():
        print(f"no benchmark results at {args.json_file}", file=sys.stderr)
        return 1
    print(render(json.loads(args.json_file.read_text()), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
