"""The worker loop's scheduling, with a scripted consumer and producer in place of Kafka: what was fetched before a
tick is applied before it, up to a batch, and the leaves in the rest are noted (a fetched leave is never matched
past, and a backlog does not hold the tick up), ticks never run back to back, outputs are sent after the tick that
made them."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from tickmatch.agents import ingest
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
    loop, runtime = owning_loop()
    loop.ticks_wanted = ticks
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
    # fetched by then (the next answer, at no extra time): the loop must apply it before the tick matches "a"
    loop, producer, consumer = await run_loop([(0.6, joins), (0.0, [Leave("a", "s", 2.0)])])
    pairs = decisions(producer)
    assert len(pairs) == 1 and "a" not in pairs[0], pairs
    assert 0 in consumer.calls  # it asked for what was buffered without waiting
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


def owning_loop() -> tuple[OneTick, WorkerRuntime]:
    """A loop that owns partition 0 (as if adopted) and stops after one tick."""
    settings = Settings(app_id="loop", tick_interval_s=0.5)
    sink = TopicSink(settings)
    runtime = WorkerRuntime(settings, sink, ManualClock())
    loop = OneTick(runtime, sink, "127.0.0.1:9")
    runtime.claimed[TP.partition], runtime.guarded, loop.rebalancing = 0, True, False
    loop.tick_starts = []
    return loop, runtime


async def test_before_a_tick_the_loop_takes_what_was_fetched_but_does_not_chase_the_fetcher() -> None:
    loop, runtime = owning_loop()
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


async def test_a_backlog_held_at_the_tick_is_applied_in_part_and_its_leaves_are_noted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest, "MAX_BATCH", 3)  # records applied at a time
    # a..d are waiting when the tick falls due; then the pull brings a backlog of 6 events: 3 are applied before
    # the tick, the rest held. Their leaves are noted: "a" (waiting) and "x" (joins in the held part, then leaves)
    # are never matched; "e" (applied) and "y" (held join, no leave) are matched or wait as usual.
    backlog: list[Record] = [Join("e", "s", 1.0), Join("f", "s", 1.0), Leave("f", "s", 2.0)]
    backlog += [Join("x", "s", 1.0), Leave("x", "s", 2.0), Leave("a", "s", 2.0)]
    loop, producer, _ = await run_loop(
        [(0.2, [Join("a", "s", 1.0), Join("b", "s", 1.0)]), (0.4, [Join("c", "s", 1.0), Join("d", "s", 1.0)]),
         (0.0, backlog)], ticks=2,
    )  # fmt: skip
    first, second = loop.runtime.counters, decisions(producer)
    assert not {"a", "f", "x"} & {user for pair in second for user in pair}, second
    assert len(second) == 2 and {user for pair in second for user in pair} == {"b", "c", "d", "e"}
    assert first["leaves.early"] == 1  # "a": out of the pool as soon as its leave was seen
    assert first["joins.leaving"] == 1  # "x": its join recorded, not queued
    assert loop.stats.events == 10 and "x" not in loop.runtime.pools["s"]
    stats = [decode_record(v) for t, v in producer.sent if t == "ticks"]
    assert [r.events for r in stats if r.TYPE == "tick-stats"] == [7, 10]  # type: ignore[attr-defined]


async def test_outputs_leave_after_the_tick_and_ticks_do_not_run_back_to_back() -> None:
    # an answer that takes 1.2 s (2.4 intervals): the tick after it starts 0.8 s late, and the next one comes a whole
    # interval after it instead of at once to catch up
    loop, producer, _ = await run_loop([(0.1, [Join(u, "s", 1.0) for u in "abcdef"]), (1.2, [])], ticks=3)
    assert len(decisions(producer)) == 3 and loop.stats.ticks == 3
    assert loop.stats.overruns == 1 and abs(loop.stats.max_lateness_s - 0.8) < 1e-9
    assert [round(t, 6) for t in loop.tick_starts] == [1.3, 1.8, 2.3]
    ticks = [decode_record(v) for t, v in producer.sent if t == "ticks"]
    assert [r.tick_id for r in ticks if r.TYPE == "tick-stats"] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_nothing_is_applied_or_ticked_while_a_revoke_waits_for_the_state() -> None:
    loop, runtime = owning_loop()

    class RevokedWhileFetching(ScriptedConsumer):
        """The group starts a rebalance while the loop waits for the answer that makes a tick due."""

        async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
            out = await super().getmany(timeout_ms=timeout_ms, max_records=max_records)
            if len(self.calls) == 2:
                loop.rebalancing = True  # what the revoke callback does before it waits for the lock
                loop.ticks_wanted = 0  # and end the test after this iteration
            return out

    consumer = RevokedWhileFetching([(0.1, [Join("a", "s", 1.0)]), (0.5, [Join("b", "s", 1.0)])])
    producer = RecordingProducer()
    loop._consumer, loop._producer = consumer, producer  # type: ignore[assignment]
    loop.monotonic = consumer.clock
    await loop.run_until_stopped()
    runtime.close()
    assert loop.stats.events == 1 and loop.stats.ticks == 0 and decisions(producer) == []
    assert bool(loop._held)  # "b" waits: the revoke drops it, or the loop applies it once the rebalance ends
