"""Greedy matching: disjoint, filter-respecting, deterministic (property-based)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matching import Pool, match_pool

GENDERS = ("f", "m", "x")


def build(seed: int, n: int, filter_share: float) -> Pool:
    rng = np.random.default_rng(seed)
    pool = Pool(8, capacity=4)
    for i in range(n):
        wants: dict[str, tuple[str, ...]] = (
            {"gender": (str(rng.choice(GENDERS)),)} if rng.random() < filter_share else {}
        )
        pool.add(f"u{i}", 0.0, rng.standard_normal(8).astype(np.float32), {"gender": str(rng.choice(GENDERS))}, wants)
    return pool


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 60), filter_share=st.floats(0, 1))
def test_matching_is_disjoint_respects_filters_and_is_deterministic(seed: int, n: int, filter_share: float) -> None:
    pool = build(seed, n, filter_share)
    m = match_pool(pool)
    users = np.concatenate([m.a, m.b])
    assert len(np.unique(users)) == users.size
    assert not np.any(m.a == m.b)
    for a, b in zip(m.a.tolist(), m.b.tolist(), strict=True):
        for x, y in ((a, b), (b, a)):
            want = int(pool.want[x, 2])
            assert want == 0xFFFF_FFFF_FFFF_FFFF or (want >> int(pool.attr[y, 2])) & 1
    again = match_pool(build(seed, n, filter_share))
    assert np.array_equal(m.a, again.a) and np.array_equal(m.b, again.b)


def test_everyone_is_matched_without_filters_and_even_pool() -> None:
    pool = build(1, 40, 0.0)
    assert len(match_pool(pool)) == 20


def test_min_score_keeps_poor_pairs_waiting() -> None:
    pool = Pool(2)
    pool.add("a", 0.0, np.array([1, 0], np.float32), {}, {})
    pool.add("b", 0.0, np.array([-1, 0], np.float32), {}, {})
    assert len(match_pool(pool, min_score=0.0)) == 0
    assert len(match_pool(pool)) == 1
