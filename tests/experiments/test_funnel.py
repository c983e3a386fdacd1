"""The aha funnel recovers a planted condition from synthetic histories."""

from __future__ import annotations

import numpy as np

from tickmatch.experiments.funnel import Condition, score_conditions


def test_the_planted_condition_scores_best() -> None:
    rng = np.random.default_rng(1)
    chats: dict[str, list[tuple[float, float]]] = {}
    joins: dict[str, list[float]] = {}
    for u in range(2000):
        user = f"u{u}"
        starts = np.sort(rng.uniform(0, 3600, rng.integers(1, 6)))
        durations = rng.exponential(150.0, starts.size)
        chats[user] = [(float(t), float(d)) for t, d in zip(starts, durations, strict=True)]
        first = float(starts[0])
        planted = sum(1 for t, d in chats[user] if t <= first + 3600 and d >= 180) >= 2
        if rng.random() < (0.9 if planted else 0.1):
            joins[user] = [first + 3600 + float(rng.uniform(1, 3600))]
    best = score_conditions(chats, joins, observed_until=3 * 3600.0)[0]
    assert best.condition == Condition(2, 180.0, 1.0)
    assert best.precision > 0.8 and best.recall > 0.6 and best.users == 2000  # 10 % of the others come back too
