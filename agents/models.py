"""The worker's model follower: reads every version on the models topic and hot-swaps it into the runtime.

A plain consumer of the single models partition, outside the consumer group: every worker must see every
version (a group would hand each version to one worker only). It starts from the earliest offset, so a
restarted worker catches up to the newest version before long; versions are applied in publication order.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka import TopicPartition

from agents.runtime import WorkerRuntime
from learning.service import from_update
from matching.model import ModelError
from schemas import DecodeError, ModelUpdate, decode_record
from schemas.codec import MAX_MODEL_BYTES
from stream import topics as names
from stream.topics import read_from_start

log = logging.getLogger(__name__)


def apply_update(runtime: WorkerRuntime, value: bytes | None) -> str | None:
    """Swap in the version ``value`` describes; returns it, or None (logged) when it cannot be used."""
    try:
        record = decode_record(value or b"", limit=MAX_MODEL_BYTES)
        if not isinstance(record, ModelUpdate):
            raise DecodeError("unknown-type", f"expected a model-update, got {record.TYPE}")
        scorer = from_update(record).scorer(runtime.settings.embed_dim)
        runtime.set_model(scorer)
    except (DecodeError, ModelError, ValueError) as exc:
        runtime._count("models.rejected")
        log.warning("model update rejected", extra={"error": str(exc)})
        return None
    return scorer.version


async def follow_models(runtime: WorkerRuntime, bootstrap: str) -> None:
    """Run until cancelled (the Faust worker cancels its tasks on shutdown)."""
    topic = runtime.settings.topic(names.MODELS)
    consumer = await read_from_start(bootstrap, f"{runtime.settings.app_id}-models", [TopicPartition(topic, 0)])
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for records in batches.values():
                for rec in records:
                    apply_update(runtime, rec.value)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
