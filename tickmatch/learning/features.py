"""The raw feature vector of a user: what every model version (heuristic or learned) embeds from.

Layout (``RAW_DIM`` float32 values):

- ``[0]`` a constant 1, so a bilinear form over raw vectors also carries per-user and global bias terms;
- ``[1 : 1 + SIGNALS]`` the client's behavioural signals (interest scores and the like), zero when absent;
- then ``BUCKETS`` slots for each profile attribute (language, country, gender, age band): a value lights two
  slots chosen by two stable hashes (``1/sqrt 2`` each, so a value's vector has unit norm), all zero when the
  attribute is unknown. Two hashes instead of one: with one, two of four age bands share a slot a third of the
  time and the model cannot tell them apart; with two, values collide fully only if both slots coincide.

Why one fixed layout: the worker stores this vector per waiting user, decisions log it, labels carry it to the
trainer, and a new model version re-embeds waiting users from it. Training and serving read the same bytes,
so there is no training/serving skew to debug. Hashing (blake2b, not Python's salted ``hash``) keeps slots
stable across processes and restarts; a collision only merges two attribute values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tickmatch.schemas.records import MAX_SIGNALS

SIGNALS = MAX_SIGNALS  # the schema's limit on a join's signals
BUCKETS = 16
PROFILE_ATTRS = ("language", "country", "gender", "age_band")  # featurized (hashed) profile attributes, in slot order
SIGNAL_BASE = 1
ATTR_BASE = SIGNAL_BASE + SIGNALS
RAW_DIM = ATTR_BASE + BUCKETS * len(PROFILE_ATTRS)
SIGNAL_CLIP = 10.0
_HALF_SQRT2 = 0.5**0.5
_NO_SIGNALS = (0.0,) * SIGNALS


@lru_cache(maxsize=65536)
def buckets(attr: str, value: str) -> tuple[int, int]:
    """The two indices into the raw vector lit by ``attr == value`` (equal when both hashes agree)."""
    digest = hashlib.blake2b(f"{attr}={value}".encode(), digest_size=8).digest()
    base = ATTR_BASE + PROFILE_ATTRS.index(attr) * BUCKETS
    first = int.from_bytes(digest[:4], "little") % BUCKETS
    second = int.from_bytes(digest[4:], "little") % BUCKETS
    return base + first, base + second


def featurize(
    attrs: dict[str, str | None], signals: tuple[float, ...] = (), out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Raw vector of one user. Signals beyond ``SIGNALS`` are ignored, values clipped to +-``SIGNAL_CLIP``."""
    raw = np.zeros(RAW_DIM, dtype=np.float32) if out is None else out
    raw[:] = 0.0
    raw[0] = 1.0
    n = min(len(signals), SIGNALS)
    if n:
        raw[SIGNAL_BASE : SIGNAL_BASE + n] = np.clip(
            np.asarray(signals[:n], dtype=np.float32), -SIGNAL_CLIP, SIGNAL_CLIP
        )
    for attr in PROFILE_ATTRS:
        value = attrs.get(attr)
        if value is not None:
            first, second = buckets(attr, value)
            if first == second:
                raw[first] = 1.0
            else:
                raw[first] = raw[second] = _HALF_SQRT2
    return raw


def featurize_many(
    profiles: Sequence[Mapping[str, str | None]], signals: Sequence[tuple[float, ...]]
) -> npt.NDArray[np.float32]:
    """Raw vectors of many users at once, row ``i`` equal to ``featurize(profiles[i], signals[i])``: one array
    write per kind of feature instead of a few small numpy calls per user (the worker featurizes a whole batch
    of joins this way)."""
    n = len(profiles)
    if len(signals) != n:
        raise ValueError(f"{n} profiles but {len(signals)} signal tuples")
    raw = np.zeros((n, RAW_DIM), dtype=np.float32)
    raw[:, 0] = 1.0
    # all signals in one conversion (a slice write per user cost ~1 us each): each padded or cut to SIGNALS
    sig = np.array([(*values[:SIGNALS], *_NO_SIGNALS)[:SIGNALS] for values in signals], dtype=np.float32)
    sig = sig.reshape(n, SIGNALS)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, attrs in enumerate(profiles):
        for attr in PROFILE_ATTRS:
            value = attrs.get(attr)
            if value is not None:
                first, second = buckets(attr, value)
                if first == second:
                    rows.append(i)
                    cols.append(first)
                    vals.append(1.0)
                else:
                    rows += (i, i)
                    cols += (first, second)
                    vals += (_HALF_SQRT2, _HALF_SQRT2)
    np.clip(sig, -SIGNAL_CLIP, SIGNAL_CLIP, out=raw[:, SIGNAL_BASE : SIGNAL_BASE + SIGNALS])
    raw[rows, cols] = vals
    return raw


def update_raw(
    raw: npt.NDArray[np.float32], attrs: dict[str, str | None], signals: tuple[float, ...] | None
) -> npt.NDArray[np.float32]:
    """A profile update applied to a stored raw vector, in place: attributes given replace their slots, the
    others keep theirs; signals given replace all signals (``None``: keep). Equal to featurizing the merged
    profile; written slot by slot, no whole vector built and clipped per update (measured: 7.3 -> 3.6 us with
    signals, 2.7 -> 1.3 us without)."""
    for a, attr in enumerate(PROFILE_ATTRS):
        value = attrs.get(attr)
        if value is not None:
            base = ATTR_BASE + a * BUCKETS
            raw[base : base + BUCKETS] = 0.0
            first, second = buckets(attr, value)
            if first == second:
                raw[first] = 1.0
            else:
                raw[first] = raw[second] = _HALF_SQRT2
    if signals is not None:
        stored = raw[SIGNAL_BASE:ATTR_BASE]
        stored[:] = (*signals[:SIGNALS], *_NO_SIGNALS)[:SIGNALS]
        np.minimum(stored, SIGNAL_CLIP, out=stored)  # two ufuncs: np.clip's wrapper alone costs ~3 us
        np.maximum(stored, -SIGNAL_CLIP, out=stored)
    return raw
