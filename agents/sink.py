"""Where a worker's outputs go: the runtime writes through :class:`Sink`; :class:`TopicSink` is the Kafka one.

Sink methods are synchronous and only queue: the runtime never awaits an output. :class:`TopicSink` encodes each
record once into msgpack bytes and keeps ``(topic, key, value, headers)`` until the worker loop calls
:meth:`TopicSink.flush`, which hands the whole batch to the producer without waiting for each delivery. Tests
hand the app factory a recording sink instead (``tickmatch.testing.RecordingSink``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from tickmatch.schemas import DurationLabel, MatchDecision, ShardStats, TickStats, encode
from tickmatch.stream import topics as names
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class Sink(Protocol):
    """Where the runtime's outputs go (Kafka topics in the worker, lists in tests)."""

    def decision(self, decision: MatchDecision) -> None: ...

    def label(self, label: DurationLabel) -> None: ...

    def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None: ...

    def tick_stats(self, stats: TickStats) -> None: ...

    def shard_stats(self, stats: ShardStats) -> None: ...

    def reroute(self, key: bytes, value: bytes, partition: int, origin: str) -> None: ...


class FlushingSink(Sink, Protocol):
    """A sink the worker loop drains after every batch and tick (``TopicSink``; ``RecordingSink`` has nothing to
    drain)."""

    queued: Any

    async def flush(self, producer: AIOKafkaProducer) -> list[Sent]: ...


Sent = tuple["asyncio.Future[Any]", str, int | None, int]  # delivery future, topic, pinned partition, records sent


def dlq_headers(reason: str, detail: str, origin: str) -> Headers:
    """The dead-letter headers every DLQ record carries (the README documents them)."""
    return [("reason", reason.encode()), ("detail", detail.encode()[:1024]), ("origin", origin.encode())]


class TopicSink:
    """Queues encoded outputs for the topics of ``settings``, keyed by shard (so outputs stay co-partitioned with
    inputs); :meth:`flush` sends what is queued."""

    def __init__(self, settings: Settings, partition_of: Callable[[str], int | None] | None = None) -> None:
        self.decisions_topic = settings.topic(names.DECISIONS)
        self.labels_topic = settings.topic(names.LABELS)
        self.dlq_topic = settings.topic(names.DLQ)
        self.events_topic = settings.topic(names.EVENTS)
        self.ticks_topic = settings.topic(names.TICKS)
        # Decisions, labels and shard stats go to the partition number their shard's events arrived on (not to
        # wherever our partitioner would hash the key): recovery of events partition p reads decisions and labels
        # partition p, whatever partitioner the producers of events used.
        self.partition_of = partition_of or (lambda shard: None)
        self.queued: list[tuple[str, bytes | None, bytes, Headers | None, int | None]] = []

    def decision(self, decision: MatchDecision) -> None:
        shard = decision.shard
        self.queued.append((self.decisions_topic, shard.encode(), encode(decision), None, self.partition_of(shard)))

    def label(self, label: DurationLabel) -> None:
        shard = label.shard
        self.queued.append((self.labels_topic, shard.encode(), encode(label), None, self.partition_of(shard)))

    def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None:
        if log.isEnabledFor(logging.WARNING):
            log.warning("dead-lettered event", extra={"reason": reason, "detail": detail, "origin": origin})
        self.queued.append(
            (self.dlq_topic, key, value if value is not None else b"", dlq_headers(reason, detail, origin), None)
        )

    def tick_stats(self, stats: TickStats) -> None:
        self.queued.append((self.ticks_topic, stats.worker.encode(), encode(stats), None, None))

    def shard_stats(self, stats: ShardStats) -> None:
        shard = stats.shard
        self.queued.append((self.ticks_topic, shard.encode(), encode(stats), None, self.partition_of(shard)))

    def reroute(self, key: bytes, value: bytes, partition: int, origin: str) -> None:
        headers = [("rerouted-from", origin.encode())]
        self.queued.append((self.events_topic, key, value, headers, partition))

    async def flush(self, producer: AIOKafkaProducer) -> list[Sent]:
        """Hand every queued record to the producer; returns (delivery future, topic, partition, records) of each
        send (the worker loop tracks deliveries and failures). Records pinned to a partition without headers
        (decisions, labels, shard stats) go in batches built here, one future per batch: ``producer.send`` costs
        ~15-20 us and a future per record, which was a second of the loop for the 45,000 decisions of one big tick
        (bench.live backlog). The rest (ticks, dead letters, re-routed events) is sent record by record. Order
        within a partition is kept: its batches are queued in order. Sending only waits when the producer's buffer
        is full: that is the back-pressure that slows the loop when the broker cannot keep up."""
        queued, self.queued = self.queued, []
        out: list[Sent] = []
        open_batches: dict[tuple[str, int], tuple[Any, int]] = {}  # (topic, partition) -> (builder, records)
        for topic, key, value, headers, partition in queued:
            if partition is None or headers:
                future = await producer.send(topic, value=value, key=key, headers=headers, partition=partition)
                out.append((future, topic, partition, 1))
                continue
            batch, count = open_batches.get((topic, partition)) or (producer.create_batch(), 0)
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                out.append((await producer.send_batch(batch, topic, partition=partition), topic, partition, count))
                batch, count = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a {len(value)}-byte record does not fit an empty batch of {topic}")
            open_batches[(topic, partition)] = (batch, count + 1)
        for (topic, partition), (batch, count) in open_batches.items():
            out.append((await producer.send_batch(batch, topic, partition=partition), topic, partition, count))
        return out
