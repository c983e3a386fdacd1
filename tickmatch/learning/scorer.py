"""A scorer is one model version as the matcher uses it: a projection from raw features to embeddings plus the
symmetric bilinear form over embeddings.

``score(u, v) = (raw_u P) W (raw_v P)^T``. Both the hand-written heuristic and every learned version have this
shape, so the engine's blocked matrix product serves them all, and swapping versions means re-projecting the
waiting users' raw vectors (one small matrix product per pool) and swapping ``W``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tickmatch.learning.features import ATTR_BASE, BUCKETS, PROFILE_ATTRS, RAW_DIM
from tickmatch.matching.bilinear import BilinearModel, ModelError

F32 = npt.NDArray[np.float32]

HEURISTIC_VERSION = "heuristic-v2"
_HEURISTIC_WEIGHTS = {"language": 1.0, "country": 0.6, "age_band": 0.5, "gender": 0.2}


@dataclass(frozen=True, slots=True)
class Scorer:
    """One immutable model version: ``projection`` (raw_dim x dim) and the engine's ``bilinear`` model."""

    projection: npt.NDArray[np.float32]
    bilinear: BilinearModel

    def __post_init__(self) -> None:
        p = np.ascontiguousarray(self.projection, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != self.bilinear.dim:
            raise ModelError(f"scorer {self.version}: projection shape {p.shape} does not end in {self.bilinear.dim}")
        if not np.all(np.isfinite(p)):
            raise ModelError(f"scorer {self.version}: projection must be finite")
        p.setflags(write=False)
        object.__setattr__(self, "projection", p)

    @property
    def version(self) -> str:
        return self.bilinear.version

    @property
    def dim(self) -> int:
        return self.bilinear.dim

    @property
    def raw_dim(self) -> int:
        return int(self.projection.shape[0])

    def embed(
        self, raw: npt.NDArray[np.float32], out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """Embeddings of raw vectors (one row each), written into ``out`` when given."""
        if out is None:
            return np.asarray(raw @ self.projection, dtype=np.float32)
        np.matmul(raw, self.projection, out=out)
        return out

    def score_raw(self, raw_a: npt.NDArray[np.float32], raw_b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Scores of the pairs ``(raw_a[i], raw_b[i])`` (evaluation path, not the tick)."""
        ea, eb = self.embed(raw_a), self.embed(raw_b)
        zero = np.zeros(ea.shape[0], dtype=np.float32)
        return self.bilinear.pair_scores(ea, eb, zero, zero)


def heuristic_scorer(dim: int) -> Scorer:
    """Attribute similarity: ``sum of w_attr over shared attribute values`` (the model before any label).

    Each attribute's one-hot slots are copied (scaled by ``sqrt(w)``) into embedding columns, so the dot product
    of two users counts their shared values, weighted. With ``dim`` below the number of slots, slots share
    columns (a few spurious matches, never a wrong shape)."""
    p = np.zeros((RAW_DIM, dim), dtype=np.float32)
    for a, attr in enumerate(PROFILE_ATTRS):
        scale = np.sqrt(_HEURISTIC_WEIGHTS[attr])
        for b in range(BUCKETS):
            slot = a * BUCKETS + b
            p[ATTR_BASE + slot, slot % dim] = scale
    return Scorer(p, BilinearModel.identity(dim, HEURISTIC_VERSION))


def scorer_from_raw_weights(weights: npt.NDArray[np.float64], dim: int, version: str) -> Scorer:
    """Export a bilinear form over raw vectors (``raw_dim x raw_dim``, symmetric) to a ``dim``-wide scorer.

    The symmetric ``W = V diag(l) V^T`` keeps its ``dim`` eigenpairs of largest ``|l|``: embeddings are
    ``raw V`` and the engine's weights ``diag(l)``. With ``dim >= raw_dim`` this is exact; below it, the best
    rank-``dim`` approximation in Frobenius norm."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ModelError(f"model {version}: raw weights must be square, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ModelError(f"model {version}: raw weights must be finite")
    values, vectors = np.linalg.eigh((w + w.T) / 2.0)
    keep = np.argsort(-np.abs(values), kind="stable")[: min(dim, w.shape[0])]
    keep.sort()
    p = np.zeros((w.shape[0], dim), dtype=np.float32)
    lam = np.zeros(dim, dtype=np.float32)
    p[:, : keep.size] = vectors[:, keep]
    lam[: keep.size] = values[keep]
    return Scorer(p, BilinearModel(np.diag(lam), version))
