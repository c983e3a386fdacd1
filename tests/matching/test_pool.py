"""Pool store: slot reuse, growth, in-place updates, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from tickmatch.matching import pool as pool_module
from tickmatch.matching.filters import FILTER_ATTRS, MAX_VALUES
from tickmatch.matching.pool import Pool, PoolError


def vec(x: float, dim: int = 4) -> np.ndarray:
    return np.full(dim, x, dtype=np.float32)


def test_add_remove_reuses_slots_and_grows() -> None:
    pool = Pool(4, capacity=2)
    slots = [pool.add(f"u{i}", float(i), vec(i), {}, {}) for i in range(5)]
    assert len(set(slots)) == 5 and pool.capacity >= 5 and len(pool) == 5
    assert pool.emb.flags.c_contiguous and pool.emb.dtype == np.float32
    assert np.array_equal(pool.emb[slots[3]], vec(3))
    assert pool.remove("u1") == 1.0 and "u1" not in pool and pool.remove("u1") is None
    assert pool.add("new", 9.0, vec(9), {}, {}) == slots[1]
    assert sorted(pool.active_slots().tolist()) == sorted(slots)


def test_repeated_join_keeps_original_join_time_and_refreshes_features() -> None:
    pool = Pool(4)
    slot = pool.add("u", 1.0, vec(1), {"country": "KR"}, {})
    assert pool.add("u", 5.0, vec(2), {"country": "JP"}, {}) == slot
    assert pool.joined_at[slot] == 1.0 and np.array_equal(pool.emb[slot], vec(2)) and len(pool) == 1


def test_update_features_in_place() -> None:
    pool = Pool(4)
    slot = pool.add("u", 1.0, vec(1), {}, {})
    assert pool.update_features("u", vec(3), {"language": "ko"})
    assert np.array_equal(pool.emb[slot], vec(3)) and pool.attr[slot, 1] == pool.vocab["language"].code("ko")
    assert not pool.update_features("nobody", vec(3), {})


def test_expire_removes_only_long_waiters() -> None:
    pool = Pool(4)
    pool.add("old", 0.0, vec(0), {}, {})
    pool.add("new", 90.0, vec(0), {}, {})
    assert pool.expire(now=100.0, ttl_s=50.0) == [("old", 100.0)]
    assert "new" in pool and "old" not in pool


def test_too_many_attribute_values_is_a_clear_error() -> None:
    pool = Pool(4)
    for i in range(MAX_VALUES):
        pool.add(f"u{i}", 0.0, vec(0), {"country": f"c{i}"}, {})
    with pytest.raises(PoolError, match="more than 64 distinct values of country"):
        pool.add("x", 0.0, vec(0), {"country": "one-too-many"}, {})


@pytest.mark.parametrize("cached", [4096, 3])
def test_filter_rows_are_each_users_own_however_many_profiles_are_cached(
    cached: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "MAX_CACHED_ROWS", cached)  # 3: the row cache starts over again and again
    rng = np.random.default_rng(1)
    pool, users = Pool(4), {}
    for i in range(300):
        attrs = {name: (str(rng.choice(["a", "b", "c"])) if rng.random() < 0.7 else None) for name in FILTER_ATTRS}
        wants = {name: tuple(rng.choice(["a", "b", "c", "d"], int(rng.integers(0, 3)))) for name in FILTER_ATTRS}
        users[f"u{i}"] = (attrs, wants)
        pool.add(f"u{i}", 0.0, vec(0), attrs, wants)
    for user, (attrs, wants) in users.items():
        slot = pool.slot_of(user)
        assert slot is not None
        for a, name in enumerate(FILTER_ATTRS):
            vocab = pool.vocab[name]
            assert pool.attr[slot, a] == vocab.code(attrs[name]) and pool.want[slot, a] == vocab.mask(wants[name])
    listed = pool.add("listed", 0.0, vec(0), {"country": "a"}, {"gender": ["b"]})  # type: ignore[dict-item]
    assert pool.want[listed, FILTER_ATTRS.index("gender")] == pool.vocab["gender"].mask(("b",))


def test_take_pair_removes_both_and_bans_the_pair_for_the_repeat_window() -> None:
    pool = Pool(4, repeat_window_s=10.0)
    a = pool.add("a", 0.0, vec(0), {}, {})
    b = pool.add("b", 0.0, vec(1), {}, {})
    assert pool.take_pair(a, b, now=5.0) == ("a", "b")
    assert len(pool) == 0 and "a" not in pool and "b" not in pool
    a, b = pool.add("a", 6.0, vec(0), {}, {}), pool.add("b", 6.0, vec(1), {}, {})
    assert pool.forbidden.flag[a] and pool.forbidden.flag[b]  # re-joined within the window: still banned
    with pytest.raises(PoolError, match="do not hold two waiting users"):
        pool.take_pair(a, a, now=7.0)
    pool.remove("b")
    with pytest.raises(PoolError, match="do not hold two waiting users"):
        pool.take_pair(a, b, now=7.0)


def test_reembed_recomputes_every_waiting_embedding_from_its_raw_features() -> None:
    pool = Pool(2, raw_dim=3)
    rows = {u: np.asarray([i, 2 * i, 1], np.float32) for i, u in enumerate("xyz")}
    for u, raw in rows.items():
        pool.add(u, 0.0, np.zeros(2, np.float32), {}, {}, raw=raw)
    pool.remove("y")
    proj = np.asarray([[1, 0], [0, 1], [5, 5]], np.float32)
    assert pool.reembed(lambda raw: raw @ proj) == 2
    for u in "xz":
        slot = pool.slot_of(u)
        assert slot is not None
        np.testing.assert_array_equal(pool.emb[slot], rows[u] @ proj)
