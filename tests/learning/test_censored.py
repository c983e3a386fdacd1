"""The censored log-normal likelihood against values computed by hand, and its gradients against differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tickmatch.learning.censored import log_survival, nll, nll_grad

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize(
    ("y", "censored", "mu", "log_sigma", "expected"),
    [
        (2.0, False, 2.0, 0.0, HALF_LOG_2PI),  # observed at the mean: only the normaliser
        (3.0, False, 1.0, 0.0, 2.0 + HALF_LOG_2PI),  # z = 2: z^2 / 2 = 2
        (3.0, False, 1.0, math.log(2.0), math.log(2.0) + 0.5 + HALF_LOG_2PI),  # sigma 2: z = 1
        (2.0, True, 2.0, 0.0, math.log(2.0)),  # censored at the mean: P(T > t) = 1/2
        (3.0, True, 2.0, 0.0, -math.log(0.15865525393145707)),  # censored one sigma above: P(Z > 1)
        (0.0, True, 2.0, 0.0, -math.log(0.9772498680518208)),  # censored two sigma below: almost no information
    ],
)
def test_nll_matches_hand_computed_values(
    y: float, censored: bool, mu: float, log_sigma: float, expected: float
) -> None:
    got = nll(np.array([y]), np.array([censored]), np.array([mu]), log_sigma)[0]
    assert got == pytest.approx(expected, rel=1e-6)


def test_log_survival_stays_finite_far_in_the_tail() -> None:
    # S(40) ~ 3.7e-350 underflows to 0 in floating point; its log is ~ -(800 + log 40 + log sqrt(2 pi)) + tiny.
    z = np.array([40.0])
    asymptotic = -(z * z / 2 + np.log(z) + HALF_LOG_2PI) + np.log1p(-1 / z**2)
    assert log_survival(z)[0] == pytest.approx(asymptotic[0], rel=1e-6)
    assert np.all(np.isfinite(log_survival(np.array([-50.0, -5.0, 0.0, 5.0, 50.0, 300.0]))))


def test_censored_loss_grows_with_the_bound_and_falls_with_the_prediction() -> None:
    """'Lasted at least t' gets less likely as t grows, and more likely as the predicted duration grows."""
    y = np.linspace(-3, 3, 61)
    cens = np.ones_like(y, bool)
    loss = nll(y, cens, np.zeros_like(y), 0.0)
    assert np.all(np.diff(loss) > 0)
    assert np.all(nll(y, cens, np.full_like(y, 0.5), 0.0) < loss)


@pytest.mark.parametrize("censored", [False, True])
def test_gradients_match_finite_differences(censored: bool) -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=20)
    mu = rng.normal(size=20)
    cens = np.full(20, censored)
    log_sigma, h = 0.3, 1e-6
    _, d_mu, d_ls = nll_grad(y, cens, mu, log_sigma)
    num_mu = (nll(y, cens, mu + h, log_sigma) - nll(y, cens, mu - h, log_sigma)) / (2 * h)
    num_ls = (nll(y, cens, mu, log_sigma + h) - nll(y, cens, mu, log_sigma - h)) / (2 * h)
    np.testing.assert_allclose(d_mu, num_mu, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_ls, num_ls, rtol=1e-5, atol=1e-7)
