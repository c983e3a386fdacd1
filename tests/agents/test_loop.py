"""The worker loop's scheduling, with a scripted consumer and producer in place of Kafka: what was fetched before a
tick is applied before it (a fetched leave is never matched past), ticks never run back to back, outputs are sent
after the tick that made them."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from tickmatch.agents.ingest import WorkerLoop
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.agents.sink import TopicSink
from tickmatch.schemas import Join, Leave, Record, decode_record
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg

TP = TopicPartition("events", 0)


class ScriptedConsumer:
    """``getmany`` answers from a script of ``(seconds it takes, records)``; with the script used up it waits out
    its timeout. Time is the loop's scripted monotonic clock, so the test decides when a tick is due."""

    def __init__(self, script: list[tuple[float, list[Record]]]) -> None:
        self.script = deque(script)
        self.calls: list[int] = []
        self.offset = 0
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.calls.append(timeout_ms)
        if not self.script:
            self.now += timeout_ms / 1000.0
            return {}
        took, batch = self.script.popleft()
        self.now += took
        records = []
        for record in batch:
            records.append(Msg.of(record, offset=self.offset))
            self.offset += 1
        return {TP: records} if records else {}


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None, partition: int | None = None
    ) -> Any:
        self.sent.append((topic, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(topic=topic, partition=partition or 0, offset=len(self.sent) - 1))
        return future


class OneTick(WorkerLoop):
    """Stops after ``ticks`` ticks (the real loop runs until the service stops)."""

    ticks_wanted = 1
    tick_starts: list[float]

    def _tick(self) -> Any:
        self.tick_starts.append(self.monotonic())
        return super()._tick()

    @property
    def should_stop(self) -> bool:
        return self.stats.ticks >= self.ticks_wanted


async def run_loop(
    script: list[tuple[float, list[Record]]], ticks: int = 1
) -> tuple[OneTick, RecordingProducer, ScriptedConsumer]:
    settings = Settings(app_id="loop", tick_interval_s=0.5)
    sink = TopicSink(settings)
    runtime = WorkerRuntime(settings, sink, ManualClock())
    loop = OneTick(runtime, sink, "127.0.0.1:9")
    runtime.claimed[TP.partition] = 0  # as if adopted: the loop guards offsets of the partitions it owns
    runtime.guarded = True
    loop.ticks_wanted = ticks
    loop.tick_starts = []
    consumer, producer = ScriptedConsumer(script), RecordingProducer()
    loop._consumer, loop._producer = consumer, producer  # type: ignore[assignment]
    loop.monotonic = consumer.clock
    await loop.run_until_stopped()
    runtime.close()
    return loop, producer, consumer


def decisions(producer: RecordingProducer) -> list[tuple[str, str]]:
    out = []
    for topic, value in producer.sent:
        if topic.endswith("decisions"):
            record = decode_record(value)
            out.append((record.user_a, record.user_b))  # type: ignore[attr-defined]
    return out


async def test_a_leave_fetched_before_the_tick_is_applied_before_it() -> None:
    joins: list[Record] = [Join(u, "s", 1.0) for u in "abcd"]
    # the joins take the whole tick interval to arrive, so the tick is due right after them; the leave was already
    # fetched by then (the next answer, at no extra time): the drain must apply it before the tick matches "a"
    loop, producer, consumer = await run_loop([(0.6, joins), (0.0, [Leave("a", "s", 2.0)])])
    pairs = decisions(producer)
    assert len(pairs) == 1 and "a" not in pairs[0], pairs
    assert 0 in consumer.calls  # the drain asked for what was buffered without waiting
    assert loop.stats.events == 5 and loop.stats.ticks == 1


class FetchingConsumer(ScriptedConsumer):
    """Also models aiokafka's fetch buffer (``_fetcher._records``: one fetch result per partition): the first
    answer leaves ``held`` buffered, and handing that out lets the next fetch (``refill``) land at once, as a
    backlog does."""

    def __init__(self, first: list[Record], held: list[Record], refill: list[Record]) -> None:
        super().__init__([(0.6, first)])
        self._fetcher = SimpleNamespace(_records={})
        self.fetches = deque([held, refill])

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        buffered = self._fetcher._records.pop(TP, None)
        if buffered is None:
            out = await super().getmany(timeout_ms=timeout_ms, max_records=max_records)
        else:
            self.calls.append(timeout_ms)
            out = {TP: buffered}
        if self.fetches:  # the fetcher fetches again as soon as its buffered result was handed out
            batch = self.fetches.popleft()
            self._fetcher._records[TP] = [Msg.of(r, offset=self.offset + i) for i, r in enumerate(batch)]
            self.offset += len(batch)
        return out


async def test_the_drain_applies_what_was_fetched_but_does_not_chase_the_fetcher() -> None:
    settings = Settings(app_id="loop", tick_interval_s=0.5)
    sink = TopicSink(settings)
    runtime = WorkerRuntime(settings, sink, ManualClock())
    loop = OneTick(runtime, sink, "127.0.0.1:9")
    runtime.claimed[TP.partition], runtime.guarded = 0, True
    loop.tick_starts = []
    # a..d arrive as the tick falls due; the leave of "a" is buffered by then; e and f arrive from the fetch that
    # handing out the leave started: after the tick was due, so they wait for the next one
    consumer = FetchingConsumer([Join(u, "s", 1.0) for u in "abcd"], [Leave("a", "s", 2.0)], [Join("e", "s", 1.0),
                                Join("f", "s", 1.0)])  # fmt: skip
    producer = RecordingProducer()
    loop._consumer, loop._producer = consumer, producer  # type: ignore[assignment]
    loop.monotonic = consumer.clock
    await loop.run_until_stopped()
    runtime.close()
    pairs = decisions(producer)
    assert len(pairs) == 1 and not {"a", "e", "f"} & set(pairs[0]), pairs
    assert loop.stats.events == 5 and TP in consumer._fetcher._records  # e and f still buffered


async def test_outputs_leave_after_the_tick_and_ticks_do_not_run_back_to_back() -> None:
    # an answer that takes 1.2 s (2.4 intervals): the tick after it starts 0.8 s late, and the next one comes a whole
    # interval after it instead of at once to catch up
    loop, producer, _ = await run_loop([(0.1, [Join(u, "s", 1.0) for u in "abcdef"]), (1.2, [])], ticks=3)
    assert len(decisions(producer)) == 3 and loop.stats.ticks == 3
    assert loop.stats.overruns == 1 and abs(loop.stats.max_lateness_s - 0.8) < 1e-9
    assert [round(t, 6) for t in loop.tick_starts] == [1.3, 1.8, 2.3]
    ticks = [decode_record(v) for t, v in producer.sent if t == "ticks"]
    assert [r.tick_id for r in ticks if r.TYPE == "tick-stats"] == [1, 2, 3]  # type: ignore[attr-defined]
