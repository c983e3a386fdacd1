"""Near-optimal matching on the candidate graph: an ε-scaling auction on the bipartite double cover.

Why not greedy alone: greedy (= Suitor) takes the heaviest pair first and strands the users left over; on
zero-mean scores it reached only ~97 % of the exact optimum at N=1,000, while the exact optimum restricted to
the top-8 candidate graph is ~99.7 % (measured). Exact blossom matching on that sparse graph took 17 s at
N=10,000 (rustworkx), far over a tick.

The auction (Bertsekas) solves the assignment relaxation: every user ("person") points at one partner or at
a private "stay unmatched" option worth 0, every user is pointed at by at most one person. Its optimum is at
least twice the best matching's weight, and it decomposes into 2-cycles (mutual pairs: final), longer cycles and
paths. Those are rounded by greedy on the pointer edges only, so the result is a valid matching close to the
relaxation. ε-scaling keeps the number of bids near-linear; the final ε bounds the loss per user.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tickmatch.matching.kernels import build_graph

__all__ = ["auction", "build_graph", "pointer_candidates"]


@njit(nogil=True, cache=True)
def auction(
    n: int,
    adj_ptr: np.ndarray,
    adj_idx: np.ndarray,
    adj_w: np.ndarray,
    price: np.ndarray,
    owner: np.ndarray,
    points_to: np.ndarray,
    queue: np.ndarray,
    eps_rel: float,
    scaling: float = 20.0,
    warm: bool = False,
) -> int:
    """Assignment maximising the summed weight, within ``2n * eps`` of optimal (final ``eps = eps_rel * max|w|``).

    Persons ``0..n-1`` are users choosing a partner; objects ``0..n-1`` are users being chosen. Object ``n + u``
    is u's private "unmatched" option (worth 0). To make ε-scaling valid (it needs a *symmetric* problem: with
    spare objects, a price raised in an early phase on an object left unassigned later breaks optimality —
    measured: half the users ended unmatched), every user also has a shadow person ``n + u`` that takes
    whichever of object u / option ``n + u`` is left, so a complete assignment always exists and means: u is
    matched to its pick, or u is unmatched and nobody picked u — exactly the matching constraints, relaxed
    only in allowing cycles longer than two. ``points_to[p]`` gets person p's object. Scratch sizes:
    ``price``/``owner``/``points_to`` 2n, ``queue`` 2n + 1. With ``warm``, ``price`` holds starting prices.
    Returns the number of bids (for profiling).
    """
    top = 0.0
    for e in range(adj_ptr[n]):
        top = max(top, abs(adj_w[e]))
    eps_final = max(top * eps_rel, 1e-12)
    m = 2 * n
    if not warm:
        for o in range(m):
            price[o] = 0.0
    # Warm prices (the previous tick's, for users still waiting) are already near equilibrium: one phase at the
    # final epsilon. Any starting prices give a correct result; good ones just need fewer bids.
    eps = eps_final if (scaling <= 1.0 or warm) else max(top / scaling, eps_final)
    bids = 0
    size = m + 1
    for o in range(m):
        owner[o] = -1
    for p in range(m):
        points_to[p] = -1
    first_phase = True
    while True:
        # Start of a phase: keep every assignment that still satisfies eps-complementary slackness (its value
        # within eps of the person's best), re-queue the rest. Resetting all of them instead (textbook) tripled
        # the bids, measured.
        tail = 0
        for p in range(m):
            j = points_to[p]
            if j >= 0 and not first_phase:
                best = -np.inf
                if p < n:
                    for e in range(adj_ptr[p], adj_ptr[p + 1]):
                        best = max(best, adj_w[e] - price[adj_idx[e]])
                    best = max(best, -price[n + p])
                    own = -price[j]
                    if j < n:
                        for e in range(adj_ptr[p], adj_ptr[p + 1]):
                            if adj_idx[e] == j:
                                own = adj_w[e] - price[j]
                                break
                else:
                    u = p - n
                    best = max(-price[u], -price[n + u])
                    own = -price[j]
                if own >= best - eps:
                    continue
                owner[j] = -1
                points_to[p] = -1
            if points_to[p] < 0:
                queue[tail] = p
                tail += 1
        first_phase = False
        head = 0
        while head != tail:
            p = queue[head]
            head += 1
            if head == size:  # circular queue; a branch, not a modulo (integer division per bid, measured)
                head = 0
            best = -np.inf
            second = -np.inf
            target = -1
            if p < n:
                for e in range(adj_ptr[p], adj_ptr[p + 1]):
                    j = adj_idx[e]
                    val = adj_w[e] - price[j]
                    if val > best:
                        second = best
                        best = val
                        target = j
                    else:
                        second = max(second, val)
                val = -price[n + p]
                if val > best:
                    second = best
                    best = val
                    target = n + p
                elif val > second:
                    second = val
            else:
                u = p - n
                va = -price[u]
                vb = -price[n + u]
                if va >= vb:
                    best, second, target = va, vb, u
                else:
                    best, second, target = vb, va, n + u
            if second == -np.inf:
                second = best
            price[target] += best - second + eps
            bids += 1
            previous = owner[target]
            owner[target] = p
            points_to[p] = target
            if previous >= 0:
                points_to[previous] = -1
                queue[tail] = previous
                tail += 1
                if tail == size:
                    tail = 0
        if eps <= eps_final:
            break
        eps = max(eps / scaling, eps_final)
    return bids


@njit(nogil=True, cache=True)
def pointer_candidates(
    n: int, points_to: np.ndarray, adj_ptr: np.ndarray, adj_idx: np.ndarray, adj_w: np.ndarray,
    out_v: np.ndarray, out_i: np.ndarray,
) -> None:  # fmt: skip
    """One candidate per user: the partner the auction pointed it at (or none), with the pair's weight."""
    for u in range(n):
        out_i[u, 0] = -1
        out_v[u, 0] = -np.inf
        j = points_to[u]
        if 0 <= j < n:
            for e in range(adj_ptr[u], adj_ptr[u + 1]):
                if adj_idx[e] == j:
                    out_i[u, 0] = j
                    out_v[u, 0] = adj_w[e]
                    break
