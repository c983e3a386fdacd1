"""Group membership on the embedded broker: it is recognised as Tansu, and a member told to forget its membership
stops without a LeaveGroup (Tansu would keep a departed leader as the group's leader: ``stream.groups``)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tickmatch.stream.broker import EmbeddedBroker
from tickmatch.stream.groups import cluster_id, forget_membership, is_tansu


async def test_the_embedded_broker_reports_a_tansu_cluster_id(broker: EmbeddedBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        cluster = await cluster_id(producer.client)
    finally:
        await producer.stop()
    assert is_tansu(cluster), cluster
    assert not is_tansu("Some-Kafka-Cluster") and not is_tansu(None)


async def leave_sent(broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture, forget: bool) -> bool:
    """Join a group of one, stop (after :func:`forget_membership` if ``forget``); whether aiokafka sent LeaveGroup."""
    topic = f"groups-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    for partition in range(2):  # creates the topic with 2 partitions: one for each member
        await producer.send_and_wait(topic, b"x", partition=partition)
    await producer.stop()
    members = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=topic,
            session_timeout_ms=4000,
            heartbeat_interval_ms=400,
        )
        for _ in range(2)
    ]
    for member in members:  # two members: Tansu numbers generations from 0, and aiokafka leaves only above 0
        await member.start()
    first, second = members
    async with asyncio.timeout(60):  # a group that never forms fails the test instead of hanging it
        while not first.assignment() or not second.assignment() or first._coordinator.generation < 1:
            await asyncio.gather(first.getmany(timeout_ms=200), second.getmany(timeout_ms=200))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aiokafka.consumer.group_coordinator"):
        if forget:
            forget_membership(first)
        await first.stop()
    await second.stop()
    return any("LeaveGroup" in record.getMessage() for record in caplog.records)


async def test_a_member_that_forgot_its_membership_stops_without_leave_group(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    assert await leave_sent(broker, caplog, forget=False)  # the control: aiokafka leaves by default
    assert not await leave_sent(broker, caplog, forget=True)
