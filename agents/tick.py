"""Tick timer: every ``tick_interval_s`` match every local shard and sweep label deadlines.

Runs on every worker (not leader-only): each worker matches only the shards whose partitions it owns.
"""

from __future__ import annotations

import logging

import faust

from tickmatch.agents.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def register(app: faust.App, runtime: WorkerRuntime) -> None:
    """Attach the tick timer to ``app``."""

    @app.timer(interval=runtime.settings.tick_interval_s, name="tickmatch.tick")  # type: ignore[untyped-decorator]
    async def tick() -> None:
        stats = await runtime.tick()
        if stats.pairs and log.isEnabledFor(logging.DEBUG):  # no record (nor its dict) built per tick otherwise
            log.debug("tick", extra={"tick_id": stats.tick_id, "pairs": stats.pairs, "ms": stats.elapsed_ms})
