"""The Faust app factory: every piece of worker wiring in one place.

``create_app`` builds the app and its topics and the Kafka-free :class:`WorkerRuntime`, and attaches to the app:
the worker loop (batch ingest of ``events``, ticks, batched output, snapshots, and the recovery and hand-over of
partitions in its consumer's rebalances; started first, as a dependency of the app), the outcome-stats agent and its
in-memory windows, and the model follower service. Tests pass a
recording sink and a manual clock (``tickmatch.testing``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import AgentT
from mode.utils.types.trees import NodeT

from tickmatch.agents import stats
from tickmatch.agents.follower import ModelFollower
from tickmatch.agents.ingest import WorkerLoop
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.agents.sink import FlushingSink, TopicSink
from tickmatch.stream.settings import Settings
from tickmatch.stream.topics import Topics, bootstrap_of, declare


@dataclass(frozen=True, slots=True)
class Built:
    """Everything the factory made; the worker runs ``app``, tests poke at the rest."""

    app: faust.App
    topics: Topics
    runtime: WorkerRuntime
    outcome_stats: AgentT[Any]
    loop: WorkerLoop
    stats: stats.TumblingSums


def faust_config(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours (why each: see the README's configuration and broker sections)."""
    return {
        "broker": settings.broker_url,
        "store": "memory://",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": 1,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(settings.session_timeout_s / 6, 0.5),
        "broker_rebalance_timeout": settings.session_timeout_s * 2,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        # Faust's own web server starts only after its group join and table recovery, too late to report a
        # worker that is still recovering: /ready and /metrics are served by the worker loop (agents/web.py).
        "web_enabled": False,
        "datadir": f"{settings.data_dir}/faust-{settings.app_id}",
        "table_cleanup_interval": 10.0,
    }


def create_app(
    settings: Settings,
    sink: FlushingSink | None = None,
    clock: Callable[[], float] = time.time,
    **faust_overrides: Any,
) -> Built:
    """Build a Faust app for ``settings`` (``broker_url`` must be set: the CLI starts the embedded broker).

    ``sink``: where outputs go (default: the app's Kafka topics). ``clock``: the runtime's wall clock."""
    if not settings.broker_url:
        raise ValueError("create_app needs settings.broker_url (the CLI starts the embedded broker first)")
    config = faust_config(settings) | faust_overrides
    # Faust creates its data directory without parents: a fresh TICKMATCH_DATA_DIR (an image's, a new checkout's)
    # would crash the worker at start with FileNotFoundError.
    Path(config["datadir"]).parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **config)
    topics = declare(app, settings)
    topic_sink = TopicSink(settings) if sink is None else None
    out: FlushingSink = sink if sink is not None else topic_sink  # type: ignore[assignment]
    runtime = WorkerRuntime(settings, out, clock)
    if topic_sink is not None:
        topic_sink.partition_of = runtime.shard_partition.get
    bootstrap = bootstrap_of(settings.broker_url)

    # A dependency of the app, not an ``@app.service``: Faust starts its services only after its own consumer group
    # joined and its tables recovered (4-11 s on Tansu after a kill -9, measured), and the worker loop needs neither:
    # started first, its own group join and recovery run while Faust's do.
    loop_service = WorkerLoop(runtime, out, bootstrap)
    app.add_dependency(loop_service)

    stats_agent, stats_sums = stats.register(app, settings, topics)
    if settings.follow_models:

        @app.service
        class Follower(ModelFollower):
            """This app's model follower, bound to its runtime and broker."""

            def __init__(self, *, beacon: NodeT[Any] | None = None, loop: asyncio.AbstractEventLoop | None = None):
                super().__init__(runtime, bootstrap, beacon=beacon, loop=loop)

    return Built(app, topics, runtime, stats_agent, loop_service, stats_sums)
