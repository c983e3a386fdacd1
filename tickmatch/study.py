"""``tickmatch experiment``: does the switch-back read-out find the true effect of a model, where an A/B test by user
would not?

A seeded market (``market.population``: hidden tastes, a ground-truth chat duration for every pair) drives the
real worker logic (``agents.runtime.WorkerRuntime``: events in, ticks, decisions out) on a settable clock, with
no broker (a study needs hours of market time per seed). Per seed:

- **switch-back**: the learned model and the heuristic switch per (language shard, time slice) on the seeded
  schedule of ``experiments.switchback``; the read-out (``experiments.readout``) estimates the effect on mean chat
  duration with a 95 % cell-bootstrap interval;
- **A/B by user**: half the users (a keyed hash) are "treated"; a pair is scored ``H + (t_a + t_b) / 2 * (L - H)``
  (both treated: the learned model L; both control: the heuristic H; mixed: halfway), the usual way to give each
  user their arm in a shared pool; the estimate is the mean duration of treated users' chats minus control users'.

Every run is the same market (the same users, ``population_seed``) on a different day: a seed changes who arrives
when, how chats go and the experiment's schedule. The truth (``effect_true``) is what deploying the learned model
changes there: the mean chat duration with every shard on it minus with every shard on the heuristic, averaged
over ``truth_seeds`` other days run each way. The learned model is trained once, on another day run on the
heuristic (as a model trained on last week's data).

Why the A/B is biased: treated and control users share pools, so treated users' preferences shape the partners
left for control users (interference); its estimate is not the effect of deploying the model.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.experiments.funnel import Condition, score_conditions
from tickmatch.experiments.readout import Readout, cells_of, switchback_effect
from tickmatch.experiments.switchback import Experiment
from tickmatch.learning.features import RAW_DIM, SIGNAL_BASE
from tickmatch.learning.scorer import Scorer, heuristic_scorer
from tickmatch.learning.trainer import Trainer, TrainerConfig
from tickmatch.market.ope import greedy_pairs
from tickmatch.market.population import SIGNAL_DIM, Population
from tickmatch.matching.bilinear import BilinearModel
from tickmatch.schemas import Join, Leave
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink

IDLE, WAITING, CHATTING = 0, 1, 2
AB_FLAG = SIGNAL_BASE + SIGNAL_DIM  # a raw slot the population leaves empty: carries a user's A/B arm
START = 1_800_000_000.0  # the market clock's epoch seconds at t = 0


@dataclass(frozen=True, slots=True)
class StudyConfig:
    """The simulated market and the experiment design (seconds of market time)."""

    n_users: int = 6_000
    arrival_per_s: float = 6.0
    minutes: float = 100.0  # measured market time per run (after the warm-up)
    warmup_minutes: float = 5.0
    slice_s: float = 150.0
    washout_s: float = 60.0
    tick_s: float = 0.5
    return_base: float = 0.3
    return_aha: float = 0.5
    aha_s: float = 180.0
    return_after_s: float = 120.0
    embed_dim: int = 16
    train_minutes: float = 60.0
    truth_seeds: int = 16
    explore_share: float = 0.1  # every run explores (TICKMATCH_EXPLORE_SHARE): the off-policy check reads it
    population_seed: int = 0  # one market (the same users) for every run; seeds vary arrivals, chats, schedules


@dataclass(slots=True)
class Chats:
    """The chats a run started in its measured window, as columns."""

    shard: list[str]
    slice_id: list[int]
    arm: list[str]
    washout: list[bool]
    a: list[int]
    b: list[int]
    duration_s: list[float]
    group: list[str | None]
    propensity: list[float | None]


class ABScorer(Scorer):
    """Scores a pair ``H + (t_a + t_b)/2 * (L - H)`` with ``t`` read from the raw slot :data:`AB_FLAG`.

    As one bilinear form over embeddings ``[xH, t xL, xL, t xH, xH]`` (x: the user's raw vector without the
    flag): the blocks give ``H``, ``(t_a + t_b)/2 * L`` and ``-(t_a + t_b)/2 * H``, so the unchanged engine
    matches with it."""

    def __init__(self, learned: Scorer, heuristic: Scorer) -> None:
        d = learned.dim
        w = np.zeros((5 * d, 5 * d), np.float32)
        wl, wh = learned.bilinear.weights, heuristic.bilinear.weights
        w[:d, :d] = wh
        w[d : 2 * d, 2 * d : 3 * d] = w[2 * d : 3 * d, d : 2 * d] = wl / 2
        w[3 * d : 4 * d, 4 * d :] = w[4 * d :, 3 * d : 4 * d] = -wh / 2
        super().__init__(np.zeros((RAW_DIM, 5 * d), np.float32), BilinearModel(w, "ab-by-user"))
        object.__setattr__(self, "_parts", (learned, heuristic))

    def embed(
        self, raw: npt.NDArray[np.float32], out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        learned, heuristic = self._parts  # type: ignore[attr-defined]
        t = raw[:, AB_FLAG : AB_FLAG + 1]
        x = raw.copy()
        x[:, AB_FLAG] = 0.0
        xl, xh = learned.embed(x), heuristic.embed(x)
        emb = np.hstack([xh, t * xl, xl, t * xh, xh]).astype(np.float32)
        if out is not None:
            out[:] = emb
            return out
        return emb


def treated(seed: int, user: int) -> bool:
    """The A/B arm of a user (a keyed hash: half the users)."""
    return hashlib.blake2b(f"ab:{seed}:{user}".encode(), digest_size=8).digest()[0] & 1 == 1


class Market:
    """One seeded market driving one :class:`WorkerRuntime` tick by tick."""

    def __init__(
        self, cfg: StudyConfig, seed: int, runtime: WorkerRuntime, ab: bool = False, planted: Condition | None = None
    ) -> None:
        self.cfg, self.seed, self.runtime, self.ab, self.planted = cfg, seed, runtime, ab, planted
        self.pop = Population.generate(cfg.n_users, cfg.population_seed)
        n = self.pop.n
        self.status = np.zeros(n, np.int8)
        self.deadline = np.full(n, np.inf)
        self.chat_end = np.full(n, np.inf)
        self.return_at = np.full(n, np.inf)
        self.last_chat = np.zeros(n)
        self.rng = np.random.default_rng([seed, 11])
        self.rng_chat = np.random.default_rng([seed, 12])
        self.sink: RecordingSink = runtime.sink  # type: ignore[assignment]
        self.offset = 0
        self.chats = Chats([], [], [], [], [], [], [], [], [])
        # With a planted aha condition (the funnel check): new arrivals are first visits only, and a user comes back
        # after a chat (or after giving up waiting) with probability 0.98 once they meet the condition (hooked), after
        # a chat with 0.4 otherwise. Histories are kept.
        self.history: dict[int, list[tuple[float, float]]] = {}
        self.visits: dict[int, list[float]] = {}
        self._fresh = iter(self.rng.permutation(self.pop.n).tolist()) if planted is not None else None

    def _signals(self, i: int) -> tuple[float, ...]:
        signals = self.pop.signal_tuple(i)
        if self.ab:
            signals = (*signals, 1.0 if treated(self.seed, i) else 0.0)
        return signals

    def step(self, t: float, measured: bool) -> None:
        cfg, now = self.cfg, START + t
        msgs: list[Msg] = []
        ended = np.flatnonzero(self.chat_end <= t)
        if ended.size:
            self.chat_end[ended] = np.inf
            self.status[ended] = IDLE
            if self.planted is None:
                p_back = cfg.return_base + cfg.return_aha * (1.0 - np.exp(-self.last_chat[ended] / cfg.aha_s))
            else:
                p_back = np.array([0.98 if self._meets(i) else 0.4 for i in ended.tolist()])
            back = ended[self.rng.random(ended.size) < p_back]
            self.return_at[back] = t + self.rng.exponential(cfg.return_after_s, back.size)
        for i in np.flatnonzero(self.deadline <= t).tolist():
            self.deadline[i] = np.inf
            self.status[i] = IDLE
            if self.planted is not None and self._meets(i) and self.rng.random() < 0.98:
                self.return_at[i] = t + float(self.rng.exponential(cfg.return_after_s))
            msgs.append(self._msg(Leave(f"u{i}", self.pop.shard_of(i), now)))
        back = np.flatnonzero(self.return_at <= t)
        self.return_at[back] = np.inf
        count = int(self.rng.poisson(cfg.arrival_per_s * cfg.tick_s))
        if self._fresh is None:
            new = self.rng.integers(0, self.pop.n, size=count)
        else:
            new = np.array([i for _, i in zip(range(count), self._fresh, strict=False)], np.int64)
        for i in np.concatenate([back, new]).tolist():
            if self.status[i] != IDLE:
                continue
            if self.planted is not None:
                self.visits.setdefault(i, []).append(t)
            self.status[i] = WAITING
            self.deadline[i] = t + float(self.pop.patience_s[i]) * float(self.rng.uniform(0.5, 1.5))
            attrs = self.pop.attrs(i)
            join = Join(f"u{i}", self.pop.shard_of(i), now, country=attrs["country"], language=attrs["language"],
                        gender=attrs["gender"], age_band=attrs["age_band"], signals=self._signals(i))  # fmt: skip
            msgs.append(self._msg(join))
        self.runtime.clock.now = now  # type: ignore[attr-defined]
        if msgs:
            self.runtime.apply_batch(msgs)
        self.runtime.tick()
        decisions, self.sink.decisions = self.sink.decisions, []
        self.sink.ticks.clear()
        self.sink.shards.clear()
        self.sink.labels.clear()
        if not decisions:
            return
        a = np.array([int(d.user_a[1:]) for d in decisions], np.int64)
        b = np.array([int(d.user_b[1:]) for d in decisions], np.int64)
        duration = self.pop.sample_durations_s(a, b, self.rng_chat)
        both = np.concatenate([a, b])
        self.status[both] = CHATTING
        self.deadline[both] = np.inf
        self.chat_end[a] = self.chat_end[b] = t + duration
        self.last_chat[a] = self.last_chat[b] = duration
        if self.planted is not None:
            for k in range(len(decisions)):
                for user in (int(a[k]), int(b[k])):
                    self.history.setdefault(user, []).append((t, float(duration[k])))
        if measured:
            c = self.chats
            for k, d in enumerate(decisions):
                c.shard.append(d.shard)
                c.slice_id.append(d.slice_id if d.slice_id is not None else -1)
                c.arm.append(d.arm or "")
                c.washout.append(bool(d.washout))
                c.a.append(int(a[k]))
                c.b.append(int(b[k]))
                c.duration_s.append(float(duration[k]))
                c.group.append(d.explore_group)
                c.propensity.append(d.propensity)

    def _meets(self, i: int) -> bool:
        """Whether user ``i`` meets the planted aha condition (by the chats seen so far)."""
        assert self.planted is not None
        mine = self.history.get(i, [])
        if not mine:
            return False
        first = mine[0][0]
        window = self.planted.within_h * 3600.0
        return sum(1 for start, d in mine if start <= first + window and d >= self.planted.min_s) >= self.planted.chats

    def _msg(self, record: Join | Leave) -> Msg:
        self.offset += 1
        return Msg.of(record, 0, self.offset)

    def run(self) -> Chats:
        cfg = self.cfg
        ticks = round((cfg.warmup_minutes + cfg.minutes) * 60.0 / cfg.tick_s)
        warm = round(cfg.warmup_minutes * 60.0 / cfg.tick_s)
        for k in range(ticks):
            self.step(k * cfg.tick_s, k >= warm)
        self.runtime.close()
        return self.chats


def _runtime(cfg: StudyConfig, dim: int, seed: int = 0) -> WorkerRuntime:
    settings = Settings(embed_dim=dim, match_threads=1, censor_after_s=1e6, wait_ttl_s=1e6, repeat_window_s=600.0,
                        explore_share=cfg.explore_share)  # fmt: skip
    runtime = WorkerRuntime(settings, RecordingSink(), ManualClock(START))
    runtime.explore_rng = np.random.default_rng([seed, 13])
    runtime.explore_log = []
    return runtime


def off_policy(
    chats: Chats, groups: list[tuple[str, list[str], Any]], pop: Population, target: Scorer
) -> tuple[float, float, int]:
    """Inverse-propensity estimate of ``target``'s summed chat duration within the exploration groups (greedy on
    its scores among allowed pairs, as ``market.ope``), and the truth (the pairs' true expected durations);
    per group, averaged over groups. Returns (estimate, truth, groups)."""
    raw = pop.raw_matrix()
    logged: dict[str, list[tuple[int, int, float, float]]] = {}
    for g, a, b, d, p in zip(chats.group, chats.a, chats.b, chats.duration_s, chats.propensity, strict=True):
        if g is not None and p is not None:
            logged.setdefault(g, []).append((a, b, d, p))
    estimates, truths = [], []
    for group, members, allowed in groups:
        if group not in logged:
            continue  # no pair of this group was allowed, or it was decided before the measured window
        users = np.array([int(u[1:]) for u in members], np.int64)
        m = users.size
        i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        scores = target.score_raw(raw[users[i.ravel()]], raw[users[j.ravel()]]).astype(np.float64).reshape(m, m)
        chosen = {
            (min(int(users[x]), int(users[y])), max(int(users[x]), int(users[y])))
            for x, y in greedy_pairs(scores, allowed)
        }
        estimates.append(sum(d / p for a, b, d, p in logged[group] if (min(a, b), max(a, b)) in chosen))
        pa = np.array([a for a, _ in chosen], np.int64)
        pb = np.array([b for _, b in chosen], np.int64)
        truths.append(float(np.exp(pop.expected_log_duration(pa, pb)).sum()) if chosen else 0.0)
    return (
        float(np.mean(estimates)) if estimates else math.nan,
        float(np.mean(truths)) if truths else math.nan,
        len(estimates),
    )


def run_design(cfg: StudyConfig, seed: int, design: str, learned_weights: npt.NDArray[np.float64]) -> dict[str, Any]:
    """One market run of one design: ``learned`` / ``heuristic`` (every shard), ``switchback`` or ``ab``."""
    from tickmatch.learning.duration import DurationModel
    from tickmatch.matching.tuning import set_blas_threads

    set_blas_threads(1)
    learned = DurationModel(learned_weights, 0.0, "learned").scorer(cfg.embed_dim)
    heuristic = heuristic_scorer(cfg.embed_dim)
    ab = design == "ab"
    runtime = _runtime(cfg, 5 * cfg.embed_dim if ab else cfg.embed_dim, seed)
    if design == "learned":
        runtime.set_model(learned)
    elif design == "heuristic":
        runtime.set_model(heuristic)
    elif design == "ab":
        runtime.set_model(ABScorer(learned, heuristic))
    else:
        runtime.set_model(learned)
        runtime.heuristic = heuristic
        runtime.experiment = Experiment(
            f"study-{seed}", {"learned": "current", "heuristic": "heuristic"}, slice_s=cfg.slice_s,
            washout_s=cfg.washout_s, seed=seed, start=START + cfg.warmup_minutes * 60.0,
        )  # fmt: skip
    started = time.perf_counter()
    market = Market(cfg, seed, runtime, ab=ab)
    chats = market.run()
    out: dict[str, Any] = {
        "seed": seed,
        "design": design,
        "chats": len(chats.a),
        "wall_s": time.perf_counter() - started,
    }
    durations = np.asarray(chats.duration_s)
    out["mean_chat_s"] = float(durations.mean()) if durations.size else math.nan
    if design == "switchback":
        rows = zip(chats.shard, chats.slice_id, chats.arm, chats.washout, chats.duration_s, strict=True)
        readout = switchback_effect(cells_of(rows), "learned", "heuristic", seed=seed)
        out["readout"] = readout
        assert runtime.explore_log is not None
        out["ope"] = off_policy(chats, runtime.explore_log, market.pop, learned)
    elif ab:
        t_a = np.array([treated(seed, int(u)) for u in chats.a])
        t_b = np.array([treated(seed, int(u)) for u in chats.b])
        per_user_t = np.concatenate([durations[t_a], durations[t_b]])
        per_user_c = np.concatenate([durations[~t_a], durations[~t_b]])
        out["ab_estimate"] = float(per_user_t.mean() - per_user_c.mean())
    return out


def train_learned(cfg: StudyConfig, seed: int = 10_000) -> npt.NDArray[np.float64]:
    """A duration model trained on a market run on the heuristic (labels: every chat, its full duration)."""
    runtime = _runtime(cfg, cfg.embed_dim)
    market = Market(replace(cfg, minutes=cfg.train_minutes), seed, runtime)
    raw = market.pop.raw_matrix()
    chats = market.run()
    trainer = Trainer(TrainerConfig(min_labels=1, steps=600))
    for k, (a, b, d) in enumerate(zip(chats.a, chats.b, chats.duration_s, strict=True)):
        trainer.add(f"train-{k}", raw[a], raw[b], d, False)
    return trainer.fit().weights


PLANTED = Condition(2, 180.0, 1.0)  # the aha condition the funnel check plants


def aha_funnel(cfg: StudyConfig, seed: int = 20_000, hours: float = 3.0) -> dict[str, Any]:
    """One market (heuristic model) whose users come back mostly once they meet :data:`PLANTED`; the funnel over
    every condition of ``funnel.GRID`` from what was observed: does the best one match the planted one?"""
    cfg = replace(cfg, n_users=50_000, arrival_per_s=4.0, minutes=hours * 60.0 - cfg.warmup_minutes)  # first visits
    market = Market(cfg, seed, _runtime(cfg, cfg.embed_dim, seed), planted=PLANTED)
    market.run()
    chats = {f"u{i}": history for i, history in market.history.items()}
    joins = {f"u{i}": times for i, times in market.visits.items()}
    ranked = score_conditions(chats, joins, observed_until=hours * 3600.0)
    best = ranked[0]
    return {
        "planted": PLANTED.name,
        "found": best.condition.name,
        "matches_planted": best.condition == PLANTED,
        "precision": round(best.precision, 3),
        "recall": round(best.recall, 3),
        "users": best.users,
        "next_best": [{"condition": r.condition.name, "precision": round(r.precision, 3), "recall": round(r.recall, 3),
                       "f1": round(r.f1, 3)} for r in ranked[1:4]],
    }  # fmt: skip


def run_study(
    seeds: int, cfg: StudyConfig | None = None, progress: Callable[[str], None] | None = None, processes: int = 2
) -> dict[str, Any]:
    """Every run of the study and its summary (the CLI prints the summary as JSON)."""
    cfg = cfg or StudyConfig()
    started = time.perf_counter()
    weights = train_learned(cfg)
    jobs = [(s, d) for s in range(seeds) for d in ("switchback", "ab")]
    jobs += [(1_000 + s, d) for s in range(cfg.truth_seeds) for d in ("learned", "heuristic")]
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=processes) as pool:
        funnel = pool.submit(aha_funnel, cfg)
        futures = [pool.submit(run_design, cfg, s, d, weights) for s, d in jobs]
        for k, future in enumerate(futures, 1):
            results.append(future.result())
            if progress is not None:
                r = results[-1]
                progress(f"[{time.perf_counter() - started:6.1f}s] {k}/{len(jobs)} seed {r['seed']} {r['design']}")
    truth = [
        next(r["mean_chat_s"] for r in results if r["seed"] == s and r["design"] == "learned")
        - next(r["mean_chat_s"] for r in results if r["seed"] == s and r["design"] == "heuristic")
        for s in range(1_000, 1_000 + cfg.truth_seeds)
    ]
    effect_true = float(np.mean(truth))
    per_seed = []
    for s in range(seeds):
        sb: Readout = next(r["readout"] for r in results if r["seed"] == s and r["design"] == "switchback")
        ab = next(r["ab_estimate"] for r in results if r["seed"] == s and r["design"] == "ab")
        per_seed.append({"seed": s, "estimate": round(sb.effect, 3), "ci95": [round(x, 3) for x in sb.ci95],
                         "covers_truth": sb.covers(effect_true), "excludes_zero": sb.excludes_zero,
                         "cells": sb.cells, "ab_estimate": round(ab, 3)})  # fmt: skip
    ab_mean = float(np.mean([p["ab_estimate"] for p in per_seed]))
    opes = [r["ope"] for r in results if r["design"] == "switchback"]
    groups = sum(g for _, _, g in opes)
    ope_estimate = sum(e * g for e, _, g in opes) / groups
    ope_truth = sum(t * g for _, t, g in opes) / groups
    return {
        "seeds": seeds,
        "effect_true": round(effect_true, 3),
        "effect_true_se": round(float(np.std(truth, ddof=1) / math.sqrt(len(truth))), 3) if len(truth) > 1 else None,
        "metric": "mean chat duration per match (s)",
        "coverage_95": sum(p["covers_truth"] for p in per_seed) / seeds,
        "ci_excludes_zero": sum(p["excludes_zero"] for p in per_seed) / seeds,
        "switchback_mean_estimate": round(float(np.mean([p["estimate"] for p in per_seed])), 3),
        "ab_mean_estimate": round(ab_mean, 3),
        "ab_bias": round(ab_mean - effect_true, 3),
        "ope_target": "learned model, greedy within each exploration group",
        "ope_estimate_s_per_group": round(ope_estimate, 3),
        "ope_true_s_per_group": round(ope_truth, 3),
        "ope_groups": groups,
        "ope_error": round(abs(ope_estimate - ope_truth) / ope_truth, 4),
        "aha_funnel": funnel.result(),
        "per_seed": per_seed,
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "wall_s": round(time.perf_counter() - started, 1),
    }
