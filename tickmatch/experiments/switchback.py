"""Switch-back experiments: each (shard, time slice) runs one arm, drawn from a seeded schedule.

Why switch-back and not an A/B test by user: users in one pool interfere — a better match for one user takes
a partner from another — so treated and control users of one pool are not independent, and a by-user A/B
estimate is biased. Switching a whole shard between arms over time keeps each slice's market under one arm;
the first ``washout_s`` of a slice (users who joined under the previous arm are still waiting) is dropped from
the read-out.

The schedule is a pure function of (seed, experiment id, shard, slice number): every worker, a restarted one
and the analysis compute the same arm without talking to each other. Each slice's arm is drawn uniformly
(a Bernoulli design: the read-out's variance estimate needs slices assigned independently).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

MODELS = ("current", "heuristic")  # what an arm can score with: the newest model the worker has, or the heuristic


class ExperimentError(ValueError):
    """An experiment definition that cannot run; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one shard runs at one moment."""

    experiment: str
    arm: str
    slice_id: int
    washout: bool  # inside the first washout_s of the slice: decided, but left out of the read-out


@dataclass(frozen=True, slots=True)
class Experiment:
    """A switch-back experiment definition (JSON: the field names; see README, Experiments)."""

    id: str
    arms: dict[str, str]  # arm name -> model it scores with (one of MODELS)
    slice_s: float = 600.0
    washout_s: float = -1.0  # default: a tenth of the slice
    shards: tuple[str, ...] = ()  # empty: every shard
    seed: int = 0
    start: float = 0.0  # epoch seconds slices are counted from
    end: float = math.inf  # after this the experiment is over (shards run the current model)
    _names: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > 64:
            raise ExperimentError("id: expected 1..64 characters")
        if len(self.arms) < 2:
            raise ExperimentError(f"arms: expected at least two, got {sorted(self.arms)}")
        for arm, model in self.arms.items():
            if not arm or model not in MODELS:
                raise ExperimentError(f"arms.{arm}: model must be one of {list(MODELS)}, got {model!r}")
        if not self.slice_s > 0:
            raise ExperimentError(f"slice_s: expected > 0, got {self.slice_s}")
        if self.washout_s == -1.0:
            object.__setattr__(self, "washout_s", 0.1 * self.slice_s)
        if not 0 <= self.washout_s < self.slice_s:
            raise ExperimentError(f"washout_s: expected 0 <= washout_s < slice_s, got {self.washout_s}")
        object.__setattr__(self, "_names", tuple(sorted(self.arms)))

    @classmethod
    def from_dict(cls, data: Any) -> Experiment:
        """Build from a decoded JSON object; :class:`ExperimentError` names what is wrong."""
        if not isinstance(data, dict):
            raise ExperimentError(f"expected a JSON object, got {type(data).__name__}")
        known = {"id", "arms", "slice_s", "washout_s", "shards", "seed", "start", "end"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExperimentError(f"unknown fields {unknown}; expected {sorted(known)}")
        try:
            arms = data["arms"]
            if not isinstance(arms, dict):
                raise ExperimentError("arms: expected an object of arm name -> model")
            return cls(
                id=str(data["id"]),
                arms={str(k): str(v) for k, v in arms.items()},
                slice_s=float(data.get("slice_s", 600.0)),
                washout_s=float(data.get("washout_s", -1.0)),
                shards=tuple(str(s) for s in data.get("shards", ())),
                seed=int(data.get("seed", 0)),
                start=float(data.get("start", 0.0)),
                end=float(data.get("end", math.inf)),
            )
        except KeyError as exc:
            raise ExperimentError(f"{exc.args[0]}: required") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ExperimentError):
                raise
            raise ExperimentError(f"bad value: {exc}") from exc

    def slice_of(self, t: float) -> int:
        return math.floor((t - self.start) / self.slice_s)

    def arm_of(self, shard: str, slice_id: int) -> str:
        """The arm of ``shard`` in slice ``slice_id``: a keyed hash, uniform over the arms."""
        digest = hashlib.blake2b(f"{self.seed}:{self.id}:{shard}:{slice_id}".encode(), digest_size=8).digest()
        return self._names[int.from_bytes(digest, "big") % len(self._names)]

    def assign(self, shard: str, t: float) -> Assignment | None:
        """What ``shard`` runs at ``t``; None outside the experiment (before start, after end, other shards)."""
        if t < self.start or t >= self.end or (self.shards and shard not in self.shards):
            return None
        slice_id = self.slice_of(t)
        into = t - (self.start + slice_id * self.slice_s)
        return Assignment(self.id, self.arm_of(shard, slice_id), slice_id, into < self.washout_s)

    def model_of(self, arm: str) -> str:
        return self.arms[arm]
