"""The results of the version-skew matrix (``tools/skew.py``): test suites, outcomes, the table
(terminal and Markdown), the JSON document and the latency plot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from skew_plan import CASE_TITLES, Cell, Combination

# --- results ------------------------------------------------------------------------------------


@dataclass
class Suite:
    """One pytest run: counts from its JUnit XML and the ids of the failing tests."""

    name: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    @property
    def summary(self) -> str:
        text = f"{self.passed} passed"
        if self.failed:
            text += f", {self.failed} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


def read_junit(name: str, path: Path) -> Suite:
    """The counts and failing test ids (``file::Class::test``) of a JUnit XML report."""
    suite = Suite(name)
    # The report is pytest's, written by this run into its own work folder.
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        classname = case.get("classname", "")
        test_id = f"{classname.replace('.', '/')}.py::{case.get('name', '?')}"
        if case.find("failure") is not None or case.find("error") is not None:
            suite.failed += 1
            suite.failing.append(test_id)
        elif case.find("skipped") is not None:
            suite.skipped += 1
        else:
            suite.passed += 1
    return suite


@dataclass
class Outcome:
    """What one combination did."""

    combination: Combination
    suites: list[Suite] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # not a test: install, versions, latency
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # A combination outside a declared range: what the start-up check said refusing it.
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.suites)

    @property
    def failures(self) -> list[str]:
        return [*self.problems, *(f"{s.name}: {t}" for s in self.suites for t in s.failing)] + [
            f"{s.name}: no test passed" for s in self.suites if not s.failed and not s.passed
        ]


def _ms(figure: Mapping[str, float] | None) -> str:
    if not figure:
        return "—"
    return f"{figure['p50']:.2f} / {figure['p99']:.2f}"


LATENCY_COLUMNS = (
    ("world_request_ms", "world GET p50/p99 ms"),
    ("embeddings_ms", "embeddings p50/p99 ms"),
    ("migration_per_set_ms", "migration ms/set"),
)


def _latency_cell(key: str, outcome: Outcome) -> str:
    figure = outcome.latency.get(key)
    if key == "migration_per_set_ms":
        return "—" if not figure else f"{figure['per_set_overhead']:.2f}"
    return _ms(figure)


def matrix_rows(
    cells: Sequence[Cell], outcomes: Mapping[Combination, Outcome], *, full: bool
) -> tuple[list[str], list[list[str]]]:
    """The matrix as a header and rows of text cells (one row per cell of the plan)."""
    latency = LATENCY_COLUMNS if full else LATENCY_COLUMNS[:1]
    header = ["package P", "depends on S", "case", "combination", "result", "tests"]
    header += [title for _, title in latency]
    rows = []
    for cell in cells:
        row = [cell.consumer, cell.dependency, CASE_TITLES[cell.case]]
        outcome = outcomes.get(cell.combination) if cell.combination else None
        if cell.outside is not None:
            checked = outcomes.get(cell.outside)
            if checked is None:
                verdict, said = "outside range", f"{cell.note}; start-up check only planned"
            elif checked.ok:
                verdict = "refused at start-up"
                mine = [r for r in checked.refused if f" requires {cell.dependency}" in r]
                said = "start-up check: " + "; ".join(mine or checked.refused)
            else:
                verdict, said = "FAIL", f"{cell.note}; " + "; ".join(checked.failures)
            row += [cell.outside.short, verdict, said]
            row += ["—" for _ in latency]
        elif cell.combination is None:
            row += ["—", "not run", cell.note]
            row += ["—" for _ in latency]
        elif outcome is None:
            row += [cell.combination.short, "not run", "only planned"]
            row += ["—" for _ in latency]
        else:
            row += [
                cell.combination.short,
                "pass" if outcome.ok else "FAIL",
                "; ".join(f"{s.name}: {s.summary}" for s in outcome.suites) or "—",
            ]
            row += [_latency_cell(key, outcome) for key, _ in latency]
        rows.append(row)
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append(line("-" * w for w in widths))
    out += [line(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(s.rstrip() for s in out) + "\n"


def failure_report(outcomes: Iterable[Outcome]) -> str:
    """Each failing combination with what failed in it (empty when none failed)."""
    lines = []
    for outcome in outcomes:
        if not outcome.ok:
            lines.append(f"FAILED {outcome.combination.key}:")
            lines += [f"  - {failure}" for failure in outcome.failures]
    return "\n".join(lines) + ("\n" if lines else "")


def matrix_json(
    cells: Sequence[Cell],
    outcomes: Mapping[Combination, Outcome],
    *,
    mode: str,
    started: datetime,
    wall_s: float,
) -> dict[str, Any]:
    """The whole matrix as JSON-ready data."""

    def picks(combo: Combination) -> list[dict[str, Any]]:
        return [{"package": p.package, "version": p.version, "head": p.head} for p in combo.picks]

    return {
        "mode": mode,
        "started_at": started.isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "passed": all(o.ok for o in outcomes.values()),
        "cells": [
            {
                "consumer": c.consumer,
                "dependency": c.dependency,
                "case": c.case,
                "combination": None if c.combination is None else c.combination.key,
                "note": c.note,
                "outside": None if c.outside is None else c.outside.key,
            }
            for c in cells
        ],
        "combinations": [
            {
                "key": o.combination.key,
                "picks": picks(o.combination),
                "passed": o.ok,
                "failures": o.failures,
                "suites": [
                    {
                        "name": s.name,
                        "passed": s.passed,
                        "failed": s.failed,
                        "skipped": s.skipped,
                        "failing": s.failing,
                    }
                    for s in o.suites
                ],
                "latency": o.latency,
                "notes": o.notes,
                "refused": o.refused,
                "seconds": round(o.seconds, 1),
            }
            for o in outcomes.values()
        ],
    }


def latency_plot(outcomes: Sequence[Outcome], path: Path) -> bool:
    """A PNG of the p50/p99 latency figures per combination; False when there is none."""
    series = [(k, t) for k, t in LATENCY_COLUMNS[:2] if any(k in o.latency for o in outcomes)]
    if not series:
        return False
    import matplotlib  # only when there is something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(10, 1.2 + 0.9 * len(outcomes) * len(series)))
    axes_list = [axes] if len(series) == 1 else list(axes)
    labels = [o.combination.short for o in outcomes]
    for ax, (key, title) in zip(axes_list, series, strict=True):
        p50 = [o.latency.get(key, {}).get("p50", 0.0) for o in outcomes]
        p99 = [o.latency.get(key, {}).get("p99", 0.0) for o in outcomes]
        ys = list(range(len(outcomes)))
        ax.barh([y + 0.2 for y in ys], p50, height=0.4, label="p50")
        ax.barh([y - 0.2 for y in ys], p99, height=0.4, label="p99")
        ax.set_yticks(ys, labels)
        ax.set_xlabel("milliseconds")
        ax.set_title(title.replace(" p50/p99 ms", " latency per combination"))
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
