"""``tickmatch trainer``: reads the labels topic, trains, publishes model versions to the models topic.

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

from learning.features import RAW_DIM
from learning.model import DurationModel
from learning.trainer import Trainer, TrainerConfig
from schemas import DecodeError, DurationLabel, ModelUpdate, decode_record, encode
from schemas.codec import MAX_MODEL_BYTES
from stream import topics as names
from stream.settings import Settings
from stream.topics import read_from_start

log = logging.getLogger(__name__)


def to_update(model: DurationModel, trainer: Trainer, now: float) -> ModelUpdate:
    """Wire form of a version, with its held-out metrics (NaN metrics are left out: JSON has no NaN)."""
    ev = trainer.history[-1] if trainer.history else None
    return ModelUpdate(
        version=model.version,
        trained_at=now,
        labels_seen=model.labels_seen,
        raw_dim=int(model.weights.shape[0]),
        log_sigma=float(model.log_sigma),
        weights=tuple(model.weights.ravel().tolist()),
        holdout=ev.holdout if ev else 0,
        auroc=ev.auroc if ev and np.isfinite(ev.auroc) else None,
        mse=ev.mse if ev and np.isfinite(ev.mse) else None,
    )


def from_update(update: ModelUpdate) -> DurationModel:
    """The model a :class:`ModelUpdate` describes; ValueError if its shape is inconsistent."""
    if update.raw_dim * update.raw_dim != len(update.weights):
        raise ValueError(f"model {update.version}: {len(update.weights)} weights for raw_dim {update.raw_dim}")
    w = np.asarray(update.weights, dtype=np.float64).reshape(update.raw_dim, update.raw_dim)
    return DurationModel(w, update.log_sigma, update.version, update.labels_seen)


def save_version(update: ModelUpdate, directory: Path) -> Path:
    """Keep a version on disk in its wire form (``<version>.msgpack``), written atomically: the models topic is
    the live channel, these files are what one evaluates, compares or rolls back to later."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{update.version}.msgpack"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode(update))
    tmp.replace(path)
    return path


def load_version(path: Path) -> DurationModel:
    """A saved version back as a model (DecodeError / ValueError if the file is not one)."""
    record = decode_record(path.read_bytes(), limit=MAX_MODEL_BYTES)
    if not isinstance(record, ModelUpdate):
        raise ValueError(f"{path} holds a {record.TYPE}, not a model-update")
    return from_update(record)


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
        consumer = await read_from_start(self.bootstrap, f"{self.settings.app_id}-trainer", parts)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            log.info("trainer started", extra={"labels_topic": labels, "partitions": len(parts)})
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for rec in records:
                        model = self.take(rec.value)
                        if model is not None:
                            await self.publish(producer, model)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
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
        print(
            f"trainer: {update.version} from {update.labels_seen} labels, held-out AUROC "
            f"{update.auroc if update.auroc is not None else float('nan'):.3f} (saved to {path})",
            flush=True,
        )
