"""Matching policies behind one interface, all run by the same engine on the same pool.

- ``random``: every allowed pair is equally good (random per-tick user values, so the pairing is arbitrary).
- ``fifo``: longest waiting first (greedy on summed waiting time).
- ``heuristic``: attribute similarity (the model a worker starts with before any label).
- ``learned``: the duration model, retrained from the labels the run itself produces, with a little
  exploration (users picked with probability ``explore`` are paired uniformly at random, propensities logged).
- ``oracle``: the simulator's true expected log-duration (it reads hidden traits; only the simulator can run it).

Why one engine for all: a comparison of policies is then a comparison of what they know, not of matchers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tickmatch.learning.scorer import Scorer, heuristic_scorer, scorer_from_raw_weights
from tickmatch.learning.trainer import Trainer, TrainerConfig
from tickmatch.market.population import Population
from tickmatch.matching.bilinear import BilinearModel

POLICIES = ("random", "fifo", "heuristic", "learned", "oracle")
F32 = npt.NDArray[np.float32]


@dataclass(slots=True)
class Policy:
    """What a simulated run needs from a policy."""

    name: str
    scorer: Scorer
    features: F32  # per user: the vectors ``scorer`` embeds (raw features, or hidden traits for the oracle)
    matcher: str = "auction"
    bias: str = "none"  # "random": fresh random user values each tick; "wait": the user's waiting seconds
    explore: float = 0.0
    trainer: Trainer | None = None


def make_policy(
    name: str, pop: Population, raw: F32, dim: int, trainer: TrainerConfig | None = None, explore: float = 0.1
) -> Policy:
    """Build the named policy for ``pop`` (``raw``: every user's raw feature vector)."""
    if name == "random":
        return Policy(name, Scorer(np.zeros((raw.shape[1], dim), np.float32), _zero(dim, "random")), raw, bias="random")
    if name == "fifo":
        zero = Scorer(np.zeros((raw.shape[1], dim), np.float32), _zero(dim, "fifo"))
        return Policy(name, zero, raw, matcher="greedy", bias="wait")
    if name == "heuristic":
        return Policy(name, heuristic_scorer(dim), raw)
    if name == "learned":
        learner = Trainer(trainer or TrainerConfig(), name="duration")
        return Policy(name, heuristic_scorer(dim), raw, explore=explore, trainer=learner)
    if name == "oracle":
        return Policy(name, scorer_from_raw_weights(pop.oracle_weights(), dim, "oracle"), pop.oracle_matrix())
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")


def _zero(dim: int, version: str) -> BilinearModel:
    return BilinearModel(np.zeros((dim, dim), np.float32), version)
