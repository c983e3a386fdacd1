"""Keep the cyclic garbage collector's full passes small while a worker's heap keeps growing.

A busy worker holds hundreds of thousands of long-lived objects (open matches wait up to
``TICKMATCH_CENSOR_AFTER_S`` for their label). CPython's full (generation 2) collection walks all of them, and
it runs every few seconds under load: measured in-process at 10,000 joins/s, each full pass took 43 ms with
50,000 open matches and 541 ms with 300,000, stopping the event loop and the tick each time (issue 10's
latency tail). Freezing the heap every :data:`FREEZE_EVERY_S` moves what is alive into the permanent
generation, which collections skip: full passes then stay under ~35 ms (same measurement).

Frozen objects are still freed by reference counting when dropped (our state is acyclic: decisions, tuples,
lists). Only a reference cycle that was alive at a freeze and becomes garbage later is never collected; a young
collection right before each freeze reclaims the cycles already dead, so what can leak is what was in flight at
that instant (``tickmatch_gc_frozen_objects`` on ``/metrics`` shows the frozen count).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FREEZE_EVERY_S = 2.0


class Freezer:
    """Freezes the heap at most every ``every_s`` seconds (call :meth:`maybe` between ticks)."""

    def __init__(self, every_s: float = FREEZE_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.freezes = 0
        self._last = clock()

    def maybe(self) -> bool:
        """Freeze if the last freeze is ``every_s`` old; returns whether it did."""
        now = self.clock()
        if now - self._last < self.every_s:
            return False
        self._last = now
        gc.collect(1)  # young cyclic garbage goes now, not into the permanent generation
        gc.freeze()
        self.freezes += 1
        return True

    @staticmethod
    def frozen() -> int:
        """Objects in the permanent generation."""
        return gc.get_freeze_count()
