"""The aha-moment funnel: which early behaviour predicts that a user comes back?

Conditions have the form "at least ``chats`` chats of at least ``min_s`` seconds within ``within_h`` hours of the
user's first chat". The outcome is the same for every condition: the user came back (joined) in the period
``outcome_h`` after their first chat (default: the second hour), which starts after every condition's window.
For each condition, over the users whose outcome period was observed: precision = P(returned | condition met),
recall = P(condition met | returned); the best
condition is the one with the highest F1 (the harmonic mean: a condition everyone meets has recall 1 and useless
precision, a very strict one the opposite). This is the first step of the analysis the production system we
follow describes (aha moment, then a funnel, then causal checks): it names a candidate, it does not prove cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Condition:
    chats: int
    min_s: float
    within_h: float

    @property
    def name(self) -> str:
        return f">= {self.chats} chats of >= {self.min_s:g} s within {self.within_h:g} h"


@dataclass(frozen=True, slots=True)
class Scored:
    condition: Condition
    precision: float
    recall: float
    f1: float
    met: int  # users meeting it
    users: int  # users it was evaluated on


GRID = tuple(Condition(y, d, x) for y in (1, 2, 3, 4) for d in (60.0, 120.0, 180.0, 300.0, 600.0) for x in (0.5, 1.0))


def score_conditions(
    chats: Mapping[str, Sequence[tuple[float, float]]],
    joins: Mapping[str, Sequence[float]],
    observed_until: float,
    grid: Iterable[Condition] = GRID,
    outcome_h: tuple[float, float] = (1.0, 2.0),
) -> list[Scored]:
    """Every condition scored, best first. ``chats``: user -> (start time, duration) of each chat; ``joins``: user ->
    join times; times in seconds. "Returned": a join in ``(first + outcome_h[0], first + outcome_h[1]]`` hours."""
    start_s, end_s = outcome_h[0] * 3600.0, outcome_h[1] * 3600.0
    out = []
    for cond in grid:
        window = cond.within_h * 3600.0
        if window > start_s:
            raise ValueError(f"{cond.name}: its window must end before the outcome period starts ({outcome_h[0]} h)")
        tp = fp = fn = users = 0
        for user, mine in chats.items():
            if not mine:
                continue
            first = min(start for start, _ in mine)
            if first + end_s > observed_until:
                continue
            users += 1
            long_early = sum(1 for start, d in mine if start <= first + window and d >= cond.min_s)
            met = long_early >= cond.chats
            back = any(first + start_s < t <= first + end_s for t in joins.get(user, ()))
            tp += met and back
            fp += met and not back
            fn += back and not met
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(Scored(cond, precision, recall, f1, tp + fp, users))
    return sorted(out, key=lambda s: (-s.f1, -s.precision))
