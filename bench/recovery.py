"""Recovery benchmark: how long a worker takes to rebuild a partition set holding ``--waiting`` waiting users.

A real worker on the embedded broker takes ``--waiting`` joins that can never pair (everyone is "m" and wants
"f"), writes its periodic snapshot, then keeps taking ``--rate`` joins/s; it is stopped (``kill -9``, then again
with SIGTERM) and a fresh worker recovers. From the workers' JSON logs: the snapshot's size and cost, and for each
restart the recovery time inside the group's assignment (snapshot load + replay of the events after it), the
waiting users restored and the events replayed; from the ticks topic, process start to the first tick that saw
everyone. JSON on the last stdout line (``--out``: ``recovery.json``).

    python -m bench.recovery --waiting 10000 --out bench/results/recovery
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from bench.chaos import Fleet, emit
from bench.logs import log_records
from tickmatch.schemas import Join, TickStats, decode_record, encode
from tickmatch.stream import topics as names
from tickmatch.stream.broker import EmbeddedBroker, stop_process
from tickmatch.stream.readers import read_from_earliest
from tickmatch.stream.settings import Settings
from tickmatch.stream.topics import ensure_topics


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Ticks:
    """Follows the ticks topic: the newest tick-stats record per worker."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap, self.settings = bootstrap, settings
        self.seen: list[TickStats] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        parts = [TopicPartition(self.settings.topic(names.TICKS), p) for p in range(self.settings.partitions)]
        async with read_from_earliest(self.bootstrap, "recovery-ticks", parts) as reader:
            async for batch in reader.batches(self.stop, timeout_ms=100):
                for rec in batch:
                    record = decode_record(rec.value or b"")
                    if isinstance(record, TickStats):
                        self.seen.append(record)

    async def until(self, worker: str, waiting: int, timeout: float) -> float | None:
        """Time (tick ``at``) of the first tick of ``worker`` with at least ``waiting`` users, or None."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for t in self.seen:
                if t.worker == worker and t.waiting >= waiting:
                    return t.at
            await asyncio.sleep(0.1)
        return None


async def produce(producer: AIOKafkaProducer, settings: Settings, start: int, n: int, shards: int) -> None:
    topic = settings.topic(names.EVENTS)
    futures = []
    for i in range(start, start + n):
        shard = f"lang-{i % shards}"
        join = Join(f"w{i}", shard, time.time(), gender="m", want_gender=("f",), country=f"c{i % 7}")
        futures.append(await producer.send(topic, value=encode(join), key=shard.encode()))
    await asyncio.gather(*futures)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.data or tempfile.mkdtemp(prefix="tickmatch-recovery-"))
    with EmbeddedBroker(root / "broker") as broker:
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            broker_url=broker.url, app_id=f"rec-{run_id}", topic_prefix=f"rec-{run_id}.", partitions=4,
            data_dir=str(root), follow_models=False, wait_ttl_s=3600.0, snapshot_interval_s=args.snapshot_interval,
            web_enabled=False,
            session_timeout_s=args.session_timeout,
        )  # fmt: skip
        await ensure_topics(broker.bootstrap, settings)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        ticks = Ticks(broker.bootstrap, settings)
        ticks.task = asyncio.create_task(ticks.run())
        fleet = Fleet(settings, root)
        fleet.spawn()
        await produce(producer, settings, 0, args.waiting, args.shards)
        total = args.waiting
        if await ticks.until("chaos-worker-1", total, 120.0) is None:
            raise SystemExit("recovery: the first worker never saw every join")
        await asyncio.sleep(args.snapshot_interval + 1.0)  # its next periodic snapshot holds everyone
        restarts = []
        for kind in ("kill", "term"):
            extra = int(args.rate * args.snapshot_interval / 2)  # events after the last snapshot: the replay
            await produce(producer, settings, total, extra, args.shards)
            total += extra
            victim = fleet.alive()[0]
            if kind == "kill":
                victim.send_signal(signal.SIGKILL)
                victim.wait()
            else:
                stop_process(victim, grace_s=20.0)
            proc = fleet.spawn()
            name = f"chaos-worker-{fleet.spawned}"
            first = await ticks.until(name, total, 120.0)
            log = root / f"worker-{fleet.spawned}.log"
            recovered = log_records(log, "partition recovered")
            restarts.append(
                {
                    "stop": kind,
                    "waiting_restored": sum(r.get("waiting_restored", 0) for r in recovered),
                    "events_replayed": sum(r.get("events_replayed", 0) for r in recovered),
                    "recovery_s": max((r.get("recovery_s", 0.0) for r in recovered), default=None),
                    "start_to_tick_with_everyone_s": round(first - fleet.starts[name], 2) if first else None,
                }
            )
            say(f"recovery: after {kind}: {restarts[-1]}")
            assert proc.poll() is None
        snaps = [r for p in sorted(root.glob("worker-*.log")) for r in log_records(p, "snapshot written")]
        big = [s for s in snaps if s.get("bytes", 0) > 0]
        fleet.stop_all()
        ticks.stop.set()
        await ticks.task
        await producer.stop()
    return {
        "benchmark": "recovery",
        "waiting": args.waiting,
        "snapshot_interval_s": args.snapshot_interval,
        "snapshot_bytes_max": max((s["bytes"] for s in big), default=0),
        "snapshot_ms_max": max((s["ms"] for s in big), default=0.0),
        "restarts": restarts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=500.0, help="joins/s produced after the snapshot")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--snapshot-interval", type=float, default=10.0)
    parser.add_argument("--session-timeout", type=float, default=Settings().session_timeout_s)
    parser.add_argument("--data", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args)), args.out, "recovery.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
