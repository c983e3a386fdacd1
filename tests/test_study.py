"""The experiment study's plumbing on a tiny market: the A/B scorer is the pair score it claims to be, switch-back
decisions come from both arms through the real worker runtime, and the summary has every figure the CLI prints
(the statistical claims are measured by ``tickmatch experiment --seeds 20``, README Experiments)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tickmatch.learning.features import RAW_DIM
from tickmatch.learning.scorer import heuristic_scorer, scorer_from_raw_weights
from tickmatch.study import AB_FLAG, ABScorer, StudyConfig, run_study


def test_the_ab_scorer_gives_mixed_pairs_the_halfway_score() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((RAW_DIM, RAW_DIM))
    learned, heuristic = scorer_from_raw_weights((w + w.T) / 2, 8, "l"), heuristic_scorer(8)
    ab = ABScorer(learned, heuristic)
    raw = rng.random((6, RAW_DIM)).astype(np.float32)
    raw[:, AB_FLAG] = [1, 1, 0, 0, 1, 0]
    emb = ab.embed(raw)
    plain = raw.copy()
    plain[:, AB_FLAG] = 0
    for i in range(6):
        for j in range(6):
            got = float(emb[i] @ ab.bilinear.weights @ emb[j])
            low, high = (float(s.score_raw(plain[i : i + 1], plain[j : j + 1])[0]) for s in (heuristic, learned))
            share = (raw[i, AB_FLAG] + raw[j, AB_FLAG]) / 2
            assert abs(got - (low + share * (high - low))) < 1e-3 * max(1.0, abs(got))


def test_a_tiny_study_runs_both_designs_and_reports_every_figure() -> None:
    cfg = replace(
        StudyConfig(), minutes=6.0, warmup_minutes=1.0, train_minutes=5.0, truth_seeds=2, slice_s=60.0, washout_s=15.0
    )
    summary = run_study(2, cfg, processes=1)
    assert {"effect_true", "coverage_95", "ci_excludes_zero", "ab_bias", "ope_error", "per_seed"} <= set(summary)
    for seed in summary["per_seed"]:
        assert set(seed["cells"]) == {"learned", "heuristic"} and seed["ci95"][0] <= seed["estimate"] <= seed["ci95"][1]
    assert 0.0 <= summary["coverage_95"] <= 1.0
    assert summary["ope_groups"] > 0 and summary["ope_error"] >= 0.0
    funnel = summary["aha_funnel"]
    assert (
        funnel["planted"] == ">= 2 chats of >= 180 s within 1 h"
        and 0 <= funnel["precision"] <= 1
        and funnel["users"] > 0
    )
