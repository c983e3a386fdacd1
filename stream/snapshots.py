"""Snapshots in Kafka: a blob written as chunks to one partition of the snapshots topic, and a pointer to the
newest one kept as a committed offset.

Why chunks: a partition snapshot of 10,000 waiting users is a few MB, over Kafka's default 1 MB message limit.
Why a committed offset as the pointer: Tansu has no log compaction and its LATEST offsets are wrong after a
restart, so "the last snapshot" cannot be found by reading back from the end; a consumer-group offset commit
(group ``<app id>-snapshots``, committed outside any group generation, as a simple consumer does) is a small,
durable register on Tansu and on Apache Kafka alike. A pointer is moved only after every chunk was acknowledged,
so it never points at a partial snapshot.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tickmatch.stream.readers import read_from

CHUNK_BYTES = 512 * 1024


async def write_blob(producer: AIOKafkaProducer, topic: str, partition: int, key: bytes, blob: bytes) -> int:
    """Write ``blob`` as chunks to ``topic``/``partition``; returns the offset of the first chunk once all are
    acknowledged."""
    blob_id = uuid.uuid4().hex.encode()
    chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, max(len(blob), 1), CHUNK_BYTES)]
    metas: list[Any] = []
    for i, chunk in enumerate(chunks):  # one chunk in flight at a time: a large snapshot trickles into the
        # broker instead of landing as one burst that delays the decisions other clients are producing
        future = await producer.send(
            topic,
            value=chunk,
            key=key,
            partition=partition,
            headers=[("blob", blob_id), ("chunk", f"{i}/{len(chunks)}".encode())],
        )
        metas.append(await future)
    return int(min(m.offset for m in metas))


async def read_blob(bootstrap: str, client_id: str, topic: str, partition: int, offset: int) -> bytes | None:
    """The blob whose first chunk is at ``offset`` (None if there is none: a pointer past the log's start)."""
    tp = TopicPartition(topic, partition)
    blob_id: bytes | None = None
    parts: dict[int, bytes] = {}
    count = 0
    async with read_from(bootstrap, client_id, {tp: offset}) as reader:
        async for batch in reader.until_caught_up():
            for rec in batch:
                headers = dict(rec.headers or ())
                if blob_id is None:
                    blob_id = headers.get("blob")
                if headers.get("blob") != blob_id or blob_id is None:
                    continue
                index, _, total = headers.get("chunk", b"0/1").decode().partition("/")
                parts[int(index)] = rec.value or b""
                count = int(total)
            if count and len(parts) == count:
                return b"".join(parts[i] for i in range(count))
    return None


class Pointers:
    """The newest snapshot's offset per partition, as offsets committed by the group ``group`` on ``topic``."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.parts = [TopicPartition(topic, p) for p in range(partitions)]
        self._consumer: AIOKafkaConsumer | None = None  # made in start(): aiokafka binds the running loop

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, client_id=self.group, enable_auto_commit=False
        )
        await self._consumer.start()
        self._consumer.assign(self.parts)  # assigned, never subscribed: commits need no group membership

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("snapshot pointers used before start()")
        return self._consumer

    async def get(self, partition: int) -> int | None:
        """Offset of the newest snapshot of ``partition``, or None if none was ever written."""
        committed = await self.consumer.committed(TopicPartition(self.topic, partition))
        return None if committed is None or committed < 0 else int(committed)

    async def set(self, partition: int, offset: int) -> None:
        """Point ``partition`` at the snapshot starting at ``offset``."""
        await self.consumer.commit({TopicPartition(self.topic, partition): offset})
