"""Consumer-group membership on Tansu: why a stopping worker there does not send LeaveGroup.

What goes wrong (reproduced with three bare aiokafka consumers on the embedded Tansu 0.6, no tickmatch code): A
leads the group; B joins; C joins about when A stops with a LeaveGroup. Tansu removes A from the members but keeps
A's id as the group's leader, so the next generation (B and C) waits for a SyncGroup from a leader that is gone:
B and C rejoin every 6 s and get the same generation for 30-55 s. In ``bench.chaos`` (kill -9 and SIGTERM of
workers every few seconds) this wedged the events group for over 90 s: 25,176 waiting users never matched and
10 restarted workers never decided (3 of 3 runs of one build, 1 of 2 of another; which run hits it depends on
where a SIGTERM falls in a rebalance). The same three consumers with A stopping *without* LeaveGroup: Tansu
expires A after the session timeout and B or C leads the next generation ~6 s later, every time.

So on Tansu a stopping worker skips LeaveGroup: its partitions move after the session timeout
(``TICKMATCH_SESSION_TIMEOUT_S``, 4 s by default) instead of at once, as after a kill -9. On Apache Kafka the
worker leaves as usual (its coordinator re-elects a leader), so a SIGTERM hands partitions over immediately.
Tansu is recognised by the cluster id it reports (``tansu_cluster`` unless configured otherwise).
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaClient, AIOKafkaConsumer
from aiokafka.protocol.metadata import MetadataRequest

log = logging.getLogger(__name__)

TANSU_CLUSTER_PREFIX = "tansu"


async def cluster_id(client: AIOKafkaClient) -> str | None:
    """The cluster id a broker of ``client`` reports (aiokafka's metadata keeps none), or None if none answered."""
    for broker in client.cluster.brokers():
        try:
            response = await client.send(broker.nodeId, MetadataRequest([], False))
        except Exception as exc:  # connection errors of several kinds: try the next broker
            log.debug("metadata request failed", extra={"node": broker.nodeId, "error": str(exc)})
            continue
        value = getattr(response, "cluster_id", None)
        return str(value) if value else None
    return None


def is_tansu(cluster: str | None) -> bool:
    """Whether a cluster id is Tansu's (see the module docstring for why it matters)."""
    return bool(cluster) and str(cluster).lower().startswith(TANSU_CLUSTER_PREFIX)


def forget_membership(consumer: AIOKafkaConsumer) -> None:
    """Make the next ``consumer.stop()`` close without a LeaveGroup: the broker expires the member after its
    session timeout instead. aiokafka 0.14 sends LeaveGroup on close only when its generation is above 0 (pinned
    <0.15 in pyproject); its coordinator exists once the consumer has started with a group."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and hasattr(coordinator, "generation"):
        coordinator.generation = -1
