"""Which partition owns a shard: murmur2 of the UTF-8 shard key, as Kafka's Java client and aiokafka compute it.

Why the worker computes it rather than trusting where an event arrived: producers in other languages use other
default partitioners (librdkafka's is CRC32-based), so the same shard key can land in different partitions, and
keyless events land anywhere. A shard split over two partitions would be matched by two workers. The worker
therefore re-publishes an event that arrived on the wrong partition to the right one (README, Integration).
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)  # aiokafka's murmur2 is pure Python (~5 us); a worker sees few distinct shards
def partition_for(shard: str, partitions: int) -> int:
    """The partition of ``shard`` among ``partitions`` (Java's ``toPositive(murmur2(key)) % n``)."""
    return int(murmur2(shard.encode()) & 0x7FFFFFFF) % partitions
