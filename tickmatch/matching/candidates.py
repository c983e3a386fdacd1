"""Blocked upper-triangle scoring to per-user top-k candidates, on a fixed set of worker threads.

The pair score is symmetric, so only blocks ``(I, J)`` with ``J >= I`` are computed: one single-threaded BLAS
product ``L[I] @ R[J].T`` into a per-thread buffer that stays in cache, immediately folded into that thread's
top-k lists by :func:`~tickmatch.matching.kernels.scan_block`. Threads take whole row strips from a shared
counter, largest first (dynamic balance), each keeps its own top-k lists and publishes thresholds in one shared
array (benign races, see the kernel), and the lists are merged deterministically at the end. Starting thresholds
are estimated from a sample; users they overshoot are recomputed exactly. All buffers are allocated once for a
capacity and reused: a steady-state tick allocates nothing large.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tickmatch.matching.kernels import (
    CHUNK,
    TopK,
    Users,
    estimate_thresholds,
    merge_topk,
    rescan_rows,
    reset_topk,
    scan_block,
    write_sorted,
)


@dataclass(slots=True)
class Inputs:
    """Compact per-tick view of the users being matched (row ``g`` = compact user ``g``)."""

    left: npt.NDArray[np.float32]  # (n, d) user embedding times the model matrix
    right: npt.NDArray[np.float32]  # (n, d) user embedding
    users: Users  # biases, minimums, filters and forbidden pairs (see kernels.Users)
    n: int


class CandidateSearch:
    """Reusable candidate finder for up to ``capacity`` users (grows by doubling when needed)."""

    def __init__(
        self,
        k: int = 8,
        block: int = 512,
        threads: int = 2,
        capacity: int = 1024,
        sample: int = 256,
        target_rank: float = 5.0,
    ) -> None:
        if k < 1 or block < 16 or threads < 1:
            raise ValueError("k >= 1, block >= 16 and threads >= 1 are required")
        self.k = k
        self.block = block
        self.sample = sample  # users scored by everyone first, to estimate starting thresholds (0 = off)
        self.target_rank = target_rank * k  # start each user at its estimated (target_rank * k)-th best
        self.fallbacks = 0  # users recomputed exactly in the last run (estimate was too high)
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tickmatch-scan")
        # flat, so a partial edge block is a *contiguous* view: BLAS writes it in place (a strided output made
        # numpy allocate and copy a temporary per edge block)
        self._buffers = [np.empty(block * block, dtype=np.float32) for _ in range(threads)]
        self._seg = [np.empty(2 * (block // CHUNK + 2) + block, dtype=np.int64) for _ in range(threads)]
        self._pen = [np.empty(block, dtype=np.float32) for _ in range(threads)]
        self._lock = threading.Lock()
        self._next = 0
        self._tasks: list[tuple[int, int]] = []
        self.capacity = 0
        self._grow(capacity)
        self.slow_path = 0

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self._lists = [
            TopK(
                np.empty((capacity, self.k), dtype=np.float32),
                np.empty((capacity, self.k), dtype=np.int32),
                np.empty(capacity, dtype=np.float32),
                np.empty(capacity, dtype=np.int64),
            )
            for _ in range(self.threads)
        ]
        self._shared_thr = np.empty(capacity, dtype=np.float32)
        self._start = np.empty(capacity, dtype=np.float32)
        self._sample_scores = np.empty((capacity, max(self.sample, 1)), dtype=np.float32)
        self._empty_i = np.full((capacity, self.k), -1, dtype=np.int32)  # "no second list" for one thread
        self.cand_v = np.empty((capacity, self.k), dtype=np.float32)
        self.cand_i = np.empty((capacity, self.k), dtype=np.int32)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    def run(self, x: Inputs, estimate: bool = True) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Top-k candidates of each of the ``x.n`` users: ``(values, indices)`` views, index -1 where empty.

        Values are pair scores (bilinear + both biases) of allowed pairs at or above the waiting-time minimum.
        """
        n = x.n
        if n > self.capacity:
            self._grow(max(n, 2 * self.capacity))
        floor = np.float32(x.users.min_score[:n].min()) if n else np.float32(0)
        floor = np.nextafter(floor, np.float32(-np.inf))  # a pair exactly at the minimum still qualifies
        for t in range(self.threads):
            reset_topk(self._lists[t], n, floor)
        self._shared_thr[:n] = floor
        estimated = estimate and self.sample > 0 and n >= 4 * self.sample
        if estimated:
            self._estimate(x, floor)
        b = self.block
        # One task = one row strip (all its blocks), largest strips first: threads work on different rows, so
        # they rarely write the same shared thresholds (cache-line ping-pong measured at +25% on 2 threads).
        self._tasks = [(r, 0) for r in range(0, n, b)]
        self._next = 0
        users = x.users
        if self.threads == 1:
            self.slow_path = self._work(0, x, users)
        else:
            futures = [self._pool.submit(self._work, t, x, users) for t in range(self.threads)]
            self.slow_path = sum(f.result() for f in futures)
        if self.threads == 1:
            first = self._lists[0]
            merge_topk(first.v, first.i, first.v, self._empty_i, 0, n, self.cand_v, self.cand_i)
        else:
            # users split over the threads: the merge is per user and needs no coordination
            half = (n + 1) // 2
            lists = (self._lists[0].v, self._lists[0].i, self._lists[1].v, self._lists[1].i)
            parts = [(0, half), (half, n)]
            for f in [self._pool.submit(merge_topk, *lists, lo, hi, self.cand_v, self.cand_i) for lo, hi in parts]:
                f.result()
            for t in range(2, self.threads):  # fold further threads in pairwise (rare: more than 2 cores)
                prev_v, prev_i = self.cand_v.copy(), self.cand_i.copy()
                merge_topk(prev_v, prev_i, self._lists[t].v, self._lists[t].i, 0, n, self.cand_v, self.cand_i)
        self.fallbacks = self._fallback(x, floor) if estimated else 0
        return self.cand_v[:n], self.cand_i[:n]

    def _estimate(self, x: Inputs, floor: np.float32) -> None:
        """Start every user's threshold at an estimate of its (target_rank * k)-th best score.

        Why: with thresholds starting at the floor, each user's list takes ~k ln(n/k) inserts to settle and
        early hits dominate the scan (~40 % of the tick at N=10k). An estimate from a 256-user sample skips
        most of them; where it overshoots, :meth:`_fallback` recomputes the user exactly.
        """
        n, s = x.n, self.sample
        sample = np.linspace(0, n - 1, s).astype(np.int64)
        right = np.ascontiguousarray(x.right[sample])
        users = x.users

        def part(lo: int, hi: int) -> None:
            scores = self._sample_scores[lo:hi, :s]
            np.matmul(x.left[lo:hi], right.T, out=scores)
            estimate_thresholds(scores, sample, lo, hi, n, users, self.target_rank, floor, self._start)

        step = (n + self.threads - 1) // self.threads
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
        if self.threads == 1:
            part(*bounds[0])
        else:
            for f in [self._pool.submit(part, lo, hi) for lo, hi in bounds]:
                f.result()
        self._shared_thr[:n] = self._start[:n]

    def _fallback(self, x: Inputs, floor: np.float32) -> int:
        """Recompute exactly the users left with fewer than k candidates while starting above the floor."""
        n = x.n
        short = np.flatnonzero((self.cand_i[:n, self.k - 1] < 0) & (self._start[:n] > floor)).astype(np.int64)
        self.exact_rows(x, short, floor, self.cand_v, self.cand_i)
        return int(short.shape[0])

    def exact_rows(
        self,
        x: Inputs,
        rows: npt.NDArray[np.int64],
        floor: np.float32,
        out_v: npt.NDArray[np.float32],
        out_i: npt.NDArray[np.int32],
    ) -> None:
        """Exact top-k of the users ``rows`` (qualifying at or above ``floor`` and their minimums) over all
        ``x.n`` users, written into those rows of ``out_v``/``out_i``. Single-threaded: for a few users."""
        if rows.shape[0] == 0:
            return
        if x.n > self.capacity:
            self._grow(max(x.n, 2 * self.capacity))
        n = x.n
        lists = self._lists[0]
        topv, topi, thr, worst = lists
        users = x.users
        for g in rows.tolist():
            topv[g] = floor
            topi[g] = -1
            thr[g] = floor
            worst[g] = 0
        b = self.block
        buf = self._buffers[0]
        for r in range(0, rows.shape[0], b):
            part = rows[r : r + b]
            left = x.left[part]
            for c in range(0, n, b):
                c1 = min(c + b, n)
                out = buf[: part.shape[0] * (c1 - c)].reshape(part.shape[0], c1 - c)
                np.matmul(left, x.right[c:c1].T, out=out)
                rescan_rows(out, part, c, users, lists)
        write_sorted(rows, topv, topi, out_v, out_i)

    def _take(self) -> tuple[int, int] | None:
        with self._lock:
            if self._next >= len(self._tasks):
                return None
            task = self._tasks[self._next]
            self._next += 1
            return task

    def _work(self, t: int, x: Inputs, users: Users) -> int:
        buf = self._buffers[t]
        lists = self._lists[t]
        seg = self._seg[t]
        pen = self._pen[t]
        slow = 0
        n, b = x.n, self.block
        while (task := self._take()) is not None:
            r = task[0]
            r1 = min(r + b, n)
            cols = range(r, n, b)
            for c in cols if t % 2 == 0 else reversed(cols):  # opposite directions: fewer shared cache lines
                c1 = min(c + b, n)
                out = buf[: (r1 - r) * (c1 - c)].reshape(r1 - r, c1 - c)
                np.matmul(x.left[r:r1], x.right[c:c1].T, out=out)
                slow += scan_block(out, r, c, r == c, users, lists, self._shared_thr, CHUNK, seg, pen)
        return slow
