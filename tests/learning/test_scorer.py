from __future__ import annotations

import numpy as np
import pytest

from tickmatch.learning.features import RAW_DIM, featurize, featurize_many, update_raw
from tickmatch.learning.scorer import heuristic_scorer, scorer_from_raw_weights
from tickmatch.matching.bilinear import ModelError


def test_export_is_exact_when_wide_enough_and_best_low_rank_below() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((RAW_DIM, RAW_DIM))
    w = (w + w.T) / 2
    a = rng.standard_normal((50, RAW_DIM)).astype(np.float32)
    b = rng.standard_normal((50, RAW_DIM)).astype(np.float32)
    truth = np.einsum("ij,jk,ik->i", a, w, b)
    exact = scorer_from_raw_weights(w, RAW_DIM, "v1")
    np.testing.assert_allclose(exact.score_raw(a, b), truth, rtol=1e-3, atol=1e-2)
    # rank-2 form exported into 2 dims is exact as well (only its nonzero eigenpairs are kept)
    u = rng.standard_normal((RAW_DIM, 2))
    low = u @ np.diag([2.0, -1.0]) @ u.T
    small = scorer_from_raw_weights(low, 2, "v2")
    np.testing.assert_allclose(small.score_raw(a, b), np.einsum("ij,jk,ik->i", a, low, b), rtol=1e-3, atol=1e-2)
    with pytest.raises(ModelError):
        scorer_from_raw_weights(np.full((3, 3), np.nan), 2, "bad")


def test_heuristic_scores_shared_attributes() -> None:
    scorer = heuristic_scorer(RAW_DIM)
    me = featurize({"language": "en", "country": "US", "age_band": "18-24", "gender": "f"})
    same = featurize({"language": "en", "country": "US", "age_band": "18-24", "gender": "f"})
    half = featurize({"language": "en", "country": "GB", "age_band": "45+", "gender": "m"})
    none = featurize({})
    s = scorer.score_raw(np.stack([me, me, me]), np.stack([same, half, none]))
    assert s[0] == pytest.approx(1.0 + 0.6 + 0.5 + 0.2, rel=1e-5)
    assert s[2] == 0.0
    assert s[0] > s[1] >= 1.0  # shares the language (weight 1) and maybe a hashed slot of another value


def test_featurize_layout() -> None:
    raw = featurize({"language": "ko"}, signals=tuple(range(20)))
    assert raw.shape == (RAW_DIM,) and raw[0] == 1.0
    assert raw[1:17].tolist() == [float(min(v, 10)) for v in range(16)]  # 16 signals kept, clipped at 10
    assert np.linalg.norm(raw[17:]) == pytest.approx(1.0)  # one attribute value: unit norm


def test_featurize_many_equals_featurize_row_by_row() -> None:
    profiles: list[dict[str, str | None]] = [
        {"language": "en", "country": "US", "gender": "f", "age_band": "18-24"},
        {"language": None, "country": "KR", "gender": None, "age_band": None},
        {},
    ]
    signals = [(0.5, -20.0, 3.0), (), tuple(float(i) for i in range(20))]  # clipped, empty, too many
    many = featurize_many(profiles, signals)
    for i, (attrs, values) in enumerate(zip(profiles, signals, strict=True)):
        np.testing.assert_array_equal(many[i], featurize(attrs, values))
    assert featurize_many([], []).shape == (0, RAW_DIM)


@pytest.mark.parametrize("seed", range(20))
def test_update_raw_equals_featurizing_the_merged_profile(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = {"language": ["en", "ko", "pt"], "country": ["US", "KR"], "gender": ["f", "m"], "age_band": ["18-24"]}

    def profile() -> dict[str, str | None]:
        return {a: str(rng.choice(v)) if rng.random() < 0.6 else None for a, v in values.items()}

    def signals() -> tuple[float, ...]:
        return tuple(float(x) for x in rng.normal(0.0, 8.0, int(rng.integers(0, 20))))  # some clipped, some cut

    before, update = profile(), profile()
    old, new = signals(), (signals() if rng.random() < 0.5 else None)
    merged = {a: update[a] if update[a] is not None else before[a] for a in values}
    raw = update_raw(featurize(before, old), update, new)
    np.testing.assert_array_equal(raw, featurize(merged, old if new is None else new))
