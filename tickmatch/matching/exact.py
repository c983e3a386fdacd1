"""Exact maximum-weight matching (rustworkx): the quality reference for tests and benchmarks.

Far too slow for a tick (seconds at N=1,000), exactly right as a yardstick: ``quality_vs_exact`` in the
benchmark is our total score divided by this optimum on the same pool. rustworkx is a test extra, so it is imported
inside :func:`exact_pairs`: an installed worker never needs it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SCALE = 1_000_000  # rustworkx wants integer weights: micro-units keep 6 decimals


def exact_pairs(weights: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Optimal disjoint pairs maximising the summed weight over ``allowed`` pairs with positive weight.

    ``weights`` and ``allowed`` are symmetric ``n x n``; the diagonal is ignored. Pairs with weight <= 0 can
    never raise the total, so they are left out (which also keeps the graph small).
    """
    import rustworkx as rx

    n = weights.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    keep = allowed[iu, ju] & (weights[iu, ju] > 0)
    graph = rx.PyGraph()
    graph.add_nodes_from(range(n))
    w = np.rint(weights[iu, ju][keep].astype(np.float64) * SCALE).astype(np.int64)
    graph.add_edges_from(list(zip(iu[keep].tolist(), ju[keep].tolist(), w.tolist(), strict=True)))
    found = rx.max_weight_matching(graph, max_cardinality=False, weight_fn=int)
    return sorted((min(a, b), max(a, b)) for a, b in found)


def total(weights: npt.NDArray[np.float32], pairs: list[tuple[int, int]]) -> float:
    """Summed weight of ``pairs``."""
    return float(sum(float(weights[a, b]) for a, b in pairs))
