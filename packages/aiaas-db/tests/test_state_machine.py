"""A hypothesis state machine of random up / down / recover / force / break / fix operations.

The model is the applied set (plus what blocks, and which tables exist); after every step the
database's ledger, golang-migrate's table and the schema itself must equal it.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from aiaas_db import (
    LocalPostgres,
    MigrationDirtyError,
    MigrationFailedError,
    MigrationFailedHeadError,
    Migrator,
    NothingToRecoverError,
)

VERSIONS = (202401010000, 202401020000, 202401030000, 202401040000)
NO_TX = {VERSIONS[1], VERSIONS[3]}


def write_set(root: Path, version: int, *, bad: bool) -> None:
    header = "-- aiaas:no-transaction\n" if version in NO_TX else ""
    fail = "SELECT 1/0;\n" if bad else ""
    (root / f"{version}_s.up.sql").write_text(
        f"{header}CREATE TABLE IF NOT EXISTS t_{version} (a int);\n{fail}"
    )
    (root / f"{version}_s.down.sql").write_text(f"{header}DROP TABLE IF EXISTS t_{version};\n")


@pytest.mark.slow
def test_random_operations_keep_state_equal_to_the_applied_set(pg: LocalPostgres) -> None:
    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.name = f"sm_{uuid.uuid4().hex[:12]}"
            self.url = pg.create_database(self.name)
            self.root = Path(tempfile.mkdtemp(prefix="aiaas-sm-"))
            self.bad: set[int] = set()
            for v in VERSIONS:
                write_set(self.root, v, bad=False)
            self.m = Migrator(self.url, self.root, lock_timeout=5)
            self.applied: set[int] = set()
            self.tables: set[int] = set()
            self.blocked: tuple[str, int] | None = None

        def teardown(self) -> None:
            shutil.rmtree(self.root, ignore_errors=True)
            pg.drop_database(self.name)

        def _expect_blocked(self, call: object) -> None:
            assert self.blocked is not None
            err = MigrationDirtyError if self.blocked[0] == "dirty" else MigrationFailedHeadError
            with pytest.raises(err):
                call()  # type: ignore[operator]

        @rule(to=st.sampled_from((None, *VERSIONS)))
        def up(self, to: int | None) -> None:
            if self.blocked is not None:
                self._expect_blocked(lambda: self.m.up(to=to))
                return
            plan = [v for v in VERSIONS if v not in self.applied and (to is None or v <= to)]
            failing = next((v for v in plan if v in self.bad), None)
            if failing is None:
                report = self.m.up(to=to)
                assert list(report.versions) == plan
                self.applied |= set(plan)
                self.tables |= set(plan)
                return
            with pytest.raises(MigrationFailedError) as info:
                self.m.up(to=to)
            done = plan[: plan.index(failing)]
            self.applied |= set(done)
            self.tables |= set(done)
            if failing in NO_TX:
                assert info.value.dirty
                self.blocked = ("dirty", failing)
                self.tables.add(failing)  # its first statement stays applied
            else:
                assert not info.value.dirty
                self.blocked = ("failed", failing)

        @rule(steps=st.integers(1, 4))
        def down(self, steps: int) -> None:
            if self.blocked is not None:
                self._expect_blocked(lambda: self.m.down(steps=steps))
                return
            targets = sorted(self.applied, reverse=True)[:steps]
            report = self.m.down(steps=steps)
            assert list(report.versions) == targets
            self.applied -= set(targets)
            self.tables -= set(targets)

        @rule(action=st.sampled_from(("mark-rolled-back", "mark-applied", "run-down")))
        def recover(self, action: str) -> None:
            if self.blocked is None:
                with pytest.raises(NothingToRecoverError):
                    self.m.recover(action, reason="test")  # type: ignore[arg-type]
                return
            _kind, version = self.blocked
            self.m.recover(action, reason="test")  # type: ignore[arg-type]
            if action == "mark-applied":
                self.applied.add(version)
            elif action == "run-down":
                self.tables.discard(version)
            self.blocked = None

        @rule(version=st.sampled_from(VERSIONS), bad=st.booleans())
        def edit(self, version: int, bad: bool) -> None:
            if version in self.applied:
                return  # editing an applied set is tampering: covered elsewhere
            write_set(self.root, version, bad=bad)
            if bad:
                self.bad.add(version)
            else:
                self.bad.discard(version)

        @rule(version=st.sampled_from((None, *VERSIONS)))
        def force(self, version: int | None) -> None:
            self.m.force(version, reason="test")
            self.applied = {v for v in VERSIONS if version is not None and v <= version}
            self.blocked = None

        @invariant()
        def state_matches_the_model(self) -> None:
            status = self.m.status(history_limit=0)
            assert {a.version for a in status.applied} == self.applied
            assert status.blocked == (self.blocked is not None)
            if self.blocked is not None:
                kind, version = self.blocked
                if kind == "dirty":
                    assert (status.dirty, status.dirty_version) == (True, version)
                    assert (status.golang_version, status.golang_dirty) == (version, True)
                else:
                    assert status.failed_version == version
                    assert not status.dirty
            else:
                head = max(self.applied) if self.applied else None
                assert (status.golang_version, status.golang_dirty) == (head, False)
            with psycopg.connect(self.url) as conn:
                names = {
                    r[0]
                    for r in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE tablename LIKE 't\\_%'"
                    )
                }
            assert names == {f"t_{v}" for v in self.tables}

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=settings.default.max_examples,
            stateful_step_count=12,
            deadline=None,
        ),
    )
