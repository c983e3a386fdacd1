"""Heuristic user embeddings from profile attributes (the model before any label has been learned).

Each attribute value gets a fixed pseudo-random unit vector derived from a stable hash, so two users
sharing attributes have similar embeddings and the dot product scores attribute similarity. Stable hashing
(blake2b, not Python's salted ``hash``) makes scores identical across workers and restarts.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import numpy.typing as npt

HEURISTIC_VERSION = "heuristic-v1"
_WEIGHTS = {"language": 1.0, "country": 0.6, "age_band": 0.5, "gender": 0.2}


@lru_cache(maxsize=65536)
def _value_vector(attr: str, value: str, dim: int) -> npt.NDArray[np.float32]:
    seed = int.from_bytes(hashlib.blake2b(f"{attr}={value}".encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    vec.setflags(write=False)
    return vec


def embed_profile(attrs: dict[str, str | None], dim: int) -> npt.NDArray[np.float32]:
    """Unit-norm embedding of a profile; an empty profile maps to the zero vector (neutral score)."""
    out = np.zeros(dim, dtype=np.float32)
    for attr, weight in _WEIGHTS.items():
        value = attrs.get(attr)
        if value is not None:
            out += weight * _value_vector(attr, value, dim)
    norm = float(np.linalg.norm(out))
    if norm > 0:
        out /= norm
    return out
