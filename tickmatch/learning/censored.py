"""Negative log-likelihood of a log-normal duration model with right-censored labels, and its gradients.

A chat that never reported its end did last *at least* ``t``: its label says ``log T >= y``, not ``log T = y``.
Treating it as a plain observation would teach the model that such chats are short; dropping it would bias the
data toward chats whose clients behave. The likelihood handles both: with ``z = (y - mu) / sigma``,

- observed:  ``nll = log(sigma) + z**2 / 2 + log(2 pi) / 2``  (density of ``y = log t``),
- censored:  ``nll = -log S(z)``, ``S(z) = P(Z > z) = erfc(z / sqrt 2) / 2``.

``log S`` is computed without forming ``S`` (``S`` underflows to 0 for ``z > 38``; the log does not), using the
Numerical Recipes ``erfcc`` form ``erfc(x) = t exp(-x**2 + poly(t))`` (relative error < 1.2e-7).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_C = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
      -0.82215223, 0.17087277)  # fmt: skip


def _log_erfc_nonneg(x: F64) -> F64:
    """``log(erfc(x))`` for ``x >= 0``."""
    t = 1.0 / (1.0 + 0.5 * x)
    poly = np.zeros_like(x)
    for c in reversed(_C):
        poly = poly * t + c
    out: F64 = np.log(t) - x * x + poly
    return out


def log_survival(z: F64) -> F64:
    """``log P(Z > z)`` for a standard normal ``Z``, finite for every finite ``z``."""
    z = np.asarray(z, dtype=np.float64)
    x = z / np.sqrt(2.0)
    out = np.empty_like(z)
    pos = x >= 0
    out[pos] = np.log(0.5) + _log_erfc_nonneg(x[pos])
    neg = ~pos
    out[neg] = np.log1p(-0.5 * np.exp(_log_erfc_nonneg(-x[neg])))
    return out


def nll(y: F64, censored: npt.NDArray[np.bool_], mu: F64, log_sigma: float) -> F64:
    """Per-label negative log-likelihood (in log-time space) of labels ``y = log t``."""
    sigma = float(np.exp(log_sigma))
    z = (np.asarray(y, dtype=np.float64) - mu) / sigma
    return np.where(censored, -log_survival(z), log_sigma + 0.5 * z * z + _HALF_LOG_2PI)


def nll_grad(y: F64, censored: npt.NDArray[np.bool_], mu: F64, log_sigma: float) -> tuple[F64, F64, F64]:
    """``(nll, d nll / d mu, d nll / d log_sigma)`` per label.

    Observed: ``d/dmu = -z / sigma``, ``d/dlog_sigma = 1 - z**2``. Censored, with the hazard
    ``h(z) = pdf(z) / S(z)``: ``d/dmu = -h / sigma``, ``d/dlog_sigma = -h z``."""
    sigma = float(np.exp(log_sigma))
    z = (np.asarray(y, dtype=np.float64) - mu) / sigma
    log_s = log_survival(z)
    hazard = np.exp(-0.5 * z * z - _HALF_LOG_2PI - log_s)
    loss = np.where(censored, -log_s, log_sigma + 0.5 * z * z + _HALF_LOG_2PI)
    d_mu = np.where(censored, -hazard / sigma, -z / sigma)
    d_ls = np.where(censored, -hazard * z, 1.0 - z * z)
    return loss, d_mu, d_ls
