"""Compiled (numba) inner loops of the tick: block scan to per-user top-k, top-k merge, Suitor matching.

Why numba: ``np.argpartition`` top-k over all pair scores took ~0.9 s at N=10k (README, "Facts we rely on"), far
over a tick. The block scan here reads each score once, right after BLAS wrote it (still in cache), and compares it
against the row's and the column's current k-th best in a branch-free, vectorisable loop; only scores that beat
a threshold (a few dozen per row) take the slow path that checks filters and forbidden pairs. All kernels
release the GIL, so two Python threads run them (and single-threaded BLAS) side by side on the two cores.

Every kernel works on *compact* indices ``0..n-1`` of the users being matched in this call; ``slots`` maps them
back to pool slots where a lookup needs the pool's identity (forbidden pairs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from tickmatch.matching.filters import ANY

CHUNK = 32  # screening width (<= 62: bit masks), passed at run time: a constant is unrolled, not vectorised


class Users(NamedTuple):
    """What the kernels read about the users of one call, in compact order (row ``g`` = compact user ``g``).

    One argument instead of nine: kernels unpack it in their first line, so their loops see plain arrays."""

    bias: np.ndarray  # (n,) float32: per-user term of the pair score
    min_score: np.ndarray  # (n,) float32: waiting-time minimum of each user (-inf: none)
    attr: np.ndarray  # (n, A) int8: attribute codes (bit positions in want masks; -1 unknown)
    want: np.ndarray  # (n, A) uint64: partner values each user accepts per attribute (ANY: anyone)
    filtered: np.ndarray  # (n,) bool: some want mask is not ANY (the filter check can be skipped otherwise)
    slots: np.ndarray  # (n,) int64: pool slot of each compact user (forbidden pairs are keyed by slot)
    forbid_flag: np.ndarray  # (pool capacity,) bool: the slot has at least one forbidden partner
    forbid_keys: np.ndarray  # sorted int64 keys ``min(slot) * key_base + max(slot)`` of forbidden pairs
    key_base: int


class TopK(NamedTuple):
    """One thread's running top-k lists of the users of a call (see :func:`reset_topk`)."""

    v: np.ndarray  # (n, k) float32 scores
    i: np.ndarray  # (n, k) int32 partner indices (-1: empty)
    thr: np.ndarray  # (n,) float32: the list's k-th best, what a new partner must beat
    worst: np.ndarray  # (n,) int64: position of that k-th best in the row


@njit(nogil=True, cache=True)
def _accepts(want: np.uint64, code: np.int8) -> bool:
    """``want`` mask accepts attribute ``code``; an unknown value (-1) only passes an accept-anyone mask."""
    if code < 0:
        return want == ANY
    return ((want >> np.uint64(code)) & np.uint64(1)) == np.uint64(1)


@njit(nogil=True, cache=True)
def _forbidden(si: int, sj: int, forbid_keys: np.ndarray, key_base: int) -> bool:
    """Binary search of the slot pair in the sorted forbidden keys."""
    key = min(si, sj) * key_base + max(si, sj)
    lo = 0
    hi = forbid_keys.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if forbid_keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo < forbid_keys.shape[0] and forbid_keys[lo] == key


@njit(nogil=True, cache=True)
def pair_allowed(
    i: int,
    j: int,
    attr: np.ndarray,
    want: np.ndarray,
    filtered: np.ndarray,
    slots: np.ndarray,
    forbid_flag: np.ndarray,
    forbid_keys: np.ndarray,
    key_base: int,
) -> bool:
    """Mutual filters and forbidden pairs (block lists, recent repeats) of compact users ``i`` and ``j``.

    The scan kernel repeats this logic inline (a call passing arrays costs refcount traffic per pair, ~45 ns);
    the exact fallback :func:`rescan_rows`, which runs for a few users per tick, calls it."""
    if filtered[i] or filtered[j]:
        for a in range(attr.shape[1]):
            if not _accepts(want[i, a], attr[j, a]) or not _accepts(want[j, a], attr[i, a]):
                return False
    si = slots[i]
    sj = slots[j]
    return not (forbid_flag[si] and forbid_flag[sj] and _forbidden(si, sj, forbid_keys, key_base))


@njit(nogil=True, cache=True, inline="always")
def _replace_worst(vals: np.ndarray, idxs: np.ndarray, worst: np.ndarray, g: int, v: np.float32, other: int) -> float:
    """Overwrite the weakest of user g's k candidates; returns the new k-th best (the new threshold).

    Indexes the 2-D arrays directly: taking a row view per insert costs refcount updates (measured ~2x)."""
    w = worst[g]
    vals[g, w] = v
    idxs[g, w] = other
    low = vals[g, 0]
    w = 0
    for p in range(1, vals.shape[1]):
        x = vals[g, p]
        if x < low:
            low = x
            w = p
    worst[g] = w
    return low


@njit(nogil=True, cache=True, fastmath=True)
def scan_block(
    scores: np.ndarray,
    r0: int,
    c0: int,
    diagonal: bool,
    users: Users,
    lists: TopK,
    thr: np.ndarray,
    chunk: int,
    seg: np.ndarray,
    pen: np.ndarray,
) -> int:
    """Fold one block of raw scores (rows ``r0..``, columns ``c0..``) into the rows' and columns' top-k.

    ``scores[i, j]`` is the bilinear term of users ``r0+i`` and ``c0+j``; the pair score adds both biases.
    On a diagonal block only ``j > i`` is read (the upper triangle). A pair enters a top-k only if it beats
    that user's current k-th best, clears the waiting-time minimum ``min(min_score[i], min_score[j])`` and
    passes the mutual filters and forbidden pairs.

    Each thread keeps its own lists (``lists``) but all threads share ``thr``:
    a pair at or below *any* thread's k-th best of a user cannot reach that user's merged top-k, so the
    largest threshold any thread has published is a valid filter. Writes to ``thr`` race benignly: a lost
    update only leaves a lower (more permissive, still correct) threshold. Sharing halved the slow-path
    visits with two threads (measured 954k -> ~540k at N=10k).
    ``seg`` is scratch of at least ``2 * (cols // chunk + 2) + rows``; ``pen`` of at least ``cols``.
    Returns the number of pairs that took the slow path (for profiling).

    Per row, a screening pass compares every score with ``min(row threshold, column threshold)`` in chunks
    (branch-free, vectorised) and records the chunks with a hit; only those are then visited one pair at a
    time. Screening with the thresholds of the row's start is safe: thresholds only rise, so it can only
    over-report. Everything in the visit loop is written inline on purpose: calling a helper that takes
    arrays costs refcount updates per pair, measured at ~45 ns (vs ~1 ns here).
    """
    bias, min_score, attr, want, filtered, slots, forbid_flag, forbid_keys, key_base = users
    topv, topi, own_thr, worst = lists
    rows, cols = scores.shape
    n_attr = attr.shape[1]
    # Views starting at the block's first column: loop indices stay provably non-negative, which lets LLVM
    # vectorise the screening loop (an offset index ``c0 + jj`` costs ~10x here, measured).
    bias_c = bias[c0 : c0 + cols]
    thr_c = thr[c0 : c0 + cols]
    # Filter pruning per block: a column user whose filters reject every row user of this block (or whom every
    # row user rejects) can never pair here, so it is screened against +inf; likewise a whole row is skipped.
    # Users are ordered by attributes (see the engine), so blocks are nearly uniform and this removes most
    # filter-rejected visits (half of all slow-path visits on the benchmark market, measured).
    pen_c = pen[:cols]
    any_filter = False
    for i in range(rows):
        if filtered[r0 + i]:
            any_filter = True
            break
    if not any_filter:
        for jj in range(cols):
            if filtered[c0 + jj]:
                any_filter = True
                break
    for jj in range(cols):
        pen_c[jj] = -np.inf
    row_ok = seg[seg.shape[0] - rows :]  # tail of the scratch: 1 = the row can pair with some column
    for i in range(rows):
        row_ok[i] = 1
    if any_filter:
        for a in range(n_attr):
            has_r = np.uint64(0)
            want_r = np.uint64(0)
            unknown_r = False
            for i in range(rows):
                code = attr[r0 + i, a]
                if code < 0:
                    unknown_r = True
                else:
                    has_r |= np.uint64(1) << np.uint64(code)
                want_r |= want[r0 + i, a]
            has_c = np.uint64(0)
            want_c = np.uint64(0)
            unknown_c = False
            for jj in range(cols):
                code = attr[c0 + jj, a]
                if code < 0:
                    unknown_c = True
                else:
                    has_c |= np.uint64(1) << np.uint64(code)
                want_c |= want[c0 + jj, a]
            for jj in range(cols):
                gj = c0 + jj
                code = attr[gj, a]
                accepts_some_row = unknown_r or (want[gj, a] & has_r) != np.uint64(0) or want[gj, a] == ANY
                some_row_accepts = code < 0 or ((want_r >> np.uint64(code)) & np.uint64(1)) == np.uint64(1)
                if not (accepts_some_row and some_row_accepts):
                    pen_c[jj] = np.inf
            for i in range(rows):
                gi = r0 + i
                code = attr[gi, a]
                accepts_some_col = unknown_c or (want[gi, a] & has_c) != np.uint64(0) or want[gi, a] == ANY
                some_col_accepts = code < 0 or ((want_c >> np.uint64(code)) & np.uint64(1)) == np.uint64(1)
                if not (accepts_some_col and some_col_accepts):
                    row_ok[i] = 0
    slow = 0
    for i in range(rows):
        if row_ok[i] == 0:
            continue
        gi = r0 + i
        bi = bias[gi]
        row = scores[i]
        start = i + 1 if diagonal else 0
        head = min(((start + chunk - 1) // chunk) * chunk, cols)
        # Segments to visit: (first column, bit mask of the columns in it that passed screening).
        nseg = 0
        if head > start:  # partial chunk after the diagonal: always visited
            seg[0] = start
            seg[1] = (1 << (head - start)) - 1
            nseg = 1
        row_b = row[head:]
        bias_b = bias_c[head:]
        thr_b = thr_c[head:]
        pen_b = pen_c[head:]
        full = (cols - head) // chunk
        ti = thr[gi]
        for q in range(full):
            base = q * chunk
            mask = 0
            for u in range(chunk):
                mask |= (row_b[base + u] + bias_b[base + u] + bi > min(ti, max(thr_b[base + u], pen_b[base + u]))) << u
            seg[2 * nseg] = head + base
            seg[2 * nseg + 1] = mask
            nseg += mask != 0
        tail = head + full * chunk
        if tail < cols:
            seg[2 * nseg] = tail
            seg[2 * nseg + 1] = (1 << (cols - tail)) - 1
            nseg += 1
        for sg in range(nseg):
            first = seg[2 * sg]
            mask = seg[2 * sg + 1]
            u = -1
            while mask != 0:
                u += 1
                hit = mask & 1
                mask >>= 1
                if hit == 0:
                    continue
                jj = first + u
                gj = c0 + jj
                v = row[jj] + bias_c[jj] + bi
                if v <= thr[gi] and v <= thr[gj]:
                    continue
                slow += 1
                if v < min(min_score[gi], min_score[gj]):
                    continue
                ok = True
                if filtered[gi] or filtered[gj]:
                    for a in range(n_attr):
                        if not _accepts(want[gi, a], attr[gj, a]) or not _accepts(want[gj, a], attr[gi, a]):
                            ok = False
                            break
                if ok:
                    si = slots[gi]
                    sj = slots[gj]
                    if forbid_flag[si] and forbid_flag[sj] and _forbidden(si, sj, forbid_keys, key_base):
                        ok = False
                if not ok:
                    continue
                # Insert into each side whose k-th best it beats. ``worst[g]`` remembers where g's k-th best
                # sits, so an insert is one store plus one min/argmin pass over k values (was two passes).
                if v > thr[gi] and v > own_thr[gi]:
                    low = _replace_worst(topv, topi, worst, gi, v, gj)
                    own_thr[gi] = low
                    thr[gi] = max(thr[gi], low)
                if v > thr[gj] and v > own_thr[gj]:
                    low = _replace_worst(topv, topi, worst, gj, v, gi)
                    own_thr[gj] = low
                    thr[gj] = max(thr[gj], low)
    return slow


@njit(nogil=True, cache=True)
def reset_topk(lists: TopK, n: int, floor: np.float32) -> None:
    """Empty the first ``n`` users' candidate lists; ``floor`` is the lowest score any pair may be matched at.

    ``lists.thr`` is the list's own threshold (the shared one is reset with :func:`numpy.ndarray.fill`)."""
    topv, topi, thr, worst = lists
    for g in range(n):
        worst[g] = 0
        for p in range(topv.shape[1]):
            topv[g, p] = floor
            topi[g, p] = -1
        thr[g] = floor


@njit(nogil=True, cache=True)
def merge_topk(
    topv_a: np.ndarray,
    topi_a: np.ndarray,
    topv_b: np.ndarray,
    topi_b: np.ndarray,
    lo: int,
    hi: int,
    out_v: np.ndarray,
    out_i: np.ndarray,
) -> None:
    """Best k of two threads' lists for users ``lo..hi-1``, ordered by (score desc, index asc) so the result is
    deterministic whichever thread happened to scan which block."""
    k = out_v.shape[1]
    for g in range(lo, hi):
        filled = 0
        for src in range(2):
            tv = topv_a if src == 0 else topv_b
            ti = topi_a if src == 0 else topi_b
            for p in range(tv.shape[1]):
                idx = ti[g, p]
                if idx < 0:
                    continue
                v = tv[g, p]
                # insertion into the sorted prefix out[g, :filled] (at most k kept)
                pos = filled
                while pos > 0 and (out_v[g, pos - 1] < v or (out_v[g, pos - 1] == v and out_i[g, pos - 1] > idx)):
                    pos -= 1
                if pos >= k:
                    continue
                last = min(filled, k - 1)
                q = last
                while q > pos:
                    out_v[g, q] = out_v[g, q - 1]
                    out_i[g, q] = out_i[g, q - 1]
                    q -= 1
                out_v[g, pos] = v
                out_i[g, pos] = idx
                if filled < k:
                    filled += 1
        for p in range(filled, k):
            out_i[g, p] = -1
            out_v[g, p] = -np.inf


@njit(nogil=True, cache=True)
def build_graph(
    cand_v: np.ndarray,
    cand_i: np.ndarray,
    n: int,
    adj_ptr: np.ndarray,
    adj_idx: np.ndarray,
    adj_w: np.ndarray,
    fill: np.ndarray,
) -> int:
    """Symmetric candidate graph in CSR form without duplicate edges; returns the number of stored arcs.

    Edge (g, h) exists if h is in g's top-k or g in h's. Each row is sorted by neighbour index, which also
    makes every later pass over it deterministic. ``fill`` is scratch of size n.
    """
    k = cand_i.shape[1]
    for g in range(n + 1):
        adj_ptr[g] = 0
    for g in range(n):
        for p in range(k):
            h = cand_i[g, p]
            if h >= 0:
                adj_ptr[g + 1] += 1
                adj_ptr[h + 1] += 1
    for g in range(n):
        adj_ptr[g + 1] += adj_ptr[g]
    for g in range(n):
        fill[g] = adj_ptr[g]
    for g in range(n):
        for p in range(k):
            h = cand_i[g, p]
            if h >= 0:
                w = cand_v[g, p]
                adj_idx[fill[g]] = h
                adj_w[fill[g]] = w
                fill[g] += 1
                adj_idx[fill[h]] = g
                adj_w[fill[h]] = w
                fill[h] += 1
    # sort each row by neighbour and drop duplicates, compacting in place
    out = 0
    start = 0
    for g in range(n):
        end = adj_ptr[g + 1]
        row_start = out
        for e in range(start, end):
            h = adj_idx[e]
            w = adj_w[e]
            q = out
            while q > row_start and adj_idx[q - 1] > h:
                q -= 1
            if q > row_start and adj_idx[q - 1] == h:
                continue  # the same pair listed by both users
            for r in range(out, q, -1):
                adj_idx[r] = adj_idx[r - 1]
                adj_w[r] = adj_w[r - 1]
            adj_idx[q] = h
            adj_w[q] = w
            out += 1
        adj_ptr[g] = row_start
        start = end
    adj_ptr[n] = out
    return out


@njit(nogil=True, cache=True)
def _better(w1: float, u1: int, w2: float, u2: int) -> bool:
    """Strict total order on proposals: heavier first, then the lower index (deterministic ties)."""
    return w1 > w2 or (w1 == w2 and u1 < u2)


@njit(nogil=True, cache=True)
def suitor(
    cand_v: np.ndarray,
    cand_i: np.ndarray,
    n: int,
    mate: np.ndarray,
    adj_ptr: np.ndarray,
    adj_idx: np.ndarray,
    adj_w: np.ndarray,
    suitor_of: np.ndarray,
    suitor_w: np.ndarray,
) -> int:
    """Suitor algorithm (Manne & Halappanavar 2014) on the symmetrised candidate graph (:func:`build_graph`).

    Each user proposes to the best neighbour that prefers it over its current suitor; a displaced suitor
    proposes again. With a strict order on edges the result equals greedy (heaviest edge first) matching, a
    1/2-approximation of max-weight matching, in O(edges) time. ``mate[g]`` gets the partner or -1.
    Scratch arrays are passed in so a tick allocates nothing. Returns the number of pairs.
    """
    build_graph(cand_v, cand_i, n, adj_ptr, adj_idx, adj_w, suitor_of)  # suitor_of: scratch until reset
    for g in range(n):
        suitor_of[g] = -1
        suitor_w[g] = -np.inf
    for start in range(n):
        u = start
        while u >= 0:
            best = -1
            best_w = -np.inf
            for e in range(adj_ptr[u], adj_ptr[u + 1]):
                v = adj_idx[e]
                w = adj_w[e]
                if _better(w, v, best_w, best) and _better(w, u, suitor_w[v], suitor_of[v]):
                    best = v
                    best_w = w
            if best < 0:
                break
            displaced = suitor_of[best]
            suitor_of[best] = u
            suitor_w[best] = best_w
            u = displaced
    pairs = 0
    for g in range(n):
        mate[g] = -1
    for g in range(n):
        h = suitor_of[g]
        if h >= 0 and suitor_of[h] == g:
            mate[g] = h
            if g < h:
                pairs += 1
    return pairs


@njit(nogil=True, cache=True)
def _upper_quantile_z(q: float) -> float:
    """z with P(Z > z) = q for a standard normal (Acklam's rational approximation, |error| < 1.2e-9)."""
    p = 1.0 - q
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        t = np.sqrt(-2.0 * np.log(p))
        return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
            (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0
        )
    if p > 1.0 - 0.02425:
        t = np.sqrt(-2.0 * np.log(1.0 - p))
        return -(((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
            (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0
        )
    t = p - 0.5
    r = t * t
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * t
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    )


@njit(nogil=True, cache=True, fastmath=True)
def estimate_thresholds(
    sample_scores: np.ndarray,
    sample: np.ndarray,
    lo: int,
    hi: int,
    n: int,
    users: Users,
    target_rank: float,
    floor: np.float32,
    out: np.ndarray,
) -> None:
    """Per-user starting threshold for users ``lo..hi-1``: the estimated score of their ``target_rank``-th best
    allowed partner (``sample_scores`` row 0 is user ``lo``).

    From the user's allowed pairs with a fixed sample of users: their share estimates how many partners the
    user has in the whole pool, their mean and spread (a normal fit) where the ``target_rank``-th best lies.
    The estimate may be wrong in either direction; the caller recomputes exactly every user that ends with
    fewer than k candidates above its start, so results never depend on it — only the work does.
    Forbidden pairs and the sample users' own filters are ignored here (they only steer work).
    """
    bias, min_score, attr, want, filtered = users.bias, users.min_score, users.attr, users.want, users.filtered
    s_count = sample.shape[0]
    n_attr = attr.shape[1]
    s_bias = np.empty(s_count, dtype=np.float32)
    s_min = np.empty(s_count, dtype=np.float32)
    kept = np.empty(s_count + 1, dtype=np.float32)  # the allowed sample scores of the current user
    for s in range(s_count):
        s_bias[s] = bias[sample[s]]
        s_min[s] = min_score[sample[s]]
    for g in range(lo, hi):
        row = sample_scores[g - lo]
        bg = bias[g]
        mg = min_score[g]
        cnt = 0
        total = 0.0
        total_sq = 0.0
        if not filtered[g]:
            # Branch-free (vectorised) over the sample. Filters of the sample users are ignored here: the
            # estimate only steers work, and the exact fallback covers a too-high start.
            for s in range(s_count):
                v = row[s] + bg + s_bias[s]
                keep = (v >= min(mg, s_min[s])) & (sample[s] != g)
                kept[cnt] = v
                cnt += keep
                total += v * keep
                total_sq += v * v * keep
        else:
            for s in range(s_count):
                h = sample[s]
                v = row[s] + bg + s_bias[s]
                if h == g or v < min(mg, s_min[s]):
                    continue
                ok = True
                for a in range(n_attr):
                    if not _accepts(want[g, a], attr[h, a]):
                        ok = False
                        break
                if ok:
                    kept[cnt] = v
                    cnt += 1
                    total += v
                    total_sq += v * v
        out[g] = floor
        if cnt < 16:
            continue
        mean = total / cnt
        var = max(total_sq / cnt - mean * mean, 0.0)
        partners = cnt / s_count * (n - 1)
        q = target_rank / partners
        if q >= 0.5:
            continue
        est = mean + np.sqrt(var) * _upper_quantile_z(q)
        # The normal fit alone overshoots where scores are discrete (a profile-only model: most pairs share a
        # few values; measured: every user of a 3,700-user pool started above its true 8th best and was
        # recomputed exactly, 10x the tick). So never start above the sample's own order statistic one or two
        # ranks below the target quantile (distribution-free, a little low on purpose).
        rank = min(int(q * cnt) + 2, cnt)
        est = min(est, _kth_largest(kept, cnt, rank))
        out[g] = max(floor, np.float32(est))


@njit(nogil=True, cache=True)
def _kth_largest(values: np.ndarray, count: int, k: int) -> float:
    """The ``k``-th largest of ``values[:count]`` (``k`` small: k passes, no allocation), nudged just below so a
    threshold set to it lets that value itself through."""
    bound = np.inf
    taken = 0
    best = -np.inf
    while taken < k:
        best = -np.inf
        ties = 0
        for i in range(count):
            v = values[i]
            if v < bound:
                if v > best:
                    best, ties = v, 1
                elif v == best:
                    ties += 1
        if ties == 0:
            break
        taken += ties
        bound = best
    return float(np.nextafter(np.float32(best), np.float32(-np.inf)))


@njit(nogil=True, cache=True, fastmath=True)
def rescan_rows(
    scores: np.ndarray,
    rows: np.ndarray,
    c0: int,
    users: Users,
    lists: TopK,
) -> None:
    """Exact top-k of a few users (``rows``) over columns ``c0..``: the fallback when a starting estimate was too
    high. Only the rows' own lists are updated (each column user's list was already exact)."""
    bias, min_score, attr, want, filtered, slots, forbid_flag, forbid_keys, key_base = users
    topv, topi, thr, worst = lists
    for r in range(rows.shape[0]):
        g = rows[r]
        bg = bias[g]
        for jj in range(scores.shape[1]):
            h = c0 + jj
            if h == g:
                continue
            v = scores[r, jj] + bg + bias[h]
            if v <= thr[g] or v < min(min_score[g], min_score[h]):
                continue
            if not pair_allowed(g, h, attr, want, filtered, slots, forbid_flag, forbid_keys, key_base):
                continue
            thr[g] = _replace_worst(topv, topi, worst, g, v, h)


@njit(nogil=True, cache=True)
def write_sorted(rows: np.ndarray, topv: np.ndarray, topi: np.ndarray, out_v: np.ndarray, out_i: np.ndarray) -> None:
    """Copy the lists of ``rows`` into the output, ordered by (score desc, index asc); empty slots get -1."""
    k = out_v.shape[1]
    for r in range(rows.shape[0]):
        g = rows[r]
        filled = 0
        for p in range(topv.shape[1]):
            idx = topi[g, p]
            if idx < 0:
                continue
            v = topv[g, p]
            q = filled
            while q > 0 and (out_v[g, q - 1] < v or (out_v[g, q - 1] == v and out_i[g, q - 1] > idx)):
                out_v[g, q] = out_v[g, q - 1]
                out_i[g, q] = out_i[g, q - 1]
                q -= 1
            out_v[g, q] = v
            out_i[g, q] = idx
            filled += 1
        for p in range(filled, k):
            out_i[g, p] = -1
            out_v[g, p] = -np.inf
