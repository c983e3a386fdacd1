"""What an operator watches: readiness and Prometheus metrics of one worker, served by Faust's web server.

``/ready`` answers 503 while the worker is starting, inside a rebalance or recovering a partition, or has not
ticked for three intervals, and 200 when it ticks (a compose healthcheck or a load balancer reads it).
``/metrics`` is Prometheus' text format, written here rather than with a client library: a dozen series of
numbers the worker already keeps do not earn a dependency.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from tickmatch.agents.heap import Freezer
from tickmatch.agents.runtime import WorkerRuntime

TICK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WorkerLoop(Protocol):
    """What these views read of the worker loop (``agents.ingest.WorkerLoop``; a protocol keeps imports one-way)."""

    runtime: WorkerRuntime
    stats: Any
    running: bool
    rebalancing: bool
    last_tick: float | None
    freezer: Freezer

    def lag(self) -> dict[int, int]: ...


def readiness(loop: WorkerLoop) -> tuple[bool, str]:
    """(ready, why) of a worker loop."""
    if not loop.running:
        return False, "starting"
    if loop.rebalancing:
        return False, "rebalancing or recovering partitions"
    stale = max(3 * loop.runtime.settings.tick_interval_s, 2.0)
    if loop.last_tick is None or time.monotonic() - loop.last_tick > stale:
        return False, "not ticking"
    return True, "ticking"


def prometheus(loop: WorkerLoop) -> str:
    """The worker's metrics in Prometheus' text exposition format (version 0.0.4)."""
    runtime, stats = loop.runtime, loop.stats
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP tickmatch_{name} {help_}")
        lines.append(f"# TYPE tickmatch_{name} {kind}")
        lines.extend(f"tickmatch_{name}{labels} {value:g}" for labels, value in samples)

    ready, _ = readiness(loop)
    metric("ready", "gauge", "1 when the worker ticks, 0 while starting, rebalancing or recovering.", [("", ready)])
    cumulative = [(f'{{le="{b:g}"}}', float(c)) for b, c in zip(TICK_BUCKETS_S, stats.tick_buckets, strict=True)]
    cumulative.append(('{le="+Inf"}', float(stats.ticks)))
    lines.append("# HELP tickmatch_tick_seconds Time of one tick (matching every local shard and building outputs).")
    lines.append("# TYPE tickmatch_tick_seconds histogram")
    lines.extend(f"tickmatch_tick_seconds_bucket{labels} {value:g}" for labels, value in cumulative)
    lines.append(f"tickmatch_tick_seconds_sum {stats.tick_seconds_sum:g}")
    lines.append(f"tickmatch_tick_seconds_count {stats.ticks}")
    metric(
        "waiting_users", "gauge", "Users waiting, per shard.",
        [(f'{{shard="{_label(s)}"}}', float(len(p))) for s, p in sorted(runtime.pools.items())],
    )  # fmt: skip
    counters = runtime.counters
    metric("decisions_total", "counter", "Match decisions made.", [("", counters.get("decisions", 0))])
    metric("labels_total", "counter", "Duration labels emitted.", [("", counters.get("labels", 0))])
    metric("events_total", "counter", "Input events consumed.", [("", runtime.events)])
    metric(
        "events_rerouted_total", "counter", "Events re-published to the partition owning their shard.",
        [("", counters.get("events.rerouted", 0))],
    )  # fmt: skip
    metric(
        "events_unknown_fields_total", "counter", "Events carrying fields this version ignores.",
        [("", counters.get("events.unknown_fields", 0))],
    )  # fmt: skip
    metric(
        "dead_letters_total", "counter", "Events sent to the dead-letter topic, by reason.",
        [(f'{{reason="{_label(k[4:])}"}}', v) for k, v in sorted(counters.items()) if k.startswith("dlq.")],
    )  # fmt: skip
    metric(
        "consumer_lag", "gauge", "Events not applied yet, per owned events partition (high watermark - position).",
        [(f'{{partition="{p}"}}', float(lag)) for p, lag in sorted(loop.lag().items())],
    )  # fmt: skip
    metric("model_info", "gauge", "The model version the next tick uses.", [(f'{{version="{_label(runtime.model_version)}"}}', 1.0)])  # fmt: skip  # noqa: E501
    last = stats.recovered[-1] if stats.recovered else None
    metric(
        "recovery_seconds", "gauge", "Duration of the last partition recovery.", [("", last.seconds if last else 0.0)]
    )
    metric(
        "events_replayed_total", "counter", "Events replayed while recovering partitions.",
        [("", float(sum(r.events_replayed for r in stats.recovered)))],
    )  # fmt: skip
    metric(
        "tail_events_total", "counter",
        "Events recovered partitions had after their last decision, applied by the loop while it ticked.",
        [("", float(sum(r.tail_events for r in stats.recovered)))],
    )  # fmt: skip
    metric(
        "catching_up_partitions", "gauge", "Recovered partitions whose log tail is still being applied.",
        [("", float(len(runtime.catch_up)))],
    )  # fmt: skip
    metric("snapshots_total", "counter", "Checkpoints written (every owned partition each).", [("", stats.snapshots)])
    metric("gc_frozen_objects", "gauge", "Objects frozen out of GC passes (see agents.heap).",
           [("", float(loop.freezer.frozen()))])  # fmt: skip
    metric("send_errors_total", "counter", "Outputs the producer failed to deliver.", [("", stats.send_errors)])
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
