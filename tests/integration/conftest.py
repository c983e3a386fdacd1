"""Integration fixtures: one embedded Tansu broker per session, one real worker process per module, and a
read-back consumer running in a background event loop so tests can wait on conditions with deadlines."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tickmatch.demo import worker_process
from tickmatch.schemas import Record, encode
from tickmatch.stream.broker import EmbeddedBroker
from tickmatch.stream.readback import Readback, Seen
from tickmatch.stream.settings import Settings
from tickmatch.stream.topics import ensure_topics

T = TypeVar("T")
READY_TIMEOUT_S = 90.0
# A switch-back experiment on one shard of the module's worker: arms switch every second (tests/…/test_live_flow).
EXPERIMENT: dict[str, Any] = {
    "id": "it-exp",
    "arms": {"learned": "current", "base": "heuristic"},
    "slice_s": 1.0,
    "washout_s": 0.1,
    "shards": ["it-x"],
    "seed": 1,
}


class Live:
    """Producer + read-back on a private loop thread; synchronous methods for tests."""

    def __init__(self, broker: EmbeddedBroker, settings: Settings) -> None:
        self.settings = settings
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-loop", daemon=True)
        self.thread.start()
        self.reader = Readback(broker.bootstrap, settings)
        self.producer: AIOKafkaProducer | None = None
        self.ready_statuses: list[int] = []
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await ensure_topics(self.broker.bootstrap, self.settings)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        await self.producer.start()
        await self.reader.start()

    def send(self, record: Record | bytes, key: str) -> None:
        """Publish to the events topic and wait for the broker's ack (ordering per key is preserved)."""
        value = record if isinstance(record, bytes) else encode(record)

        async def go() -> None:
            assert self.producer is not None
            await self.producer.send_and_wait(self.settings.topic("events"), value=value, key=key.encode())

        self.run(go())

    def send_to(self, record: Record, key: str | None, partition: int) -> None:
        """Publish to a chosen partition of events, keyed or not (a producer with another partitioner)."""

        async def go() -> None:
            assert self.producer is not None
            topic = self.settings.topic("events")
            await self.producer.send_and_wait(
                topic, value=encode(record), key=key and key.encode(), partition=partition
            )

        self.run(go())

    def wait(self, predicate: Callable[[Seen], bool], timeout: float = 60.0) -> bool:
        return self.run(self.reader.wait_for(predicate, timeout), timeout + 10)

    @property
    def seen(self) -> Seen:
        return self.reader.seen

    def close(self) -> None:
        async def stop() -> None:
            await self.reader.stop()
            if self.producer is not None:
                await self.producer.stop()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of a GET on the worker's ops server; (0, b"") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def poll_ready(port: int, timeout: float) -> list[int]:
    """The distinct successive statuses of /ready from process start until it answers 200 (0: not listening)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = get(port, "/ready")
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            break
        time.sleep(0.05)  # polling an HTTP endpoint from outside, as a healthcheck does (not a synchronisation)
    return seen


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture(scope="module")
def live(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    run = uuid.uuid4().hex[:8]
    data = tmp_path_factory.mktemp("worker")
    settings = Settings(
        broker_url=broker.url,
        app_id=f"it-{run}",
        topic_prefix=f"it-{run}.",
        partitions=2,
        tick_interval_s=0.2,
        label_grace_s=0.5,
        censor_after_s=4.0,
        orphan_grace_s=1.5,
        data_dir=str(data),
        web_port=free_port(),
        heartbeat_timeout_s=1.0,
        experiment_file=str(data / "experiment.json"),
    )
    (data / "experiment.json").write_bytes(orjson.dumps(EXPERIMENT))
    harness = Live(broker, settings)
    log = Path(data) / "worker.log"
    try:
        with worker_process(settings, log):
            harness.ready_statuses = poll_ready(settings.web_port, READY_TIMEOUT_S)
            if not harness.wait(lambda s: len(s.ticks) > 0, READY_TIMEOUT_S):
                pytest.fail(f"worker did not tick within {READY_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
            yield harness
    finally:
        harness.close()
