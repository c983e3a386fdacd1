"""Analytics over the outcome stream: what the events, decisions and labels of a run say, without Kafka.

Kept per tumbling window (``window_s``, by event time: a decision's ``decided_at``, a join's ``ts``) and per
shard, arm and model version: joins, matched users, wait times, chat durations (uncensored labels), censored
labels; per user: their joins and chats, for the return rate and the aha funnel (``funnel``); per switch-back
experiment: the read-out of its cells (``readout``). ``tickmatch analytics`` feeds it from its own consumer group
and serves :meth:`Analytics.prometheus` on ``/metrics``; ``tickmatch report`` feeds it the topics of a run and
draws it.

User ids never leave it: every id is replaced on the way in by a keyed hash (``TICKMATCH_ANALYTICS_KEY``), so
what it keeps, serves and draws is pseudonymous, and two runs with the same key can still be joined.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import accumulate

from tickmatch.experiments.funnel import Scored, score_conditions
from tickmatch.experiments.readout import Readout, cells_of, switchback_effect
from tickmatch.schemas import DurationLabel, Join, MatchDecision, Record

WAIT_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
CHAT_BUCKETS_S = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
Key = tuple[int, str, str, str]  # (window, shard, arm or "-", model version)


def pseudonym(key: bytes, user: str) -> str:
    """A stable, keyed, one-way name for a user id (BLAKE2b keyed hash, 16 hex digits)."""
    return hashlib.blake2b(user.encode(), key=key[:64], digest_size=8).hexdigest()


@dataclass(slots=True)
class Histogram:
    """Count, sum and bucket counts of a value: what /metrics and the report need, in constant memory."""

    bounds: tuple[float, ...]
    n: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=list)  # non-cumulative, one per bound, then the overflow

    def add(self, value: float) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)
        self.n += 1
        self.total += value
        self.buckets[bisect_left(self.bounds, value)] += 1

    def merge(self, other: Histogram) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)
        self.n += other.n
        self.total += other.total
        for i, count in enumerate(other.buckets):
            self.buckets[i] += count

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


@dataclass(slots=True)
class Cell:
    """What one (window, shard, arm, model) saw."""

    decisions: int = 0
    waits: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS_S))
    durations: Histogram = field(default_factory=lambda: Histogram(CHAT_BUCKETS_S))  # uncensored labels
    censored: int = 0


class Analytics:
    """Aggregates records (in any order) into windows; reads are computed on demand."""

    def __init__(self, key: bytes, window_s: float = 60.0) -> None:
        if not key:
            raise ValueError("an analytics key is required (it pseudonymises user ids)")
        self.key, self.window_s = key, window_s
        self.cells: dict[Key, Cell] = defaultdict(Cell)
        self.joins: dict[tuple[int, str], int] = defaultdict(int)  # (window, shard) -> joins
        self.user_joins: dict[str, list[float]] = defaultdict(list)
        self.user_chats: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._pairs: dict[str, tuple[str, str, float]] = {}  # match id -> (pseudonym a, pseudonym b, decided at)
        # experiment -> (shard, slice, arm, washout, duration) of each of its labels: the read-out's rows
        self._experiment_rows: dict[str, list[tuple[str, int, str, bool, float]]] = defaultdict(list)
        self.latest = 0.0

    def window(self, t: float) -> int:
        return math.floor(t / self.window_s)

    def add(self, record: Record) -> None:
        """Take one record of any topic (joins, decisions, labels count; other records are ignored)."""
        if isinstance(record, Join):
            self.joins[(self.window(record.ts), record.shard)] += 1
            self.user_joins[pseudonym(self.key, record.user_id)].append(record.ts)
            self.latest = max(self.latest, record.ts)
        elif isinstance(record, MatchDecision):
            cell = self.cells[self._key(record.decided_at, record.shard, record.arm, record.model_version)]
            cell.decisions += 1
            cell.waits.add(record.wait_a_s)
            cell.waits.add(record.wait_b_s)
            self._pairs[record.match_id] = (
                pseudonym(self.key, record.user_a), pseudonym(self.key, record.user_b), record.decided_at
            )  # fmt: skip
            self.latest = max(self.latest, record.decided_at)
        elif isinstance(record, DurationLabel):
            cell = self.cells[self._key(record.decided_at, record.shard, record.arm, record.model_version)]
            if record.censored:
                cell.censored += 1
            else:
                cell.durations.add(record.duration_s)
            if record.experiment and record.arm and record.slice_id is not None:
                self._experiment_rows[record.experiment].append(
                    (record.shard, record.slice_id, record.arm, bool(record.washout), record.duration_s)
                )
            pair = self._pairs.pop(record.match_id, None)  # one label per match: the pair is not needed again
            if pair is not None:
                for user in pair[:2]:
                    self.user_chats[user].append((pair[2], record.duration_s))

    def _key(self, t: float, shard: str, arm: str | None, model: str) -> Key:
        return (self.window(t), shard, arm or "-", model)

    # -- reads ---------------------------------------------------------------------------------------------
    def match_rate(self, window: int, shard: str) -> float | None:
        """Matched users / joins of one shard in one window (None without joins)."""
        joins = self.joins.get((window, shard), 0)
        matched = 2 * sum(c.decisions for (w, s, _, _), c in self.cells.items() if w == window and s == shard)
        return matched / joins if joins else None

    def return_rate(self, window: int) -> float | None:
        """Of the users who chatted in ``window``, the share who joined again in the next one."""
        lo, hi = window * self.window_s, (window + 1) * self.window_s
        chatted = {u for u, chats in self.user_chats.items() if any(lo <= t < hi for t, _ in chats)}
        if not chatted:
            return None
        back = sum(1 for u in chatted if any(hi <= t < hi + self.window_s for t in self.user_joins.get(u, ())))
        return back / len(chatted)

    def readouts(self) -> dict[str, Readout]:
        """The read-out of every two-arm experiment seen in the labels (the first arm in name order is treatment)."""
        out: dict[str, Readout] = {}
        for name, rows in sorted(self._experiment_rows.items()):
            arms = sorted({arm for _, _, arm, _, _ in rows})
            if len(arms) != 2:
                continue
            try:
                out[name] = switchback_effect(cells_of(rows), arms[0], arms[1])
            except ValueError:
                continue  # an arm without two cells yet
        return out

    def funnel(self) -> list[Scored]:
        """The aha funnel over the users seen (``funnel.GRID``, best first)."""
        return score_conditions(self.user_chats, self.user_joins, observed_until=self.latest)

    def prometheus(self) -> str:
        """Prometheus text of the figures (cumulative over windows; rates of the last complete window)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP tickmatch_analytics_{name} {help_}")
            lines.append(f"# TYPE tickmatch_analytics_{name} {kind}")
            lines.extend(f"tickmatch_analytics_{name}{labels} {value:g}" for labels, value in samples)

        groups: dict[tuple[str, str, str], Cell] = defaultdict(Cell)
        for (_, shard, arm, model), cell in self.cells.items():
            g = groups[(shard, arm, model)]
            g.decisions += cell.decisions
            g.waits.merge(cell.waits)
            g.durations.merge(cell.durations)
            g.censored += cell.censored
        tag = {k: f'shard="{k[0]}",arm="{k[1]}",model="{k[2]}"' for k in groups}
        metric("decisions_total", "counter", "Decisions.", [(f"{{{tag[k]}}}", g.decisions) for k, g in groups.items()])
        metric("censored_labels_total", "counter", "Censored labels.",
               [(f"{{{tag[k]}}}", g.censored) for k, g in groups.items()])  # fmt: skip
        for name, attr, help_ in (
            ("wait_seconds", "waits", "Wait of matched users."),
            ("chat_seconds", "durations", "Chat duration (uncensored labels)."),
        ):
            samples: list[tuple[str, float]] = []
            for k, g in groups.items():
                hist: Histogram = getattr(g, attr)
                counts = hist.buckets or [0] * (len(hist.bounds) + 1)
                for bound, cumulative in zip(hist.bounds, accumulate(counts), strict=False):
                    samples.append((f'_bucket{{{tag[k]},le="{bound:g}"}}', cumulative))
                samples.append((f'_bucket{{{tag[k]},le="+Inf"}}', hist.n))
                samples.append((f"_sum{{{tag[k]}}}", hist.total))
                samples.append((f"_count{{{tag[k]}}}", hist.n))
            metric(name, "histogram", help_, samples)
        shards = sorted({s for _, s in self.joins})
        joined = [(f'{{shard="{s}"}}', float(sum(n for (_, x), n in self.joins.items() if x == s))) for s in shards]
        metric("joins_total", "counter", "Joins.", joined)
        last = self.window(self.latest) - 1
        rates = [(s, self.match_rate(last, s)) for s in shards]
        metric("match_rate", "gauge", "Matched users / joins, last complete window.",
               [(f'{{shard="{s}"}}', r) for s, r in rates if r is not None])  # fmt: skip
        back = self.return_rate(last - 1)
        metric("return_rate", "gauge", "Users who chatted in a window and joined in the next (last complete pair).",
               [("", back)] if back is not None else [])  # fmt: skip
        effects = self.readouts()
        samples = []
        for name, r in effects.items():
            samples += [(f'{{experiment="{name}",bound="estimate"}}', r.effect),
                        (f'{{experiment="{name}",bound="ci95_low"}}', r.ci95[0]),
                        (f'{{experiment="{name}",bound="ci95_high"}}', r.ci95[1])]  # fmt: skip
        metric("experiment_effect_seconds", "gauge", "Switch-back effect (first arm minus second) on chat seconds.",
               samples)  # fmt: skip
        arm_means = [(f'{{experiment="{name}",arm="{arm}"}}', mean) for name, r in effects.items()
                     for arm, mean in r.means.items()]  # fmt: skip
        metric("experiment_arm_mean_seconds", "gauge", "Per-arm mean chat seconds (cells, washout dropped).", arm_means)
        top = self.funnel()[:3] if self.user_chats else []
        metric("aha_precision", "gauge", "Best aha conditions: P(return | met).",
               [(f'{{condition="{s.condition.name}"}}', s.precision) for s in top])  # fmt: skip
        metric("aha_recall", "gauge", "Best aha conditions: P(met | return).",
               [(f'{{condition="{s.condition.name}"}}', s.recall) for s in top])  # fmt: skip
        return "\n".join(lines) + "\n"
