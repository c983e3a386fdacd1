"""Test helpers shipped with the package (as bytewax ships ``bytewax.testing``): a sink that records every output
and a clock the test sets. The app factory and :class:`~tickmatch.agents.runtime.WorkerRuntime` take both, so a
test builds a worker around them instead of patching one after construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from tickmatch.schemas import DurationLabel, MatchDecision, TickStats


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """One dead-letter record as the sink received it."""

    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    origin: str


@dataclass(slots=True)
class RecordingSink:
    """A :class:`~tickmatch.agents.sink.Sink` that keeps every output in lists, in the order written."""

    decisions: list[MatchDecision] = field(default_factory=list)
    labels: list[DurationLabel] = field(default_factory=list)
    dead: list[DeadLettered] = field(default_factory=list)
    ticks: list[TickStats] = field(default_factory=list)

    async def decision(self, decision: MatchDecision) -> None:
        self.decisions.append(decision)

    async def label(self, label: DurationLabel) -> None:
        self.labels.append(label)

    async def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None:
        self.dead.append(DeadLettered(key, value, reason, detail, origin))

    async def tick_stats(self, stats: TickStats) -> None:
        self.ticks.append(stats)

    def reasons(self) -> list[str]:
        """The dead-letter reasons so far, in order."""
        return [d.reason for d in self.dead]


@dataclass(slots=True)
class ManualClock:
    """Wall-clock seconds that move only when the test says so: ``clock()`` reads, ``advance(s)`` moves."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward (never back) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        self.now += seconds
        return self.now
