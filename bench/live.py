"""Live worker benchmark: the embedded broker, one real ``tickmatch worker`` process, real topics.

Three modes (all by default):

- **backlog**: ``--events`` events (70 % join, 20 % leave of a waiting user, 10 % profile-update, over
  ``--shards`` shards) are produced before the worker starts; the worker's rate is all events over the time from
  the moment it started reading them to the end of the matching work of the first tick whose tick-stats record
  (``events``: cumulative input events applied) counts them all (by then all are applied and matched; the start of
  the tick after it is reported too, as ``*_second_tick``). It starts reading them in its
  recovery (a fresh worker reads its partitions' logs first: the start is the "partition recovered" log line's time
  minus its ``recovery_s``; the events after the last decision, here all of them, it then applies while ticking),
  or, where recovery read none, after the last tick that had seen no event (conservative by up to one tick
  interval), so use a backlog of many seconds of work.
  The reference is a plain aiokafka consumer that reads and msgpack-decodes the same topic, three times, right
  after the worker. All that is repeated ``--backlog-runs`` times (3; fresh topics and worker each): the worker's
  rate is the median run, ``ratio_to_plain`` = that / the median of all plain reads (``ratio_per_run``: each run
  against its own reads; ``ratio_to_fastest_plain``: against the fastest read).
- **burst** (``--mode burst``): ``--burst-base`` joins/s, ten times that for ``--burst-seconds``, then the base
  again, a fifth of the users leaving 0-2 s after their join: ``matched_after_leave`` counts decisions whose tick
  had applied a leave of one of its users (from the decision's ``events_offset``), with latency during the burst.
- **steady**: joins offered at each rate of ``--rates`` for ``--seconds`` (a fresh worker and topics per rate).
  Decision latency of a pair = the decision record's Kafka timestamp minus the moment the broker acknowledged the
  later of the pair's two joins (both clocks are this machine's). Also: the worker's lag when the offer stops (joins
  produced minus joins it had consumed at its next tick, in ticks of offered load), tick p99 from the ``ticks``
  topic, and late ticks (a tick that started more than 1.5 intervals after the previous one).

The last stdout line is the JSON; ``--out`` gets ``live.json`` and ``live_latency.png`` (latency against offered
rate). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.logs import log_records
from tickmatch.demo import service_process, worker_process
from tickmatch.schemas import Join, Leave, ProfileUpdate, encode
from tickmatch.stream import topics as names
from tickmatch.stream.broker import EmbeddedBroker
from tickmatch.stream.readers import read_from_earliest
from tickmatch.stream.settings import Settings
from tickmatch.stream.topics import ensure_topics

READY_TIMEOUT_S = 120.0
# The load generator's producer linger. On the embedded broker (Tansu, memory engine) every fetch costs time in
# proportion to the record batches already in the partition: a plain producer + consumer at 5,000 records/s, no
# worker involved, saw produce -> fetch p99 go 14 ms -> 4.3 s within 100 s with a 2 ms linger (~500 batches/s)
# and 32 -> 118 ms with 20 ms (README, Facts we rely on). Latency is measured from the join's acknowledgement, so
# the linger (before it) is not part of any figure.
OFFER_LINGER_MS = 20


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def settings_for(broker: EmbeddedBroker, data: Path, args: argparse.Namespace) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        snapshot_interval_s=args.snapshot_interval,
        broker_url=broker.url,
        app_id=f"bench-{run}",
        topic_prefix=f"bench-{run}.",
        partitions=args.partitions,
        data_dir=str(data),
        follow_models=False,  # no trainer here: nothing to follow
        web_enabled=False,
        wait_ttl_s=3600.0,
    )


@dataclass(slots=True)
class Ticks:
    """Tick-stats records of the worker, as read back from the ticks topic."""

    at: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    elapsed_ms: list[float] = field(default_factory=list)


class Reader:
    """Reads ``ticks`` (tick-stats only) and, optionally, ``decisions`` (pairs with their Kafka timestamps)."""

    def __init__(self, bootstrap: str, settings: Settings, decisions: bool) -> None:
        self.ticks = Ticks()
        self.pairs: list[tuple[str, str, float]] = []  # (user_a, user_b, record timestamp s)
        self.offsets: list[tuple[int, int]] = []  # (partition, events_offset) of each decision, as pairs
        self._bootstrap, self._settings, self._decisions = bootstrap, settings, decisions
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        parts = [TopicPartition(self._settings.topic(names.TICKS), p) for p in range(self._settings.partitions)]
        if self._decisions:
            topic = self._settings.topic(names.DECISIONS)
            parts += [TopicPartition(topic, p) for p in range(self._settings.partitions)]
        ready = asyncio.Event()

        async def run() -> None:
            async with read_from_earliest(self._bootstrap, "bench-reader", parts) as reader:
                ready.set()
                async for records in reader.batches(timeout_ms=50):
                    for rec in records:
                        obj = msgpack.unpackb(rec.value)
                        kind = obj.get("type")
                        if kind == "tick-stats":
                            self.ticks.at.append(obj["at"])
                            self.ticks.events.append(obj.get("events", 0))
                            self.ticks.elapsed_ms.append(obj["elapsed_ms"])
                        elif kind == "match-decision":
                            self.pairs.append((obj["user_a"], obj["user_b"], rec.timestamp / 1000.0))
                            self.offsets.append((rec.partition, obj.get("events_offset", -1)))

        self._task = asyncio.create_task(run())
        await ready.wait()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` (it reads what the reader task appends) until true or the deadline."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)  # a poll interval of a benchmark harness, not test synchronisation
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


PLAIN_READS = 3
SECOND = "worker_events_per_s_second_tick"


def backlog_events(n: int, shards: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``n`` encoded (key, value) events: 70 % join, 20 % leave of a waiting user, 10 % profile-update."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, bytes]] = []
    waiting: list[tuple[str, str]] = []
    now = time.time()  # events carry plausible times (the worker dead-letters a ts a day off its clock)
    for i in range(n):
        shard = f"lang-{i % shards}"
        r = rng.random()
        if r < 0.7 or not waiting:
            user = f"b{i}"
            waiting.append((user, shard))
            signals = tuple(float(x) for x in rng.standard_normal(8).round(3))
            want = ("f",) if i % 5 == 0 else ()
            record: Join | Leave | ProfileUpdate = Join(
                user, shard, now, country=f"c{i % 20}", language="en", gender="fm"[i % 2], age_band="18-24",
                signals=signals, want_gender=want,
            )  # fmt: skip
        elif r < 0.9:
            user, shard = waiting.pop(int(rng.integers(len(waiting))))
            record = Leave(user, shard, now)
        else:
            user, shard = waiting[int(rng.integers(len(waiting)))]
            record = ProfileUpdate(user, shard, now, signals=(0.5, 0.1))
        out.append((shard.encode(), encode(record)))
    return out


async def produce_all(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(events) / (time.perf_counter() - started)


async def plain_rate(bootstrap: str, settings: Settings, n: int) -> float:
    """A plain aiokafka consumer + msgpack decode of the whole events topic (the reference)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic(names.EVENTS), p) for p in range(settings.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        started = time.perf_counter()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for rec in records:
                    msgpack.unpackb(rec.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def run_backlog(broker: EmbeddedBroker, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--backlog-runs`` runs (fresh topics and worker each), each followed by its plain reads; the figures are
    medians over runs and over all plain reads. One run's rate moved by tens of percent with this VM's phases
    (worker 24,000-33,000/s, plain 170,000-340,000/s within minutes): a single worker run against three plain
    reads made the ratio a coin toss near its bound. Every run's figures are reported as well."""
    runs = [await backlog_run(broker, data, args) for _ in range(args.backlog_runs)]
    rates = [r["worker_events_per_s"] for r in runs]
    plains = sorted(p for r in runs for p in r["plain_reads_per_s"])
    rate, plain = float(np.median(rates)), float(np.median(plains))
    say(f"backlog: worker {rate:,.0f} events/s (median of {rates}), plain {plain:,.0f}/s ({rate / plain:.3f})")
    return {
        "events": runs[0]["events"],
        "runs": len(runs),
        "worker_events_per_s": round(rate),
        "worker_runs_per_s": rates,
        "plain_events_per_s": round(plain),
        "plain_reads_per_s": plains,
        "ratio_to_plain": round(rate / plain, 4),
        "ratio_per_run": [r["ratio_to_plain"] for r in runs],
        "ratio_to_fastest_plain": round(rate / plains[-1], 4),
        "worker_seconds": round(float(np.median([r["worker_seconds"] for r in runs])), 2),
        SECOND: round(float(np.median([r[SECOND] for r in runs]))),
        "tick_p99_ms": max(r["tick_p99_ms"] for r in runs),
    }


async def backlog_run(broker: EmbeddedBroker, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One backlog run: produce, start a worker, time it, stop it, read the same topic plainly."""
    settings = settings_for(broker, data, args)
    await ensure_topics(broker.bootstrap, settings)
    events = backlog_events(args.events, args.shards, args.seed)
    produced = await produce_all(broker.bootstrap, settings.topic(names.EVENTS), events)
    say(f"backlog: {len(events)} events produced ({produced:,.0f}/s); starting the worker")
    reader = Reader(broker.bootstrap, settings, decisions=False)
    await reader.start()
    t = reader.ticks
    log_path = data / f"worker-{settings.app_id}.log"
    try:
        with service_process(settings, log_path, "worker", "--loglevel", "info"):  # info: its recovery lines
            # all consumed, and one more tick: a tick applies everything consumed before it
            done = await reader.until(lambda: sum(e >= len(events) for e in t.events) >= 2, READY_TIMEOUT_S)
            if not done:
                raise SystemExit(f"backlog: the worker consumed {t.events[-1] if t.events else 0} of {len(events)}")
    finally:
        await reader.stop()
    # From the moment the worker started reading events (its recovery, or after the last tick that had seen none) to
    # the end of the matching work of the first tick whose record counts them all: the count is of events applied
    # (the loop applies nothing while a tick runs), so by then every event is applied and its users matched.
    # ``*_second_tick``: the older, more conservative end, the start of the tick after that one (kept to compare).
    first = next(i for i, e in enumerate(t.events) if e > 0)
    start = t.at[first - 1] if first > 0 else t.at[0] - Settings().tick_interval_s
    replayed = recovery_starts(log_path)
    if replayed:
        start = min(start, min(replayed))
    complete = [i for i, e in enumerate(t.events) if e >= len(events)]
    end = t.at[complete[0]] + t.elapsed_ms[complete[0]] / 1000.0
    rate = len(events) / max(end - start, 1e-9)
    rate_second = len(events) / max(t.at[complete[1]] - start, 1e-9)
    # The reference read three times: one read of 200,000 events takes 0.6-1.1 s and moved between 173,000 and
    # 352,000/s from run to run on this machine; the median is the reference, the fastest is reported as well.
    plains = sorted([await plain_rate(broker.bootstrap, settings, len(events)) for _ in range(PLAIN_READS)])
    plain = plains[len(plains) // 2]
    say(
        f"backlog: worker {rate:,.0f} events/s, plain aiokafka + msgpack {plain:,.0f}/s median of "
        f"{[round(p) for p in plains]} ({rate / plain:.3f}; {rate / plains[-1]:.3f} of the fastest)"
    )
    return {
        "events": len(events),
        "worker_events_per_s": round(rate),
        "plain_events_per_s": round(plain),
        "plain_reads_per_s": [round(p) for p in plains],
        "ratio_to_plain": round(rate / plain, 4),
        "worker_seconds": round(end - start, 2),
        "worker_events_per_s_second_tick": round(rate_second),
        "tick_p99_ms": round(float(np.percentile(t.elapsed_ms, 99)), 2),
    }


def recovery_starts(log_path: Path) -> list[float]:
    """When each recovery began (worker clock), from the worker's "partition recovered" lines (the partitions of
    one assignment share one start)."""
    out = []
    for rec in log_records(log_path, "partition recovered"):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            out.append(float(rec["ts"]) - float(rec["recovery_s"]))
    return out


def snapshot_figures(log_path: Path) -> dict[str, Any]:
    """The periodic snapshots a steady run wrote (the worker's "snapshot written" lines): how many were logged,
    the longest (take + encode + write + pointer) and the largest."""
    written = log_records(log_path, "snapshot written")
    return {
        "snapshots_logged": len(written),
        "snapshot_ms_max": max((float(r.get("ms", 0.0)) for r in written), default=0.0),
        "snapshot_mb_max": round(max((int(r.get("bytes", 0)) for r in written), default=0) / 1e6, 1),
    }


async def run_steady(broker: EmbeddedBroker, data: Path, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_for(broker, data, args)
    await ensure_topics(broker.bootstrap, settings)
    reader = Reader(broker.bootstrap, settings, decisions=True)
    await reader.start()
    t = reader.ticks
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=OFFER_LINGER_MS)
    await producer.start()
    acked: dict[str, float] = {}
    topic = settings.topic(names.EVENTS)
    rng = np.random.default_rng(args.seed)
    try:
        log_path = data / f"worker-{settings.app_id}.log"
        with service_process(settings, log_path, "worker", "--loglevel", "info"):  # info: its snapshot lines
            if not await reader.until(lambda: bool(t.at), READY_TIMEOUT_S):
                raise SystemExit("steady: the worker did not tick")
            say(f"steady {rate:,.0f} joins/s: worker ready, offering for {args.seconds:.0f} s")
            step = 0.01
            sent = 0
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < args.seconds:
                due = int(rate * min(elapsed + step, args.seconds)) - sent
                for _ in range(due):
                    user = f"j{sent}"
                    shard = f"lang-{sent % args.shards}"
                    value = encode(Join(user, shard, time.time(), country=f"c{sent % 20}", language="en",
                                        signals=(float(rng.standard_normal()),)))  # fmt: skip
                    future = await producer.send(topic, value=value, key=shard.encode())
                    future.add_done_callback(lambda _f, u=user: acked.__setitem__(u, time.time()))
                    sent += 1
                await asyncio.sleep(max(0.0, started + elapsed + step - time.monotonic()))
            stop_wall = time.time()
            await producer.flush()
            # the worker's consumption when the offer stopped: its first tick at or after that moment
            await reader.until(lambda: bool(t.at) and t.at[-1] >= stop_wall, 10.0)
            after = next((i for i, a in enumerate(t.at) if a >= stop_wall), len(t.at) - 1)
            consumed_at_stop = t.events[after]
            await reader.until(lambda: 2 * len(reader.pairs) >= sent - args.shards, 30.0)
    finally:
        await producer.stop()
        await reader.stop()
    timed = np.asarray(
        [(ts, ts - max(acked[a], acked[b])) for a, b, ts in reader.pairs if a in acked and b in acked],
        dtype=np.float64,
    ).reshape(-1, 2)
    latencies = timed[:, 1]
    window = np.floor((timed[:, 0] - timed[:, 0].min()) / 10.0).astype(np.int64) if timed.size else timed[:, 0]
    per_window = [round(float(np.percentile(latencies[window == w], 99)), 3) for w in np.unique(window)]
    gaps = np.diff(np.asarray(t.at))
    interval = settings.tick_interval_s
    result = {
        "offered_joins_per_s": rate,
        "seconds": args.seconds,
        "joins": sent,
        "decisions": len(reader.pairs),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3),
        "latency_p999_s": round(float(np.percentile(latencies, 99.9)), 3),
        "latency_max_s": round(float(latencies.max()), 3),
        "latency_p99_per_10s": per_window,  # where in the run the tail comes from
        "lag_at_stop_events": int(sent - consumed_at_stop),
        "lag_at_stop_ticks": round((sent - consumed_at_stop) / (rate * interval), 2),
        "tick_p99_ms": round(float(np.percentile(t.elapsed_ms, 99)), 2),
        "late_ticks": int(np.count_nonzero(gaps > 1.5 * interval)),
        "ticks": len(t.at),
        **snapshot_figures(log_path),
    }
    say(f"steady {rate:,.0f} joins/s: {result}")
    return result


async def run_burst(broker: EmbeddedBroker, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--burst-base`` joins/s, then 10x that for ``--burst-seconds``, then the base again (a third of the burst
    time before and after); a fifth of the users send a leave 0-2 s after their join, whether matched or not.
    ``matched_after_leave``: decisions whose tick had applied a leave of one of its users (the decision's
    ``events_offset`` is past the leave's offset in the same partition); each user joins once here."""
    settings = settings_for(broker, data, args)
    await ensure_topics(broker.bootstrap, settings)
    reader = Reader(broker.bootstrap, settings, decisions=True)
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=OFFER_LINGER_MS)
    await producer.start()
    acked: dict[str, float] = {}
    left: dict[str, tuple[int, int]] = {}  # user -> (partition, offset) of their leave
    topic = settings.topic(names.EVENTS)
    rng = np.random.default_rng(args.seed)
    base, burst = args.burst_base, 10 * args.burst_base
    phases = [(base, args.burst_seconds / 3), (burst, args.burst_seconds), (base, args.burst_seconds / 3)]
    leaves: list[tuple[float, str, str]] = []
    burst_window: tuple[float, float] = (0.0, 0.0)

    def on_leave(user: str, future: asyncio.Future[Any]) -> None:
        meta = future.result()
        left[user] = (meta.partition, meta.offset)

    try:
        with worker_process(settings, data / f"worker-{settings.app_id}.log"):
            if not await reader.until(lambda: bool(reader.ticks.at), READY_TIMEOUT_S):
                raise SystemExit("burst: the worker did not tick")
            say(f"burst: {base:,.0f} -> {burst:,.0f} joins/s for {args.burst_seconds:.0f} s -> {base:,.0f}")
            sent, step = 0, 0.01
            for rate, seconds in phases:
                started = time.monotonic()
                if rate == burst:
                    burst_window = (time.time(), time.time() + seconds)
                done = 0
                while (elapsed := time.monotonic() - started) < seconds:
                    due = int(rate * min(elapsed + step, seconds)) - done
                    now = time.time()
                    for _ in range(due):
                        user, shard = f"b{sent}", f"lang-{sent % args.shards}"
                        value = encode(Join(user, shard, now, country=f"c{sent % 20}", language="en"))
                        future = await producer.send(topic, value=value, key=shard.encode())
                        future.add_done_callback(lambda _f, u=user: acked.__setitem__(u, time.time()))
                        if rng.random() < 0.2:
                            leaves.append((now + float(rng.uniform(0, 2)), user, shard))
                        sent += 1
                        done += 1
                    due_leaves = [x for x in leaves if x[0] <= now]
                    leaves = [x for x in leaves if x[0] > now]
                    for _, user, shard in due_leaves:
                        future = await producer.send(topic, value=encode(Leave(user, shard, now)), key=shard.encode())
                        future.add_done_callback(lambda f, u=user: on_leave(u, f))
                    await asyncio.sleep(max(0.0, started + elapsed + step - time.monotonic()))
            await producer.flush()
            await reader.until(lambda: len(reader.pairs) >= 0.3 * sent, 60.0)
            await asyncio.sleep(3.0)  # the last ticks' decisions (a harness wait, not a synchronisation)
    finally:
        await producer.stop()
        await reader.stop()
    after_leave = 0
    for (a, b, _), (partition, offset) in zip(reader.pairs, reader.offsets, strict=True):
        for user in (a, b):
            leave = left.get(user)
            if leave is not None and leave[0] == partition and 0 <= leave[1] < offset:
                after_leave += 1
    lat = np.asarray([ts - max(acked[a], acked[b]) for a, b, ts in reader.pairs if a in acked and b in acked])
    in_burst = np.asarray(
        [ts - max(acked[a], acked[b]) for a, b, ts in reader.pairs
         if a in acked and b in acked and burst_window[0] <= ts <= burst_window[1] + 1.0]
    )  # fmt: skip
    result = {
        "base_joins_per_s": base,
        "burst_joins_per_s": burst,
        "burst_seconds": args.burst_seconds,
        "joins": sent,
        "leaves": len(left),
        "decisions": len(reader.pairs),
        "matched_after_leave": after_leave,
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
        "latency_p99_s": round(float(np.percentile(lat, 99)), 3),
        "burst_latency_p99_s": round(float(np.percentile(in_burst, 99)), 3) if in_burst.size else None,
        "tick_p99_ms": round(float(np.percentile(reader.ticks.elapsed_ms, 99)), 2),
    }
    say(f"burst: {result}")
    return result


def write_png(steady: list[dict[str, Any]], path: Path, interval: float) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no PNG")
        return None
    rates = [r["offered_joins_per_s"] for r in steady]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("latency_p50_s", "p50"), ("latency_p99_s", "p99"), ("latency_p999_s", "p99.9")):
        ax.plot(rates, [r[key] for r in steady], marker="o", label=label)
    ax.axhline(interval + 0.1, color="grey", linestyle="--", label="tick + 100 ms")
    ax.set_xlabel("offered joins/s (one worker)")
    ax.set_ylabel("decision latency (s)")
    ax.set_title("tickmatch live worker: later join acknowledged -> decision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="tickmatch-bench-live-"))
    out: dict[str, Any] = {"benchmark": "live", "cores": os.cpu_count(), "partitions": args.partitions,
                           "shards": args.shards}  # fmt: skip
    with EmbeddedBroker(data) as broker:
        if args.mode in ("backlog", "both"):
            out["backlog"] = await run_backlog(broker, data, args)
        if args.mode in ("steady", "both"):
            out["steady"] = [await run_steady(broker, data, rate, args) for rate in args.rates]
        if args.mode in ("burst", "both"):
            out["burst"] = await run_burst(broker, data, args)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["backlog", "steady", "burst", "both"], default="both")
    parser.add_argument("--events", type=int, default=200_000, help="backlog size")
    parser.add_argument("--backlog-runs", type=int, default=3, help="backlog runs (medians are reported)")
    parser.add_argument("--rates", type=float, nargs="+", default=[1000.0, 5000.0, 10000.0], help="joins/s")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long each steady rate is offered")
    parser.add_argument("--burst-base", type=float, default=500.0, help="joins/s around the 10x burst")
    parser.add_argument("--burst-seconds", type=float, default=40.0, help="how long the 10x burst lasts")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--snapshot-interval", type=float, default=Settings().snapshot_interval_s, help="worker snapshot interval (s)"
    )
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--json", action="store_true", help="(kept for symmetry; JSON is always the last line)")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    result["snapshot_interval_s"] = args.snapshot_interval
    args.out.mkdir(parents=True, exist_ok=True)
    if result.get("steady"):
        png = write_png(result["steady"], args.out / "live_latency.png", Settings().tick_interval_s)
        result["latency_png"] = str(png) if png else None
    text = orjson.dumps(result).decode()
    (args.out / "live.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
