"""Tests never wait on a child process without a bound, and never rely on how they were started.

A test run from a shell's background job inherits SIGINT ignored: a test that stops a child with
SIGINT, or waits on one without a timeout, then hangs the whole run (issue 17, finding 12). This
check reads the test code (no import) and fails on:

- ``subprocess.run/call/check_call/check_output`` without ``timeout=``;
- ``.wait()`` / ``.communicate()`` without a timeout on a process object;
- ``with subprocess.Popen(...)``: leaving the block waits for the child without a bound;
- ``send_signal(signal.SIGINT)`` in a file that does not restore the child's SIGINT handling
  (``default_int_handler`` or ``SIG_DFL``).

SCANNED is every project's test tree (found by folder, so a new package or example is held to
it at once), the benchmarks, the fault campaign (``chaos/``) and the tools' own tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = tuple(
    str(path.relative_to(ROOT))
    for path in [
        *sorted(ROOT.glob("packages/*/tests")),
        *sorted(ROOT.glob("examples/*/tests")),
        ROOT / "benchmarks",
        ROOT / "chaos",
        ROOT / "tools" / "tests",
    ]
)
RUNNERS = frozenset({"run", "call", "check_call", "check_output"})
WAITS = frozenset({"wait", "communicate"})
PROCESS_HINTS = ("proc", "process", "popen", "child")


def _is_process(node: ast.expr) -> bool:
    text = ast.unparse(node).lower()
    return any(hint in text for hint in PROCESS_HINTS)


def unbounded_waits(source: str, name: str = "<test>") -> list[str]:
    """Every unbounded wait or caller-dependent signal in ``source``, as ``name:line: what``."""
    tree = ast.parse(source)
    found: list[str] = []
    restores_sigint = "default_int_handler" in source or "SIG_DFL" in source
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "Popen"
                ):
                    found.append(f"{name}:{node.lineno}: `with Popen` waits without a bound")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, receiver = node.func.attr, node.func.value
        keywords = {k.arg for k in node.keywords}
        if (
            attr in RUNNERS
            and isinstance(receiver, ast.Name)
            and receiver.id == "subprocess"
            and "timeout" not in keywords
        ):
            found.append(f"{name}:{node.lineno}: subprocess.{attr} without timeout=")
        elif attr in WAITS and not node.args and "timeout" not in keywords:
            if _is_process(receiver):
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)} without a timeout")
        elif (
            attr == "send_signal"
            and node.args
            and not restores_sigint
            and ast.unparse(node.args[0]).endswith("SIGINT")
        ):
            found.append(
                f"{name}:{node.lineno}: SIGINT to a child whose SIGINT handling the test "
                "does not restore (a background shell starts it ignored)"
            )
    return found


def test_every_project_test_tree_is_scanned() -> None:
    assert {"packages/aiaas-core/tests", "examples/inference-service/tests"} <= set(SCANNED)
    assert len([t for t in SCANNED if t.startswith(("packages/", "examples/"))]) >= 9


@pytest.mark.parametrize("tree", SCANNED)
def test_every_wait_on_a_child_is_bounded(tree: str) -> None:
    folder = ROOT / tree
    files = sorted(folder.rglob("*.py"))
    assert files, f"{tree} holds no Python files"
    problems = [
        problem
        for path in files
        for problem in unbounded_waits(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("subprocess.run(['x'], check=True)", ["<test>:1: subprocess.run without timeout="]),
        ("subprocess.check_output(['x'])", ["<test>:1: subprocess.check_output without timeout="]),
        ("subprocess.run(['x'], timeout=5)", []),
        ("proc.wait()", ["<test>:1: proc.wait() without a timeout"]),
        ("self.proc.communicate()", ["<test>:1: self.proc.communicate() without a timeout"]),
        ("proc.wait(timeout=5)\nproc.communicate(timeout=5)", []),
        ("await event.wait()", []),  # not a process
        (
            "with subprocess.Popen(['x']) as p:\n    pass",
            ["<test>:1: `with Popen` waits without a bound"],
        ),
        ("proc.send_signal(signal.SIGTERM)", []),
        ("proc.send_signal(signal.SIGINT)", ["SIGINT"]),
        (
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "proc.send_signal(signal.SIGINT)",
            [],
        ),
    ],
)
def test_the_check_finds_what_it_should(source: str, expected: list[str]) -> None:
    found = unbounded_waits(source)
    if expected == ["SIGINT"]:
        assert len(found) == 1
        assert "SIGINT to a child" in found[0]
    else:
        assert found == expected
