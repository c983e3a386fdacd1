"""The tick's matcher: pool -> compact arrays -> top-k candidates -> auction (or Suitor) -> refill rounds -> pairs.

One :class:`Engine` per worker, reused every tick: every buffer is sized for a capacity and grows by doubling,
so a steady-state tick allocates nothing proportional to the pool except its small result arrays.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from tickmatch.matching.auction import auction, build_graph, pointer_candidates
from tickmatch.matching.bilinear import BilinearModel, ModelError
from tickmatch.matching.candidates import CandidateSearch, Inputs
from tickmatch.matching.constraints import KEY_BASE
from tickmatch.matching.filters import ANY
from tickmatch.matching.kernels import CHUNK, TopK, Users, merge_topk, reset_topk, suitor
from tickmatch.matching.paircache import PairCache, column_gates, compact, fresh_scan, read_candidates, store_rows
from tickmatch.matching.pool import Pool
from tickmatch.matching.waiting import WaitCurve


@dataclass(frozen=True, slots=True)
class Matching:
    """Disjoint pairs as pool slots (``a[i]`` with ``b[i]``) and their scores, in a deterministic order."""

    a: npt.NDArray[np.int64]
    b: npt.NDArray[np.int64]
    score: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.a.shape[0])


EMPTY = Matching(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tuning of the matcher. Defaults are the measured best on 2 cores (see README, Performance)."""

    k: int = 8  # candidates kept per user
    block: int = 512  # rows/columns per scored block (a 1 MiB float32 block stays in L2)
    threads: int = 0  # scan threads; 0 = one per core
    refill_rounds: int = 16  # re-match users whose candidates were all taken (stops at the first round with no pair)
    matcher: str = "auction"  # "auction" (near-optimal) or "greedy" (Suitor only, faster, ~3 % lower total)
    auction_k: int = 8  # candidates per user the auction sees (6: 0.984 quality at d=32 vs 0.989 with 8, no faster)
    auction_eps: float = 3e-3  # final auction epsilon relative to the largest score: loss <= 2n * eps
    auction_scaling: float = 20.0  # epsilon divided by this per phase (fewer phases = fewer bids, measured)
    warm_prices: bool = True  # start the auction from the prices users had in their previous tick
    incremental: bool = True  # keep each pool's pair lists across ticks and score only what changed
    cache_depth: int = 16  # partners kept per user across ticks (> k: lists survive partners leaving)
    max_fresh: float = 0.2  # above this share of changed users a tick rebuilds every list (cheaper then)
    tie_dims: int = 4  # columns of per-slot noise appended to embeddings to break exact ties (0: off)
    tie_scale: float = 1e-3  # weight of that noise: the pair score moves by ~5e-4 (std), far below a real difference

    def __post_init__(self) -> None:
        if self.matcher not in ("auction", "greedy"):
            raise ValueError(f"unknown matcher {self.matcher!r}: use 'auction' or 'greedy'")
        if self.cache_depth < self.k or not 0.0 <= self.max_fresh <= 1.0:
            raise ValueError("cache_depth >= k and 0 <= max_fresh <= 1 are required")
        if self.tie_dims < 0 or self.tie_scale < 0.0:
            raise ValueError("tie_dims >= 0 and tie_scale >= 0 are required")

    def resolved_threads(self) -> int:
        return self.threads if self.threads > 0 else max(1, min(os.cpu_count() or 1, 8))


@njit(nogil=True, cache=True)
def _gather(
    order: np.ndarray,
    bias: np.ndarray,
    attr: np.ndarray,
    want: np.ndarray,
    joined_at: np.ndarray,
    now: float,
    slots_out: np.ndarray,
    bias_out: np.ndarray,
    attr_out: np.ndarray,
    want_out: np.ndarray,
    wait_out: np.ndarray,
    filtered_out: np.ndarray,
) -> int:
    """Compact the slots ``order`` (in that order) into the front of the ``*_out`` arrays; returns the count."""
    n = 0
    for q in range(order.shape[0]):
        s = order[q]
        slots_out[n] = s
        bias_out[n] = bias[s]
        f = False
        for a in range(attr.shape[1]):
            attr_out[n, a] = attr[s, a]
            want_out[n, a] = want[s, a]
            f = f or want[s, a] != ANY
        filtered_out[n] = f
        wait_out[n] = max(now - joined_at[s], 0.0)
        n += 1
    return n


@njit(nogil=True, cache=True)
def _gather_rows(emb: np.ndarray, ties: np.ndarray, slots: np.ndarray, n: int, out: np.ndarray) -> None:
    """``out[q] = emb[slots[q]]`` followed by ``ties[slots[q]]`` (the tie-break columns) for the first ``n``."""
    d = emb.shape[1]
    for q in range(n):
        s = slots[q]
        for c in range(d):
            out[q, c] = emb[s, c]
        for c in range(ties.shape[1]):
            out[q, d + c] = ties[s, c]


@njit(nogil=True, cache=True)
def _load_prices(slot_price: np.ndarray, slots: np.ndarray, n: int, price: np.ndarray) -> bool:
    """Starting auction prices from the pool (0 for users new to the auction); False if nobody has one."""
    known = 0
    for g in range(n):
        a = slot_price[slots[g], 0]
        b = slot_price[slots[g], 1]
        if a == a and b == b:  # not NaN
            price[g] = a
            price[n + g] = b
            known += 1
        else:
            price[g] = 0.0
            price[n + g] = 0.0
    return known > 0


@njit(nogil=True, cache=True)
def _store_prices(price: np.ndarray, slots: np.ndarray, n: int, slot_price: np.ndarray) -> None:
    """Remember every user's final prices for the next tick (their slot keeps them while they wait)."""
    for g in range(n):
        slot_price[slots[g], 0] = price[g]
        slot_price[slots[g], 1] = price[n + g]


@njit(nogil=True, cache=True)
def _leftovers(mate: np.ndarray, cand_i: np.ndarray, n: int, out: np.ndarray) -> int:
    """Unmatched users that had at least one candidate: the only ones a refill round can still pair."""
    m = 0
    for g in range(n):
        if mate[g] < 0 and cand_i[g, 0] >= 0:
            out[m] = g
            m += 1
    return m


@njit(nogil=True, cache=True)
def _adopt(sub_mate: np.ndarray, sub_w: np.ndarray, sub: np.ndarray, m: int, mate: np.ndarray,
           weight: np.ndarray) -> int:  # fmt: skip
    """Copy a refill round's pairs (indices into ``sub``) into the round-0 ``mate``/``weight``; returns pairs."""
    found = 0
    for g in range(m):
        h = sub_mate[g]
        if h >= 0:
            mate[sub[g]] = sub[h]
            weight[sub[g]] = sub_w[g]
            found += 1
    return found // 2


@njit(nogil=True, cache=True)
def _pairs(mate: np.ndarray, weight: np.ndarray, n: int, index: np.ndarray, a: np.ndarray, b: np.ndarray,
           s: np.ndarray, start: int) -> int:  # fmt: skip
    """Append each matched pair once (lower index first) as pool slots (``index[g]``); returns the new length."""
    p = start
    for g in range(n):
        h = mate[g]
        if h > g:
            a[p] = index[g]
            b[p] = index[h]
            s[p] = weight[g]
            p += 1
    return p


class _Buffers:
    """Compact per-tick arrays for up to ``capacity`` users (one set per matching round)."""

    def __init__(self, capacity: int, dim: int, n_attr: int, k: int) -> None:
        self.capacity = capacity
        self.slots = np.empty(capacity, dtype=np.int64)
        self.emb = np.empty((capacity, dim), dtype=np.float32)
        self.left = np.empty((capacity, dim), dtype=np.float32)
        self.bias = np.empty(capacity, dtype=np.float32)
        self.attr = np.empty((capacity, n_attr), dtype=np.int8)
        self.want = np.empty((capacity, n_attr), dtype=np.uint64)
        self.wait = np.empty(capacity, dtype=np.float64)
        self.min_score = np.empty(capacity, dtype=np.float32)
        self.filtered = np.empty(capacity, dtype=bool)
        self.mate = np.empty(capacity, dtype=np.int64)
        self.adj_ptr = np.empty(capacity + 1, dtype=np.int64)
        self.adj_idx = np.empty(2 * capacity * k, dtype=np.int64)
        self.adj_w = np.empty(2 * capacity * k, dtype=np.float32)
        self.suitor_of = np.empty(capacity, dtype=np.int64)
        self.suitor_w = np.empty(capacity, dtype=np.float32)
        self.sub = np.empty(capacity, dtype=np.int64)
        self.price = np.empty(2 * capacity, dtype=np.float64)
        self.owner = np.empty(2 * capacity, dtype=np.int64)
        self.points_to = np.empty(2 * capacity, dtype=np.int64)
        self.queue = np.empty(2 * capacity + 1, dtype=np.int64)
        self.pointer_v = np.empty((capacity, 1), dtype=np.float32)
        self.pointer_i = np.empty((capacity, 1), dtype=np.int32)
        self.cand_v = np.empty((capacity, k), dtype=np.float32)
        self.cand_i = np.empty((capacity, k), dtype=np.int32)
        self.no_min = np.full(capacity, -np.inf, dtype=np.float32)  # raw lists: no waiting-time minimum
        self.fresh = np.empty(capacity, dtype=np.int64)
        self.is_fresh = np.zeros(capacity, dtype=bool)

    def inputs(
        self, n: int, forbid_flag: npt.NDArray[np.bool_], forbid_keys: npt.NDArray[np.int64], raw: bool = False
    ) -> Inputs:
        """The candidate search's view of the first ``n`` users held here (``raw``: without minimum scores)."""
        users = Users(self.bias, self.no_min if raw else self.min_score, self.attr, self.want, self.filtered,
                      self.slots, forbid_flag, forbid_keys, KEY_BASE)  # fmt: skip
        return Inputs(left=self.left, right=self.emb, users=users, n=n)


class _FreshLists:
    """Scratch top-``depth`` lists of the users a tick scores against everyone: one set per scan thread (each
    thread takes a range of columns), merged at the end."""

    def __init__(self, capacity: int, depth: int, threads: int, block: int = 512) -> None:
        self.depth = depth
        self.threads = threads
        self.capacity = 0
        self.buffer = [np.empty(block * block, dtype=np.float32) for _ in range(threads)]
        self.pen = [np.empty(block, dtype=np.float32) for _ in range(threads)]
        self.seg = [np.empty(2 * (block // CHUNK + 2), dtype=np.int64) for _ in range(threads)]
        self.fit(capacity)

    def fit(self, n: int) -> _FreshLists:
        if n > self.capacity:
            self.capacity = max(n, 2 * self.capacity)
            t, c, d = self.threads, self.capacity, self.depth
            self.lists = [
                TopK(
                    np.empty((c, d), dtype=np.float32),
                    np.empty((c, d), dtype=np.int32),
                    np.empty(c, dtype=np.float32),
                    np.empty(c, dtype=np.int64),
                )
                for _ in range(t)
            ]
            self.merged_v = np.empty((c, d), dtype=np.float32)
            self.merged_i = np.empty((c, d), dtype=np.int32)
            self.gate = np.empty(c, dtype=np.float32)
        return self

    def reset(self, t: int, m: int) -> None:
        reset_topk(self.lists[t], m, np.float32(-np.inf))


class Engine:
    """Matches one pool per call. Not thread-safe: one engine per worker (it owns the scan threads)."""

    def __init__(self, dim: int, config: EngineConfig | None = None, capacity: int = 1024) -> None:
        self.config = config or EngineConfig()
        self.dim = dim
        threads = self.config.resolved_threads()
        self.search = CandidateSearch(k=self.config.k, block=self.config.block, threads=threads)
        self.deep = CandidateSearch(k=self.config.cache_depth, block=self.config.block, threads=threads)
        self._caches: weakref.WeakKeyDictionary[Pool, PairCache] = weakref.WeakKeyDictionary()
        self._fresh_lists = _FreshLists(capacity, self.config.cache_depth, threads, self.config.block)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tickmatch-fresh")
        self.last_fresh = 0  # users scored against everyone in the last call (all of them after a rebuild)
        self.last_rebuilt = False
        self._last_n = 0
        self._runs = np.zeros(1, dtype=np.int64)
        self._rounds: list[_Buffers] = []
        self._n_attr = 0
        self._capacity = capacity
        # Tie-break noise, one fixed row per pool slot (see _tie_rows); a seeded generator keeps runs reproducible.
        self._ties = np.zeros((0, self.config.tie_dims), dtype=np.float32)
        self._tie_rng = np.random.default_rng(0x71E5)
        self._wide: tuple[BilinearModel, npt.NDArray[np.float32]] | None = None

    def close(self) -> None:
        """Stop the scan threads."""
        self.search.close()
        self.deep.close()
        self._executor.shutdown(wait=True)

    def _buffers(self, n: int, n_attr: int) -> list[_Buffers]:
        if n > self._capacity or n_attr != self._n_attr or not self._rounds:
            while self._capacity < n:
                self._capacity *= 2
            self._n_attr = n_attr
            width = self.dim + self.config.tie_dims
            self._rounds = [_Buffers(self._capacity, width, n_attr, self.config.k) for _ in range(2)]
        return self._rounds

    def _weights(self, model: BilinearModel) -> npt.NDArray[np.float32]:
        """The model's ``W`` with the tie-break block ``tie_scale * I`` appended on the diagonal (cached per
        model): one contiguous product then gives the left factor of both (a product into a column slice of
        the buffer fell off BLAS, measured 4.5 ms instead of ~0.05 ms for 625 users)."""
        if self._wide is None or self._wide[0] is not model:
            d, j = self.dim, self.config.tie_dims
            wide = np.zeros((d + j, d + j), dtype=np.float32)
            wide[:d, :d] = model.weights
            wide[d:, d:] = np.eye(j, dtype=np.float32) * np.float32(self.config.tie_scale)
            self._wide = (model, wide)
        return self._wide[1]

    def _tie_rows(self, capacity: int) -> npt.NDArray[np.float32]:
        """Per-slot tie-break noise for a pool of ``capacity`` slots (grown on demand, earlier rows kept).

        Why: many users share the same embedding under the heuristic model (same language and country), so
        their scores to everyone are exactly equal and every one of them keeps the *same* k candidates (the
        first in scan order). Suitor then pairs only those few per round and the rest stay unmatched until the
        pool is large: measured with 20 tied groups, 4,190 pairs of 10,000 users in 525 ms (random embeddings:
        ~5,000 in 35 ms). Appending ``tie_dims`` columns of random noise to every embedding (weight
        ``tie_scale`` in the product) adds a small symmetric pseudo-random term to each *pair*, so tied users
        spread their candidates over the group, as they do with distinct embeddings. The noise depends on the
        slot only, so the engine's pair cache stays valid for as long as the slot's user does."""
        if self._ties.shape[0] < capacity:
            j = self.config.tie_dims
            extra = self._tie_rng.standard_normal((capacity - self._ties.shape[0], j)).astype(np.float32)
            extra /= np.float32(np.sqrt(max(j, 1)))
            self._ties = np.ascontiguousarray(np.vstack([self._ties, extra]))
        return self._ties

    def match(self, pool: Pool, model: BilinearModel, curve: WaitCurve, now: float) -> Matching:
        """Disjoint pairs of ``pool`` maximising total score under filters, forbidden pairs and ``curve``.

        ``model`` is used for the whole call, so one call never mixes two model versions.
        """
        if model.dim != pool.dim or pool.dim != self.dim:
            raise ModelError(f"model dim {model.dim}, pool dim {pool.dim} and engine dim {self.dim} must agree")
        n_total = len(pool)
        if n_total < 2:
            return EMPTY
        first, spare = self._buffers(n_total, pool.attr.shape[1])
        # Users ordered by their attributes, so a block holds few distinct values and the scan can skip whole
        # columns and rows that the filters rule out for that block (see kernels.scan_block).
        active = pool.active_slots()
        key = np.zeros(active.shape[0], dtype=np.int64)
        for a in range(pool.attr.shape[1]):
            key = key * 65 + pool.attr[active, a] + 1
        by_key = np.argsort(key, kind="stable")
        order = active[by_key]
        sorted_key = key[by_key]
        # Runs of users with identical attributes (contiguous after the sort): the fresh scan skips a run its
        # row's filters reject without looking at its scores.
        self._runs = np.concatenate(([0], np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1, [len(order)]))
        n = _gather(
            order, pool.bias, pool.attr, pool.want, pool.joined_at, now,
            first.slots, first.bias, first.attr, first.want, first.wait, first.filtered,
        )  # fmt: skip
        _gather_rows(pool.emb, self._tie_rows(pool.capacity), first.slots, n, first.emb)
        np.matmul(first.emb[:n], self._weights(model), out=first.left[:n])
        curve.fill(first.wait[:n], first.min_score[:n])
        forbid_keys = pool.forbidden.keys()
        forbid_flag = pool.forbidden.flag

        cfg = self.config
        if cfg.incremental and self._use_cache(pool, first.slots[:n]):
            self._cached_candidates(pool, model, first, n, forbid_flag, forbid_keys)
        else:
            cand_v, cand_i = self.search.run(first.inputs(n, forbid_flag, forbid_keys))
            # keep round 0's candidates: refill rounds reuse the search buffers
            np.copyto(first.cand_v[:n], cand_v)
            np.copyto(first.cand_i[:n], cand_i)
        cand_v, cand_i = first.cand_v[:n], first.cand_i[:n]
        self._last_n = n
        mate, weight = first.mate, first.suitor_w  # round-0 index space from here on
        if cfg.matcher == "auction":
            ak = min(cfg.auction_k, cfg.k)  # lists are sorted: the best auction_k of each
            build_graph(cand_v[:, :ak], cand_i[:, :ak], n, first.adj_ptr, first.adj_idx, first.adj_w, first.suitor_of)
            warm = cfg.warm_prices and _load_prices(pool.price, first.slots, n, first.price)
            auction(
                n, first.adj_ptr, first.adj_idx, first.adj_w, first.price, first.owner, first.points_to,
                first.queue, cfg.auction_eps, cfg.auction_scaling, warm,
            )  # fmt: skip
            if cfg.warm_prices:
                _store_prices(first.price, first.slots, n, pool.price)
            pointer_candidates(n, first.points_to, first.adj_ptr, first.adj_idx, first.adj_w, first.pointer_v,
                               first.pointer_i)  # fmt: skip
            pv, pi = first.pointer_v[:n], first.pointer_i[:n]
            suitor(pv, pi, n, mate, first.adj_ptr, first.adj_idx, first.adj_w, first.suitor_of, weight)
        else:
            suitor(cand_v, cand_i, n, mate, first.adj_ptr, first.adj_idx, first.adj_w, first.suitor_of, weight)
        for _ in range(cfg.refill_rounds):
            m = _leftovers(mate, cand_i, n, spare.sub)
            if m < 2:
                break
            self._take(first, spare, m)
            # leftovers: the threshold estimate overshoots there
            sv, si = self.search.run(spare.inputs(m, forbid_flag, forbid_keys), estimate=False)
            suitor(sv, si, m, spare.mate, spare.adj_ptr, spare.adj_idx, spare.adj_w, spare.suitor_of, spare.suitor_w)
            if _adopt(spare.mate, spare.suitor_w, spare.sub, m, mate, weight) == 0:
                break
        pairs = int(np.count_nonzero(mate[:n] >= 0)) // 2
        out_a = np.empty(pairs, dtype=np.int64)
        out_b = np.empty(pairs, dtype=np.int64)
        out_s = np.empty(pairs, dtype=np.float32)
        found = _pairs(mate, weight, n, first.slots, out_a, out_b, out_s, 0)
        assert found == pairs
        if self.config.tie_dims:  # report the model's score: take the pair's tie-break term back out
            ties = self._ties
            out_s -= np.float32(self.config.tie_scale) * np.einsum("ij,ij->i", ties[out_a], ties[out_b])
        # deterministic output: lower slot first within a pair, pairs sorted by it
        lo, hi = np.minimum(out_a, out_b), np.maximum(out_a, out_b)
        by = np.argsort(lo, kind="stable")
        return Matching(lo[by], hi[by], out_s[by])

    def candidate_lists(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The last call's round-0 candidates as ``(slots, values, partner slots)`` (-1: none): for tests and
        diagnostics, copied."""
        first = self._rounds[0]
        n = self._last_n
        slots = first.slots[:n].copy()
        idx = first.cand_i[:n].astype(np.int64)
        partners = np.where(idx >= 0, first.slots[np.maximum(idx, 0)], -1)
        return slots, first.cand_v[:n].copy(), partners

    def _use_cache(self, pool: Pool, slots: npt.NDArray[np.int64]) -> bool:
        """Whether this tick goes through the pair cache: not when most of the pool is new since the last tick
        (every user matched each tick, say), where keeping deeper lists would cost more than it saves."""
        cache = self._caches.get(pool)
        if cache is None:
            cache = self._caches[pool] = PairCache(self.config.cache_depth, pool.capacity)
        cache.grow(pool.capacity)
        if cache.turnover(slots, pool.gen) > self.config.max_fresh * slots.shape[0]:
            cache.invalidate()
            self.last_rebuilt, self.last_fresh = True, slots.shape[0]
            return False
        return True

    def _cached_candidates(
        self,
        pool: Pool,
        model: BilinearModel,
        first: _Buffers,
        n: int,
        forbid_flag: npt.NDArray[np.bool_],
        forbid_keys: npt.NDArray[np.int64],
    ) -> None:
        """Round-0 candidates into ``first.cand_v/cand_i`` from the pool's pair cache (see matching.paircache)."""
        cfg = self.config
        cache = self._caches[pool]
        if cache.model is not model or cache.relaxed != pool.forbidden.relaxed:
            cache.invalidate()
        slots = first.slots[:n]
        lists = self._fresh_lists.fit(n)
        m = compact(slots, n, pool.gen, pool.active, cfg.k, cache.cols, first.fresh, first.is_fresh)
        self.last_rebuilt = m > cfg.max_fresh * n
        if self.last_rebuilt:  # much changed: every list from one parallel upper-triangle scan
            deep_v, deep_i = self.deep.run(first.inputs(n, forbid_flag, forbid_keys, raw=True))
            first.fresh[:n] = np.arange(n)
            m = n
            store_rows(first.fresh, n, deep_v, deep_i, slots, pool.gen, cache.cols)
        elif m:
            self._score_fresh(pool, cache, first, n, m, lists, forbid_flag, forbid_keys)
        self.last_fresh = m
        cache.model, cache.relaxed = model, pool.forbidden.relaxed
        cache.pos_of_slot[slots] = np.arange(n)
        lowest = float(first.min_score[:n].min())
        need = read_candidates(
            slots, n, cache.pos_of_slot, first.min_score, lowest, cache.cols, first.cand_v, first.cand_i, first.sub
        )
        cache.pos_of_slot[slots] = -1
        floor = np.nextafter(np.float32(lowest), np.float32(-np.inf))
        self.search.exact_rows(first.inputs(n, forbid_flag, forbid_keys), first.sub[:need].copy(), floor,
                               first.cand_v, first.cand_i)  # fmt: skip

    def _score_fresh(self, pool: Pool, cache: PairCache, first: _Buffers, n: int, m: int, lists: _FreshLists,
                     forbid_flag: npt.NDArray[np.bool_], forbid_keys: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """Score the ``m`` fresh users against all ``n``: their own exact lists, and offers to everyone else's.

        Each scan thread takes a contiguous range of columns (whole blocks): the offers it makes go to the lists
        of its own columns only, so threads never write the same list; each keeps its own lists of the fresh
        rows, merged deterministically at the end (score desc, index asc)."""
        rows = first.fresh[:m]
        left = first.left[rows]
        column_gates(first.slots, n, first.is_fresh, cache.cols.floor, lists.gate)
        users = first.inputs(n, forbid_flag, forbid_keys, raw=True).users
        b = self.config.block
        blocks = (n + b - 1) // b
        threads = max(1, min(lists.threads, blocks))
        cuts = [min(n, (blocks * t // threads) * b) for t in range(threads + 1)]

        def scan(t: int) -> None:
            lists.reset(t, m)
            for r in range(0, m, b):
                r1 = min(r + b, m)
                for c in range(cuts[t], cuts[t + 1], b):
                    c1 = min(c + b, n)
                    scores = lists.buffer[t][: (r1 - r) * (c1 - c)].reshape(r1 - r, c1 - c)
                    np.matmul(left[r:r1], first.emb[c:c1].T, out=scores)
                    fresh_scan(scores, rows, r, c, users, pool.gen, lists.gate, lists.lists[t], cache.cols, CHUNK,
                               self._runs, lists.pen[t], lists.seg[t])  # fmt: skip

        if threads == 1:
            scan(0)
            out_v, out_i = lists.lists[0].v, lists.lists[0].i
        else:
            for future in [self._executor.submit(scan, t) for t in range(threads)]:
                future.result()
            out_v, out_i = lists.merged_v, lists.merged_i
            merge_topk(lists.lists[0].v, lists.lists[0].i, lists.lists[1].v, lists.lists[1].i, 0, m, out_v, out_i)
            for t in range(2, threads):  # more than 2 cores: fold the rest in pairwise
                prev_v, prev_i = out_v[:m].copy(), out_i[:m].copy()
                merge_topk(prev_v, prev_i, lists.lists[t].v, lists.lists[t].i, 0, m, out_v, out_i)
        store_rows(rows, m, out_v, out_i, first.slots, pool.gen, cache.cols)

    @staticmethod
    def _take(src: _Buffers, dst: _Buffers, m: int) -> None:
        """Copy the rows ``dst.sub[:m]`` of ``src`` to the front of ``dst`` (refill round input)."""
        sub = dst.sub[:m]
        for name in ("slots", "emb", "left", "bias", "attr", "want", "min_score", "filtered"):
            np.take(getattr(src, name), sub, axis=0, out=getattr(dst, name)[:m])


def warm_up(engine: Engine) -> None:
    """Compile every kernel (numba caches to disk, so later processes load instead of compile) and touch the
    buffers once, so the first real tick pays neither. The pool spans full and partial blocks, diagonal and
    off-diagonal ones, so every code path of the scan runs once."""
    n = 2 * engine.config.block + 37
    rng = np.random.default_rng(0)
    pool = Pool(engine.dim, capacity=n)
    for i in range(n):
        wants: dict[str, tuple[str, ...]] = {"gender": ("f",)} if i % 7 == 0 else {}
        blocked = (f"warm{i + 1}",) if i % 11 == 0 else ()
        emb = rng.standard_normal(engine.dim).astype(np.float32)
        pool.add(f"warm{i}", 0.0, emb, {"gender": "f" if i % 2 else "m"}, wants, blocked=blocked)
    model = BilinearModel.identity(engine.dim, "warm-up")
    engine.match(pool, model, WaitCurve(), 1.0)  # everyone new: the plain scan
    engine.match(pool, model, WaitCurve(1.0, 0.0, 5.0), 3.0)  # nobody new: the pair cache is built
    for i in range(0, n, 10):  # a few changed users: the incremental scan and the exact fallback
        pool.update_features(f"warm{i}", rng.standard_normal(engine.dim).astype(np.float32), {})
    engine.match(pool, model, WaitCurve(1.0, 0.0, 5.0), 3.5)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection inside the block: a full collection over 1M objects took 244 ms (README, "Facts we
    rely on")."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
