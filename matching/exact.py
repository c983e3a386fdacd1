"""Exact maximum-weight matching (rustworkx): the quality reference for tests and benchmarks.

Far too slow for a tick (seconds at N=1,000), exactly right as a yardstick: ``quality_vs_exact`` in the
benchmark is our total score divided by this optimum on the same pool.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import rustworkx as rx

from matching.constraints import KEY_BASE, KEY_SHIFT
from matching.pool import ANY, Pool

SCALE = 1_000_000  # rustworkx wants integer weights: micro-units keep 6 decimals


def exact_pairs(weights: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Optimal disjoint pairs maximising the summed weight over ``allowed`` pairs with positive weight.

    ``weights`` and ``allowed`` are symmetric ``n x n``; the diagonal is ignored. Pairs with weight <= 0 can
    never raise the total, so they are left out (which also keeps the graph small).
    """
    n = weights.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    keep = allowed[iu, ju] & (weights[iu, ju] > 0)
    graph: rx.PyGraph = rx.PyGraph()
    graph.add_nodes_from(range(n))
    w = np.rint(weights[iu, ju][keep].astype(np.float64) * SCALE).astype(np.int64)
    graph.add_edges_from(list(zip(iu[keep].tolist(), ju[keep].tolist(), w.tolist(), strict=True)))
    found = rx.max_weight_matching(graph, max_cardinality=False, weight_fn=int)
    return sorted((min(a, b), max(a, b)) for a, b in found)


def total(weights: npt.NDArray[np.float32], pairs: list[tuple[int, int]]) -> float:
    """Summed weight of ``pairs``."""
    return float(sum(float(weights[a, b]) for a, b in pairs))


def allowed_matrix(pool: Pool, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: users ``slots[i]`` and ``slots[j]`` of ``pool`` may be matched (see :func:`allowed_pairs`)."""
    return allowed_pairs(pool.attr[slots], pool.want[slots], slots, pool.forbidden.keys())


def allowed_pairs(
    attr: npt.NDArray[np.int8],
    want: npt.NDArray[np.uint64],
    slots: npt.NDArray[np.int64],
    forbid_keys: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: users i and j may be matched — each accepts the other's attributes (mutual filters), their
    slots are not a forbidden pair, and they are not the same user. Written with plain numpy, independently of the
    engine's kernels, so comparing the two catches a bug in either."""
    ok = np.ones((slots.shape[0], slots.shape[0]), dtype=bool)
    for k in range(attr.shape[1]):
        w, code = want[:, k], attr[:, k]
        known = code >= 0
        shifts = np.where(known, code, 0).astype(np.uint64)
        hit = ((w[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)
        one_way = np.where(known[None, :], hit, (w == ANY)[:, None])
        ok &= one_way & one_way.T
    np.fill_diagonal(ok, False)
    position = {int(s): i for i, s in enumerate(slots.tolist())}
    for key in forbid_keys.tolist():
        a, b = position.get(key >> KEY_SHIFT), position.get(key & (KEY_BASE - 1))
        if a is not None and b is not None:
            ok[a, b] = ok[b, a] = False
    return ok
