"""Pair cache: each waiting user's best ``depth`` partners, kept across ticks, so a tick scores only what changed.

Why: between two ticks most of a large pool is the same users with the same embeddings under the same model, so
most of the N^2/2 pair scores a tick needs are the ones it computed half a second ago. The cache keeps, per pool
slot, the ``depth`` highest raw scores (bilinear + biases; filters, block lists and repeat bans applied, the
waiting-time minimum *not* applied, as it moves with time) and a ``floor``: every current partner missing from the
list scores at most ``floor`` (``-inf``: the list holds every allowed partner). A tick then

1. drops entries whose partner left or changed (``Pool.gen``), and marks *fresh* the rows whose user is new or
   changed, or whose list fell to ``k`` entries or fewer with a finite floor;
2. scores only the fresh rows against everybody (``m x N`` instead of ``N^2 / 2``): each fresh row gets its exact
   top-``depth``, and each score is offered to the other user's list, where it enters if it beats the list's
   floor (a full list's floor is its weakest entry: whatever it turns away or pushes out stays under it);
3. reads every user's top-``k`` *qualifying* candidates (waiting-time minimum applied now) from the lists. A list
   answers exactly when it yields ``k`` candidates above its floor, or when no partner outside it can qualify
   (floor ``-inf``, or below both minimums that could apply); the rest are recomputed exactly by the caller.

So the candidates equal the full recomputation's (tested against brute force over churning pools), and the work
per tick follows the churn. Whatever changes a user's scores goes through ``Pool.add`` / ``update_features`` /
``set_bias`` (they bump ``Pool.gen``) or comes with a new model object (a new model version: the cache is
rebuilt); a repeat ban ending between two waiting users (``ForbiddenPairs.relaxed``) rebuilds it too.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from tickmatch.matching.kernels import TopK, Users, _accepts, _replace_worst, pair_allowed


class Columns(NamedTuple):
    """The cache's per-slot columns (row ``s`` = pool slot ``s``): one argument for the kernels, unpacked in their
    first line."""

    slot: np.ndarray  # (capacity, depth) int64: partner slots of the list (-1: empty)
    gen: np.ndarray  # (capacity, depth) int64: Pool.gen of each partner when its score was cached
    val: np.ndarray  # (capacity, depth) float32: raw pair scores (constraints applied, no waiting minimum)
    cnt: np.ndarray  # (capacity,) int64: entries in use
    floor: np.ndarray  # (capacity,) float32: every partner missing from the list scores at most this (-inf: none)
    row_gen: np.ndarray  # (capacity,) int64: Pool.gen of the slot's own user when its list was built (-1: none)


@njit(nogil=True, cache=True)
def compact(
    slots: np.ndarray,
    n: int,
    gen: np.ndarray,
    active: np.ndarray,
    k: int,
    cols: Columns,
    fresh: np.ndarray,
    is_fresh: np.ndarray,
) -> int:
    """Drop stale entries of the ``n`` users' lists; write the positions of fresh rows; returns how many."""
    c_slot, c_gen, c_val, c_cnt, c_floor, row_gen = cols
    depth = c_slot.shape[1]
    m = 0
    for g in range(n):
        s = slots[g]
        if row_gen[s] != gen[s]:
            fresh[m] = g
            is_fresh[g] = True
            m += 1
            continue
        kept = 0
        low = np.inf
        for p in range(c_cnt[s]):
            ps = c_slot[s, p]
            if active[ps] and gen[ps] == c_gen[s, p]:
                c_slot[s, kept] = ps
                c_gen[s, kept] = c_gen[s, p]
                c_val[s, kept] = c_val[s, p]
                low = min(low, c_val[s, p])
                kept += 1
        c_cnt[s] = kept
        if kept == depth:  # a full list's weakest entry bounds every partner outside it (see _offer)
            c_floor[s] = max(c_floor[s], low)
        # k entries or fewer and a finite floor: the k-th best would be the floor itself (ambiguous) or missing,
        # so the row is rescored now and its list rebuilt, rather than recomputed exactly tick after tick
        if kept <= k and c_floor[s] > -np.inf:
            fresh[m] = g
            is_fresh[g] = True
            m += 1
        else:
            is_fresh[g] = False
    return m


@njit(nogil=True, cache=True)
def _offer(s: int, v: float, ps: int, pgen: int, c_slot: np.ndarray, c_gen: np.ndarray, c_val: np.ndarray,
           c_cnt: np.ndarray, c_floor: np.ndarray) -> None:  # fmt: skip
    """Put partner ``ps`` with score ``v`` into slot ``s``'s list (caller checked ``v > c_floor[s]``)."""
    depth = c_slot.shape[1]
    cnt = c_cnt[s]
    for p in range(cnt):
        if c_slot[s, p] == ps:
            return  # already there (a depleted row being rebuilt is still valid in others' lists)
    if cnt < depth:
        c_slot[s, cnt] = ps
        c_gen[s, cnt] = pgen
        c_val[s, cnt] = v
        cnt += 1
        c_cnt[s] = cnt
    else:
        w = 0
        for p in range(1, depth):
            if c_val[s, p] < c_val[s, w]:
                w = p
        c_slot[s, w] = ps  # the partner pushed out scored the floor (a full list's floor is its weakest entry)
        c_gen[s, w] = pgen
        c_val[s, w] = v
    if cnt == depth:
        # While a list is full, a score at or below its weakest entry is turned away (or never offered), so the
        # weakest entry is an upper bound of every partner outside it: it becomes the floor. Keeping the floor
        # lower would break the invariant once entries are dropped (a partner turned away at 9.4 while the floor
        # said 8.6 — found by the hypothesis test).
        low = c_val[s, 0]
        for p in range(1, depth):
            low = min(low, c_val[s, p])
        c_floor[s] = max(c_floor[s], low)


@njit(nogil=True, cache=True)
def column_gates(slots: np.ndarray, n: int, is_fresh: np.ndarray, c_floor: np.ndarray, out: np.ndarray) -> None:
    """Per position, the score an offer must beat to enter that user's list (+inf for fresh users: their own
    scan covers every partner)."""
    for g in range(n):
        out[g] = np.inf if is_fresh[g] else c_floor[slots[g]]


@njit(nogil=True, cache=True, fastmath=True)
def fresh_scan(
    scores: np.ndarray,
    rows: np.ndarray,
    r0: int,
    c0: int,
    users: Users,
    gen: np.ndarray,
    gate_pos: np.ndarray,
    lists: TopK,
    cols: Columns,
    chunk: int,
    runs: np.ndarray,
    pen: np.ndarray,
    seg: np.ndarray,
) -> None:
    """Fold ``scores[r, j]`` (fresh row ``rows[r0 + r]`` against column ``c0 + j``) into the fresh rows' own
    top-``depth`` lists (``lists``, indexed by ``r0 + r``) and offer each score to the column user's list.

    Screening first: a chunk of columns is looked at one score at a time only if some score in it beats the
    row's threshold or its column's gate (a branch-free max over the chunk, which vectorises); most chunks do
    not, since a fresh row's threshold is soon its 16th best of thousands and a full list's gate is its weakest entry.
    A row with filters first marks the runs of identical attributes (``runs``: start positions, then ``n``) it
    rejects as ``+inf`` in ``pen``, so they never pass screening (otherwise a picky user's low threshold makes it
    visit every score of the people it does not want: measured 2/3 of all visits)."""
    bias, _, attr, want, filtered, slots, forbid_flag, forbid_keys, key_base = users
    fv, fi, fthr, fworst = lists
    c_slot, c_gen, c_val, c_cnt, c_floor, _ = cols
    ncols = scores.shape[1]
    # Views starting at the block's first column keep loop indices provably non-negative, which lets LLVM
    # vectorise the screening loop (see kernels.scan_block, where an offset index measured ~10x slower).
    bias_c = bias[c0 : c0 + ncols]
    gate_c = gate_pos[c0 : c0 + ncols]
    pen_c = pen[:ncols]
    first_run = np.searchsorted(runs, c0, side="right") - 1
    n_attr = attr.shape[1]
    for r in range(scores.shape[0]):
        f = r0 + r
        g = rows[f]
        bg = bias[g]
        row = scores[r]
        for jj in range(ncols):
            pen_c[jj] = -np.inf
        if filtered[g]:
            run = first_run
            while run < runs.shape[0] - 1 and runs[run] < c0 + ncols:
                lo = max(runs[run], c0) - c0
                hi = min(runs[run + 1], c0 + ncols) - c0
                start = runs[run]
                for a in range(n_attr):
                    if not _accepts(want[g, a], attr[start, a]):
                        for jj in range(lo, hi):
                            pen_c[jj] = np.inf
                        break
                run += 1
        # Screening pass (vectorised: no branch in the inner loop), then one visit per chunk with a hit. The
        # threshold and gates read here can only be lower than when a pair is visited, so it only over-reports.
        thr = fthr[f]
        nseg = 0
        full = ncols // chunk  # computed per row on purpose: hoisted out of the row loop, LLVM stopped
        # vectorising the screening below (measured 0.23 -> 2.0 ns per pair)
        for q in range(full):
            base = q * chunk
            mask = 0
            for u in range(chunk):
                bar = max(min(thr, gate_c[base + u]), pen_c[base + u])
                mask |= (row[base + u] + bias_c[base + u] + bg > bar) << u
            seg[2 * nseg] = base
            seg[2 * nseg + 1] = mask
            nseg += mask != 0
        if full * chunk < ncols:  # the partial chunk at the end: visited as is
            seg[2 * nseg] = full * chunk
            seg[2 * nseg + 1] = (1 << (ncols - full * chunk)) - 1
            nseg += 1
        for sg in range(nseg):
            base = seg[2 * sg]
            mask = seg[2 * sg + 1]
            u = -1
            while mask != 0:
                u += 1
                hit = mask & 1
                mask >>= 1
                if hit == 0:
                    continue
                jj = base + u
                h = c0 + jj
                if h == g:
                    continue
                v = row[jj] + bias_c[jj] + bg
                to_row = v > fthr[f]
                to_col = v > gate_c[jj]
                if not (to_row or to_col):
                    continue
                if not pair_allowed(g, h, attr, want, filtered, slots, forbid_flag, forbid_keys, key_base):
                    continue
                if to_row:
                    fthr[f] = _replace_worst(fv, fi, fworst, f, v, h)
                if to_col:
                    sh = slots[h]
                    s_g = slots[g]
                    _offer(sh, v, s_g, gen[s_g], c_slot, c_gen, c_val, c_cnt, c_floor)
                    gate_c[jj] = c_floor[sh]


@njit(nogil=True, cache=True)
def store_rows(
    rows: np.ndarray,
    m: int,
    fv: np.ndarray,
    fi: np.ndarray,
    slots: np.ndarray,
    gen: np.ndarray,
    cols: Columns,
) -> None:
    """Make the exact top-``depth`` lists ``fv``/``fi`` (row ``f`` belongs to position ``rows[f]``, partners are
    positions, -1 = empty) the cached lists of those users."""
    c_slot, c_gen, c_val, c_cnt, c_floor, row_gen = cols
    depth = c_slot.shape[1]
    for f in range(m):
        s = slots[rows[f]]
        cnt = 0
        low = np.inf
        for p in range(fi.shape[1]):
            h = fi[f, p]
            if h < 0:
                continue
            ps = slots[h]
            c_slot[s, cnt] = ps
            c_gen[s, cnt] = gen[ps]
            c_val[s, cnt] = fv[f, p]
            low = min(low, fv[f, p])
            cnt += 1
        c_cnt[s] = cnt
        c_floor[s] = low if cnt == depth else -np.inf  # a full exact list: nobody outside beats its weakest
        row_gen[s] = gen[s]


@njit(nogil=True, cache=True)
def read_candidates(
    slots: np.ndarray,
    n: int,
    pos_of_slot: np.ndarray,
    min_score: np.ndarray,
    lowest_min: float,
    cols: Columns,
    out_v: np.ndarray,
    out_i: np.ndarray,
    need: np.ndarray,
) -> int:
    """Each user's top-``k`` qualifying candidates (score desc, position asc; -1/-inf padded) from the lists;
    positions of users whose list cannot answer exactly go to ``need``; returns how many."""
    c_slot, _, c_val, c_cnt, c_floor, _ = cols
    k = out_v.shape[1]
    m = 0
    for g in range(n):
        s = slots[g]
        filled = 0
        for p in range(c_cnt[s]):
            h = pos_of_slot[c_slot[s, p]]
            v = c_val[s, p]
            if v < min(min_score[g], min_score[h]):
                continue
            q = filled if filled < k else k - 1
            if filled == k and (out_v[g, q] > v or (out_v[g, q] == v and out_i[g, q] < h)):
                continue
            while q > 0 and (out_v[g, q - 1] < v or (out_v[g, q - 1] == v and out_i[g, q - 1] > h)):
                out_v[g, q] = out_v[g, q - 1]
                out_i[g, q] = out_i[g, q - 1]
                q -= 1
            out_v[g, q] = v
            out_i[g, q] = h
            if filled < k:
                filled += 1
        for p in range(filled, k):
            out_i[g, p] = -1
            out_v[g, p] = -np.inf
        floor = c_floor[s]
        # exact: k candidates above the floor, or nobody outside the list could qualify at all
        complete = floor == -np.inf or floor < min(min_score[g], lowest_min)
        if not (out_v[g, k - 1] > floor if filled == k else complete):
            need[m] = g
            m += 1
    return m


A = TypeVar("A", bound="np.ndarray[Any, Any]")


class PairCache:
    """Cached top-``depth`` lists of one pool's slots (grown with the pool's capacity)."""

    def __init__(self, depth: int, capacity: int) -> None:
        self.depth = depth
        self.capacity = 0
        self.model: object | None = None  # the model the lists were scored with (identity)
        self.relaxed = -1  # ForbiddenPairs.relaxed when the lists were built
        self.cols = Columns(
            slot=np.zeros((0, depth), np.int64),
            gen=np.zeros((0, depth), np.int64),
            val=np.zeros((0, depth), np.float32),
            cnt=np.zeros(0, np.int64),
            floor=np.zeros(0, np.float32),
            row_gen=np.zeros(0, np.int64),
        )
        self.pos_of_slot = np.zeros(0, np.int64)
        self.seen = np.zeros(0, np.int64)  # Pool.gen of each slot at the previous tick (turnover estimate)
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        """Follow the pool's capacity; new slots start with no list (``row_gen`` -1: fresh)."""
        if capacity <= self.capacity:
            return
        old = self.capacity

        def widen(arr: A, fill: float) -> A:
            out = np.full((capacity, *arr.shape[1:]), fill, dtype=arr.dtype)
            out[:old] = arr
            return cast(A, out)

        c = self.cols
        self.cols = Columns(
            slot=widen(c.slot, -1),
            gen=widen(c.gen, -1),
            val=widen(c.val, -np.inf),
            cnt=widen(c.cnt, 0),
            floor=widen(c.floor, -np.inf),
            row_gen=widen(c.row_gen, -1),
        )
        self.pos_of_slot = widen(self.pos_of_slot, -1)
        self.seen = widen(self.seen, -1)
        self.capacity = capacity

    def turnover(self, slots: npt.NDArray[np.int64], gen: npt.NDArray[np.int64]) -> int:
        """Users among ``slots`` that are new or changed since the previous tick (then remembers this tick)."""
        changed = int(np.count_nonzero(self.seen[slots] != gen[slots]))
        self.seen[slots] = gen[slots]
        return changed

    def invalidate(self) -> None:
        """Forget every list (the next tick rebuilds them all)."""
        self.cols.row_gen[:] = -1
        self.cols.cnt[:] = 0
