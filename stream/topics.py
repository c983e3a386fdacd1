"""Topic names, their Faust declarations and idempotent creation on the broker.

Every topic has the same partition count and is keyed by shard, so a shard's events, decisions and labels
land in the same partition number: the worker owning events partition p owns everything of those shards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TopicT

from tickmatch.stream.settings import Settings

EVENTS = "events"
DECISIONS = "decisions"
LABELS = "labels"
DLQ = "events.dlq"
TICKS = "ticks"
SNAPSHOTS = "snapshots"  # partition p holds snapshots of events partition p's state (see agents.snapshot)
ALL = (EVENTS, DECISIONS, LABELS, DLQ, TICKS, SNAPSHOTS)  # ``settings.partitions`` each
MODELS = "models"  # one partition: every worker reads all of it, in publication order


@dataclass(frozen=True, slots=True)
class Topics:
    """Faust topic handles of one app."""

    events: TopicT
    decisions: TopicT
    labels: TopicT
    dlq: TopicT
    ticks: TopicT


def declare(app: faust.App, settings: Settings) -> Topics:
    """Declare the topics with raw keys and values: we encode and decode msgpack ourselves (once per record, with
    our own validation), so Faust never serializes on the hot path."""

    def topic(name: str) -> TopicT:
        return app.topic(
            settings.topic(name), key_serializer="raw", value_serializer="raw", partitions=settings.partitions
        )

    return Topics(
        events=topic(EVENTS), decisions=topic(DECISIONS), labels=topic(LABELS), dlq=topic(DLQ), ticks=topic(TICKS)
    )


def bootstrap_of(url: str) -> str:
    """``kafka://host:port[;kafka://host2:port]`` (Faust form) to aiokafka's ``host:port,host2:port``."""
    parts = [p.strip() for p in url.replace(";", ",").split(",") if p.strip()]
    return ",".join(p.split("://", 1)[-1] for p in parts)


async def ensure_topics(bootstrap: str, settings: Settings) -> list[str]:
    """Create any missing topic with the configured partition count; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{settings.app_id}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {settings.topic(name): settings.partitions for name in ALL} | {settings.topic(MODELS): 1}
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(name, num_partitions=wanted[name], replication_factor=1) for name in missing]
            )
        return missing
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
