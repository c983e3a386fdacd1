"""The switch-back read-out: cells as the unit, washout dropped, decision-weighted arm means, a bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from tickmatch.experiments.readout import Cell, cells_of, switchback_effect


def test_cells_drop_the_washout_and_average_per_shard_and_slice() -> None:
    rows = [
        ("s", 0, "a", True, 100.0),
        ("s", 0, "a", False, 10.0),
        ("s", 0, "a", False, 20.0),
        ("t", 0, "b", False, 5.0),
    ]
    assert cells_of(rows) == [Cell("s", 0, "a", 2, 15.0), Cell("t", 0, "b", 1, 5.0)]


def test_the_effect_is_the_difference_of_decision_weighted_arm_means() -> None:
    cells = [
        Cell("s", 0, "a", 1, 10.0),
        Cell("s", 1, "a", 3, 20.0),
        Cell("s", 2, "b", 2, 5.0),
        Cell("s", 3, "b", 2, 7.0),
    ]
    readout = switchback_effect(cells, "a", "b", reps=500)
    assert readout.means == {"a": 17.5, "b": 6.0} and readout.effect == 11.5
    assert readout.ci95[0] <= readout.effect <= readout.ci95[1] and readout.cells == {"a": 2, "b": 2}


def test_the_interval_covers_a_planted_effect_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    covered = 0
    for trial in range(200):
        cells = [
            Cell("s", i, "a" if i % 2 else "b", 50, float(rng.normal(110.0 if i % 2 else 100.0, 8.0)))
            for i in range(60)
        ]
        covered += switchback_effect(cells, "a", "b", reps=400, seed=trial).covers(10.0)
    assert 0.88 <= covered / 200 <= 0.99


def test_an_arm_without_two_cells_cannot_be_read_out() -> None:
    with pytest.raises(ValueError, match="at least two"):
        switchback_effect([Cell("s", 0, "a", 5, 1.0), Cell("s", 1, "b", 5, 1.0), Cell("s", 2, "b", 5, 1.0)], "a", "b")
