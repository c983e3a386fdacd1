"""Incremental training from the label stream: store labels, retrain on a schedule, evaluate, version.

Every label carries the raw feature vectors of both users as the scorer saw them at decision time (logged on the
decision), so the trainer needs no feature store. One label in ``holdout_every`` (by a stable hash of its match
id) is held out for evaluation and never trained on. Each retrain continues from the previous version's weights
and optimiser state: cost per version is a fixed number of mini-batch steps, not a pass over all history.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tickmatch.learning.censored import nll
from tickmatch.learning.duration import Adam, DurationModel, loss_and_grad, pair_mu
from tickmatch.learning.features import RAW_DIM
from tickmatch.learning.metrics import auroc, mse

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
MIN_DURATION_S = 1.0  # log of a 0 s chat is -inf; anything under a second is "no chat" and clipped here


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    """Knobs of the trainer."""

    retrain_every: int = 500  # new training labels between versions
    min_labels: int = 300  # no model before this many training labels
    steps: int = 100  # mini-batch steps per version
    batch: int = 2048
    l2: float = 1e-4
    lr: float = 0.005
    holdout_every: int = 5
    long_chat_s: float = 120.0  # AUROC: a "long" chat lasted at least this long
    raw_dim: int = RAW_DIM
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Held-out metrics of one version."""

    version: str
    labels_seen: int
    holdout: int
    auroc: float
    mse: float
    nll: float
    train_s: float


def holdout_bucket(match_id: str, every: int) -> bool:
    """Stable (process-independent) choice of held-out labels."""
    digest = hashlib.blake2b(match_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % every == 0


class LabelStore:
    """Growable column arrays of labels (no per-label Python objects once stored)."""

    def __init__(self, raw_dim: int, capacity: int = 4096) -> None:
        self.raw_dim = raw_dim
        self.n = 0
        self.raw_a = np.zeros((capacity, raw_dim), np.float32)
        self.raw_b = np.zeros((capacity, raw_dim), np.float32)
        self.y = np.zeros(capacity, np.float64)
        self.censored = np.zeros(capacity, bool)

    def add(self, raw_a: F32, raw_b: F32, duration_s: float, censored: bool) -> None:
        if self.n == self.y.shape[0]:
            grow = 2 * self.n
            self.raw_a = np.resize(self.raw_a, (grow, self.raw_dim))
            self.raw_b = np.resize(self.raw_b, (grow, self.raw_dim))
            self.y = np.resize(self.y, grow)
            self.censored = np.resize(self.censored, grow)
        i = self.n
        self.raw_a[i], self.raw_b[i] = raw_a, raw_b
        self.y[i] = math.log(max(duration_s, MIN_DURATION_S))
        self.censored[i] = censored
        self.n += 1


class Trainer:
    """Turns labels into model versions ``duration-v1``, ``duration-v2``, ..."""

    def __init__(self, config: TrainerConfig | None = None, name: str = "duration") -> None:
        self.config = config or TrainerConfig()
        self.name = name
        self.train = LabelStore(self.config.raw_dim)
        self.holdout = LabelStore(self.config.raw_dim)
        self.model: DurationModel | None = None
        self.history: list[Evaluation] = []
        self._adam = Adam(lr=self.config.lr)
        self._since = 0
        self._rng = np.random.default_rng(self.config.seed)

    def add(self, match_id: str, raw_a: F32, raw_b: F32, duration_s: float, censored: bool) -> None:
        """Take one label; raw vectors of a different width are a caller bug (ValueError)."""
        if raw_a.shape != (self.config.raw_dim,) or raw_b.shape != (self.config.raw_dim,):
            raise ValueError(f"label {match_id}: raw features must have {self.config.raw_dim} values")
        if holdout_bucket(match_id, self.config.holdout_every):
            self.holdout.add(raw_a, raw_b, duration_s, censored)
        else:
            self.train.add(raw_a, raw_b, duration_s, censored)
            self._since += 1

    @property
    def due(self) -> bool:
        """Enough new labels for the next version."""
        first = self.model is None and self.train.n >= self.config.min_labels
        return first or (self.model is not None and self._since >= self.config.retrain_every)

    def maybe_train(self) -> DurationModel | None:
        """Train and return a new version if one is due, else None."""
        return self.fit() if self.due else None

    def fit(self) -> DurationModel:
        """One more version from all training labels so far."""
        cfg = self.config
        started = time.perf_counter()
        n = self.train.n
        if n == 0:
            raise ValueError("no training labels yet")
        if self.model is None:
            w = np.zeros((cfg.raw_dim, cfg.raw_dim))
            w[0, 0] = float(np.mean(self.train.y[:n]))
            log_sigma = float(np.log(max(float(np.std(self.train.y[:n])), 0.1)))
        else:
            w, log_sigma = self.model.weights.copy(), self.model.log_sigma
        for _ in range(cfg.steps):
            idx = self._rng.integers(0, n, size=min(cfg.batch, n))
            _, g_w, g_s = loss_and_grad(
                w, log_sigma, self.train.raw_a[idx], self.train.raw_b[idx], self.train.y[idx],
                self.train.censored[idx], cfg.l2,
            )  # fmt: skip
            log_sigma = self._adam.step(w, log_sigma, g_w, g_s)
        w = (w + w.T) / 2.0
        version = f"{self.name}-v{len(self.history) + 1}"
        self.model = DurationModel(w, log_sigma, version, labels_seen=n)
        self._since = 0
        self.history.append(self.evaluate(self.model, time.perf_counter() - started))
        return self.model

    def evaluate(self, model: DurationModel, train_s: float = 0.0) -> Evaluation:
        """Held-out AUROC (long vs short chat), MSE of log duration on observed labels, mean NLL."""
        h = self.holdout
        mu = model.mu(h.raw_a[: h.n], h.raw_b[: h.n])
        y, cens = h.y[: h.n], h.censored[: h.n]
        score, long_ = known_long(mu, y, cens, self.config.long_chat_s)
        nll_loss = float(nll(y, cens, mu, model.log_sigma).mean()) if h.n else float("nan")
        return Evaluation(
            version=model.version,
            labels_seen=model.labels_seen,
            holdout=h.n,
            auroc=auroc(score, long_),
            mse=mse(mu[~cens], y[~cens]),
            nll=nll_loss,
            train_s=train_s,
        )


def known_long(
    score: F64, y: F64, censored: npt.NDArray[np.bool_], long_chat_s: float
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Scores and long/short classes of the labels whose class is known: every observed label, and censored
    labels already past the threshold (a chat censored at 30 s might still become long: left out)."""
    threshold = math.log(long_chat_s)
    known = ~censored | (y >= threshold)
    return score[known], y[known] >= threshold


__all__ = ["Evaluation", "LabelStore", "Trainer", "TrainerConfig", "known_long", "pair_mu"]
