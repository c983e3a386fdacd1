"""In-process market simulation: the live market's rules at tick granularity, minus the broker.

One run = one policy on one seeded market for ``hours`` of simulated time, ticking every ``tick_s`` like the
worker. Per tick: chats that ended free their users (who may come back later; a long chat makes that likelier,
the "aha moment"), waiting users whose patience ran out leave, returning and new users join (arrivals follow a
daily rhythm), the policy matches the pool with the real engine, and matched pairs get a drawn duration.

Labels follow the live label join's rules: a reported end gives the duration as the client saw it (client clocks
are skewed); a chat still running at ``censor_after_s`` is censored there; a chat whose end is never reported is
censored at the last moment it was known to be alive. Labels become visible to the learner only when they would
exist in the live system (at the end, or at the censoring deadline).

Why not simulate through Kafka: a policy comparison needs hours of market time over several seeds and five
policies; at tick granularity an hour runs in seconds. The live path is exercised by ``tickmatch demo``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tickmatch.learning.trainer import TrainerConfig
from tickmatch.market.policies import Policy, make_policy
from tickmatch.market.population import LANGUAGES, Population
from tickmatch.matching.allowed import allowed_matrix
from tickmatch.matching.engine import Engine, EngineConfig, gc_paused
from tickmatch.matching.pool import Pool
from tickmatch.matching.waiting import WaitCurve

IDLE, WAITING, CHATTING = 0, 1, 2
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The simulated market (seconds of simulated time)."""

    hours: float = 1.0
    seed: int = 0
    n_users: int = 40_000
    arrival_rate_per_s: float = 30.0
    daily_amplitude: float = 0.4  # arrivals swing +-40 % around the mean over a day
    start_hour: float = 12.0  # local time of day the run starts at (the daily rhythm peaks at 21:00)
    tick_s: float = 0.5
    return_base: float = 0.15  # chance a user comes back after a chat...
    return_aha: float = 0.6  # ...plus this much more after a long one
    aha_s: float = 180.0
    return_after_s: float = 600.0  # mean delay before a return
    abandon_return: float = 0.2  # chance a user who gave up waiting comes back
    p_no_end: float = 0.04  # chats whose end is never reported
    censor_after_s: float = 1800.0
    warmup_frac: float = 0.5  # policy metrics cover the run after this fraction (steady state)
    embed_dim: int = 32
    explore: float = 0.1
    repeat_window_s: float = 3600.0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def rate_at(self, t: float) -> float:
        hour = (self.start_hour + t / 3600.0) % 24.0
        return self.arrival_rate_per_s * (1.0 + self.daily_amplitude * math.cos(2 * math.pi * (hour - 21.0) / 24.0))


@dataclass(slots=True)
class Labels:
    """Every label of a run as columns (the learner only sees those whose ``available_at`` has passed)."""

    user_a: list[int] = field(default_factory=list)
    user_b: list[int] = field(default_factory=list)
    duration_s: list[float] = field(default_factory=list)
    censored: list[bool] = field(default_factory=list)
    true_log_mean: list[float] = field(default_factory=list)  # ground truth log E[duration] (evaluation only)
    explored: list[int] = field(default_factory=list)  # exploration group id, -1 if chosen by the policy
    propensity: list[float] = field(default_factory=list)  # P(logging policy picks this pair | group), 1 if not


@dataclass(slots=True)
class Totals:
    """Outcome counters of the measured window."""

    chat_s: float = 0.0
    chats: int = 0
    joins: int = 0
    matched_joins: int = 0
    wait_s: float = 0.0
    abandons: int = 0
    chats_ended: int = 0
    returns: int = 0


@dataclass(slots=True)
class RunResult:
    """Everything a run produced, for metrics, evaluation and plots."""

    policy: str
    seed: int
    config: SimConfig
    totals: Totals
    labels: Labels
    groups: list[tuple[I64, npt.NDArray[np.bool_]]]  # exploration groups: users, allowed matrix
    versions: list[dict[str, Any]]
    minutes_timeline: list[
        tuple[float, float]
    ]  # (hour, chat minutes per user-hour of the chats started since the last point)
    wall_s: float

    def metrics(self) -> dict[str, float]:
        t, cfg = self.totals, self.config
        hours = cfg.hours * (1.0 - cfg.warmup_frac)
        return {
            "chat_minutes_per_user_hour": t.chat_s / 60.0 / (cfg.n_users * hours),
            "match_rate": t.matched_joins / max(t.joins, 1),
            "mean_wait_s": t.wait_s / max(t.matched_joins, 1),
            "return_rate": t.returns / max(t.chats_ended, 1),
            "mean_chat_s": t.chat_s / max(t.chats, 1),
            "chats": float(t.chats),
        }


class MarketSim:
    """One policy on one seeded market."""

    def __init__(self, config: SimConfig, policy_name: str, pop: Population | None = None) -> None:
        self.config = config
        self.pop = pop or Population.generate(config.n_users, config.seed)
        self.raw = self.pop.raw_matrix()
        self.policy: Policy = make_policy(
            policy_name, self.pop, self.raw, config.embed_dim, config.trainer, explore=config.explore
        )
        n = self.pop.n
        self.status = np.zeros(n, np.int8)
        self.joined = np.zeros(n)
        self.deadline = np.full(n, np.inf)
        self.chat_end = np.full(n, np.inf)
        self.return_at = np.full(n, np.inf)
        self.last_chat = np.zeros(n)
        self.attrs = [self.pop.attrs(i) for i in range(n)]
        self.wants = [{"gender": w} if w else {} for w in self.pop.want_gender]
        self.uid = [f"u{i}" for i in range(n)]
        # One pool per language, as the live worker shards them.
        raw_dim = int(self.policy.features.shape[1])
        self.pools = {
            lang: Pool(config.embed_dim, repeat_window_s=config.repeat_window_s, raw_dim=raw_dim) for lang in LANGUAGES
        }
        self.slot_users = {lang: np.full(1024, -1, np.int64) for lang in LANGUAGES}
        self.engine = Engine(config.embed_dim, EngineConfig(threads=1, matcher=self.policy.matcher))
        self.curve = WaitCurve()
        seed = config.seed
        self.rng_arrive = np.random.default_rng([seed, 1])
        self.rng_chat = np.random.default_rng([seed, 2])
        self.rng_policy = np.random.default_rng([seed, 3])
        self.labels = Labels()
        self.pending: list[tuple[float, int]] = []  # (available_at, label index)
        self.groups: list[tuple[I64, npt.NDArray[np.bool_]]] = []
        self.totals = Totals()
        self.versions: list[dict[str, Any]] = []
        self.timeline: list[tuple[float, float]] = []
        self._recent_chat_s = 0.0
        self.window_start = math.inf

    # -- pool bookkeeping -------------------------------------------------------------------------------------
    def _lang(self, i: int) -> str:
        return LANGUAGES[int(self.pop.language[i])]

    def _join(self, i: int, t: float, measured: bool) -> None:
        self.status[i] = WAITING
        self.joined[i] = t
        self.deadline[i] = t + float(self.pop.patience_s[i]) * float(self.rng_arrive.uniform(0.5, 1.5))
        lang = self._lang(i)
        pool = self.pools[lang]
        raw = self.policy.features[i]
        emb = self.policy.scorer.embed(raw[None, :])[0]
        slot = pool.add(self.uid[i], t, emb, self.attrs[i], self.wants[i], raw=raw)
        users = self.slot_users[lang]
        if slot >= users.shape[0]:
            grown = np.full(max(2 * users.shape[0], slot + 1), -1, np.int64)
            grown[: users.shape[0]] = users
            users = self.slot_users[lang] = grown
        users[slot] = i
        if measured:
            self.totals.joins += 1

    def _leave_pool(self, i: int) -> None:
        self.pools[self._lang(i)].remove(self.uid[i])
        self.deadline[i] = np.inf

    def _reembed(self) -> None:
        """A new model version: every waiting user's embedding from the new projection, before the next tick."""
        for pool in self.pools.values():
            pool.reembed(self.policy.scorer.embed)

    # -- one tick ---------------------------------------------------------------------------------------------
    def step(self, t: float, measured: bool) -> None:
        cfg = self.config
        ended = np.flatnonzero(self.chat_end <= t)
        if ended.size:
            self.chat_end[ended] = np.inf
            self.status[ended] = IDLE
            p_back = cfg.return_base + cfg.return_aha * (1.0 - np.exp(-self.last_chat[ended] / cfg.aha_s))
            back = ended[self.rng_arrive.random(ended.size) < p_back]
            self.return_at[back] = t + self.rng_arrive.exponential(cfg.return_after_s, back.size)
            if measured:
                self.totals.chats_ended += int(ended.size)
                self.totals.returns += int(back.size)
        gone = np.flatnonzero(self.deadline <= t)
        for i in gone.tolist():
            self._leave_pool(i)
            self.status[i] = IDLE
            if self.rng_arrive.random() < cfg.abandon_return:
                self.return_at[i] = t + float(self.rng_arrive.exponential(cfg.return_after_s))
        if measured:
            self.totals.abandons += int(gone.size)
        back = np.flatnonzero(self.return_at <= t)
        self.return_at[back] = np.inf
        new = self.rng_arrive.integers(0, self.pop.n, size=int(self.rng_arrive.poisson(cfg.rate_at(t) * cfg.tick_s)))
        for i in np.concatenate([back, new]).tolist():
            if self.status[i] == IDLE:
                self._join(i, t, measured)
        self._learn(t)
        pairs: list[tuple[int, int, int, float]] = []  # (user a, user b, group, propensity)
        for lang, pool in self.pools.items():
            if len(pool) >= 2:
                pairs.extend(self._match(lang, pool, t))
        if pairs:
            self._start_chats(pairs, t, measured)

    def _match(self, lang: str, pool: Pool, t: float) -> list[tuple[int, int, int, float]]:
        users = self.slot_users[lang]
        policy = self.policy
        slots = pool.active_slots()
        if policy.bias == "random":
            pool.set_bias(slots, self.rng_policy.random(slots.size))
        elif policy.bias == "wait":
            pool.set_bias(slots, t - pool.joined_at[slots])
        out: list[tuple[int, int, int, float]] = []
        if policy.explore > 0:
            chosen = slots[self.rng_policy.random(slots.size) < policy.explore]
            if chosen.size >= 2:
                out.extend(self._explore(pool, users, self.rng_policy.permutation(chosen), t))
        with gc_paused():
            found = self.engine.match(pool, policy.scorer.bilinear, self.curve, t)
        for a, b in zip(found.a.tolist(), found.b.tolist(), strict=True):
            out.append((int(users[a]), int(users[b]), -1, 1.0))
            pool.take_pair(a, b, t)
        return out

    def _explore(self, pool: Pool, users: I64, order: I64, t: float) -> list[tuple[int, int, int, float]]:
        """Uniform random pairing of the explored users: consecutive users of a random order, kept if allowed.

        The logging propensity of a pair given the group is ``1/(m-1)`` (m even) or ``1/m`` (m odd): the chance
        that two given users end up adjacent in a pair position of a random order."""
        m = int(order.size)
        allowed = allowed_matrix(pool, order)
        group = len(self.groups)
        self.groups.append((users[order].copy(), allowed))
        propensity = 1.0 / (m - 1) if m % 2 == 0 else 1.0 / m
        out = []
        for k in range(0, m - 1, 2):
            if allowed[k, k + 1]:
                a, b = int(order[k]), int(order[k + 1])
                out.append((int(users[a]), int(users[b]), group, propensity))
                pool.take_pair(a, b, t)
        return out

    def _start_chats(self, pairs: list[tuple[int, int, int, float]], t: float, measured: bool) -> None:
        cfg = self.config
        a = np.array([p[0] for p in pairs], np.int64)
        b = np.array([p[1] for p in pairs], np.int64)
        both = np.concatenate([a, b])
        duration = self.pop.sample_durations_s(a, b, self.rng_chat)
        self.deadline[both] = np.inf
        self.status[both] = CHATTING
        self.chat_end[a] = self.chat_end[b] = t + duration
        self.last_chat[a] = self.last_chat[b] = duration
        if measured:
            self.totals.chats += len(pairs)
            self.totals.chat_s += float(duration.sum())
            # match rate and wait: of the joins inside the measured window (their join was counted there too)
            mine = both[self.joined[both] >= self.window_start]
            self.totals.matched_joins += int(mine.size)
            self.totals.wait_s += float((t - self.joined[mine]).sum())
        self._recent_chat_s += float(duration.sum())
        truth = self.pop.expected_log_duration(a, b)
        no_end = self.rng_chat.random(len(pairs)) < cfg.p_no_end
        alive_until = duration * self.rng_chat.random(len(pairs))
        reporter = np.where(self.rng_chat.random(len(pairs)) < 0.5, a, b)
        seen = np.maximum(duration + self.pop.clock_skew_s[reporter], 0.0)
        lb = self.labels
        for k, (ua, ub, group, propensity) in enumerate(pairs):
            if no_end[k]:
                value, cens, at = min(float(alive_until[k]), cfg.censor_after_s), True, t + cfg.censor_after_s
            elif duration[k] > cfg.censor_after_s:
                value, cens, at = cfg.censor_after_s, True, t + cfg.censor_after_s
            else:
                value, cens, at = float(seen[k]), False, t + float(duration[k])
            heapq.heappush(self.pending, (at, len(lb.user_a)))
            lb.user_a.append(ua)
            lb.user_b.append(ub)
            lb.duration_s.append(value)
            lb.censored.append(cens)
            lb.true_log_mean.append(float(truth[k]))
            lb.explored.append(group)
            lb.propensity.append(propensity)

    def _learn(self, t: float) -> None:
        """Hand the labels that exist by now to the learner; swap in a new version when one is trained."""
        trainer = self.policy.trainer
        if trainer is None:
            self.pending.clear()
            return
        lb = self.labels
        while self.pending and self.pending[0][0] <= t:
            _, k = heapq.heappop(self.pending)
            a, b = lb.user_a[k], lb.user_b[k]
            trainer.add(f"{self.config.seed}-{k}", self.raw[a], self.raw[b], lb.duration_s[k], lb.censored[k])
        model = trainer.maybe_train()
        if model is not None:
            self.policy.scorer = model.scorer(self.config.embed_dim)
            self._reembed()
            ev = trainer.history[-1]
            self.versions.append(
                {"hour": t / 3600.0, "version": model.version, "labels": ev.labels_seen, "auroc": ev.auroc,
                 "mse": ev.mse, "train_s": ev.train_s}
            )  # fmt: skip

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        cfg = self.config
        started = time.perf_counter()
        ticks = round(cfg.hours * 3600.0 / cfg.tick_s)
        measure_from = int(ticks * cfg.warmup_frac)
        self.window_start = measure_from * cfg.tick_s
        every = max(1, min(int(300.0 / cfg.tick_s), ticks // 20))  # 5 simulated minutes, or 1/20 of the run
        for k in range(ticks):
            t = k * cfg.tick_s
            self.step(t, k >= measure_from)
            if (k + 1) % every == 0:
                per_user_hour = self._recent_chat_s / 60.0 / (cfg.n_users * every * cfg.tick_s / 3600.0)
                self.timeline.append(((k + 1) * cfg.tick_s / 3600.0, per_user_hour))
                self._recent_chat_s = 0.0
                if progress is not None:
                    progress((k + 1) / ticks)
        return RunResult(
            policy=self.policy.name,
            seed=cfg.seed,
            config=cfg,
            totals=self.totals,
            labels=self.labels,
            groups=self.groups,
            versions=self.versions,
            minutes_timeline=self.timeline,
            wall_s=time.perf_counter() - started,
        )
