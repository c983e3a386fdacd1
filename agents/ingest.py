"""Queue agent: consumes raw ``events``, validates them, updates the shard pools and windowed arrival /
departure tables. Malformed messages are dead-lettered by the runtime; the agent never raises on input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import AgentT, StreamT
from faust.types.tables import WindowWrapperT

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.schemas import Join, Leave
from tickmatch.stream.topics import Topics


def register(app: faust.App, runtime: WorkerRuntime, topics: Topics) -> tuple[AgentT[Any], dict[str, WindowWrapperT]]:
    """Attach the ingest agent and its windowed tables to ``app``."""
    window = runtime.settings.stats_window_s
    tables = {
        name: app.Table(name, default=int, partitions=runtime.settings.partitions, key_type=str, value_type=int)
        .tumbling(window, expires=window * 10)
        .relative_to_stream()
        for name in ("arrivals", "departures")
    }

    @app.agent(topics.events, name="tickmatch.ingest")
    async def ingest(stream: StreamT[bytes]) -> AsyncIterator[str]:
        async for event in stream.events():
            msg = event.message
            parsed = await runtime.on_message(
                msg.key, event.value, msg.partition, f"{msg.topic}/{msg.partition}/{msg.offset}"
            )
            if isinstance(parsed, Join):
                tables["arrivals"][parsed.shard] += 1
            elif isinstance(parsed, Leave):
                tables["departures"][parsed.shard] += 1
            yield "ok" if parsed is not None else "dead-lettered"

    return ingest, tables
