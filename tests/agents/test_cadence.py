"""When the loop's next tick is due (agents.cadence)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickmatch.agents.cadence import INGEST_AFTER, next_due

INTERVAL = 0.5


def test_a_short_tick_keeps_the_grid_even_when_noticed_a_little_late() -> None:
    # due at 10.0, noticed 0.08 s late (a batch was being applied), took 0.1 s: the next stays at 10.5, not 10.58
    assert next_due(10.0, 10.08, 10.18, INTERVAL) == pytest.approx(10.5)


def test_a_long_tick_is_followed_by_half_its_duration_of_ingest() -> None:
    # a tick of 0.45 s that started 0.1 s late ends at 10.55: the old rule waited a whole interval (11.05) and the
    # next tick had twice the events to match; this one leaves 0.225 s for batches
    assert next_due(10.0, 10.1, 10.55, INTERVAL) == pytest.approx(10.55 + 0.45 * INGEST_AFTER)


def test_a_tick_far_behind_its_time_re_anchors_the_grid_instead_of_making_up_missed_ticks() -> None:
    # the loop was held 0.8 s (a slow fetch): the tick runs at 1.3 instead of 0.5; the next is one interval after
    # it, not at 1.0 or right away
    assert next_due(0.5, 1.3, 1.3, INTERVAL) == pytest.approx(1.8)


@given(
    due=st.floats(0.0, 1e6),
    late=st.floats(0.0, 5.0),
    took=st.floats(0.0, 5.0),
    interval=st.floats(0.05, 2.0),
)
def test_the_grid_is_kept_unless_late_or_long_and_ingest_gets_a_third_of_long_ticks(
    due: float, late: float, took: float, interval: float
) -> None:
    started = due + late
    ended = started + took
    late, took = started - due, ended - started  # as the clock sees them
    due_next = next_due(due, started, ended, interval)
    assert due_next >= due + interval  # never sooner than the grid
    assert due_next - ended >= took * INGEST_AFTER - 1e-6  # gap >= half the tick: ingest >= 1/3 of the time
    if late >= interval:
        assert due_next >= started + interval - 1e-6  # missed ticks are not made up
    elif late + took * (1 + INGEST_AFTER) <= interval - 1e-6:
        assert due_next == due + interval  # on the grid
