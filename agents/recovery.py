"""Rebuild the state of newly assigned partitions from Kafka alone: newest snapshot, then the log after it.

The outputs are the source of truth: a decision that reached ``decisions`` happened, one that did not, did not.
For each partition ``p`` assigned to this worker:

1. load the newest snapshot of ``p`` (``stream.snapshots``: pointer -> chunks), or start empty at offset 0;
2. read ``decisions`` p and ``labels`` p from the snapshot's offsets up to their high watermarks: the decisions
   taken after the snapshot, and the match ids already labelled;
3. replay ``events`` p from the snapshot's events offset up to its last published decision through the normal
   batch path, re-applying each published decision at its place (its ``events_offset``: the tick had applied
   every event before it and none after) instead of deciding again; dead letters and labels published before are
   not sent again, labels lost in the crash are; the matches whose label was published are closed;
4. read on to the high watermark without applying: the *tail* (events no decision followed), noting its leaves
   (``agents.lookahead``: those users leave the pool now);
5. claim ``p`` at the offset the replay reached; the worker loop consumes the tail like any events, ticking
   meanwhile, with the tail's own times and label deadlines held back until it is through
   (``WorkerRuntime.catch_up_to``), and then goes on as usual.

Why the tail is not replayed before the first tick (it was): with a backlog, that meant one long replay and then
one giant tick (bench.live backlog, 200,000 events: 4.4-6 s of replay, then a 2.7-4.5 s tick of 100,000 waiting
users, nobody matched for ~8 s). Reading the tail for its leaves costs ~2 us an event; the users see decisions
from the first tick on, and no one whose leave is in the tail is matched.

A decision delivered after the recovering worker read the decisions tail (a zombie: the old owner paused past its
session timeout and then resumed) is not seen; without transactions nothing can fence it (README, Reliability).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from tickmatch.agents import snapshot as snapshots
from tickmatch.agents.heap import Freezer
from tickmatch.agents.runtime import Message, WorkerRuntime
from tickmatch.schemas import DecodeError, DurationLabel, MatchDecision
from tickmatch.schemas.codec import decode_record
from tickmatch.stream import topics as names
from tickmatch.stream.readers import read_from
from tickmatch.stream.settings import Settings
from tickmatch.stream.snapshots import Pointers, read_blob

log = logging.getLogger(__name__)

KEEP_TAIL = 250_000  # tail records kept in memory for the loop (~90 MB at most); beyond, it fetches them again
Positions = dict[tuple[str, int], int]  # (topic, partition) -> next offset after this worker's last known output


@dataclass(slots=True)
class Recovered:
    """What recovering one partition took (logged, and read by tests and the chaos benchmark)."""

    partition: int
    snapshot_offset: int | None
    waiting_restored: int
    events_replayed: int
    tail_events: int  # events after the last published decision, left to the worker loop
    left_early: int  # users who left the pool at once: their leave is in the tail (agents.lookahead)
    decisions_reapplied: int
    labels_published: int
    seconds: float


async def recover(
    runtime: WorkerRuntime,
    settings: Settings,
    bootstrap: str,
    pointers: Pointers,
    partitions: Sequence[int],
    positions: Positions,
    kept: dict[int, list[ConsumerRecord[bytes, bytes]]] | None = None,
) -> list[Recovered]:
    """Recover ``partitions`` into ``runtime`` (which holds none of their shards); updates ``positions`` with the
    decisions/labels offsets read up to. The caller holds the worker's state lock.

    ``kept``: where to leave the tail's records read here (each partition's from its claimed offset on, up to
    ``KEEP_TAIL`` records in all), so that the loop applies them without fetching and unpacking them again."""
    started = time.perf_counter()
    decisions_topic, labels_topic = settings.topic(names.DECISIONS), settings.topic(names.LABELS)
    snaps: dict[int, snapshots.PartitionSnapshot | None] = {}
    snap_at: dict[int, int | None] = {}
    for p in partitions:
        snap_at[p] = offset = await pointers.get(p)
        snaps[p] = None
        if offset is not None:
            blob = await read_blob(bootstrap, f"{settings.app_id}-recovery", pointers.topic, p, offset)
            if blob is None:
                log.warning("snapshot pointer leads nowhere", extra={"partition": p, "offset": offset})
            else:
                try:
                    snaps[p] = snapshots.decode(blob)
                except snapshots.SnapshotError as exc:  # e.g. written by an older version: rebuild from the logs
                    log.warning(
                        "snapshot unreadable, replaying the partition from its start",
                        extra={"partition": p, "offset": offset, "error": str(exc)},
                    )
    waiting: dict[int, int] = {}
    for p in partitions:
        snap = snaps[p]
        if snap is None:
            runtime.claimed[p] = 0
            waiting[p] = 0
        else:
            snapshots.restore(runtime, snap)
            waiting[p] = snap.waiting
    dec_from = {TopicPartition(decisions_topic, p): _start(snaps[p], "decisions") for p in partitions}
    lab_from = {TopicPartition(labels_topic, p): _start(snaps[p], "labels") for p in partitions}
    pending: dict[int, deque[MatchDecision]] = {p: deque() for p in partitions}
    published: dict[str, str] = {}  # match id -> shard of every label after the snapshots
    async with read_from(bootstrap, f"{settings.app_id}-recovery", dec_from | lab_from) as reader:
        async for batch in reader.until_caught_up():
            for rec in batch:
                record = _decode(rec)
                if isinstance(record, MatchDecision):
                    snap = snaps[rec.partition]
                    if snap is None or record.tick_id > snap.tick_id:
                        pending[rec.partition].append(record)
                elif isinstance(record, DurationLabel):
                    published[record.match_id] = record.shard
        for tp in dec_from | lab_from:
            positions[(tp.topic, tp.partition)] = await reader.consumer.position(tp)
    counts = {p: len(pending[p]) for p in partitions}
    for p in partitions:
        ordered = sorted(pending[p], key=lambda d: (d.events_offset or 0, d.tick_id))
        pending[p] = deque(ordered)
        last = max((d.events_offset or 0 for d in ordered), default=0)
        runtime.quiet_below[p] = max(last, runtime.claimed[p])
    before = {p: runtime.claimed[p] for p in partitions}
    runtime.replaying, runtime.published_labels = True, set(published)
    try:
        tails, early = await _replay(runtime, settings, bootstrap, pending, kept)
    finally:
        runtime.replaying, runtime.published_labels = False, set()
        runtime.quiet_below.clear()
    # Before the tail: its chat-ends of these matches then count as late, as they did before the restart.
    closed = runtime.labels.close_published(published, runtime.clock())
    replayed = {p: runtime.claimed[p] - before[p] for p in partitions}
    for p in partitions:
        runtime.catch_up_to(p, tails[p])
    seconds = time.perf_counter() - started
    out = [
        Recovered(
            p,
            snap_at[p],
            waiting[p],
            replayed[p],
            max(0, tails[p] - runtime.claimed[p]),
            early[p],
            counts[p],
            closed,
            seconds,
        )
        for p in partitions
    ]
    for item in out:
        log.info(
            "partition recovered",
            extra={
                "partition": item.partition,
                "snapshot_offset": item.snapshot_offset,
                "waiting_restored": item.waiting_restored,
                "events_replayed": item.events_replayed,
                "tail_events": item.tail_events,
                "left_early": item.left_early,
                "decisions_reapplied": item.decisions_reapplied,
                "recovery_s": round(seconds, 3),
            },
        )
    return out


def _start(snap: snapshots.PartitionSnapshot | None, what: str) -> int:
    if snap is None:
        return 0
    return snap.decisions_offset if what == "decisions" else snap.labels_offset


def _decode(rec: ConsumerRecord[bytes, bytes]) -> object:
    try:
        return decode_record(rec.value or b"")
    except DecodeError:
        return None


async def _replay(
    runtime: WorkerRuntime,
    settings: Settings,
    bootstrap: str,
    pending: dict[int, deque[MatchDecision]],
    kept: dict[int, list[ConsumerRecord[bytes, bytes]]] | None = None,
) -> tuple[dict[int, int], dict[int, int]]:
    """Replay events of the partitions of ``pending`` from their claimed offsets up to ``runtime.quiet_below`` (the
    last published decision's place), with each pending decision re-applied before the first event its tick had
    not applied; read the rest (the tail) up to the high watermark and note its leaves. Returns where each
    partition's tail ends, and how many users left the pool early because of a leave in it."""
    topic = settings.topic(names.EVENTS)
    starts = {TopicPartition(topic, p): runtime.claimed[p] for p in pending}
    tails = {p: runtime.claimed[p] for p in pending}
    early = dict.fromkeys(pending, 0)
    room = KEEP_TAIL if kept is not None else 0
    full: set[int] = set()  # partitions whose kept records stopped short of their tail's end
    # The heap grows by every replayed user: frozen as the loop does (agents.heap), or full collections walk all
    # of it again and again (a 200,000-event replay: ~25 % slower, in-process).
    freezer = Freezer()
    async with read_from(bootstrap, f"{settings.app_id}-recovery", starts) as reader:
        while True:
            async for batch in reader.until_caught_up():
                by_part: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
                for rec in batch:
                    by_part.setdefault(rec.partition, []).append(rec)
                for p, records in by_part.items():
                    stop = runtime.quiet_below.get(p, 0)
                    cut = next((i for i, rec in enumerate(records) if rec.offset >= stop), len(records))
                    if cut:
                        replay_records(runtime, records[:cut], pending[p])
                    if cut < len(records):  # all replayed up to here: the rest are the tail's
                        queue = pending[p]
                        while queue:  # the decisions placed at the tail's start, before its leaves are noted
                            runtime.apply_decision(queue.popleft())
                        tail = records[cut:]
                        early[p] += runtime.note_leaves(tail)
                        if kept is not None and p not in full:
                            if len(tail) <= room:
                                kept.setdefault(p, []).extend(tail)
                                room -= len(tail)
                            else:
                                full.add(p)  # a contiguous prefix only: the loop fetches the rest
                    tails[p] = max(tails[p], records[-1].offset + 1)
                freezer.maybe()
            # A decision placed after the high watermark we saw cannot exist unless events arrived since: read on
            # until every partition reached its last decision.
            if all(runtime.claimed[p] >= runtime.quiet_below.get(p, 0) for p in pending):
                break
        for queue in pending.values():
            while queue:
                runtime.apply_decision(queue.popleft())
    return tails, early


def replay_records(runtime: WorkerRuntime, records: Sequence[Message], queue: deque[MatchDecision]) -> None:
    """Apply ``records`` (one partition, in offset order) and the queued decisions of that partition, each
    decision just before the first record its tick had not applied (its ``events_offset``)."""
    start = 0
    for i, rec in enumerate(records):
        while queue and (queue[0].events_offset or 0) <= rec.offset:
            if i > start:
                runtime.apply_batch(records[start:i])
                start = i
            runtime.apply_decision(queue.popleft())
    if start < len(records):
        runtime.apply_batch(records[start:])
