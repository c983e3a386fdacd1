"""Independent read-back of the engine's topics, from the earliest offset, outside any consumer group.

Used by the demo summary, the double-booking audit and the integration tests: it sees exactly what a
downstream consumer sees. It never asks for LATEST offsets (unreliable on Tansu after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from tickmatch.schemas import DecodeError, DurationLabel, Join, MatchDecision, ModelUpdate, TickStats, decode_record
from tickmatch.schemas.codec import MAX_EVENT_BYTES, MAX_MODEL_BYTES
from tickmatch.stream import topics as names
from tickmatch.stream.readers import EarliestReader, read_from_earliest
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    origin: str


@dataclass(slots=True)
class Seen:
    """Everything read back so far."""

    events: int = 0
    joins: list[Join] = field(default_factory=list)
    decisions: list[MatchDecision] = field(default_factory=list)
    labels: list[DurationLabel] = field(default_factory=list)
    dlq: list[DeadLetter] = field(default_factory=list)
    ticks: list[TickStats] = field(default_factory=list)
    models: list[ModelUpdate] = field(default_factory=list)
    undecodable_outputs: int = 0


class Readback:
    """Consume events, decisions, labels, the DLQ, tick stats and model versions into :class:`Seen`; waiters
    are notified on every batch so callers wait on conditions, never on sleeps."""

    def __init__(
        self,
        bootstrap: str,
        settings: Settings,
        on_decision: Callable[[MatchDecision], None] | None = None,
    ) -> None:
        self.settings = settings
        self.seen = Seen()
        self._on_decision = on_decision
        self._bootstrap = bootstrap
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._topic_kind = {settings.topic(n): n for n in (*names.ALL, names.MODELS)}

    async def start(self) -> None:
        """Assign every partition of every topic and start reading from the beginning."""
        parts = [TopicPartition(self.settings.topic(names.MODELS), 0)]
        for topic in names.ALL:
            for p in range(self.settings.partitions):
                parts.append(TopicPartition(self.settings.topic(topic), p))
        reader = await self._stack.enter_async_context(
            read_from_earliest(self._bootstrap, f"{self.settings.app_id}-readback", parts)
        )
        self._task = asyncio.create_task(self._run(reader), name="readback")

    async def _run(self, reader: EarliestReader) -> None:
        async for records in reader.batches():
            for rec in records:
                self._take(self._topic_kind[rec.topic], rec.key, rec.value, rec.headers)
            async with self._changed:
                self._changed.notify_all()

    def _take(self, kind: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        seen = self.seen
        if kind == names.DLQ:
            hdr = {k: v.decode(errors="replace") for k, v in (headers or ())}  # type: ignore[attr-defined]
            seen.dlq.append(
                DeadLetter(key, value or b"", hdr.get("reason", ""), hdr.get("detail", ""), hdr.get("origin", ""))
            )
            return
        if kind == names.EVENTS:
            seen.events += 1
        if value is None:
            return
        try:
            record = decode_record(value, limit=MAX_MODEL_BYTES if kind == names.MODELS else MAX_EVENT_BYTES)
        except DecodeError:
            if kind != names.EVENTS:
                seen.undecodable_outputs += 1
            return
        if isinstance(record, Join):
            seen.joins.append(record)
        elif isinstance(record, MatchDecision):
            seen.decisions.append(record)
            if self._on_decision is not None:
                self._on_decision(record)
        elif isinstance(record, DurationLabel):
            seen.labels.append(record)
        elif isinstance(record, TickStats):
            seen.ticks.append(record)
        elif isinstance(record, ModelUpdate):
            seen.models.append(record)

    async def wait_for(self, predicate: Callable[[Seen], bool], timeout: float) -> bool:
        """Wait until ``predicate(seen)`` holds, re-checked after every batch; False when the deadline passes."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.seen)), timeout)
                return True
            except TimeoutError:
                return predicate(self.seen)

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._stack.aclose()

    async def __aenter__(self) -> Readback:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
