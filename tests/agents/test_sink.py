"""The topic sink's flush: records pinned to a partition leave in batches (order kept, a full batch sent and a new
one started), the rest record by record, and every send reports how many records it carried."""

from __future__ import annotations

import asyncio
from typing import Any

from tickmatch.agents.sink import TopicSink
from tickmatch.schemas import MatchDecision, TickStats, decode_record
from tickmatch.stream.settings import Settings


class Batch:
    def __init__(self, room: int) -> None:
        self.room, self.records = room, []  # type: ignore[var-annotated]

    def append(self, *, key: bytes | None, value: bytes, timestamp: float | None) -> object | None:
        if len(self.records) == self.room:
            return None  # full, as aiokafka's BatchBuilder says it
        self.records.append((key, value))
        return object()


class BatchingProducer:
    """Records what was sent and how: batches of ``room`` records, or single sends."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int | None, list[bytes]]] = []  # (topic, partition, values) per send

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, [v for _, v in batch.records]))
        return asyncio.get_running_loop().create_future()

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None,
                   partition: int | None = None) -> asyncio.Future[Any]:  # fmt: skip
        self.sent.append((topic, partition, [value]))
        return asyncio.get_running_loop().create_future()


def decision(i: int, shard: str) -> MatchDecision:
    return MatchDecision(f"m{i}", 1, shard, f"a{i}", f"b{i}", 1.0, "v", "p", 1.0, 0.0, 0.0)


async def test_pinned_records_leave_in_batches_in_order_and_the_rest_one_by_one() -> None:
    settings = Settings(app_id="sink")
    sink = TopicSink(settings, partition_of=lambda shard: int(shard[-1]))
    for i in range(7):
        sink.decision(decision(i, f"s{i % 2}"))  # s0 -> partition 0, s1 -> partition 1
    sink.tick_stats(TickStats("w", 1, 1.0, 0, 0, 0.0))  # no pinned partition: sent on its own
    producer = BatchingProducer(room=3)
    sent = await sink.flush(producer)  # type: ignore[arg-type]
    ids = [(topic, partition, [decode_record(v).match_id for v in values]) for topic, partition, values in  # type: ignore[attr-defined]
           producer.sent if topic.endswith("decisions")]  # fmt: skip
    # s0 holds m0 m2 m4 m6: a full batch of three goes as the fourth arrives, the rest at the end
    assert ids == [
        ("decisions", 0, ["m0", "m2", "m4"]),
        ("decisions", 0, ["m6"]),
        ("decisions", 1, ["m1", "m3", "m5"]),
    ], ids
    assert sorted((topic, partition, count) for _, topic, partition, count in sent) == [
        ("decisions", 0, 1), ("decisions", 0, 3), ("decisions", 1, 3), ("ticks", None, 1),
    ]  # fmt: skip
    assert not sink.queued
