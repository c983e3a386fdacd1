"""Pair-score models: what the matcher maximises.

A model scores a pair as ``u . W . v + bias_u + bias_v``: a symmetric bilinear term plus per-user biases (a
chatty user lifts every pair they are in). Symmetric ``W`` makes ``score(u, v) == score(v, u)``, which lets the
engine compute only the upper triangle of the pair matrix. Scores are in the model's own unit (predicted chat
seconds for a trained duration model); the waiting-time policy's minimum score uses the same unit.

Why this shape: all N^2 pair scores become one blocked matrix product ``(E W) E^T`` over cached embeddings, and
a two-tower or factorisation model trained elsewhere fits into it by exporting ``W`` (identity for plain dot
products) and the per-user bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


class ModelError(ValueError):
    """A model that cannot be used (wrong shape, not symmetric, not finite)."""


@dataclass(frozen=True, slots=True)
class BilinearModel:
    """Symmetric bilinear pair score; immutable, so a tick holds one consistent version end to end."""

    weights: npt.NDArray[np.float32]
    version: str
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ModelError(f"model {self.version}: weights must be square, got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ModelError(f"model {self.version}: weights must be finite")
        w32 = np.ascontiguousarray(w, dtype=np.float32)
        if not np.allclose(w32, w32.T, rtol=1e-5, atol=1e-6):
            raise ModelError(f"model {self.version}: weights must be symmetric (score(u, v) == score(v, u))")
        w32 = (w32 + w32.T) * np.float32(0.5)  # exactly symmetric after rounding
        w32.setflags(write=False)
        object.__setattr__(self, "weights", w32)
        object.__setattr__(self, "dim", int(w32.shape[0]))

    @classmethod
    def identity(cls, dim: int, version: str) -> BilinearModel:
        """Plain dot product of embeddings (the heuristic model)."""
        return cls(np.eye(dim, dtype=np.float32), version)

    def project(self, emb: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``out = emb @ W`` (the left factor of the blocked product), written in place."""
        np.matmul(emb, self.weights, out=out)
        return out

    def pair_scores(
        self,
        emb_a: npt.NDArray[np.float32],
        emb_b: npt.NDArray[np.float32],
        bias_a: npt.NDArray[np.float32],
        bias_b: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """Scores of the pairs ``(a[i], b[i])`` (reference path for tests and exact baselines)."""
        bil = np.einsum("id,de,ie->i", emb_a, self.weights, emb_b, dtype=np.float32)
        out: npt.NDArray[np.float32] = (bil + bias_a + bias_b).astype(np.float32)
        return out

    def all_scores(self, emb: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Full ``n x n`` score matrix (small pools only: tests and the exact reference)."""
        s = (emb @ self.weights) @ emb.T
        return (s + bias[:, None] + bias[None, :]).astype(np.float32)
