"""The trainer service (``tickmatch trainer``): reads the labels topic, trains, publishes model versions to the models
topic and keeps each on disk (``tickmatch.learning.versions``).

Why a plain consumer outside any group: the trainer must see every partition of ``labels`` (one model for all
shards), and on restart it replays the topic from the earliest offset, which rebuilds the same training set
(Tansu's latest offsets are unreliable after a restart, so "resume from the end" would be a guess anyway).
Versions restart at v1 after a restart; the worker takes whatever the models topic says last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer, TopicPartition

from tickmatch.learning.duration import DurationModel
from tickmatch.learning.features import RAW_DIM
from tickmatch.learning.trainer import Trainer, TrainerConfig
from tickmatch.learning.versions import save_version, to_update
from tickmatch.schemas import DecodeError, DurationLabel, ModelUpdate, decode_record, encode
from tickmatch.stream import topics as names
from tickmatch.stream.readers import read_from_earliest
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)


class TrainerService:
    """Labels in, model versions out."""

    def __init__(self, settings: Settings, bootstrap: str, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.clock = clock
        self.trainer = Trainer(TrainerConfig(min_labels=settings.train_min_labels, retrain_every=settings.train_every))
        self.skipped = 0
        self.published: list[ModelUpdate] = []
        self.models_dir = Path(settings.data_dir) / "models" / settings.app_id

    def take(self, value: bytes | None) -> DurationModel | None:
        """Feed one labels-topic message; returns a new version when one was trained."""
        try:
            record = decode_record(value or b"")
        except DecodeError:
            self.skipped += 1
            return None
        if not isinstance(record, DurationLabel):
            self.skipped += 1
            return None
        if len(record.features_a) != RAW_DIM or len(record.features_b) != RAW_DIM:
            self.skipped += 1  # labels of decisions made before features were logged, or another layout
            return None
        self.trainer.add(
            record.match_id,
            np.asarray(record.features_a, np.float32),
            np.asarray(record.features_b, np.float32),
            record.duration_s,
            record.censored,
        )
        return self.trainer.maybe_train()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        labels = self.settings.topic(names.LABELS)
        parts = [TopicPartition(labels, p) for p in range(self.settings.partitions)]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            async with read_from_earliest(self.bootstrap, f"{self.settings.app_id}-trainer", parts) as reader:
                log.info("trainer started", extra={"labels_topic": labels, "partitions": len(parts)})
                async for records in reader.batches(stop):
                    for rec in records:
                        model = self.take(rec.value)
                        if model is not None:
                            await self.publish(producer, model)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def publish(self, producer: AIOKafkaProducer, model: DurationModel) -> None:
        update = to_update(model, self.trainer, self.clock())
        await producer.send_and_wait(self.settings.topic(names.MODELS), value=encode(update), key=b"duration")
        path = save_version(update, self.models_dir)
        self.published.append(update)
        log.info(
            "model published",
            extra={"version": update.version, "labels": update.labels_seen, "auroc": update.auroc, "mse": update.mse},
        )
        # AUROC separates long from short chats; a hold-out with only one kind (the demo's chats all last seconds)
        # has none, which is worth saying in words rather than as "nan".
        quality = (
            f"held-out AUROC {update.auroc:.3f}"
            if update.auroc is not None
            else "held-out AUROC n/a (every held-out chat on the same side of the long-chat threshold)"
        )
        print(f"trainer: {update.version} from {update.labels_seen} labels, {quality} (saved to {path})", flush=True)
