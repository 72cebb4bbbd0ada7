"""The framework itself: seed printed and replayed, figures written, failures name the seed,
budgets end by count or time, planted secrets found in every form they leak in."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Budget, BudgetFactory, PlantedSecrets, markdown_table

HERE = Path(__file__).resolve().parent

CAMPAIGN = """
def test_draws(chaos_rng, chaos_report, chaos_seed):
    value = chaos_rng.randrange(10**9)
    print("drawn", value)
    chaos_report.figure("demo", "drawn", value, unit="n", bound="any")
    chaos_report.figure("demo", "ratio", 0.123456, bound="< 1")


def test_fails(chaos_rng):
    assert chaos_rng.random() > 2, "a campaign's invariant broke"


def test_leaks(chaos_secrets):
    print("oops", chaos_secrets.linode_token)
"""

JUDGE = """
def test_judge(chaos_secrets):
    print("judged", [(h.secret, h.where) for h in chaos_secrets.hits])
"""


def _run_copy(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    folder = tmp_path / "campaigns"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(HERE / "conftest.py", folder / "conftest.py")
    (folder / "test_demo.py").write_text(CAMPAIGN)
    (folder / "test_secrets.py").write_text(JUDGE)
    results = tmp_path / "out" / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(folder),
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            f"--chaos-results={results}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # only the framework
        check=False,
    )
    return proc, json.loads(results.read_text())


def test_seed_is_printed_recorded_and_replays(tmp_path: Path) -> None:
    first, doc1 = _run_copy(tmp_path, "-k", "draws", "-s")
    assert first.returncode == 0, first.stdout + first.stderr
    seed = doc1["seed"]
    assert f"chaos seed: {seed}" in first.stdout
    assert doc1["replay"] == f"nox -s chaos -- --chaos-seed {seed}"
    drawn = doc1["figures"][0]["value"]
    again, doc2 = _run_copy(tmp_path, "-k", "draws", "-s", "--chaos-seed", str(seed))
    assert again.returncode == 0
    assert doc2["figures"][0]["value"] == drawn  # the same seed draws the same faults
    other, doc3 = _run_copy(tmp_path, "-k", "draws", "--chaos-seed", str(seed + 1))
    assert other.returncode == 0
    assert doc3["figures"][0]["value"] != drawn


def test_figures_table_and_markdown(tmp_path: Path) -> None:
    proc, doc = _run_copy(tmp_path, "-k", "draws", "--chaos-seed", "42", "--long")
    assert proc.returncode == 0
    assert doc["long"] is True
    assert doc["replay"] == "nox -s chaos -- --chaos-seed 42 --long"
    assert [(f["campaign"], f["name"]) for f in doc["figures"]] == [
        ("demo", "drawn"),
        ("demo", "ratio"),
    ]
    assert "chaos figures (seed 42)" in proc.stdout
    assert "0.123" in proc.stdout
    assert "< 1" in proc.stdout
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown.startswith("# Fault campaign: seed 42 (--long)")
    assert "| demo | ratio | 0.123 | < 1 |" in markdown


def test_a_failure_names_the_seed(tmp_path: Path) -> None:
    proc, _ = _run_copy(tmp_path, "-k", "fails", "--chaos-seed", "77")
    assert proc.returncode == 1
    assert "a campaign's invariant broke" in proc.stdout
    assert "replay with: nox -s chaos -- --chaos-seed 77 -k 'test_fails'" in proc.stdout


def test_captured_output_is_scanned_and_judged_last(tmp_path: Path) -> None:
    proc, _ = _run_copy(tmp_path, "-k", "leaks or judge", "--chaos-seed", "5", "-s", "-v")
    assert proc.returncode == 0, proc.stdout  # the leaker passes; test_secrets.py judges
    assert proc.stdout.index("test_leaks") < proc.stdout.index("test_judge")
    where = "captured output of campaigns/test_demo.py::test_leaks"
    assert f"judged [('linode_token', '{where}')]" not in proc.stdout  # -s: nothing captured
    proc, _ = _run_copy(tmp_path, "-k", "leaks or judge", "--chaos-seed", "5", "-rP")
    assert f"judged [('linode_token', '{where}')]" in proc.stdout


def test_budget_stops_at_its_count_or_its_time() -> None:
    by_count = Budget(3, 60)
    assert list(by_count) == [0, 1, 2]
    assert (by_count.ran, by_count.stopped_by) == (3, "count")
    by_time = Budget(1000, 0.05)
    for _ in by_time:
        time.sleep(0.02)
    assert by_time.stopped_by == "time"
    assert 1 <= by_time.ran < 10
    assert "stopped by time, time budget 0 s" in by_time.describe()
    assert BudgetFactory(long=True)(full=100, default=5, seconds=1).seconds is None
    assert BudgetFactory(long=False)(full=100, default=5, seconds=1).count == 5
    with pytest.raises(ValueError, match="count of at least 1"):
        Budget(0, 1)


def test_planted_secrets_are_found_in_every_form(tmp_path: Path) -> None:
    planted = PlantedSecrets(11)
    assert planted.values == PlantedSecrets(11).values  # derived from the seed
    assert planted.values != PlantedSecrets(12).values
    log = tmp_path / "logs" / "a.log"
    log.parent.mkdir()
    log.write_text(f"connecting to postgresql://u:{planted.db_password}@h/db\n")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"token": planted.linode_token}))
    encoded = base64.b64encode(planted.api_key.encode()).decode()
    hits = planted.scan([tmp_path / "logs", state, f"Basic {encoded}", b"clean"], where="t")
    assert {(h.secret, h.form) for h in hits} == {
        ("db_password", "raw"),
        ("linode_token", "raw"),
        ("api_key", "base64"),
    }
    assert planted.places_scanned == 4
    assert all(planted.db_password not in str(h) for h in hits)  # hits name, never show
    assert planted.scan(["nothing here"]) == []
    assert planted.places_scanned == 5
    assert len(planted.hits) == 3


def test_markdown_escapes_cells() -> None:
    doc = {
        "seed": 1,
        "long": False,
        "started": "t",
        "replay": "r",
        "figures": [{"campaign": "c", "name": "a|b", "value": 12345.6, "unit": "ms"}],
    }
    assert "| c | a\\|b | 12346 ms |  |" in markdown_table(doc)
