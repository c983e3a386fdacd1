"""The experiment definition a worker runs, hot-reloaded from a JSON file (``TICKMATCH_EXPERIMENT_FILE``).

Why a file: every worker of a deployment reads the same definition (a mounted config map in Kubernetes, a
volume in compose) and picks up a change within seconds without a restart; the schedule itself is a pure
function of the definition (``tickmatch.experiments.switchback``), so workers agree without coordinating.

A missing file means no experiment. A file that does not parse or validate is logged (once per distinct
problem) and the definition in force stays: a typo must not stop matching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tickmatch.experiments.switchback import Experiment, ExperimentError

log = logging.getLogger(__name__)
CHECK_EVERY_S = 2.0


class ExperimentFile:
    """Reads ``path`` again whenever its modification time or size changes (checked every ``every_s``)."""

    def __init__(
        self, path: str | Path | None, every_s: float = CHECK_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = Path(path) if path else None
        self.every_s = every_s
        self.clock = clock
        self.current: Experiment | None = None
        self.problem: str | None = None
        self._stamp: tuple[float, int] | None = None
        self._checked = -float("inf")

    def poll(self) -> bool:
        """Re-read the file if due and changed; returns whether the definition in force changed."""
        if self.path is None or self.clock() - self._checked < self.every_s:
            return False
        self._checked = self.clock()
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp = None
            return self._use(None)
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            experiment = Experiment.from_dict(orjson.loads(self.path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, ExperimentError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self.problem:
                log.error(
                    "experiment file rejected; the previous definition stays",
                    extra={"path": str(self.path), "error": problem},
                )
            self.problem = problem
            return False
        self.problem = None
        return self._use(experiment)

    def _use(self, experiment: Experiment | None) -> bool:
        if experiment == self.current:
            return False
        self.current = experiment
        log.warning(
            "experiment definition changed",
            extra={"experiment": experiment.id if experiment else None, "path": str(self.path)},
        )
        return True
