from __future__ import annotations

import math

import numpy as np

from tickmatch.learning.metrics import auroc, mse


def test_auroc_extremes_and_ties() -> None:
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert auroc([1, 2, 2, 3], [0, 0, 1, 1]) == 0.875  # the tied pair counts 1/2: (1 + 1 + 0.5 + 1 ... ) / 4
    assert math.isnan(auroc([1, 2], [1, 1]))


def test_auroc_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 300).astype(float)  # many ties
    labels = rng.random(300) < 0.3
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert auroc(scores, labels) == brute


def test_mse() -> None:
    assert mse([1.0, 2.0], [1.0, 4.0]) == 2.0
    assert math.isnan(mse([], []))
