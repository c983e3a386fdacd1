"""``tickmatch flywheel``: every policy on the same seeded markets, the learned one training as labels arrive.

For each seed the market (population, arrival stream) is generated once and every policy runs on it, so the
comparisons are paired: per seed, ``learned - heuristic`` removes the market's own luck, and the confidence
interval of the mean difference over seeds (Student t, 95 %) says whether the gain is real.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tickmatch.learning.metrics import auroc, mse
from tickmatch.learning.scorer import heuristic_scorer
from tickmatch.learning.trainer import holdout_bucket, known_long
from tickmatch.market.ope import evaluate_off_policy
from tickmatch.market.policies import POLICIES
from tickmatch.market.population import NOISE_SIGMA, Population
from tickmatch.market.sim import MarketSim, RunResult, SimConfig

_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def t95(df: int) -> float:
    """Two-sided 95 % Student t quantile (table; conservative between entries, 1.96 beyond 30)."""
    if df <= 0:
        return math.nan
    for k in sorted(_T95):
        if df <= k:
            return _T95[k] if df == k else _T95[max(d for d in _T95 if d <= df)]
    return 1.96


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95 % confidence interval of the mean."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": float(arr.size)}
    half = t95(arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": float(arr.size)}


def _run_one(config: SimConfig, policy: str) -> tuple[RunResult, dict[str, Any]]:
    """One (seed, policy) run in a worker process; the learned run is also evaluated here (it has the model)."""
    from tickmatch.matching.tuning import set_blas_threads

    set_blas_threads(1)  # two runs share the two cores; BLAS threads would only fight them
    pop = Population.generate(config.n_users, config.seed)
    sim = MarketSim(config, policy, pop)
    result = sim.run()
    extra: dict[str, Any] = {}
    trainer = sim.policy.trainer
    if trainer is not None and trainer.model is not None:
        extra = evaluate_learned(result, sim, pop)
    return result, extra


def evaluate_learned(result: RunResult, sim: MarketSim, pop: Population) -> dict[str, Any]:
    """Final model on the run's held-out labels, next to what the ground truth allows (Bayes)."""
    trainer = sim.policy.trainer
    assert trainer is not None and trainer.model is not None
    model = trainer.model
    lb = result.labels
    keys = [f"{result.seed}-{k}" for k in range(len(lb.user_a))]
    held = np.array([holdout_bucket(key, trainer.config.holdout_every) for key in keys], bool)
    a = np.asarray(lb.user_a, np.int64)[held]
    b = np.asarray(lb.user_b, np.int64)[held]
    y = np.log(np.maximum(np.asarray(lb.duration_s)[held], 1.0))
    cens = np.asarray(lb.censored, bool)[held]
    truth = np.asarray(lb.true_log_mean)[held]
    mu = model.mu(sim.raw[a], sim.raw[b])
    threshold = trainer.config.long_chat_s
    s_model, long_model = known_long(mu, y, cens, threshold)
    s_truth, long_truth = known_long(truth, y, cens, threshold)
    observed = ~cens
    heuristic = heuristic_scorer(sim.config.embed_dim)  # the heuristic policy's own scorer, built once
    ope = evaluate_off_policy(
        result,
        {
            "learned": lambda i, j: model.mu(sim.raw[i], sim.raw[j]),
            "heuristic": lambda i, j: heuristic.score_raw(sim.raw[i], sim.raw[j]).astype(np.float64),
            "oracle": pop.expected_log_duration,
        },
        pop.expected_log_duration,
    )
    return {
        "model_version": model.version,
        "holdout_labels": int(held.sum()),
        "auroc": auroc(s_model, long_model),
        "bayes_auroc": auroc(s_truth, long_truth),
        "mse": mse(mu[observed], y[observed]),
        "bayes_mse": mse(truth[observed] - NOISE_SIGMA**2 / 2, y[observed]),
        "ope": ope,
    }


def run_flywheel(
    hours: float,
    seeds: Sequence[int],
    policies: Sequence[str] = POLICIES,
    base: SimConfig | None = None,
    processes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[RunResult]]:
    """Run every (seed, policy); returns the JSON summary and the runs (for plots)."""
    base = base or SimConfig()
    jobs = [(replace(base, hours=hours, seed=seed), policy) for seed in seeds for policy in policies]
    runs: dict[tuple[int, str], tuple[RunResult, dict[str, Any]]] = {}
    started = time.perf_counter()
    workers = processes or min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, cfg, policy): (cfg.seed, policy) for cfg, policy in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            runs[key] = future.result()
            if progress is not None:
                m = runs[key][0].metrics()
                progress(
                    f"[{time.perf_counter() - started:6.1f}s] {done}/{len(jobs)} seed {key[0]} {key[1]:<9} "
                    f"chat min/user-h {m['chat_minutes_per_user_hour']:.3f}  match rate {m['match_rate']:.3f}"
                )
    return summarize(runs, hours, seeds, policies, base), [r for r, _ in runs.values()]


def summarize(
    runs: dict[tuple[int, str], tuple[RunResult, dict[str, Any]]],
    hours: float,
    seeds: Sequence[int],
    policies: Sequence[str],
    base: SimConfig,
) -> dict[str, Any]:
    per_policy: dict[str, Any] = {}
    for policy in policies:
        metrics = [runs[(s, policy)][0].metrics() for s in seeds]
        per_policy[policy] = {k: round(float(np.mean([m[k] for m in metrics])), 4) for k in metrics[0]}
        per_policy[policy]["chat_minutes_ci95"] = [
            round(v, 4) for v in _ci_pair(mean_ci([m["chat_minutes_per_user_hour"] for m in metrics]))
        ]
    out: dict[str, Any] = {
        "hours": hours,
        "seeds": list(seeds),
        "market": {
            "n_users": base.n_users,
            "arrival_rate_per_s": base.arrival_rate_per_s,
            "tick_s": base.tick_s,
            "measured_after_h": round(hours * base.warmup_frac, 3),
            "explore": base.explore,
        },
        "policies": per_policy,
    }

    def minutes(seed: int, policy: str) -> float:
        return runs[(seed, policy)][0].metrics()["chat_minutes_per_user_hour"]

    if "learned" in policies:
        if "oracle" in policies:
            ratio = mean_ci([minutes(s, "learned") / minutes(s, "oracle") for s in seeds])
            out["learned_vs_oracle"] = round(ratio["mean"], 4)
            out["learned_vs_oracle_ci95"] = [round(v, 4) for v in _ci_pair(ratio)]
        for other in ("heuristic", "random", "fifo"):
            if other in policies:
                diff = mean_ci([minutes(s, "learned") - minutes(s, other) for s in seeds])
                out[f"learned_minus_{other}"] = {k: round(v, 4) for k, v in diff.items()}
        evals = [runs[(s, "learned")][1] for s in seeds if runs[(s, "learned")][1]]
        if evals:
            for key in ("auroc", "bayes_auroc", "mse", "bayes_mse"):
                out[key] = round(float(np.mean([e[key] for e in evals])), 4)
            out["auroc_vs_bayes"] = round(out["auroc"] / out["bayes_auroc"], 4)
            out["model_versions"] = int(np.mean([len(runs[(s, "learned")][0].versions) for s in seeds]))
            out["off_policy"] = _mean_ope([e["ope"] for e in evals])
    out["wall_s"] = round(sum(r.wall_s for r, _ in runs.values()), 1)
    return out


def _ci_pair(ci: dict[str, float]) -> tuple[float, float]:
    return ci["ci_low"], ci["ci_high"]


def _mean_ope(opes: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {k: round(float(np.mean([o[name][k] for o in opes])), 2) for k in opes[0][name]} for name in opes[0]}


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_plots(summary: dict[str, Any], runs: list[RunResult], out_dir: Path) -> list[Path]:
    """Learning curve and policy comparison as PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        if run.policy == "learned" and run.versions:
            labels = [v["labels"] for v in run.versions]
            ax1.plot(labels, [v["auroc"] for v in run.versions], alpha=0.8, label=f"seed {run.seed}")
    if "bayes_auroc" in summary:
        ax1.axhline(summary["bayes_auroc"], color="k", ls="--", label="Bayes AUROC (ground truth)")
        ax1.axhline(0.95 * summary["bayes_auroc"], color="grey", ls=":", label="95 % of Bayes")
    ax1.set_xlabel("training labels")
    ax1.set_ylabel("held-out AUROC (long vs short chat)")
    ax1.set_title("Learning curve")
    ax1.legend(fontsize=8)
    colors = {"random": "tab:gray", "fifo": "tab:brown", "heuristic": "tab:blue", "learned": "tab:green",
              "oracle": "tab:red"}  # fmt: skip
    seen: set[str] = set()
    for run in runs:
        if run.minutes_timeline and run.seed == summary["seeds"][0]:
            hours, values = zip(*run.minutes_timeline, strict=True)
            ax2.plot(hours, values, color=colors.get(run.policy), label=run.policy if run.policy not in seen else None)
            seen.add(run.policy)
    ax2.set_xlabel("simulated hour")
    ax2.set_ylabel("chat minutes per user-hour (chats started per window)")
    ax2.set_title(f"Market over time (seed {summary['seeds'][0]})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "flywheel_learning.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(summary["policies"])
    means = [summary["policies"][p]["chat_minutes_per_user_hour"] for p in names]
    lows = [summary["policies"][p]["chat_minutes_ci95"][0] for p in names]
    highs = [summary["policies"][p]["chat_minutes_ci95"][1] for p in names]
    err = np.array(
        [[m - lo for m, lo in zip(means, lows, strict=True)], [h - m for m, h in zip(means, highs, strict=True)]]
    )
    ax.bar(names, means, yerr=np.nan_to_num(err), capsize=4, color=[colors.get(p, "tab:purple") for p in names])
    ax.set_ylabel("chat minutes per user-hour (95 % CI over seeds)")
    ax.set_title(f"Policies, {summary['hours']} h x {len(summary['seeds'])} seeds")
    fig.tight_layout()
    paths.append(out_dir / "flywheel_policies.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
