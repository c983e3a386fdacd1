"""The worker loop: the hot path. Fetches ``events`` in batches, applies them, ticks, and sends what it produced.

Why a service with its own consumer instead of a Faust agent: a Faust agent pays Faust's per-event machinery
(about three event-loop iterations and four tasks per event); iterating ``stream.events()`` and doing nothing else
peaks at 13-17.5k events/s on one core, ``stream.take()`` is no faster, while a plain aiokafka ``getmany`` reads
~370k/s (README, "Facts we rely on"). So this :class:`WorkerLoop` is a Faust service (started and stopped with
the app) that owns one consumer-group member for ``events`` (group ``<app id>-events``) and one producer.

Why one loop for ingest *and* ticks instead of a timer: ordering by construction. The loop applies every batch
synchronously (no await per event), and before a tick it takes everything the consumer has fetched, applies up to
``MAX_BATCH`` of it and notes the leaves in the rest (``agents.lookahead``), so no user whose leave was fetched
before a tick is matched by it, and a backlog never holds a tick up for long; a tick never overlaps itself or a
batch, and a model swap lands between ticks; when the next one is due (the grid, or later after a long or late
tick) is ``agents.cadence``'s rule. The tick's matching runs in a thread (the engine releases the GIL
in BLAS and its numba kernels), so the event loop keeps fetching, heartbeating and sending meanwhile.

The loop also owns the crash consistency of its partitions (README, Reliability): a snapshot of each one every
``snapshot_interval_s``, on revoke and on shutdown, and recovery (``agents.recovery``) of each partition it is
assigned before it consumes or ticks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError
from mode.utils.types.trees import NodeT

from tickmatch.agents import snapshot as snapshots
from tickmatch.agents.cadence import next_due
from tickmatch.agents.experiment_file import ExperimentFile
from tickmatch.agents.heap import Freezer
from tickmatch.agents.metrics import TICK_BUCKETS_S
from tickmatch.agents.recovery import Positions, Recovered, recover
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.agents.sink import FlushingSink
from tickmatch.agents.web import OpsServer
from tickmatch.schemas import TickStats
from tickmatch.schemas.codec import MAX_EVENT_BYTES
from tickmatch.stream import topics as names
from tickmatch.stream.broker import BrokerLost
from tickmatch.stream.groups import cluster_id, forget_membership, is_tansu
from tickmatch.stream.snapshots import Pointers, write_blob

log = logging.getLogger(__name__)

MAX_BATCH = 5_000  # records applied at a time: ~0.1 s of work at worst, so the tick is never held up for long
STOP_BUDGET_S = 8.0  # SIGTERM -> the worker loop closed (Faust's own shutdown adds ~1 s)
SNAPSHOT_BUSY_FACTOR = 10.0  # snapshots start at least this many times their last write's duration apart
SNAPSHOT_PAUSE_S = 0.004  # the snapshot thread sleeps this long after each block it packs anew (snapshot.py)


@dataclass(slots=True)
class LoopStats:
    """What the loop measured (read by tests, the benchmark and, later, metrics)."""

    events: int = 0
    batches: int = 0
    ticks: int = 0
    overruns: int = 0  # ticks after which the next could not be due one interval later (late or long: cadence)
    max_lateness_s: float = 0.0
    sent: int = 0
    send_errors: int = 0
    snapshots: int = 0
    snapshot_ms: float = 0.0  # the last checkpoint (flush + encode + write + pointer), all partitions
    snapshot_bytes: int = 0  # the last checkpoint's encoded size, all partitions
    resyncs: int = 0  # partitions rebuilt from Kafka after an output of theirs was not delivered
    recovered: list[Recovered] = field(default_factory=list)
    tick_ms: list[float] = field(default_factory=list)
    tick_buckets: list[int] = field(default_factory=lambda: [0] * len(TICK_BUCKETS_S))  # cumulative, for /metrics
    tick_seconds_sum: float = 0.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands partitions over cleanly. On revoke: under the state lock (no tick or batch running), every output
    delivered and a final snapshot of each revoked partition written, then the partition's state dropped, so
    nothing of it is ticked after its snapshot and the next owner replays nothing. On assign: each partition
    is recovered from Kafka (``agents.recovery``; a partition handed straight back loads the snapshot this
    worker just wrote) and the consumer positioned at the offset its state reflects (committed offsets are not
    used for that)."""

    def __init__(self, loop: WorkerLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.loop.rebalancing = True
        parts = {tp.partition for tp in revoked if tp.topic == self.loop.events_topic}
        if not parts:
            return
        async with self.loop.lock:
            if not self.loop.closing:
                try:
                    await self.loop.checkpoint(sorted(parts & set(self.loop.runtime.claimed)))
                except Exception as exc:  # the next owner replays from the previous snapshot instead
                    log.warning("no snapshot on revoke", extra={"error": f"{type(exc).__name__}: {exc}"})
            self.loop.runtime.drop_partitions(parts)
            self.loop.drop_held(parts)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.loop.events_topic)
        if self.loop.stopping:  # shutting down: no recovery; the next owner recovers from our last snapshot
            return
        async with self.loop.lock:
            await self.loop.adopt(parts)
        self.loop.rebalancing = False
        log.info("partitions assigned", extra={"partitions": parts})


class WorkerLoop(mode.Service):
    """Batch ingest + tick scheduling + batched output + snapshots for one worker (see the module docstring)."""

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
        settings = runtime.settings
        self.events_topic = settings.topic(names.EVENTS)
        self.snapshots_topic = settings.topic(names.SNAPSHOTS)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickmatch-tick")
        self._snapshot_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickmatch-snapshot")
        self._snapshot_task: asyncio.Task[None] | None = None
        self._blocks = snapshots.BlockCache()  # used by the snapshot thread only
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._snap_producer: AIOKafkaProducer | None = None
        self._leave_on_stop = True  # send LeaveGroup when stopping (not on Tansu: see stream.groups)
        self._pointers = Pointers(bootstrap, f"{settings.app_id}-snapshots", self.snapshots_topic, settings.partitions)
        self._done = asyncio.Event()
        # Held by whatever reads or changes the runtime from the event loop: a batch, a tick, a checkpoint, a
        # recovery. The rebalance listener runs in aiokafka's coordinator task, concurrently with the loop.
        self.lock = asyncio.Lock()
        self.closing = False  # final snapshot written: no more snapshots on revoke
        self._settled = asyncio.Event()  # set while ``rebalancing`` is not
        self.rebalancing = True  # until the first assignment is recovered (read by /ready)
        self.running = False
        self.last_tick: float | None = None
        self._ops: OpsServer | None = None
        self.lost: BrokerLost | None = None  # set when the broker watchdog gives up (the CLI exits with code 3)
        self.stopping = False  # shutdown began: no more recovery on assign
        self.positions: Positions = {}  # next offset after our last delivered decision/label, per partition
        self._inflight: list[asyncio.Future[Any]] = []
        self._held = _Held()  # fetched, not applied yet (see ``run_until_stopped``)
        self._resync: set[int] = set()
        self.monotonic: Callable[[], float] = time.monotonic  # the schedule's clock (tests script it)
        self.freezer = Freezer()  # full GC passes kept small as the heap grows (see agents.heap)
        self.experiments = ExperimentFile(settings.experiment_file or None)
        super().__init__(beacon=beacon, loop=loop)  # type: ignore[arg-type]  # mode: beacon=None is its default

    @property
    def rebalancing(self) -> bool:
        """A revoke began and the assignment after it is not recovered yet (or the first one, at start). The loop
        applies and ticks nothing meanwhile: a revoke waiting for the state lock goes first."""
        return not self._settled.is_set()

    @rebalancing.setter
    def rebalancing(self, value: bool) -> None:
        if value:
            self._settled.clear()
        else:
            self._settled.set()

    async def on_start(self) -> None:
        settings = self.runtime.settings
        self.runtime.guarded = True  # from now on only claimed partitions' records apply, each offset once
        if settings.web_enabled:
            self._ops = OpsServer(self, settings.web_bind, settings.web_port)
            await self._ops.start()
        session_ms = int(settings.session_timeout_s * 1000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{settings.app_id}-events",
            client_id=f"{settings.app_id}-events",
            auto_offset_reset="earliest",
            # Positions come from the state (snapshot + replay), never from commits; offsets are committed at each
            # snapshot only so that lag tools show something meaningful.
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(session_ms // 6, 500),
            # How long the group waits for a member to rejoin after a revoke. Our revoke writes a final snapshot
            # (flush + acks + snapshot, ~0.2 s for 10,000 waiting users); a member that overran this would be
            # dropped while still sending, and its late decisions could escape the next owner's recovery.
            rebalance_timeout_ms=max(5 * session_ms, 30_000),
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
            max_request_size=1 << 20,
        )
        await self._producer.start()
        # Snapshots get a producer (a connection) of their own: aiokafka keeps one produce request in flight per
        # broker connection, and megabytes of snapshot chunks sent on the outputs' connection queued every
        # decision behind them (bench.live at 5,000 joins/s: p99 0.54 s over 60 s, 1.9 s over 120 s as the
        # snapshots grew to 20 MB; README Performance).
        self._snap_producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{settings.app_id}-snapshots",
            acks="all",
            enable_idempotence=False,
            max_request_size=1 << 20,
        )
        await self._snap_producer.start()
        cluster = await cluster_id(self._producer.client)
        self._leave_on_stop = not is_tansu(cluster)  # Tansu keeps a departed leader as leader (stream.groups)
        log.info("broker cluster", extra={"cluster_id": cluster, "leave_group_on_stop": self._leave_on_stop})
        await self._check_partitions()
        await self._pointers.start()
        await self._consumer.start()
        self._consumer.subscribe([self.events_topic], listener=_Rebalance(self))

    async def _check_partitions(self) -> None:
        """Learn the events topic's real partition count (shards are routed by it) and refuse to run if an
        output topic has fewer partitions: outputs go to the partition number of their shard's events."""
        assert self._producer is not None
        settings = self.runtime.settings
        count = len(await self._producer.partitions_for(self.events_topic))
        if count != settings.partitions:
            log.warning(
                "events has a different partition count than TICKMATCH_PARTITIONS; using the topic's",
                extra={"topic": self.events_topic, "partitions": count, "setting": settings.partitions},
            )
        for name in (names.DECISIONS, names.LABELS, names.TICKS, names.SNAPSHOTS):
            topic = settings.topic(name)
            have = len(await self._producer.partitions_for(topic))
            if have < count:
                raise RuntimeError(
                    f"topic {topic} has {have} partitions but {self.events_topic} has {count}: every output topic "
                    f"needs at least as many (README, Shards, partitions and scaling workers)"
                )
        self.runtime.partition_count = count
        self.runtime.route_partitions = True
        self._pointers.parts = [TopicPartition(self.snapshots_topic, p) for p in range(count)]

    async def on_stop(self) -> None:
        """Let the loop finish its iteration (a running tick completes and its outputs are sent), write a final
        snapshot of every partition (the next owner then replays nothing), then leave the group (on Tansu: let the
        member expire instead, ``stream.groups``) and close.

        The whole stop fits in ``STOP_BUDGET_S``: each step gets what is left of it. A consumer stopped in the
        middle of a group join waits for the join to end (on Tansu, a dead member's session timeout), and the
        state lock can be held by a recovery; neither may hold a SIGTERM for long (a chaos run measured 12.4 s
        before this budget)."""
        self.stopping = True
        deadline = time.monotonic() + STOP_BUDGET_S

        def left(most: float) -> float:
            return max(0.1, min(most, deadline - time.monotonic()))

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout=left(3.0))
        self.closing = True
        if self._snapshot_task is not None and not self._snapshot_task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._snapshot_task), timeout=left(1.5))
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._final_checkpoint(), timeout=left(4.0))
            except Exception as exc:  # a broker already gone, or out of time: the next owner replays more
                log.warning("no final snapshot", extra={"error": f"{type(exc).__name__}: {exc}"})
        if self._consumer is not None:
            if not self._leave_on_stop:
                forget_membership(self._consumer)  # on Tansu: expire after the session timeout (stream.groups)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), timeout=left(2.0))
        for producer in (self._producer, self._snap_producer):
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), timeout=left(1.0))
        await self._pointers.stop()
        if self._ops is not None:
            await self._ops.stop()
        self._executor.shutdown(wait=True)
        self._snapshot_executor.shutdown(wait=False)

    async def _final_checkpoint(self) -> None:
        async with self.lock:
            await self.checkpoint(sorted(self.runtime.claimed))

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _watch_broker(self) -> None:
        """Exit (non-zero, one clear line) when the broker has been unreachable for ``broker_lost_exit_s``: a
        worker cannot match without it, aiokafka would retry and log forever, and a supervisor restarting the
        process is the recovery (README, Failure modes)."""
        limit = self.runtime.settings.broker_lost_exit_s
        down_since: float | None = None
        while not self.should_stop:
            await asyncio.sleep(min(2.0, limit / 4))
            if self._producer is None:
                continue
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=min(3.0, limit / 2))
                if down_since is not None:
                    log.warning("broker reachable again", extra={"down_s": round(time.monotonic() - down_since, 1)})
                down_since = None
            except Exception as exc:  # connection refused, timeout, metadata errors: all mean "no broker"
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    log.error("broker unreachable", extra={"error": f"{type(exc).__name__}: {exc}"})
                elif now - down_since >= limit:
                    self.lost = BrokerLost(
                        f"lost the broker at {self.bootstrap} for {now - down_since:.0f} s "
                        f"(TICKMATCH_BROKER_LOST_EXIT_S={limit:g}); exiting so a supervisor restarts the worker"
                    )
                    # Exit now: a graceful stop would wait on every client's timeouts against a broker that is not
                    # there (93 s, measured), and there is nothing left to flush or snapshot without it.
                    log.critical(str(self.lost))
                    logging.shutdown()
                    print(f"tickmatch: error: {self.lost}", file=sys.stderr, flush=True)
                    os._exit(3)

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _run(self) -> None:
        self.running = True
        try:
            await self.run_until_stopped()
        except ConsumerStoppedError:
            if not self.stopping:
                raise  # stopped under us while shutting down (on_stop's wait ran out): nothing is lost by that
        finally:
            self.running = False
            self._done.set()

    async def run_until_stopped(self) -> None:
        """The loop itself: fetch and apply until the next tick is due, take what was fetched, tick, send; until
        stopped."""
        assert self._consumer is not None and self._producer is not None
        consumer, settings = self._consumer, self.runtime.settings
        interval = settings.tick_interval_s
        clock = self.monotonic
        next_tick = clock() + interval
        next_snapshot = clock() + settings.snapshot_interval_s
        while not self.should_stop:
            if self.rebalancing:  # see the property; wakes at least once a tick interval to check for a stop
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), timeout=interval)
                continue
            if self._held:
                await asyncio.sleep(0)  # records held from before a tick: apply them first, fetch no more
            else:
                wait_ms = max(0, math.ceil((next_tick - clock()) * 1000))  # ceil: no busy spin in the last ms
                self._held.add(await consumer.getmany(timeout_ms=wait_ms, max_records=MAX_BATCH))
            async with self.lock:
                if self.rebalancing:
                    # A revoke started while we fetched and waits for this lock. Ticking now would match users of
                    # partitions being taken away: a recovery that outlasted a rebalance (9.5 s, chasing the live
                    # log) let this loop tick once more after the group had given its partitions to another
                    # worker, and 1,114 users were double-booked (tests/integration/test_chaos.py).
                    continue
                if self._resync:
                    await self._rebuild()
                self._apply(self._held.take(MAX_BATCH))
                if clock() >= next_tick:
                    # Everything fetched before the tick: up to MAX_BATCH applied, the leaves in the rest noted
                    # (their users leave the pool now; agents.lookahead). Applying all of it made ticks wait 1-1.5 s
                    # behind Tansu's fetches of up to ~30,000 events a partition.
                    self._held.add(await consumer.getmany(timeout_ms=0))
                    self._apply(self._held.take(MAX_BATCH))
                    self._held.note_leaves(self.runtime)
                    started = clock()
                    self.stats.max_lateness_s = max(self.stats.max_lateness_s, started - next_tick)
                    self.runtime.swap_pending_model()
                    if self.experiments.poll():
                        self.runtime.experiment = self.experiments.current
                    # The event loop stays free while the tick matches in its thread: the consumer keeps
                    # prefetching, heartbeats and sends go on. Preparing batches meanwhile (decode, featurize,
                    # embed) was tried and measured worse: it competes with the tick's Python parts for the GIL.
                    stats = await asyncio.get_running_loop().run_in_executor(self._executor, self._tick)
                    self._ticked(stats.elapsed_ms)
                    due = next_due(next_tick, started, clock(), interval)  # agents.cadence
                    if due > next_tick + interval:  # late or long: the grid moved
                        self.stats.overruns += 1
                    next_tick = due
                await self._flush()
                self.freezer.maybe()
                if clock() >= next_snapshot and (self._snapshot_task is None or self._snapshot_task.done()):
                    held = await self.checkpoint(sorted(self.runtime.claimed), background=True)
                    # At most ~5 % of the loop's time goes to holding the state for snapshots, and at most ~10 %
                    # to writing them (the last write's time, measured): with a huge state snapshots become
                    # rarer, and a restart replays more instead (README, Reliability).
                    spacing = max(20.0 * held, SNAPSHOT_BUSY_FACTOR * self.stats.snapshot_ms / 1000.0)
                    next_snapshot = clock() + max(settings.snapshot_interval_s, spacing)

    def _ticked(self, elapsed_ms: float) -> None:
        stats = self.stats
        stats.ticks += 1
        stats.tick_ms.append(elapsed_ms)
        if len(stats.tick_ms) > 10_000:
            del stats.tick_ms[:5_000]
        seconds = elapsed_ms / 1000.0
        stats.tick_seconds_sum += seconds
        for i, bound in enumerate(TICK_BUCKETS_S):
            if seconds <= bound:
                stats.tick_buckets[i] += 1
        self.last_tick = time.monotonic()

    def lag(self) -> dict[int, int]:
        """Events not applied yet per owned partition, from the high watermarks the consumer's fetches reported."""
        out: dict[int, int] = {}
        if self._consumer is None:
            return out
        for p, applied in list(self.runtime.claimed.items()):
            high = self._consumer.highwater(TopicPartition(self.events_topic, p))
            if high is not None:
                out[p] = max(0, high - applied)
        return out

    def _apply(self, batch: list[list[Any]]) -> int:
        n = 0
        for records in batch:
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
        for future, topic, partition, count in await self.sink.flush(self._producer):
            future.add_done_callback(partial(self._delivered, topic, partition, count))
            self._inflight.append(future)
        if len(self._inflight) > 100_000:
            self._inflight = [f for f in self._inflight if not f.done()]

    def _delivered(self, topic: str, partition: int | None, count: int, future: asyncio.Future[Any]) -> None:
        """A send of ``count`` records (one, or a batch: its future carries the first record's offset) ended."""
        if future.cancelled() or future.exception() is not None:
            before = self.stats.send_errors
            self.stats.send_errors += count
            if partition is not None and topic != self.runtime.settings.topic(names.TICKS):
                # A decision or label the log does not have: our state is ahead of the log, rebuild it from there.
                self._resync.add(partition)
            if any(before < n <= self.stats.send_errors for n in (1, 10, 100, 1000)):
                log.error(
                    "output not delivered",
                    extra={
                        "errors": self.stats.send_errors,
                        "error": str(future.exception() if not future.cancelled() else "cancelled"),
                    },
                )
            return
        self.stats.sent += count
        meta = future.result()
        key = (meta.topic, meta.partition)
        self.positions[key] = max(self.positions.get(key, 0), meta.offset + count)

    async def checkpoint(self, partitions: list[int], background: bool = False) -> float:
        """Snapshot ``partitions`` (caller holds the lock): send everything queued, wait until every output is
        acknowledged (so the snapshot's decisions/labels offsets are final), copy each partition's state, then
        encode and write each snapshot and move its pointer. A partition with an undelivered output is rebuilt
        instead (its state is ahead of the log). Returns the seconds the state was held (flush + copy).

        ``background``: the periodic checkpoint returns right after the copy; encoding (in the snapshot thread, see
        :meth:`_encode`) and writing go on in a task while the loop keeps ticking. A copy is
        consistent on its own (it reflects a prefix of the decisions log), so a later snapshot landing first only
        means a longer replay. Revoke and shutdown wait for theirs: the next owner must find it."""
        if not partitions:
            return 0.0
        assert self._producer is not None
        started = time.perf_counter()
        await self._flush()
        inflight, self._inflight = self._inflight, []
        await asyncio.gather(*inflight, return_exceptions=True)
        await asyncio.sleep(0)  # let the delivery callbacks run
        if self._resync:
            await self._rebuild()
        settings = self.runtime.settings
        decisions, labels = settings.topic(names.DECISIONS), settings.topic(names.LABELS)
        now = self.runtime.clock()
        taken = [
            snapshots.take(
                self.runtime, p, self.positions.get((decisions, p), 0), self.positions.get((labels, p), 0), now
            )
            for p in partitions
            if p in self.runtime.claimed
        ]
        held = time.perf_counter() - started
        if background:
            self._snapshot_task = asyncio.create_task(self._write(taken, started))
        else:
            await self._write(taken, started)
        return held

    async def _write(self, taken: list[snapshots.PartitionSnapshot], started: float) -> None:
        """Encode (:meth:`_encode`) and write snapshots, then move their pointers."""
        assert self._snap_producer is not None
        blobs = await self._encode(taken)
        for snap, blob in zip(taken, blobs, strict=True):
            offset = await write_blob(
                self._snap_producer, self.snapshots_topic, snap.partition, f"p{snap.partition}".encode(), blob
            )
            await self._pointers.set(snap.partition, offset)
            if self._consumer is not None and not self.closing:
                with contextlib.suppress(Exception):  # for lag tools only; fails outside a group generation
                    await self._consumer.commit({TopicPartition(self.events_topic, snap.partition): snap.events_offset})
        self.stats.snapshots += 1
        self.stats.snapshot_bytes = sum(len(b) for b in blobs)
        self.stats.snapshot_ms = (time.perf_counter() - started) * 1000.0
        log.info(
            "snapshot written",
            extra={
                "partitions": [snap.partition for snap in taken],
                "bytes": self.stats.snapshot_bytes,
                "ms": round(self.stats.snapshot_ms, 1),
            },
        )

    async def _encode(self, taken: list[snapshots.PartitionSnapshot]) -> list[bytes]:
        """Encode snapshots in the snapshot thread, reusing the blocks earlier snapshots encoded
        (:class:`snapshots.BlockCache`): the GIL time a snapshot takes from the tick and ingest is what was
        appended since the last one, paced block by block (at most ~2.5 ms of packing, then a pause).

        Why not a forked child any more (it was Redis' BGSAVE idea: a copy-on-write image, no GIL): reading Python
        objects increments their reference counts, so the child copied most of the heap it read (171,000 page
        faults and 2.3 s for a state a thread encodes in 1.27 s), and on 2 cores it and the copy-on-write faults
        in the parent took the CPU the tick needed (bench.live 10,000 joins/s: p99 per 10 s 0.6 -> 1.3-1.9 s
        in the windows with a snapshot)."""
        loop = asyncio.get_running_loop()
        cache = self._blocks

        def run() -> list[bytes]:
            cache.next_round()
            return [snapshots.encode(snap, _yield_gil, cache) for snap in taken]

        return await loop.run_in_executor(self._snapshot_executor, run)

    async def adopt(self, partitions: list[int]) -> None:
        """Own ``partitions`` (caller holds the lock): recover those not held yet, then position the consumer at
        the offset each one's state reflects."""
        new = [p for p in partitions if p not in self.runtime.claimed]
        self.drop_held(set(partitions))  # the consumer is positioned anew below
        kept: dict[int, list[Any]] = {}  # recovered tails' records, read once (agents.recovery)
        if new:
            settings = self.runtime.settings
            self.stats.recovered.extend(
                await recover(self.runtime, settings, self.bootstrap, self._pointers, new, self.positions, kept)
            )
        self._held.add_read(kept)
        assert self._consumer is not None
        for p in partitions:
            records = kept.get(p)
            start = records[-1].offset + 1 if records else self.runtime.claimed[p]
            self._consumer.seek(TopicPartition(self.events_topic, p), start)

    def drop_held(self, partitions: set[int]) -> None:
        """Forget fetched, unapplied records of ``partitions`` (caller holds the lock; their position is reset)."""
        self._held.drop(partitions)

    async def _rebuild(self) -> None:
        """Drop and recover the partitions whose outputs were not delivered (caller holds the lock)."""
        parts, self._resync = sorted(self._resync & set(self.runtime.claimed)), set()
        if not parts:
            return
        self.stats.resyncs += len(parts)
        log.warning("rebuilding partitions after undelivered outputs", extra={"partitions": parts})
        self.runtime.drop_partitions(set(parts))
        await self.adopt(parts)


@dataclass(slots=True)
class _Fetched:
    records: list[Any]  # one partition's, in offset order
    noted: bool = False  # their leaves were noted (``WorkerRuntime.note_leaves``)
    start: int = 0  # records before it were taken (an index, not a re-slice: a 250,000-record tail is taken in
    # 5,000-record parts, and copying the rest each time was quadratic)

    def rest(self) -> list[Any]:
        return self.records[self.start :] if self.start else self.records


class _Held:
    """Records fetched and not applied yet, in fetch order (each partition's in offset order). Records are added
    only when none are held, except for the pull before a tick and a recovery's tails, so this holds at most one
    fetch of each partition beyond a batch, plus up to ``agents.recovery.KEEP_TAIL`` tail records after a recovery.
    Whoever changes a partition's position (revoke, recovery) drops its records here."""

    def __init__(self) -> None:
        self._parts: deque[_Fetched] = deque()

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        self._parts.extend(_Fetched(records) for records in fetched.values() if records)

    def add_read(self, records: dict[int, list[Any]]) -> None:
        """Records read (and their leaves noted) elsewhere: a recovery's tails."""
        self._parts.extend(_Fetched(part, noted=True) for part in records.values() if part)

    def take(self, limit: int) -> list[list[Any]]:
        """Up to ``limit`` records from the front, as lists of one partition each."""
        out: list[list[Any]] = []
        while self._parts and limit > 0:
            part = self._parts[0]
            left = len(part.records) - part.start
            if left <= limit:
                self._parts.popleft()
                out.append(part.rest())
                limit -= left
            else:
                out.append(part.records[part.start : part.start + limit])
                part.start += limit
                limit = 0
        return out

    def note_leaves(self, runtime: WorkerRuntime) -> None:
        """Let the runtime note the leaves among the held records (each record once)."""
        for part in self._parts:
            if not part.noted:
                runtime.note_leaves(part.rest())
                part.noted = True

    def drop(self, partitions: set[int]) -> None:
        """Forget the records of ``partitions`` (their position is being reset)."""
        self._parts = deque(part for part in self._parts if part.records[0].partition not in partitions)


def _yield_gil() -> None:
    """Between snapshot chunks: let the tick and ingest threads have the GIL for a while."""
    time.sleep(SNAPSHOT_PAUSE_S)
