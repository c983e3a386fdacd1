"""Group-less readers: a consumer over named partitions, from their earliest offsets, as an ``async with``.

Why outside a consumer group: the read-back, the trainer and the model follower must each see *every* partition
they name, not a group's share of them (a group would hand each model version to one worker only). Why from the
start: Tansu's LATEST offsets are wrong after a broker restart, and every one of these readers wants the whole
history anyway (a training set, the newest model version, everything a run produced).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tickmatch.schemas.codec import MAX_MODEL_BYTES


@dataclass(slots=True)
class EarliestReader:
    """A started consumer assigned to fixed partitions; :meth:`batches` is the only poll loop in the code base."""

    consumer: AIOKafkaConsumer

    async def batches(
        self, stop: asyncio.Event | None = None, timeout_ms: int = 200, max_records: int = 5000
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """Yield the records of each non-empty poll (partition by partition, each in offset order) until ``stop``
        is set or the caller stops iterating. Empty polls yield nothing, so a caller never spins."""
        while stop is None or not stop.is_set():
            polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            records = [rec for part in polled.values() for rec in part]
            if records:
                yield records

    async def caught_up(self, targets: dict[TopicPartition, int] | None = None) -> bool:
        """Every assigned partition's position has reached its high watermark as of the last fetch response (the
        broker's own figure, not a LATEST offset request: those are wrong on Tansu after a restart), or the one
        recorded in ``targets`` (the first one seen) where given."""
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if targets is not None and high is not None:
                high = targets.setdefault(tp, high)
            if high is None or await self.consumer.position(tp) < high:
                return False
        return True

    async def until_caught_up(
        self, max_records: int = 5000, timeout_ms: int = 100
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """Yield batches until every partition was read up to the first high watermark its fetches reported.

        The first, not the latest: with events arriving all the time the latest moves on as fast as it is read,
        and a reader that chased it ended only on a poll that found nothing new in any partition (a recovery under
        200 events/s took 3-4 s instead of 0.4 s, bench.chaos). What arrives later is the caller's to read."""
        targets: dict[TopicPartition, int] = {}
        while True:
            polled = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            records = [rec for part in polled.values() for rec in part]
            if records:
                yield records
            if await self.caught_up(targets):
                return


@contextlib.asynccontextmanager
async def read_from(
    bootstrap: str, client_id: str, offsets: dict[TopicPartition, int]
) -> AsyncIterator[EarliestReader]:
    """Like :func:`read_from_earliest`, positioned at the given offsets instead, for reading up to the high
    watermark (recovery, snapshot blobs): an empty partition's fetch is answered after 10 ms, not the broker's
    default 500 ms. Each recovery reader ends on such an answer (:meth:`EarliestReader.caught_up` needs one), so
    the default cost a recovery ~1.2 s of waiting (bench.live backlog: 0.6 s before the replay, 0.55 s at its end)."""
    async with read_from_earliest(bootstrap, client_id, list(offsets), fetch_max_wait_ms=10) as reader:
        for tp, offset in offsets.items():
            reader.consumer.seek(tp, offset)
        yield reader


@contextlib.asynccontextmanager
async def read_from_earliest(
    bootstrap: str, client_id: str, parts: Sequence[TopicPartition], fetch_max_wait_ms: int = 500
) -> AsyncIterator[EarliestReader]:
    """A consumer outside any group, assigned ``parts`` and positioned at their earliest offsets; stopped on exit.

    Fetch sizes allow a model update (a weight matrix, far bigger than any event) in every partition it reads.
    ``fetch_max_wait_ms``: how long the broker holds a fetch of partitions with nothing new (long-lived readers
    keep the default, so an idle one costs the broker two requests a second)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=client_id,
        max_partition_fetch_bytes=MAX_MODEL_BYTES,
        fetch_max_bytes=2 * MAX_MODEL_BYTES,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        consumer.assign(list(parts))
        await consumer.seek_to_beginning(*parts)
        yield EarliestReader(consumer)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
