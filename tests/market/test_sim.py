"""The in-process market: reproducible by seed, labels follow the live join's rules, policies rank as they must."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tickmatch.learning.trainer import TrainerConfig
from tickmatch.market.ope import evaluate_off_policy
from tickmatch.market.population import Population
from tickmatch.market.sim import MarketSim, RunResult, SimConfig

SMALL = SimConfig(hours=0.15, n_users=4000, arrival_rate_per_s=12.0, trainer=TrainerConfig(retrain_every=300))


def run(policy: str, config: SimConfig = SMALL) -> tuple[MarketSim, RunResult]:
    sim = MarketSim(config, policy)
    return sim, sim.run()


def test_same_seed_same_market_and_outcome() -> None:
    (a, _), (b, _) = run("learned"), run("learned")
    assert a.labels.duration_s == b.labels.duration_s
    assert a.labels.user_a == b.labels.user_a
    assert [v["version"] for v in a.versions] == [v["version"] for v in b.versions]
    assert a.totals == b.totals
    c, _ = run("learned", replace(SMALL, seed=1))
    assert c.labels.duration_s != a.labels.duration_s


def test_population_truth_is_bilinear_in_hidden_features() -> None:
    pop = Population.generate(500, 3)
    hidden, w = pop.oracle_matrix().astype(np.float64), pop.oracle_weights()
    i, j = np.arange(0, 250), np.arange(250, 500)
    np.testing.assert_allclose(np.einsum("ij,jk,ik->i", hidden[i], w, hidden[j]), pop.expected_log_duration(i, j))
    draws = pop.sample_durations_s(np.zeros(20000, np.int64), np.ones(20000, np.int64), np.random.default_rng(0))
    assert draws.mean() == pytest.approx(pop.expected_duration_s(0, 1), rel=0.03)  # mean preserved


def test_labels_follow_censoring_rules() -> None:
    sim, _ = run("heuristic")
    lb = sim.labels
    dur, cens = np.asarray(lb.duration_s), np.asarray(lb.censored)
    assert 0 < cens.mean() < 0.2  # lost chat-ends and chats past the cut-off
    assert np.all(dur[cens] <= SMALL.censor_after_s)
    assert np.all(dur >= 0)
    assert all(a != b for a, b in zip(lb.user_a, lb.user_b, strict=True))


def test_policies_rank_random_below_learned_below_oracle() -> None:
    config = replace(SMALL, hours=0.3)
    minutes = {p: run(p, config)[1].metrics()["chat_minutes_per_user_hour"] for p in ("random", "learned", "oracle")}
    assert minutes["random"] < minutes["learned"] < minutes["oracle"]


def test_off_policy_estimate_tracks_the_truth() -> None:
    sim, result = run("learned", replace(SMALL, hours=0.3, explore=0.3))
    truth = sim.pop.expected_log_duration
    out = evaluate_off_policy(result, {"oracle": truth}, truth)
    assert out["_groups"]["count"] > 200
    oracle = out["oracle"]
    assert abs(oracle["ips_chat_s_per_group"] - oracle["true_chat_s_per_group"]) < 4 * oracle["ips_stderr"]
    assert oracle["true_chat_s_per_group"] > out["uniform"]["true_chat_s_per_group"]
