"""Model versions on the wire and on disk: a :class:`DurationModel` to and from its ``model-update`` record.

Kept apart from the trainer service (which is Kafka plumbing, ``tickmatch.agents.trainer``) so the worker's model
follower, tests and offline tools can read a version without importing any consumer code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tickmatch.learning.duration import DurationModel
from tickmatch.learning.trainer import Trainer
from tickmatch.schemas import ModelUpdate, decode_record, encode
from tickmatch.schemas.codec import MAX_MODEL_BYTES


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
