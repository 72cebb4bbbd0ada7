"""The start-up heap is frozen once the service is ready: full garbage collections under load
then walk only what requests create (the fault campaign measured full collections of the
serving process at 185-237 ms, ``/health`` waiting behind them)."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest
from inference_service._gc import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # give the test process's objects back to the collector


def test_garbage_is_collected_and_survivors_are_frozen(
    unfrozen: None, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector can free it
    dead = weakref.ref(a)
    del a, b
    survivor = Node()
    caplog.set_level(logging.INFO, logger="inference-service")
    frozen = freeze_startup_heap()
    assert dead() is None, "garbage made at start-up is collected, not frozen"
    assert frozen == gc.get_freeze_count()
    assert frozen > 0
    assert not any(o is survivor for o in gc.get_objects()), "survivors leave the generations"
    [record] = [r for r in caplog.records if r.getMessage().startswith("start-up objects frozen")]
    assert record.frozen_objects == frozen  # type: ignore[attr-defined]
    assert record.collect_ms >= 0  # type: ignore[attr-defined]
