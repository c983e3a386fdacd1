"""Test helpers shipped with the package (as bytewax ships ``bytewax.testing``): a sink that records every output,
a clock the test sets and a consumed-message stand-in. The app factory and
:class:`~tickmatch.agents.runtime.WorkerRuntime` take the sink and the clock, so a test builds a worker around
them instead of patching one after construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tickmatch.schemas import DurationLabel, MatchDecision, Record, ShardStats, TickStats, encode


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
    shards: list[ShardStats] = field(default_factory=list)
    rerouted: list[tuple[bytes, bytes, int, str]] = field(default_factory=list)  # (key, value, partition, origin)

    def decision(self, decision: MatchDecision) -> None:
        self.decisions.append(decision)

    def label(self, label: DurationLabel) -> None:
        self.labels.append(label)

    def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None:
        self.dead.append(DeadLettered(key, value, reason, detail, origin))

    def tick_stats(self, stats: TickStats) -> None:
        self.ticks.append(stats)

    def shard_stats(self, stats: ShardStats) -> None:
        self.shards.append(stats)

    def reroute(self, key: bytes, value: bytes, partition: int, origin: str) -> None:
        self.rerouted.append((key, value, partition, origin))

    queued: tuple[()] = ()  # nothing waits to be sent: every output is recorded as it is written

    async def flush(self, producer: Any) -> list[Any]:
        """Nothing to send (the worker loop calls this after every batch and tick)."""
        return []

    def reasons(self) -> list[str]:
        """The dead-letter reasons so far, in order."""
        return [d.reason for d in self.dead]


@dataclass(frozen=True, slots=True)
class Msg:
    """A consumed message as the runtime sees it (aiokafka's ``ConsumerRecord`` in the worker)."""

    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    offset: int = 0
    topic: str = "events"
    timestamp: int = 0  # Kafka record timestamp, milliseconds (recovery takes join times from it)

    @classmethod
    def of(cls, record: Record, partition: int = 0, offset: int = 0) -> Msg:
        """A well-formed message carrying ``record``, keyed by its shard."""
        return cls(encode(record), record.shard.encode(), partition, offset)  # type: ignore[attr-defined]


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
