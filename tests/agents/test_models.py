"""Model versions reach the worker: re-embedding on swap, never two versions in one tick, bad updates refused,
and the trainer turns logged labels into versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tickmatch.agents.follower import apply_update
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.agents.trainer import TrainerService
from tickmatch.learning.duration import DurationModel
from tickmatch.learning.features import RAW_DIM, SIGNAL_BASE
from tickmatch.learning.scorer import Scorer
from tickmatch.learning.trainer import Trainer
from tickmatch.learning.versions import from_update, load_version, save_version, to_update
from tickmatch.schemas import DurationLabel, Join, MatchDecision, ProfileUpdate, encode
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, RecordingSink


def learned(version: str, seed: int) -> DurationModel:
    """A model that scores signal agreement (different seeds rank pairs differently)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((RAW_DIM, RAW_DIM))
    block = rng.standard_normal((4, 4))
    w[SIGNAL_BASE : SIGNAL_BASE + 4, SIGNAL_BASE : SIGNAL_BASE + 4] = block + block.T
    w[0, 0] = 4.0
    return DurationModel(w, -0.2, version)


def runtime_with(sink: RecordingSink, clock: ManualClock) -> WorkerRuntime:
    return WorkerRuntime(Settings(app_id="test-models", censor_after_s=30.0, label_grace_s=1.0), sink, clock)


def join_many(runtime: WorkerRuntime, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        signals = tuple(float(v) for v in rng.standard_normal(4).round(3))
        runtime.apply(Join(f"u{i}", "s", 1.0 + seed, language="en", signals=signals), partition=0)  # new ts: a new join


def expected_score(scorer: Scorer, decision: MatchDecision) -> float:
    a = np.asarray([decision.features_a], np.float32)
    b = np.asarray([decision.features_b], np.float32)
    return float(scorer.score_raw(a, b)[0])


async def test_swap_reembeds_waiting_users_from_their_raw_features() -> None:
    runtime = runtime_with(RecordingSink(), ManualClock())
    join_many(runtime, 40)
    scorer = learned("duration-v1", 1).scorer(runtime.settings.embed_dim)
    runtime.set_model(scorer)
    pool = runtime.pools["s"]
    slots = pool.active_slots()
    np.testing.assert_allclose(pool.emb[slots], scorer.embed(pool.raw[slots]), rtol=1e-6)
    assert runtime.model_version == "duration-v1" and runtime.last_swap_ms >= 0.0


async def test_a_version_arriving_mid_tick_waits_for_the_next_tick() -> None:
    """The swap lands while the tick is still sending its decisions (the only awaits of a tick): every decision
    of that tick carries the old version *and* was scored with it; the next tick uses the new one."""
    clock = ManualClock()

    class SwapDuringSend(RecordingSink):
        def decision(self, decision: MatchDecision) -> None:
            super().decision(decision)
            if len(self.decisions) == 1:
                runtime.set_model(new)

    sink = SwapDuringSend()
    runtime = runtime_with(sink, clock)
    old = learned("duration-v1", 1).scorer(runtime.settings.embed_dim)
    new = learned("duration-v2", 2).scorer(runtime.settings.embed_dim)
    runtime.set_model(old)
    join_many(runtime, 60)
    runtime.tick()
    first = list(sink.decisions)
    assert len(first) > 5
    assert {d.model_version for d in first} == {"duration-v1"}
    for d in first:
        assert d.score == pytest.approx(expected_score(old, d), rel=1e-4, abs=1e-4)
    join_many(runtime, 60, seed=1)
    clock.advance(1.0)
    runtime.tick()
    second = sink.decisions[len(first) :]
    assert second and {d.model_version for d in second} == {"duration-v2"}
    for d in second:
        assert d.score == pytest.approx(expected_score(new, d), rel=1e-4, abs=1e-4)


async def test_profile_update_changes_only_what_it_names() -> None:
    runtime = runtime_with(RecordingSink(), ManualClock())
    runtime.apply(Join("u", "s", 1.0, language="en", country="US", signals=(1.0, 2.0)), partition=0)
    pool = runtime.pools["s"]
    slot = pool.slot_of("u")
    assert slot is not None
    before = pool.raw[slot].copy()
    runtime.apply(ProfileUpdate("u", "s", 2.0, country="GB"), partition=0)
    after = pool.raw[slot]
    assert after[SIGNAL_BASE] == 1.0 and after[SIGNAL_BASE + 1] == 2.0  # signals kept
    assert not np.array_equal(before, after)
    runtime.apply(ProfileUpdate("u", "s", 3.0, signals=(5.0,)), partition=0)
    assert pool.raw[slot][SIGNAL_BASE] == 5.0 and pool.raw[slot][SIGNAL_BASE + 1] == 0.0
    np.testing.assert_allclose(pool.emb[slot], runtime.scorer.embed(pool.raw[slot][None, :])[0], rtol=1e-6)


async def test_bad_model_updates_are_refused_and_the_current_model_stays() -> None:
    runtime = runtime_with(RecordingSink(), ManualClock())
    good = to_update(learned("duration-v3", 3), Trainer(), 5.0)
    assert apply_update(runtime, encode(good)) == "duration-v3"
    assert runtime.model_version != "duration-v3"  # offered: the worker loop swaps it in between two ticks
    assert runtime.swap_pending_model() and not runtime.swap_pending_model()
    np.testing.assert_array_equal(from_update(good).weights, learned("duration-v3", 3).weights)
    next_version = to_update(learned("duration-v4", 4), Trainer(), 6.0)
    inconsistent = replace(next_version, weights=next_version.weights[:-1])  # raw_dim^2 - 1 weights
    small = to_update(DurationModel(np.eye(3), 0.0, "duration-v5"), Trainer(), 7.0)  # another feature layout
    for bad in (encode(next_version)[:-40], b"\x00garbage", encode(inconsistent), encode(small)):
        assert apply_update(runtime, bad) is None
    assert runtime.model_version == "duration-v3"
    assert runtime.counters["models.rejected"] == 4


async def test_trainer_service_turns_logged_labels_into_versions() -> None:
    """Labels carry both users' raw features (logged on the decision); a version appears on schedule."""
    settings = Settings(app_id="t", train_min_labels=50, train_every=50)
    service = TrainerService(settings, "127.0.0.1:9")
    rng = np.random.default_rng(0)
    versions = []
    for k in range(400):
        fa, fb = np.zeros(RAW_DIM), np.zeros(RAW_DIM)
        fa[0] = fb[0] = 1.0
        fa[SIGNAL_BASE], fb[SIGNAL_BASE] = rng.standard_normal(2)
        duration = float(np.exp(4.0 + fa[SIGNAL_BASE] * fb[SIGNAL_BASE] + 0.3 * rng.standard_normal()))
        label = DurationLabel(f"m{k}", "s", duration, False, 2, "heuristic-v2", "auction-top8", 1.0,
                              tuple(fa.tolist()), tuple(fb.tolist()))  # fmt: skip
        model = service.take(encode(label))
        if model is not None:
            versions.append(model.version)
    assert versions[:2] == ["duration-v1", "duration-v2"] and len(versions) >= 5
    assert service.take(encode(DurationLabel("old", "s", 5.0, False, 2, "h", "p", 1.0))) is None  # no features
    assert service.take(b"junk") is None and service.skipped == 2
    assert service.trainer.history[-1].auroc > 0.75


def test_saved_versions_load_back_identically(tmp_path: Path) -> None:
    model = learned("duration-v9", 9)
    path = save_version(to_update(model, Trainer(), 3.0), tmp_path / "models")
    assert path.name == "duration-v9.msgpack"
    again = load_version(path)
    assert again.version == "duration-v9" and again.log_sigma == model.log_sigma
    np.testing.assert_array_equal(again.weights, model.weights)
