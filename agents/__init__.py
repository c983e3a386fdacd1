"""Faust agents: thin adapters between topics and the engine (see agents.runtime for the logic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import AgentT
from faust.types.tables import WindowWrapperT

from agents import ingest, outcomes, tick
from agents.runtime import Sink, WorkerRuntime
from stream.topics import Topics


@dataclass(frozen=True, slots=True)
class Agents:
    """Handles of the registered agents and tables (tests use them with ``test_context()``)."""

    ingest: AgentT[Any]
    outcome_stats: AgentT[Any]
    tables: dict[str, WindowWrapperT]


def register_all(app: faust.App, runtime: WorkerRuntime, topics: Topics) -> Agents:
    """Register every agent, table and timer on ``app``."""
    ingest_agent, ingest_tables = ingest.register(app, runtime, topics)
    stats_agent, stats_tables = outcomes.register(app, runtime.settings, topics)
    tick.register(app, runtime)
    return Agents(ingest_agent, stats_agent, {**ingest_tables, **stats_tables})


__all__ = ["Agents", "Sink", "WorkerRuntime", "register_all"]
