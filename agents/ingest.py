"""The worker loop: the hot path. Fetches ``events`` in batches, applies them, ticks, and sends what it produced.

Why a service with its own consumer instead of a Faust agent: a Faust agent pays Faust's per-event machinery
(about three event-loop iterations and four tasks per event); iterating ``stream.events()`` and doing nothing else
peaks at 13-17.5k events/s on one core, ``stream.take()`` is no faster, while a plain aiokafka ``getmany`` reads
~370k/s (README, "Facts we rely on"). So this :class:`WorkerLoop` is a Faust service (started and stopped with
the app) that owns one consumer-group member for ``events`` (group ``<app id>-events``) and one producer.

Why one loop for ingest *and* ticks instead of a timer: ordering by construction. The loop applies every batch
synchronously (no await per event), and before a tick it also applies what the consumer has already fetched, so
a leave fetched before a tick is applied before that tick can match the user; a tick never overlaps itself or a
batch, and a model swap lands between ticks. The tick's matching runs in a thread (the engine releases the GIL
in BLAS and its numba kernels), so the event loop keeps fetching, heartbeating and sending meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from mode.utils.types.trees import NodeT

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.agents.sink import FlushingSink
from tickmatch.schemas import TickStats
from tickmatch.schemas.codec import MAX_EVENT_BYTES
from tickmatch.stream import topics as names

log = logging.getLogger(__name__)

MAX_BATCH = 5_000  # records per getmany: ~0.1 s of work at worst, so the tick is never held up for long
DRAIN_LIMIT = 200_000  # records applied from the prefetch buffer before one tick (it holds far fewer normally)


@dataclass(slots=True)
class LoopStats:
    """What the loop measured (read by tests, the benchmark and, later, metrics)."""

    events: int = 0
    batches: int = 0
    ticks: int = 0
    overruns: int = 0  # ticks that started more than one interval late (the previous work took too long)
    max_lateness_s: float = 0.0
    sent: int = 0
    send_errors: int = 0
    tick_ms: list[float] = field(default_factory=list)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drops the shards of partitions this worker lost, and only those: aiokafka revokes every partition at the
    start of a rebalance and then assigns the new set, so "revoked" alone would drop pools we keep."""

    def __init__(self, runtime: WorkerRuntime, topic: str) -> None:
        self.runtime = runtime
        self.topic = topic
        self.revoked: set[int] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.revoked |= {tp.partition for tp in revoked if tp.topic == self.topic}

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        kept = {tp.partition for tp in assigned if tp.topic == self.topic}
        lost, self.revoked = self.revoked - kept, set()
        if lost:
            self.runtime.drop_partitions(lost)
        log.info("partitions assigned", extra={"partitions": sorted(kept), "lost": sorted(lost)})


class WorkerLoop(mode.Service):
    """Batch ingest + tick scheduling + batched output for one worker (see the module docstring)."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        sink: FlushingSink,
        bootstrap: str,
        *,
        beacon: NodeT[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.runtime = runtime
        self.sink = sink
        self.bootstrap = bootstrap
        self.stats = LoopStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickmatch-tick")
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._done = asyncio.Event()
        self.monotonic: Callable[[], float] = time.monotonic  # the schedule's clock (tests script it)
        super().__init__(beacon=beacon, loop=loop)  # type: ignore[arg-type]  # mode: beacon=None is its default

    async def on_start(self) -> None:
        settings = self.runtime.settings
        session_ms = int(settings.session_timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{settings.app_id}-events",
            client_id=f"{settings.app_id}-events",
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=1000,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(session_ms // 6, 500),
            fetch_max_wait_ms=10,  # an idle partition answers within 10 ms: bounds the fetch part of latency
            max_partition_fetch_bytes=max(1 << 20, MAX_EVENT_BYTES),
        )
        # acks=all: a decision is sent once the broker has it durably. No idempotence: Tansu rejects it (README,
        # "Facts we rely on"). linger 5 ms + 256 KiB batches: a tick's records leave in a few requests.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{settings.app_id}-worker",
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(
            [settings.topic(names.EVENTS)], listener=_Rebalance(self.runtime, settings.topic(names.EVENTS))
        )

    async def on_stop(self) -> None:
        """Let the loop finish its iteration (a running tick completes and its outputs are sent), then close."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout=10.0)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.flush()
                await self._producer.stop()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        self._executor.shutdown(wait=True)

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _run(self) -> None:
        try:
            await self.run_until_stopped()
        finally:
            self._done.set()

    async def run_until_stopped(self) -> None:
        """The loop itself: fetch and apply until the next tick is due, drain, tick, send; until stopped."""
        assert self._consumer is not None and self._producer is not None
        consumer, interval = self._consumer, self.runtime.settings.tick_interval_s
        clock = self.monotonic
        next_tick = clock() + interval
        while not self.should_stop:
            wait_ms = max(0, math.ceil((next_tick - clock()) * 1000))  # ceil: no busy spin in the last ms
            self._apply(await consumer.getmany(timeout_ms=wait_ms, max_records=MAX_BATCH))
            if clock() >= next_tick:
                drained = 0
                while drained < DRAIN_LIMIT:  # what was fetched before the tick is applied before it
                    batch = await consumer.getmany(timeout_ms=0, max_records=MAX_BATCH)
                    if not batch:
                        break
                    drained += self._apply(batch)
                late = clock() - next_tick
                self.stats.max_lateness_s = max(self.stats.max_lateness_s, late)
                self.runtime.swap_pending_model()
                # The event loop stays free while the tick matches in its thread: the consumer keeps prefetching,
                # heartbeats and sends go on. Preparing batches meanwhile (decode, featurize, embed) was tried and
                # measured worse: it competes with the tick's Python parts for the GIL, so ticks grew longer.
                stats = await asyncio.get_running_loop().run_in_executor(self._executor, self._tick)
                self.stats.ticks += 1
                self.stats.tick_ms.append(stats.elapsed_ms)
                if len(self.stats.tick_ms) > 10_000:
                    del self.stats.tick_ms[:5_000]
                next_tick += interval
                if next_tick <= clock():  # the work took longer than a tick: skip, never run ticks back to back
                    self.stats.overruns += 1
                    next_tick = clock() + interval
            await self._flush()

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> int:
        n = 0
        for records in batch.values():
            self.runtime.apply_batch(records)
            n += len(records)
        if n:
            self.stats.events += n
            self.stats.batches += 1
        return n

    def _tick(self) -> TickStats:
        was = gc.isenabled()
        gc.disable()  # the engine pauses collection too; this also keeps it off the output building
        try:
            return self.runtime.tick()
        finally:
            if was:
                gc.enable()

    async def _flush(self) -> None:
        if not self.sink.queued:
            return
        assert self._producer is not None
        for future in await self.sink.flush(self._producer):
            future.add_done_callback(self._delivered)

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.stats.send_errors += 1
            if self.stats.send_errors in (1, 10, 100, 1000):
                log.error(
                    "output not delivered",
                    extra={
                        "errors": self.stats.send_errors,
                        "error": str(future.exception() if not future.cancelled() else "cancelled"),
                    },
                )
        else:
            self.stats.sent += 1
