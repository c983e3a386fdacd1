"""Candidate generation and greedy max-weight matching over one pool.

Scores are computed in row blocks (``block`` rows against all columns), filters are applied inside each
block, and only each row's top-k candidates survive; the full n x n matrix is never materialised. Greedy
over the candidate edges, heaviest first, is a 1/2-approximation of max-weight matching; refill rounds
re-run candidate search among users left unmatched so nobody loses a partner only because their top-k
were all taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from matching.pool import ANY, ATTRS, Pool

NEG = np.float32(-np.inf)


@dataclass(frozen=True, slots=True)
class Matching:
    """Disjoint pairs as pool slots (``a[i]`` with ``b[i]``) and their scores."""

    a: npt.NDArray[np.intp]
    b: npt.NDArray[np.intp]
    score: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.a.shape[0])


EMPTY = Matching(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.float32))


def accepts(pool: Pool, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """``out[i, j]``: row user i and column user j each accept the other's attributes (mutual filters)."""
    ok = np.ones((rows.shape[0], cols.shape[0]), dtype=bool)
    for k in range(len(ATTRS)):
        ok &= _one_way(pool.want[rows, k], pool.attr[cols, k])
        ok &= _one_way(pool.want[cols, k], pool.attr[rows, k]).T
    return ok


def _one_way(want: npt.NDArray[np.uint64], codes: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """``want[i]`` accepts ``codes[j]``; an unknown value (-1) only passes an accept-anyone mask."""
    known = codes >= 0
    shifts = np.where(known, codes, 0).astype(np.uint64)
    hit = ((want[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)
    return np.where(known[None, :], hit, (want == ANY)[:, None])


def candidates(
    pool: Pool,
    rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp],
    k: int,
    block: int = 1024,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Top-k allowed partners in ``cols`` for every slot in ``rows``, as edge arrays (slot, slot, score).

    Score of a pair is ``e_i . e_j + bias_i + bias_j`` (symmetric). Self-pairs and filter violations are
    excluded. Rows with fewer than k allowed partners yield fewer edges.
    """
    k = min(k, cols.shape[0])
    if k <= 0 or rows.shape[0] == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.float32)
    emb_c = np.ascontiguousarray(pool.emb[cols])
    bias_c = pool.bias[cols]
    out_i, out_j, out_s = [], [], []
    for start in range(0, rows.shape[0], block):
        r = rows[start : start + block]
        scores = pool.emb[r] @ emb_c.T
        scores += pool.bias[r][:, None]
        scores += bias_c[None, :]
        scores[~accepts(pool, r, cols)] = NEG
        scores[r[:, None] == cols[None, :]] = NEG
        if k < cols.shape[0]:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(cols.shape[0]), (r.shape[0], k))
        top_s = np.take_along_axis(scores, top, axis=1)
        keep = np.isfinite(top_s)
        out_i.append(np.broadcast_to(r[:, None], top.shape)[keep])
        out_j.append(cols[top[keep]])
        out_s.append(top_s[keep])
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s).astype(np.float32)


def greedy(
    i: npt.NDArray[np.intp], j: npt.NDArray[np.intp], s: npt.NDArray[np.float32], matched: npt.NDArray[np.bool_]
) -> Matching:
    """Heaviest-first disjoint edges; ties broken by (smaller slot, larger slot) so results are deterministic.

    ``matched`` (indexed by slot) is updated in place so refill rounds can continue from it.
    """
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo, -s))
    a_out, b_out, s_out = [], [], []
    for e in order.tolist():
        x, y = int(lo[e]), int(hi[e])
        if matched[x] or matched[y]:
            continue
        matched[x] = matched[y] = True
        a_out.append(x)
        b_out.append(y)
        s_out.append(float(s[e]))
    return Matching(np.array(a_out, np.intp), np.array(b_out, np.intp), np.array(s_out, np.float32))


def match_pool(pool: Pool, k: int = 8, refill_rounds: int = 2, min_score: float = -np.inf) -> Matching:
    """Match the waiting users of ``pool``; only pairs scoring at least ``min_score`` are considered."""
    rows = pool.active_slots()
    if rows.shape[0] < 2:
        return EMPTY
    matched = np.zeros(pool.capacity, dtype=bool)
    parts = []
    for _ in range(1 + refill_rounds):
        i, j, s = candidates(pool, rows, rows, k)
        keep = s >= min_score
        found = greedy(i[keep], j[keep], s[keep], matched)
        if len(found) == 0:
            break
        parts.append(found)
        rows = rows[~matched[rows]]
        if rows.shape[0] < 2:
            break
    if not parts:
        return EMPTY
    return Matching(
        np.concatenate([p.a for p in parts]),
        np.concatenate([p.b for p in parts]),
        np.concatenate([p.score for p in parts]),
    )
