"""Training recovers a planted duration model, and handling censoring is what makes it unbiased."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tickmatch.learning.features import RAW_DIM, SIGNAL_BASE
from tickmatch.learning.trainer import Trainer, TrainerConfig


def planted_labels(n: int, censor_at_s: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with 4 signals, true log-duration mu = 4 + s_a . s_b / 2 + noise 0.5; censored at ``censor_at_s``."""
    rng = np.random.default_rng(seed)
    raw_a = np.zeros((n, RAW_DIM), np.float32)
    raw_b = np.zeros((n, RAW_DIM), np.float32)
    raw_a[:, 0] = raw_b[:, 0] = 1.0
    raw_a[:, SIGNAL_BASE : SIGNAL_BASE + 4] = rng.standard_normal((n, 4))
    raw_b[:, SIGNAL_BASE : SIGNAL_BASE + 4] = rng.standard_normal((n, 4))
    sa, sb = raw_a[:, SIGNAL_BASE : SIGNAL_BASE + 4], raw_b[:, SIGNAL_BASE : SIGNAL_BASE + 4]
    mu = 4.0 + 0.5 * np.einsum("ij,ij->i", sa, sb)
    duration = np.exp(mu + 0.5 * rng.standard_normal(n))
    return raw_a, raw_b, np.minimum(duration, censor_at_s), duration > censor_at_s


def fit(raw_a: np.ndarray, raw_b: np.ndarray, dur: np.ndarray, cens: np.ndarray, use_censoring: bool) -> Trainer:
    trainer = Trainer(TrainerConfig(steps=300, lr=0.02, batch=1024, retrain_every=10**9))
    for k in range(dur.size):
        trainer.add(f"m{k}", raw_a[k], raw_b[k], float(dur[k]), bool(cens[k]) if use_censoring else False)
    for _ in range(2):
        trainer.fit()
    return trainer


def test_recovers_planted_weights_and_noise() -> None:
    raw_a, raw_b, dur, cens = planted_labels(6000, censor_at_s=1e9)
    model = fit(raw_a, raw_b, dur, cens, use_censoring=True).model
    assert model is not None
    w = model.weights
    signals = slice(SIGNAL_BASE, SIGNAL_BASE + 4)
    assert w[0, 0] == pytest.approx(4.0, abs=0.05)
    np.testing.assert_allclose(np.diag(w[signals, signals]), 0.5, atol=0.05)
    assert math.exp(model.log_sigma) == pytest.approx(0.5, abs=0.03)


def test_censoring_aware_fit_is_unbiased_where_naive_fit_is_not() -> None:
    """A third of the chats run past the cut-off. Treating 'at least 90 s' as '90 s' pulls the mean down;
    the censored likelihood recovers it."""
    raw_a, raw_b, dur, cens = planted_labels(6000, censor_at_s=90.0, seed=1)
    assert 0.2 < cens.mean() < 0.5
    aware = fit(raw_a, raw_b, dur, cens, use_censoring=True).model
    naive = fit(raw_a, raw_b, dur, cens, use_censoring=False).model
    assert aware is not None and naive is not None
    assert aware.weights[0, 0] == pytest.approx(4.0, abs=0.08)
    assert naive.weights[0, 0] < 3.85


def test_versions_follow_the_label_schedule_and_holdout_is_never_trained_on() -> None:
    raw_a, raw_b, dur, _cens = planted_labels(1000, censor_at_s=1e9, seed=2)
    trainer = Trainer(TrainerConfig(min_labels=300, retrain_every=200, steps=20))
    versions = []
    for k in range(dur.size):
        trainer.add(f"m{k}", raw_a[k], raw_b[k], float(dur[k]), False)
        model = trainer.maybe_train()
        if model is not None:
            versions.append((model.version, trainer.train.n))
    assert [v for v, _ in versions] == [f"duration-v{i}" for i in range(1, len(versions) + 1)]
    assert versions[0][1] == 300 and all(b - a == 200 for (_, a), (_, b) in itertools.pairwise(versions))
    assert trainer.train.n + trainer.holdout.n == 1000
    assert 150 < trainer.holdout.n < 250  # 1 in 5 by hash
    assert trainer.history[-1].auroc > 0.7


def test_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="raw features"):
        Trainer().add("m", np.zeros(3, np.float32), np.zeros(3, np.float32), 10.0, False)
