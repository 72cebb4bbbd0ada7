from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench_summary

DATA = {
    "machine_info": {"node": "ci", "cpu": {"brand_raw": "cpu"}, "python_version": "3.11.7"},
    "datetime": "2026-11-26T00:00:00",
    "benchmarks": [
        {
            "group": "core",
            "name": "test_policy_decision",
            "fullname": "benchmarks/core/test_x.py::test_policy_decision",
            "stats": {
                "min": 1.2e-6,
                "median": 1.5e-6,
                "mean": 1.6e-6,
                "stddev": 1e-7,
                "ops": 625000.0,
                "rounds": 1000,
            },
            "extra_info": {"peer_ratio": 0.5},
        },
        {
            "group": None,
            "name": "test_import",
            "fullname": "benchmarks/core/test_y.py::test_import",
            "stats": {
                "min": 0.02,
                "median": 0.021,
                "mean": 0.022,
                "stddev": 0.001,
                "ops": 45.0,
                "rounds": 5,
            },
        },
    ],
}


def test_render_groups_and_units() -> None:
    text = bench_summary.render(DATA)
    assert "[core]" in text
    assert "[benchmarks/core/test_y.py]" in text
    assert "1.5 µs" in text
    assert "21 ms" in text
    assert "test_policy_decision: peer_ratio=0.5" in text


def test_render_markdown_has_table_rows() -> None:
    text = bench_summary.render(DATA, markdown=True)
    assert "## core" in text
    assert text.count("| test_") == 2


@pytest.mark.parametrize(
    ("seconds", "expected"), [(2.0, "2 s"), (3e-9, "3 ns"), (4.5e-4, "450 µs")]
)
def test_fmt_time(seconds: float, expected: str) -> None:
    assert bench_summary.fmt_time(seconds) == expected


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(DATA))
    assert bench_summary.main([str(path)]) == 0
    assert "test_import" in capsys.readouterr().out
    assert bench_summary.main([str(tmp_path / "missing.json")]) == 1
