"""Rebuild the state of newly assigned partitions from Kafka alone: newest snapshot, then the log after it.

The outputs are the source of truth: a decision that reached ``decisions`` happened, one that did not, did not.
For each partition ``p`` assigned to this worker:

1. load the newest snapshot of ``p`` (``stream.snapshots``: pointer -> chunks), or start empty at offset 0;
2. read ``decisions`` p and ``labels`` p from the snapshot's offsets up to their high watermarks: the decisions
   taken after the snapshot, and the match ids already labelled;
3. replay ``events`` p from the snapshot's events offset up to its high watermark through the normal batch path,
   re-applying each published decision at its place (its ``events_offset``: the tick had applied every event
   before it and none after) instead of deciding again; dead letters and labels published before are not sent
   again, labels lost in the crash are;
4. claim ``p`` at the offset the replay reached; the worker loop resumes consuming there and ticks ``p``.

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

Positions = dict[tuple[str, int], int]  # (topic, partition) -> next offset after this worker's last known output


@dataclass(slots=True)
class Recovered:
    """What recovering one partition took (logged, and read by tests and the chaos benchmark)."""

    partition: int
    snapshot_offset: int | None
    waiting_restored: int
    events_replayed: int
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
) -> list[Recovered]:
    """Recover ``partitions`` into ``runtime`` (which holds none of their shards); updates ``positions`` with the
    decisions/labels offsets read up to. The caller holds the worker's state lock."""
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
        await _replay(runtime, settings, bootstrap, pending)
    finally:
        runtime.replaying, runtime.published_labels = False, set()
        runtime.quiet_below.clear()
    closed = runtime.labels.close_published(published, runtime.clock())
    seconds = time.perf_counter() - started
    out = [
        Recovered(p, snap_at[p], waiting[p], runtime.claimed[p] - before[p], counts[p], closed, seconds)
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
    runtime: WorkerRuntime, settings: Settings, bootstrap: str, pending: dict[int, deque[MatchDecision]]
) -> None:
    """Replay events of the partitions of ``pending`` from their claimed offsets to the high watermark, with each
    pending decision re-applied before the first event its tick had not applied."""
    topic = settings.topic(names.EVENTS)
    starts = {TopicPartition(topic, p): runtime.claimed[p] for p in pending}
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
                    replay_records(runtime, records, pending[p])
                freezer.maybe()
            # Decisions the log places after the high watermark we saw cannot exist unless events arrived since:
            # read on until every decision found its place.
            if all(not q or (q[-1].events_offset or 0) <= runtime.claimed[p] for p, q in pending.items()):
                break
        for queue in pending.values():
            while queue:
                runtime.apply_decision(queue.popleft())


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
