"""Faust app factory: one function builds the app, its topics, the worker runtime and the agents."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from agents import Agents, WorkerRuntime, register_all
from schemas import DurationLabel, MatchDecision, TickStats, register_codec
from stream.settings import Settings
from stream.topics import Topics, declare

log = logging.getLogger(__name__)


class TopicSink:
    """Writes runtime outputs to Kafka topics, keyed by shard (so outputs stay co-partitioned with inputs)."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    async def decision(self, decision: MatchDecision) -> None:
        await self.topics.decisions.send(key=decision.shard.encode(), value=decision.to_dict())

    async def label(self, label: DurationLabel) -> None:
        await self.topics.labels.send(key=label.shard.encode(), value=label.to_dict())

    async def dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str, origin: str) -> None:
        headers = [("reason", reason.encode()), ("detail", detail.encode()[:1024]), ("origin", origin.encode())]
        log.warning("dead-lettered event", extra={"reason": reason, "detail": detail, "origin": origin})
        await self.topics.dlq.send(key=key, value=value if value is not None else b"", headers=headers)

    async def tick_stats(self, stats: TickStats) -> None:
        await self.topics.ticks.send(key=stats.worker.encode(), value=stats.to_dict())


@dataclass(frozen=True, slots=True)
class Built:
    """Everything the factory made; the worker runs ``app``, tests poke at the rest."""

    app: faust.App
    topics: Topics
    runtime: WorkerRuntime
    agents: Agents


def create_app(settings: Settings, **faust_overrides: Any) -> Built:
    """Build a Faust app for ``settings`` (``broker_url`` must be set: the CLI starts the embedded broker)."""
    if not settings.broker_url:
        raise ValueError("create_app needs settings.broker_url (the CLI starts the embedded broker first)")
    register_codec()
    conf: dict[str, Any] = {
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
        "web_enabled": settings.web_enabled,
        "web_port": settings.web_port,
        "web_host": "127.0.0.1",
        "datadir": f"{settings.data_dir}/faust-{settings.app_id}",
        "table_cleanup_interval": 10.0,
    }
    conf.update(faust_overrides)
    app = faust.App(settings.app_id, **conf)
    topics = declare(app, settings)
    runtime = WorkerRuntime(settings, TopicSink(topics))
    built_agents = register_all(app, runtime, topics)

    events_topic = settings.topic("events")

    if settings.follow_models:
        from agents.models import follow_models
        from stream.topics import bootstrap_of

        bootstrap = bootstrap_of(settings.broker_url)

        @app.task  # type: ignore[untyped-decorator]
        async def models() -> None:
            """Hot-swap every model version the trainer publishes (see agents.models)."""
            await follow_models(runtime, bootstrap)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        runtime.drop_partitions({tp.partition for tp in revoked if tp.topic == events_topic})

    return Built(app, topics, runtime, built_agents)
