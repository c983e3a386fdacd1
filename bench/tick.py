"""Tick benchmark: engine latency against the arithmetic floor, and match quality against the exact optimum.

    python -m bench.tick --n 1000 5000 10000 20000 --dim 32 64 --json

For each (n, d): a pool of n waiting users, then ``--ticks`` matching ticks (default 1,000; fewer, but at least
200, when they would take longer than ``--budget-s``) with ``--churn`` of the pool replaced between ticks
(leavers out, new users in, so slots are reused and new embeddings arrive). Reported:

- ``p50_ms``/``p99_ms``/``p999_ms`` of the engine's whole tick (gather, scoring, candidates, matching, refill),
  with the engine's defaults: its pair cache keeps each user's best partners across ticks, so a steady-state
  tick scores only the new and changed users against everyone (``users_rescored_per_tick``, mean);
- ``full_p50_ms``/``full_p999_ms``/``full_ratio_p999_to_floor``: the same market with the cache off, every pair
  scored every tick (``--full-ticks`` ticks) — what a tick costs when most of the pool is new;
- ``floor_ms``: the fastest of ``--floor-runs`` runs of plain numpy computing every upper-triangle dot product of
  an n x d float32 matrix in contiguous 1024-row blocks with BLAS on all cores, measured in the same run — the
  arithmetic a full recomputation cannot avoid; ``ratio_p999_to_floor`` is the headline number;
- ``pair_scores_per_s``: n(n-1)/2 pair scores a tick serves, per p50 tick;
- ``quality_vs_exact``: total score of the engine's matching over rustworkx's exact max-weight matching, mean
  over ``--quality-pools`` pools of n=1000 (same generator, same constraints), per dimension.

Scores are predicted chat seconds: a bilinear pair term (sd ~7 s) plus per-user biases around 15 s, so pairs
average ~30 s. 20 % of users only accept one gender, 5 % only their own country, 1 % block two other users.
No minimum score is applied (every allowed pair is eligible): the heaviest case for the engine.
The last line of stdout is one JSON object with a ``results`` list; a latency histogram PNG is written too.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tickmatch.matching.allowed import allowed_matrix
from tickmatch.matching.bilinear import BilinearModel
from tickmatch.matching.engine import Engine, EngineConfig, gc_paused, warm_up
from tickmatch.matching.exact import exact_pairs, total
from tickmatch.matching.pool import Pool
from tickmatch.matching.tuning import blas_info, freeze_heap, set_blas_threads
from tickmatch.matching.waiting import WaitCurve

COUNTRIES = [f"c{i:02d}" for i in range(20)]
GENDERS = ["f", "m"]
PAIR_SD_S = 7.0
BIAS_MEAN_S = 15.0
BIAS_SD_S = 2.0
MIN_TICKS = 200


@dataclass
class Market:
    """Generator of bench users for one dimension (fixed model, fresh users on demand)."""

    dim: int
    rng: np.random.Generator
    model: BilinearModel
    next_id: int = 0

    @classmethod
    def create(cls, dim: int, seed: int) -> Market:
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((dim, dim))
        w = (w + w.T) / 2.0
        probe = rng.standard_normal((4096, dim))
        scale = PAIR_SD_S / float(np.std(np.einsum("id,de,ie->i", probe[:2048], w, probe[2048:])))
        return cls(dim, rng, BilinearModel((w * scale).astype(np.float32), f"bench-d{dim}"))

    def add_users(self, pool: Pool, count: int, now: float) -> None:
        rng = self.rng
        emb = rng.standard_normal((count, self.dim)).astype(np.float32)
        bias = rng.normal(BIAS_MEAN_S, BIAS_SD_S, count)
        gender = rng.integers(0, 2, count)
        country = rng.integers(0, len(COUNTRIES), count)
        picky = rng.random(count)
        for i in range(count):
            uid = f"u{self.next_id}"
            self.next_id += 1
            wants: dict[str, tuple[str, ...]] = {}
            if picky[i] < 0.20:
                wants["gender"] = (GENDERS[1 - gender[i]],)
            if 0.20 <= picky[i] < 0.25:
                wants["country"] = (COUNTRIES[country[i]],)
            blocked: tuple[str, ...] = ()
            if picky[i] >= 0.99 and self.next_id > 10:
                blocked = tuple(f"u{j}" for j in rng.integers(0, self.next_id - 1, 2).tolist())
            attrs: dict[str, str | None] = {"gender": GENDERS[gender[i]], "country": COUNTRIES[country[i]]}
            joined = now - float(rng.uniform(0.0, 20.0))
            pool.add(uid, joined, emb[i], attrs, wants, bias=float(bias[i]), blocked=blocked)

    def churn(self, pool: Pool, fraction: float, now: float) -> None:
        """Replace ``fraction`` of the pool: random users leave, as many new ones join."""
        count = max(1, int(len(pool) * fraction))
        waiting = [u for u in pool.ids if u is not None]
        for j in self.rng.choice(len(waiting), size=count, replace=False).tolist():
            pool.remove(waiting[j])
        self.add_users(pool, count, now)


def measure_floor(n: int, dim: int, runs: int, cores: int) -> float:
    """Fastest of ``runs`` plain-numpy passes over every upper-triangle dot product (1024-row blocks)."""
    set_blas_threads(cores)
    emb = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    out = np.empty((1024, n), dtype=np.float32)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for r in range(0, n, 1024):
            r1 = min(r + 1024, n)
            np.matmul(emb[r:r1], emb[r:].T, out=out[: r1 - r, : n - r])
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def measure_ticks(
    n: int, market: Market, engine: Engine, ticks: int, churn: float, budget_s: float = 0.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Latency (ms) of up to ``ticks`` engine ticks on a churning pool of n users.

    With ``budget_s``, fewer ticks are run when ``ticks`` would take longer than that, but never fewer than
    200. Why many ticks: p99.9 of 200 samples is in effect their maximum; 1,000 are the least that make it a
    percentile. Also returns, per tick, how many users were scored against everyone (all of them in a full
    recomputation; the new and changed ones when the engine's pair cache answers the rest)."""
    set_blas_threads(1)  # the engine's threads each run single-threaded BLAS (see matching.tuning)
    pool = Pool(market.dim, capacity=n)
    now = 1000.0
    market.add_users(pool, n, now)
    curve = WaitCurve()
    t0 = time.perf_counter()
    for _ in range(3):  # warm the buffers at this size
        engine.match(pool, market.model, curve, now)
    if budget_s > 0:
        per_tick = (time.perf_counter() - t0) / 3
        ticks = min(ticks, max(MIN_TICKS, int(budget_s / max(per_tick, 1e-6))))
    freeze_heap()
    samples = np.empty(ticks, dtype=np.float64)
    fresh = np.empty(ticks, dtype=np.float64)
    for t in range(ticks):
        now += 0.5
        market.churn(pool, churn, now)
        with gc_paused():
            t0 = time.perf_counter()
            engine.match(pool, market.model, curve, now)
            samples[t] = (time.perf_counter() - t0) * 1000.0
        fresh[t] = engine.last_fresh if engine.config.incremental else len(pool)
    gc.unfreeze()
    return samples, fresh


def measure_quality(market: Market, engine: Engine, pools: int, n: int) -> tuple[float, float]:
    """Mean and minimum of (engine total / exact optimum) over ``pools`` fresh pools of ``n`` users."""
    set_blas_threads(1)
    ratios = []
    for _ in range(pools):
        pool = Pool(market.dim, capacity=n)
        market.add_users(pool, n, 1000.0)
        found = engine.match(pool, market.model, WaitCurve(), 1000.0)
        slots = pool.active_slots().astype(np.int64)
        weights = market.model.all_scores(pool.emb[slots], pool.bias[slots])
        allowed = allowed_matrix(pool, slots)
        position = {int(s): i for i, s in enumerate(slots.tolist())}
        ours = [(position[int(a)], position[int(b)]) for a, b in zip(found.a.tolist(), found.b.tolist(), strict=True)]
        best = total(weights, exact_pairs(weights, allowed))
        ratios.append(total(weights, ours) / best)
    return float(np.mean(ratios)), float(np.min(ratios))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
    }


def write_histogram(path: Path, samples: dict[tuple[int, int], npt.NDArray[np.float64]],
                    floors: dict[tuple[int, int], float]) -> None:  # fmt: skip
    """Latency histograms, one panel per (n, d), with p50/p99.9 and 2x floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(samples)
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        s = samples[key]
        ax.hist(s, bins=40, color="#4c72b0")
        for value, style, label in (
            (float(np.percentile(s, 50)), "-", "p50"),
            (float(np.percentile(s, 99.9)), "--", "p99.9"),
            (2 * floors[key], ":", "2x floor"),
        ):
            ax.axvline(value, color="k", linestyle=style, linewidth=1, label=f"{label} {value:.1f}")
        ax.set_title(f"n={key[0]:,} d={key[1]}")
        ax.set_xlabel("tick ms")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tick", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--dim", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--ticks", type=int, default=1000, help="timed ticks per (n, d), at most")
    parser.add_argument(
        "--budget-s", type=float, default=120.0, help="time per (n, d): fewer ticks (never < 200) if over it"
    )
    parser.add_argument("--churn", type=float, default=0.05, help="fraction of the pool replaced between ticks")
    parser.add_argument("--floor-runs", type=int, default=20)
    parser.add_argument("--quality-pools", type=int, default=20)
    parser.add_argument("--quality-n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="engine scan threads (0 = one per core)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--full-ticks", type=int, default=200, help="ticks measured with the pair cache off (full recomputation)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="directory for the PNG and JSON")
    parser.add_argument("--json", action="store_true", help="(kept for the documented command; JSON is always last)")
    args = parser.parse_args(argv)
    if min(args.n) < 2 or args.ticks < 1 or not 0 < args.churn < 1 or args.budget_s < 0:
        parser.error("--n >= 2, --ticks >= 1, 0 < --churn < 1 and --budget-s >= 0 are required")

    cores = os.cpu_count() or 1
    config = EngineConfig(threads=args.threads)
    full_config = replace(config, incremental=False)
    results: list[dict[str, Any]] = []
    samples: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
    floors: dict[tuple[int, int], float] = {}
    started = time.perf_counter()
    for dim in args.dim:
        engine = Engine(dim, config)
        warm_up(engine)
        full_engine = Engine(dim, full_config)
        warm_up(full_engine)
        market = Market.create(dim, args.seed)
        print(f"[{time.perf_counter() - started:6.1f}s] d={dim}: quality over {args.quality_pools} pools "
              f"of {args.quality_n} (exact reference takes seconds each)", file=sys.stderr, flush=True)  # fmt: skip
        quality, quality_min = measure_quality(market, engine, args.quality_pools, args.quality_n)
        for n in args.n:
            floor = measure_floor(n, dim, args.floor_runs, cores)
            lat, fresh = measure_ticks(n, market, engine, args.ticks, args.churn, args.budget_s)
            p50, p99, p999 = (float(np.percentile(lat, q)) for q in (50, 99, 99.9))
            full = measure_ticks(n, market, full_engine, args.full_ticks, args.churn, args.budget_s / 2)[0]
            f50, f999 = (float(np.percentile(full, q)) for q in (50, 99.9))
            row = {
                "n": n,
                "dim": dim,
                "ticks": int(lat.shape[0]),
                "churn": args.churn,
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "p999_ms": round(p999, 2),
                "max_ms": round(float(lat.max()), 2),
                "floor_ms": round(floor, 3),
                "ratio_p999_to_floor": round(p999 / floor, 3),
                "pair_scores_per_s": float(f"{n * (n - 1) / 2 / (p50 / 1000.0):.4g}"),
                "users_rescored_per_tick": round(float(fresh.mean()), 1),
                "full_ticks": int(full.shape[0]),
                "full_p50_ms": round(f50, 2),
                "full_p999_ms": round(f999, 2),
                "full_ratio_p999_to_floor": round(f999 / floor, 3),
                "quality_vs_exact": round(quality, 4),
                "quality_min": round(quality_min, 4),
            }
            results.append(row)
            samples[(n, dim)] = lat
            floors[(n, dim)] = floor
            print(f"[{time.perf_counter() - started:6.1f}s] n={n} d={dim}: p50 {p50:.1f} ms, p99.9 {p999:.1f} ms, "
                  f"floor {floor:.1f} ms, ratio {p999 / floor:.2f} (full recomputation: p50 {f50:.1f}, p99.9 "
                  f"{f999:.1f}, ratio {f999 / floor:.2f})", file=sys.stderr, flush=True)  # fmt: skip
        engine.close()
        full_engine.close()
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "tick_latency.png"
    write_histogram(png, samples, floors)
    report = {
        "benchmark": "tick",
        "machine": machine(),
        "engine": {**asdict(config), "threads": config.resolved_threads()},
        "histogram_png": str(png),
        "results": results,
    }
    (args.out / "tick.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
