"""The heap freezer: freezes when due, not before, and what it froze is skipped by collections."""

from __future__ import annotations

import gc

from tickmatch.agents.heap import Freezer
from tickmatch.testing import ManualClock


def test_the_heap_is_frozen_every_interval_and_not_in_between() -> None:
    clock = ManualClock()
    freezer = Freezer(every_s=2.0, clock=clock)
    try:
        assert not freezer.maybe()
        clock.advance(1.9)
        assert not freezer.maybe()
        kept = [[i] for i in range(10_000)]  # long-lived containers
        clock.advance(0.1)
        assert freezer.maybe() and freezer.freezes == 1
        assert Freezer.frozen() >= len(kept)
        assert not freezer.maybe()  # the interval starts again
    finally:
        gc.unfreeze()
