"""The pair cache gives exactly the candidates a full recomputation gives, tick after tick, whatever changes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tickmatch.matching.bilinear import BilinearModel
from tickmatch.matching.engine import Engine, EngineConfig
from tickmatch.matching.paircache import PairCache, _offer
from tickmatch.matching.pool import Pool
from tickmatch.matching.waiting import WaitCurve

DIM = 6


def model(seed: int) -> BilinearModel:
    w = np.random.default_rng(seed).standard_normal((DIM, DIM))
    return BilinearModel(((w + w.T) / 2).astype(np.float32), f"m{seed}")


def add(pool: Pool, rng: np.random.Generator, uid: str, now: float, everyone: list[str]) -> None:
    wants: dict[str, tuple[str, ...]] = {"gender": ("f",)} if rng.random() < 0.2 else {}
    blocked = tuple(rng.choice(everyone, 2).tolist()) if everyone and rng.random() < 0.1 else ()
    attrs: dict[str, str | None] = {"gender": str(rng.choice(["f", "m"])), "country": str(rng.choice(["a", "b"]))}
    emb = rng.standard_normal(DIM).astype(np.float32)
    pool.add(uid, now - float(rng.uniform(0, 20)), emb, attrs, wants, bias=float(rng.normal()), blocked=blocked)


@settings(max_examples=30, deadline=None)
@example(seed=1130, churn=0.3, finite_curve=False)  # a full list once turned a partner away above its floor
@given(seed=st.integers(0, 10_000), churn=st.sampled_from([0.02, 0.1, 0.3]), finite_curve=st.booleans())
def test_cached_candidates_equal_a_full_recomputation_over_churning_ticks(
    seed: int, churn: float, finite_curve: bool
) -> None:
    rng = np.random.default_rng(seed)
    cached = Engine(DIM, EngineConfig(k=4, block=32, threads=2, cache_depth=8, max_fresh=0.5))
    full = Engine(DIM, EngineConfig(k=4, block=32, threads=2, incremental=False))
    pool = Pool(DIM, capacity=64, repeat_window_s=3.0)
    curve = WaitCurve(start=1.5, end=-1.0, ramp_s=10.0) if finite_curve else WaitCurve()
    current = model(seed)
    ids = [f"u{i}" for i in range(240)]
    for uid in ids:
        add(pool, rng, uid, 0.0, ids)
    next_id = len(ids)
    now = 0.0
    shares: list[float] = []
    try:
        for tick in range(12):
            now += 0.5
            waiting = [u for u in pool.ids if u is not None]
            for uid in rng.choice(waiting, int(len(waiting) * churn), replace=False).tolist():
                pool.remove(uid)
            for _ in range(int(len(waiting) * churn)):
                add(pool, rng, f"u{next_id}", now, waiting)
                next_id += 1
            for uid in rng.choice([u for u in pool.ids if u is not None], 3, replace=False).tolist():
                pool.update_features(uid, rng.standard_normal(DIM).astype(np.float32), {"country": "b"})
            revalued = rng.choice(pool.active_slots(), 3, replace=False)
            pool.set_bias(revalued, rng.normal(size=3))  # a policy re-valuing users between ticks
            if tick % 4 == 1:  # two waiting users get a repeat ban that ends two ticks later
                a, b = rng.choice([u for u in pool.ids if u is not None], 2, replace=False).tolist()
                pool.remove(a)
                pool.remove(b)
                pool.forbidden.record_match(a, b, now - 2.0)
                add(pool, rng, a, now, [])
                add(pool, rng, b, now, [])
            relaxed = pool.forbidden.relaxed
            pool.forbidden.prune(now, pool.slot_map)
            if tick == 7:
                current = model(seed + 1)  # a new model version: every list is rebuilt
            cached.match(pool, current, curve, now)
            full.match(pool, current, curve, now)
            slots_c, val_c, partner_c = cached.candidate_lists()
            slots_f, val_f, partner_f = full.candidate_lists()
            assert np.array_equal(slots_c, slots_f)
            np.testing.assert_allclose(val_c, val_f, rtol=1e-5, atol=1e-5)
            # Partners are compared where the value is clear of both neighbours: the two paths sum the dot products
            # in different block shapes, so float32 scores differ by ~1e-6 and near-ties may swap (the last
            # position's lower neighbour is not in the list, so only its value is compared).
            gaps = np.abs(np.diff(val_c, axis=1)) > 1e-4
            clear = np.zeros_like(val_c, dtype=bool)
            clear[:, :-1] = gaps
            clear[:, 1:-1] &= gaps[:, :-1]
            assert np.array_equal(partner_c[clear], partner_f[clear])
            # tick 0: everyone is new (no cache); tick 1: the first cached tick builds every list; tick 7: new model
            rebuild_expected = tick in (0, 1, 7) or pool.forbidden.relaxed != relaxed or churn > 0.1
            if not rebuild_expected:  # the point of the cache: only changed users are scored
                assert not cached.last_rebuilt and cached.last_fresh < len(pool) // 2, (tick, cached.last_fresh)
                shares.append(cached.last_fresh / len(pool))
        # 10 % churn + 6 changed users + the lists (depth 8 here) that ran low: well under a third on average
        assert not shares or np.mean(shares) < 1 / 3, shares
    finally:
        cached.close()
        full.close()


def test_cache_depth_must_cover_k() -> None:
    with pytest.raises(ValueError, match="cache_depth"):
        EngineConfig(k=8, cache_depth=4)


def test_a_partner_turned_away_by_a_full_list_stays_under_its_floor() -> None:
    """The invariant the cache rests on: every partner outside a list scores at most the list's floor. A list that
    fills up by offers must raise its floor to its weakest entry, or a partner it turns away (screened out as not
    beating the weakest entry) could later outrank entries that come in after others left."""
    cols = PairCache(depth=4, capacity=8).cols
    arrays = (cols.slot, cols.gen, cols.val, cols.cnt, cols.floor)
    scores = {1: 10.0, 2: 9.8, 3: 9.6, 4: 9.5, 5: 9.4}
    for partner in (1, 2, 3, 4):  # slot 0 starts empty (floor -inf: it knows every partner) and fills up
        if scores[partner] > cols.floor[0]:
            _offer(0, scores[partner], partner, 0, *arrays)
    assert cols.cnt[0] == 4
    assert not scores[5] > cols.floor[0]  # partner 5 arrives and is turned away
    listed = set(cols.slot[0, : cols.cnt[0]].tolist())
    outside = [scores[p] for p in scores if p not in listed]
    assert max(outside) <= cols.floor[0]
