"""Live exploration: a share of each tick's users is paired by the uniform rule, each such decision carrying the
propensity the off-policy estimate needs; filters and blocks still hold; nobody is paired twice."""

from __future__ import annotations

import numpy as np

from tickmatch.agents.runtime import EXPLORE_POLICY, WorkerRuntime
from tickmatch.schemas import Join
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink


def test_explored_pairs_carry_their_propensity_and_respect_the_rules() -> None:
    clock = ManualClock(1_800_000_000.0)
    sink = RecordingSink()
    runtime = WorkerRuntime(Settings(explore_share=0.5), sink, clock)
    runtime.explore_rng = np.random.default_rng(4)
    runtime.explore_log = []
    joins = [
        Join(f"u{i}", "s", clock(), gender="fm"[i % 2], want_gender=("f",) if i % 5 == 0 else (),
             blocked=(f"u{i + 1}",) if i % 7 == 0 else ())
        for i in range(60)
    ]  # fmt: skip
    runtime.apply_batch([Msg.of(j, offset=k) for k, j in enumerate(joins)])
    runtime.tick()
    explored = [d for d in sink.decisions if d.policy == EXPLORE_POLICY]
    (group, members, allowed) = runtime.explore_log[0]
    m = len(members)
    assert explored and 2 * len(explored) <= m and all(d.explore_group == group for d in explored)
    assert {d.propensity for d in explored} == {1.0 / (m - 1) if m % 2 == 0 else 1.0 / m}
    position = {user: k for k, user in enumerate(members)}
    for d in explored:  # consecutive in the random order, and allowed (filters, blocks)
        i, j = sorted((position[d.user_a], position[d.user_b]))
        assert j == i + 1 and i % 2 == 0 and allowed[i, j]
    by_user = {int(u[1:]): j for j in joins for u in [j.user_id]}
    for d in explored:
        a, b = by_user[int(d.user_a[1:])], by_user[int(d.user_b[1:])]
        assert not (a.want_gender and b.gender not in a.want_gender) and b.user_id not in a.blocked
    users = [u for d in sink.decisions for u in (d.user_a, d.user_b)]
    assert len(users) == len(set(users))  # the engine matched the rest, without the explored users
    assert any(d.policy != EXPLORE_POLICY for d in sink.decisions)
    assert all(d.propensity is None and d.explore_group is None for d in sink.decisions if d.policy != EXPLORE_POLICY)


def test_no_exploration_by_default() -> None:
    clock = ManualClock(1_800_000_000.0)
    sink = RecordingSink()
    runtime = WorkerRuntime(Settings(), sink, clock)
    runtime.apply_batch([Msg.of(Join(f"u{i}", "s", clock()), offset=i) for i in range(20)])
    runtime.tick()
    assert sink.decisions and all(d.policy != EXPLORE_POLICY for d in sink.decisions)
