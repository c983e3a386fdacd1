"""Independent audit of the decisions stream: nobody may be in two matches without rejoining in between.

Runs on records read back from the broker by a separate consumer, never on the worker's own state, so it
checks what downstream apps actually received.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable

from tickmatch.schemas.records import Join, MatchDecision


def double_booked(joins: Iterable[Join], decisions: Iterable[MatchDecision]) -> list[tuple[str, str, str]]:
    """(user, earlier match_id, later match_id) for every consecutive pair of a user's decisions with no
    join of that user in between (join time strictly after the earlier decision, at or before the later).
    A user paired with themself counts too."""
    join_times: dict[str, list[float]] = defaultdict(list)
    for join in joins:
        join_times[join.user_id].append(join.ts)
    for times in join_times.values():
        times.sort()
    per_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    bad: list[tuple[str, str, str]] = []
    for d in decisions:
        if d.user_a == d.user_b:
            bad.append((d.user_a, d.match_id, d.match_id))
            continue
        per_user[d.user_a].append((d.decided_at, d.match_id))
        per_user[d.user_b].append((d.decided_at, d.match_id))
    for user, seq in per_user.items():
        seq.sort()
        times = join_times.get(user, [])
        for (t0, m0), (t1, m1) in itertools.pairwise(seq):
            lo = bisect.bisect_right(times, t0)
            if lo >= len(times) or times[lo] > t1:
                bad.append((user, m0, m1))
    return bad
