"""Off-policy evaluation from exploration logs: what would another scoring model have earned?

The learned policy pairs a random subset of each pool uniformly at random (the exploration group) and logs, per
pair, the probability ``p`` the logging rule had of choosing it. For a target model ``T`` that would have paired
the same group by its own scores, the inverse-propensity estimate of ``T``'s summed chat duration in the group is

    sum over logged pairs (i, j) that T would also choose of  duration(i, j) / p(i, j)

which is unbiased because each possible pair was logged with probability exactly ``p``. Averaged over groups it
estimates T's value without ever deploying T. The simulator also knows the true expected durations, so the
estimate can be checked against the truth (``true`` below) — that check is the point of running it here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tickmatch.market.sim import RunResult

PairScore = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.float64]]


def greedy_pairs(scores: npt.NDArray[np.float64], allowed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Disjoint pairs by descending score among allowed pairs (ties: lower indices first)."""
    m = scores.shape[0]
    iu, ju = np.triu_indices(m, k=1)
    keep = allowed[iu, ju]
    iu, ju = iu[keep], ju[keep]
    order = np.lexsort((ju, iu, -scores[iu, ju]))
    used = np.zeros(m, bool)
    out = []
    for k in order.tolist():
        a, b = int(iu[k]), int(ju[k])
        if not used[a] and not used[b]:
            used[a] = used[b] = True
            out.append((a, b))
    return out


def _key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def evaluate_off_policy(run: RunResult, targets: dict[str, PairScore], truth: PairScore) -> dict[str, dict[str, float]]:
    """IPS estimate and true value (mean chat seconds per exploration group) of each target, plus the logging
    rule's own value (``uniform``)."""
    lb = run.labels
    logged: dict[int, list[tuple[int, int, float, float]]] = {}
    for a, b, d, g, p in zip(lb.user_a, lb.user_b, lb.duration_s, lb.explored, lb.propensity, strict=True):
        if g >= 0:
            logged.setdefault(g, []).append((a, b, d, p))
    out: dict[str, dict[str, float]] = {}
    groups = [(g, run.groups[g]) for g in sorted(logged)]
    sizes = np.array([users.size for _, (users, _) in groups]) if groups else np.zeros(0)
    for name in [*targets, "uniform"]:
        estimates, trues = [], []
        for g, (users, allowed) in groups:
            if name == "uniform":  # the logging rule itself: it earned what it logged
                pairs = [(a, b) for a, b, _, _ in logged[g]]
                est = sum(d for _, _, d, _ in logged[g])
            else:
                m = users.size
                i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
                scores = targets[name](users[i.ravel()], users[j.ravel()]).reshape(m, m)
                pairs = [(int(users[a]), int(users[b])) for a, b in greedy_pairs(scores, allowed)]
                chosen = {_key(a, b) for a, b in pairs}
                est = sum(d / p for a, b, d, p in logged[g] if _key(a, b) in chosen)
            estimates.append(est)
            pa = np.array([a for a, _ in pairs], np.int64)
            pb = np.array([b for _, b in pairs], np.int64)
            trues.append(float(np.exp(truth(pa, pb)).sum()) if pairs else 0.0)
        est_arr = np.asarray(estimates)
        out[name] = {
            "ips_chat_s_per_group": float(est_arr.mean()) if est_arr.size else float("nan"),
            "ips_stderr": float(est_arr.std(ddof=1) / np.sqrt(est_arr.size)) if est_arr.size > 1 else float("nan"),
            "true_chat_s_per_group": float(np.mean(trues)) if trues else float("nan"),
        }
    out["_groups"] = {"count": float(len(groups)), "mean_size": float(sizes.mean()) if sizes.size else 0.0}
    return out
