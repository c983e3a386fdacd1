"""The model follower: a Faust service that hot-swaps every version published on the models topic.

A group-less reader of the single models partition (``tickmatch.stream.readers``): every worker must see every
version, in publication order. It starts from the earliest offset, so a restarted worker catches up to the newest
version before long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import mode
from aiokafka import TopicPartition
from mode.utils.types.trees import NodeT

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.learning.versions import from_update
from tickmatch.matching.bilinear import ModelError
from tickmatch.schemas import DecodeError, ModelUpdate, decode_record
from tickmatch.schemas.codec import MAX_MODEL_BYTES
from tickmatch.stream import topics as names
from tickmatch.stream.readers import read_from_earliest

log = logging.getLogger(__name__)


def apply_update(runtime: WorkerRuntime, value: bytes | None) -> str | None:
    """Swap in the version ``value`` describes; returns it, or None (logged) when it cannot be used."""
    try:
        record = decode_record(value or b"", limit=MAX_MODEL_BYTES)
        if not isinstance(record, ModelUpdate):
            raise DecodeError("unknown-type", f"expected a model-update, got {record.TYPE}")
        scorer = from_update(record).scorer(runtime.settings.embed_dim)
        runtime.offer_model(scorer)
    except (DecodeError, ModelError, ValueError) as exc:
        runtime.count("models.rejected")
        log.warning("model update rejected", extra={"error": str(exc)})
        return None
    return scorer.version


class ModelFollower(mode.Service):
    """Started and stopped with the Faust app (``app.service``); its one task is cancelled on shutdown.

    Faust instantiates registered service classes itself (with ``loop`` and ``beacon``); the app factory binds a
    subclass to its runtime and broker (see ``tickmatch.agents.app``)."""

    def __init__(
        self,
        runtime: WorkerRuntime,
        bootstrap: str,
        *,
        beacon: NodeT[Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.runtime = runtime
        self.bootstrap = bootstrap
        super().__init__(beacon=beacon, loop=loop)  # type: ignore[arg-type]  # mode: beacon=None is its default

    @mode.Service.task  # type: ignore[untyped-decorator]
    async def _follow(self) -> None:
        settings = self.runtime.settings
        part = TopicPartition(settings.topic(names.MODELS), 0)
        async with read_from_earliest(self.bootstrap, f"{settings.app_id}-models", [part]) as reader:
            async for records in reader.batches(timeout_ms=500, max_records=100):
                for rec in records:
                    apply_update(self.runtime, rec.value)
