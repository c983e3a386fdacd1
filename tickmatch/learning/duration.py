"""The duration model: ``log T ~ Normal(mu(u, v), sigma)`` with ``mu = raw_u . W . raw_v`` (W symmetric).

Why this shape: it is a factorisation machine over the raw layout (signals x signals interactions, shared
attribute values, per-user and global biases through the constant slot), it is linear in ``W`` so training is
a convex problem for a fixed ``sigma`` (no bad local optima to explain), and it exports exactly to the engine's
bilinear scorer. Scores are predicted log-seconds: ``exp(mu + sigma**2 / 2)`` is the predicted mean duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tickmatch.learning.censored import nll_grad
from tickmatch.learning.scorer import Scorer, scorer_from_raw_weights

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def pair_mu(weights: F64, raw_a: F32, raw_b: F32) -> F64:
    """``raw_a[i] . W . raw_b[i]`` for every row ``i``."""
    out: F64 = np.einsum("ij,ij->i", raw_a @ weights, raw_b, dtype=np.float64)
    return out


@dataclass(frozen=True, slots=True)
class DurationModel:
    """One trained version (immutable: the worker may be scoring with it while the next one trains)."""

    weights: F64
    log_sigma: float
    version: str
    labels_seen: int = 0

    def mu(self, raw_a: F32, raw_b: F32) -> F64:
        """Predicted mean of ``log T`` per pair."""
        return pair_mu(self.weights, raw_a, raw_b)

    def scorer(self, dim: int) -> Scorer:
        """This version as the matcher's scorer (scores in predicted log-seconds)."""
        return scorer_from_raw_weights(self.weights, dim, self.version)


@dataclass(slots=True)
class Adam:
    """Adam state for ``(W, log_sigma)``; kept across retrains so training continues where it stopped."""

    lr: float = 0.02
    beta1: float = 0.9
    beta2: float = 0.999
    steps: int = 0
    m_w: F64 = field(default_factory=lambda: np.zeros((0, 0)))
    v_w: F64 = field(default_factory=lambda: np.zeros((0, 0)))
    m_s: float = 0.0
    v_s: float = 0.0

    def step(self, w: F64, s: float, g_w: F64, g_s: float) -> float:
        """Update ``w`` in place; returns the new ``log_sigma``."""
        if self.m_w.shape != w.shape:
            self.m_w, self.v_w = np.zeros_like(w), np.zeros_like(w)
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        self.m_w = b1 * self.m_w + (1 - b1) * g_w
        self.v_w = b2 * self.v_w + (1 - b2) * g_w * g_w
        self.m_s = b1 * self.m_s + (1 - b1) * g_s
        self.v_s = b2 * self.v_s + (1 - b2) * g_s * g_s
        c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
        w -= self.lr * (self.m_w / c1) / (np.sqrt(self.v_w / c2) + 1e-8)
        return s - self.lr * (self.m_s / c1) / (math.sqrt(self.v_s / c2) + 1e-8)


def loss_and_grad(
    w: F64, log_sigma: float, raw_a: F32, raw_b: F32, y: F64, censored: npt.NDArray[np.bool_], l2: float
) -> tuple[float, F64, float]:
    """Mean censored NLL plus ``l2 * |W|^2`` (the constant slot's bias ``W[0, 0]`` is not shrunk)."""
    mu = pair_mu(w, raw_a, raw_b)
    loss, d_mu, d_ls = nll_grad(y, censored, mu, log_sigma)
    m = y.shape[0]
    half = (raw_a.T.astype(np.float64) * (d_mu / m)) @ raw_b
    g_w = half + half.T  # d mu / d W of a symmetric form, both orders of the pair
    g_w *= 0.5
    penalty = w.copy()
    penalty[0, 0] = 0.0
    g_w += 2.0 * l2 * penalty
    return float(loss.mean() + l2 * float((penalty * penalty).sum())), g_w, float(d_ls.mean())
