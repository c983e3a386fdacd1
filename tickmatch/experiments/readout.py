"""The read-out of a switch-back experiment: per-arm means and the effect with a 95 % confidence interval.

Unit of analysis: the (shard, time slice) cell, because that is what was randomised. Decisions in a slice's
washout (users who joined under the previous arm may still be matched) are dropped; each cell's metric is the
mean over its remaining decisions; an arm's value is the decision-weighted mean of its cells (so the estimand is
the mean per decision, what deploying an arm everywhere changes, even if shards differ in size and effect); the
effect is the difference of the two arms' values, and its 95 % interval comes from a bootstrap that resamples
cells within each arm (``reps`` times, seeded). Counting
decisions instead of cells would treat the thousands of decisions of one slice as independent, which they are
not (they share one market), and give intervals far too narrow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Cell:
    """One (shard, slice) of one arm: how many decisions count, and their mean metric."""

    shard: str
    slice_id: int
    arm: str
    n: int
    mean: float


@dataclass(frozen=True, slots=True)
class Readout:
    """Per-arm means (of cell means), the effect ``treatment - control`` and its 95 % bootstrap interval."""

    treatment: str
    control: str
    means: dict[str, float]
    cells: dict[str, int]
    effect: float
    ci95: tuple[float, float]

    @property
    def excludes_zero(self) -> bool:
        return self.ci95[0] > 0.0 or self.ci95[1] < 0.0

    def covers(self, value: float) -> bool:
        return self.ci95[0] <= value <= self.ci95[1]


def cells_of(rows: Iterable[tuple[str, int, str, bool, float]]) -> list[Cell]:
    """Cells from ``(shard, slice_id, arm, washout, metric)`` rows (one per decision); washout rows dropped."""
    sums: dict[tuple[str, int, str], list[float]] = {}
    for shard, slice_id, arm, washout, value in rows:
        if washout:
            continue
        acc = sums.setdefault((shard, slice_id, arm), [0.0, 0.0])
        acc[0] += 1.0
        acc[1] += value
    return [Cell(s, i, a, int(n), total / n) for (s, i, a), (n, total) in sorted(sums.items())]


def switchback_effect(
    cells: list[Cell], treatment: str, control: str, reps: int = 2000, seed: int = 0, min_n: int = 1
) -> Readout:
    """The effect of ``treatment`` over ``control`` from the cells (cells with fewer than ``min_n`` decisions are
    left out: their means are mostly noise). Raises ValueError if an arm has fewer than two cells."""
    rng = np.random.default_rng(seed)
    means: dict[str, float] = {}
    boots: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for arm in (treatment, control):
        mine = [c for c in cells if c.arm == arm and c.n >= min_n]
        if len(mine) < 2:
            raise ValueError(f"arm {arm!r} has {len(mine)} usable cells; a read-out needs at least two per arm")
        n = np.array([c.n for c in mine], dtype=np.float64)
        total = n * np.array([c.mean for c in mine])
        pick = rng.integers(0, len(mine), (reps, len(mine)))
        means[arm] = float(total.sum() / n.sum())
        boots[arm] = total[pick].sum(axis=1) / n[pick].sum(axis=1)
        counts[arm] = len(mine)
    lo, hi = np.percentile(boots[treatment] - boots[control], [2.5, 97.5])
    return Readout(treatment, control, means, counts, means[treatment] - means[control], (float(lo), float(hi)))
