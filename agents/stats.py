"""Outcome-stats agent: reads ``decisions`` back and keeps windowed tables of matched users and their
waits per shard (the analytics view of the tick's output; tables can only be written inside a stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, StreamT
from faust.types.tables import WindowWrapperT

from tickmatch.stream.settings import Settings
from tickmatch.stream.topics import Topics


def register(app: faust.App, settings: Settings, topics: Topics) -> tuple[AgentT[Any], dict[str, WindowWrapperT]]:
    """Attach the outcome-stats agent and its tables to ``app``."""
    window = settings.stats_window_s
    tables = {
        name: app.Table(name, default=float, partitions=settings.partitions, key_type=str, value_type=float)
        .tumbling(window, expires=window * 10)
        .relative_to_stream()
        for name in ("matched_users", "wait_sum_s")
    }

    @app.agent(topics.decisions, name="tickmatch.outcome-stats")
    async def outcome_stats(stream: StreamT[dict[str, Any]]) -> AsyncIterator[str]:
        async for decision in stream:
            shard = decision.get("shard")
            if not isinstance(shard, str):
                continue
            tables["matched_users"][shard] += 2.0
            tables["wait_sum_s"][shard] += float(decision.get("wait_a_s", 0.0)) + float(decision.get("wait_b_s", 0.0))
            yield shard

    return outcome_stats, tables
