"""When the worker loop's next tick is due, given when the last one was due, started and ended.

Ticks keep a fixed grid (``due + interval``: no drift from the loop noticing a due tick a batch late) unless:

- a tick started more than an interval late (something held the loop: a long fetch, a rebalance): the grid is
  re-anchored at that tick's start. Missed ticks are never made up back to back.
- a tick ran long: the next one waits until ingest had :data:`INGEST_AFTER` times the tick's duration, so batches
  get at least a third of the loop's time however long ticks get.

Why the second rule is proportional and not "a whole interval after an overrun", as it was: a tick's cost grows
with the square of the users waiting in a shard (every pair is scored), and the users waiting grow with the time
since the last tick. A backlog made every tick overrun by a little (0.4-0.55 s of a 0.5 s interval), the loop then
applied a whole interval of events, the next tick had ~35,000 new events to match and overran again: ticks every
~1.05 s, 45 % of the loop's time (bench.live backlog, measured). With half the tick's duration as the gap, ticks
come every ~0.7 s with fewer users each, and the backlog's total matching work shrinks.
"""

from __future__ import annotations

INGEST_AFTER = 0.5  # gap after a tick, as a share of its duration: ingest >= 1/3 of the loop's time


def next_due(due: float, started: float, ended: float, interval: float) -> float:
    """The time the tick after one due at ``due``, run from ``started`` to ``ended``, is due (one clock)."""
    anchor = due if started - due < interval else started
    return max(anchor + interval, ended + (ended - started) * INGEST_AFTER)
