"""Waiting-time policy: the minimum score to match relaxes as a user waits.

Why: matching every pair as soon as possible wastes good users on poor partners; holding out forever starves
users nobody scores highly. A minimum score that starts strict and relaxes with waiting time lets a poor pair
wait a few ticks for a better one, while a long waiter eventually takes what there is. A pair qualifies if its
score reaches the *more relaxed* of its two users' minimums, i.e. the longer waiter's: the user who has
waited longer decides how picky the pair may be.

The curve is linear from ``start`` (at wait 0) to ``end`` (at ``ramp_s`` and after). ``start == end`` is a
fixed minimum; ``-inf`` everywhere matches every allowed pair at once (the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class WaitCurve:
    """Minimum pair score as a function of waiting seconds."""

    start: float = -math.inf
    end: float = -math.inf
    ramp_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ramp_s <= 0:
            raise ValueError(f"ramp_s must be > 0, got {self.ramp_s}")
        if math.isnan(self.start) or math.isnan(self.end):
            raise ValueError("start and end must be numbers")
        if self.start == math.inf or (math.isinf(self.end) and not math.isinf(self.start)):
            raise ValueError("start must be below +inf, and end finite when start is")
        if self.end > self.start:
            raise ValueError(f"the minimum must relax with waiting: end ({self.end}) > start ({self.start})")

    def at(self, wait_s: float) -> float:
        """Minimum score for one waiting time."""
        if math.isinf(self.start) or self.start == self.end:
            return self.end if math.isinf(self.start) else self.start
        f = min(max(wait_s / self.ramp_s, 0.0), 1.0)
        return self.start + (self.end - self.start) * f

    def fill(self, wait_s: npt.NDArray[np.float64], out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Vectorised :meth:`at` into ``out`` (no allocation when ``wait_s`` is a view)."""
        if math.isinf(self.start) or self.start == self.end:
            out[:] = self.at(0.0)
            return out
        np.divide(wait_s, self.ramp_s, out=out, casting="unsafe")
        np.clip(out, 0.0, 1.0, out=out)
        out *= np.float32(self.end - self.start)
        out += np.float32(self.start)
        return out
