"""Where a worker's outputs go: the runtime writes through :class:`Sink`; :class:`TopicSink` is the Kafka one.

Tests hand the app factory a recording sink instead (``tickmatch.testing.RecordingSink``).
"""

from __future__ import annotations

import logging
from typing import Protocol

from tickmatch.schemas import DurationLabel, MatchDecision, TickStats
from tickmatch.stream.topics import Topics

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where the runtime's outputs go (Kafka topics in the worker, lists in tests)."""

    async def decision(self, decision: MatchDecision) -> None: ...

    async def label(self, label: DurationLabel) -> None: ...

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str
    ) -> None: ...

    async def tick_stats(self, stats: TickStats) -> None: ...


class TopicSink:
    """Writes runtime outputs to Kafka topics, keyed by shard (so outputs stay co-partitioned with inputs)."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    async def decision(self, decision: MatchDecision) -> None:
        await self.topics.decisions.send(key=decision.shard.encode(), value=decision.to_dict())

    async def label(self, label: DurationLabel) -> None:
        await self.topics.labels.send(key=label.shard.encode(), value=label.to_dict())

    async def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None:
        headers = [("reason", reason.encode()), ("detail", detail.encode()[:1024]), ("origin", origin.encode())]
        log.warning("dead-lettered event", extra={"reason": reason, "detail": detail, "origin": origin})
        await self.topics.dlq.send(key=key, value=value if value is not None else b"", headers=headers)

    async def tick_stats(self, stats: TickStats) -> None:
        await self.topics.ticks.send(key=stats.worker.encode(), value=stats.to_dict())
