"""Chaos benchmark: real worker processes on the embedded broker, real traffic, faults, and an independent verifier.

Traffic (``Traffic``): ``--rate`` joins/s over ``--shards`` shards from a population that behaves like users of a
video-chat app: a user joins (with a fresh ``join_id``), waits, is matched (the generator follows the decisions
topic), chats for 0.5-3 s, both sides report the end, and comes back after a pause; ~10 % of waits end in a leave.
Clients retry: 30 % of joins are published twice at once and 10 % once more 1-3 s later; 10 % of chat-ends twice.

Faults (``Fleet``): ``--kills`` kill -9 of a random worker at random moments (restarted 1-3 s later), ``--terms``
SIGTERM restarts, and a scale 1 -> 2 -> 1 (a second worker joins for the middle fifth of the run).

Verifier (``verify``): after the traffic stops, the chat-ends drain and the workers stop gracefully (their final
snapshots are the pools after the run), it reads every topic from the start and reports, as JSON on the last
stdout line: double_booked_users (a join ticket answered by two different decisions), matched_after_leave (a
decision whose tick had applied a leave of that user after the join it answers), lost_waiting_users (a last join
neither answered nor followed by a leave, and not waiting in any final pool), decisions_without_label,
duplicate_decisions / duplicate_labels (the same match id published more than once: dropped by id, counted),
max_recovery_s (a worker's own "partition recovered" figure), restart_to_decision_s (a restarted worker's process
start to its first tick that decided a pair), events_replayed.

    python -m bench.chaos --seconds 240 --rate 500 --kills 20 --terms 5 --out bench/results/chaos
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from bench.logs import log_records
from tickmatch.agents import snapshot as snapshots
from tickmatch.demo import worker_env
from tickmatch.outcomes import double_booked
from tickmatch.schemas import ChatEnd, DurationLabel, Join, Leave, MatchDecision, TickStats, decode_record, encode
from tickmatch.stream import topics as names
from tickmatch.stream.broker import EmbeddedBroker, stop_process
from tickmatch.stream.readers import read_from_earliest
from tickmatch.stream.settings import Settings
from tickmatch.stream.snapshots import Pointers, read_blob
from tickmatch.stream.topics import ensure_topics

STEP_S = 0.05


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(slots=True)
class User:
    user_id: str
    shard: str
    state: str = "idle"  # idle | waiting | chatting
    ticket: str = ""
    ready_at: float = 0.0  # idle: may join from then on


class Traffic:
    """The user population and its producer; follows decisions to know who is chatting."""

    def __init__(self, bootstrap: str, settings: Settings, rate: float, shards: int, seed: int) -> None:
        self.bootstrap, self.settings, self.rate, self.shards = bootstrap, settings, rate, shards
        self.rng = random.Random(seed)
        self.users: list[User] = []
        self.by_id: dict[str, User] = {}
        self.waiting: dict[str, User] = {}
        self.seen_matches: set[str] = set()
        self.later: list[tuple[float, Any]] = []  # (due, record to send or _Idle marker) scheduled for later
        self.producer: AIOKafkaProducer | None = None
        self.sent: dict[str, int] = defaultdict(int)
        self.joining = True
        self.dup_share = 0.3  # joins published twice at once (a client retry)

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, record: Join | Leave | ChatEnd) -> None:
        assert self.producer is not None
        await self.producer.send(self.settings.topic(names.EVENTS), value=encode(record), key=record.shard.encode())
        self.sent[record.TYPE] += 1

    def idle_user(self, now: float) -> User:
        for _ in range(8):  # a few tries at an idle user whose pause is over, else a new one
            if self.users:
                user = self.users[self.rng.randrange(len(self.users))]
                if user.state == "idle" and user.ready_at <= now:
                    return user
        user = User(f"u{len(self.users)}", f"lang-{len(self.users) % self.shards}")
        self.users.append(user)
        self.by_id[user.user_id] = user
        return user

    async def step(self, now: float) -> None:
        due = [r for t, r in self.later if t <= now]
        self.later = [(t, r) for t, r in self.later if t > now]
        for record in due:
            if isinstance(record, _Idle):
                if record.user.state == "chatting":
                    record.user.state = "idle"
            else:
                await self.send(record)
        if not self.joining:
            return
        n = self.rng.random() * 2 * self.rate * STEP_S  # mean rate * step
        for _ in range(int(n)):
            user = self.idle_user(now)
            ticket = uuid.uuid4().hex
            join = Join(
                user.user_id, user.shard, now, country=f"c{self.rng.randrange(5)}", language="en",
                gender=self.rng.choice("fm"), join_id=ticket,
            )  # fmt: skip
            user.state, user.ticket = "waiting", ticket
            self.waiting[user.user_id] = user
            await self.send(join)
            r = self.rng.random()
            if r < self.dup_share:
                await self.send(join)  # a client retry right away
            elif r < self.dup_share + 0.1:
                self.later.append((now + self.rng.uniform(1, 3), join))  # a late retry
        for _ in range(int(n * 0.1)):  # ~10 % of waits end in a leave
            if not self.waiting:
                break
            user = self.waiting.pop(self.rng.choice(list(self.waiting)))
            user.state, user.ready_at = "idle", now + self.rng.uniform(0.5, 2)
            await self.send(Leave(user.user_id, user.shard, now))

    def on_decision(self, d: MatchDecision, now: float) -> None:
        if d.match_id in self.seen_matches:
            return
        self.seen_matches.add(d.match_id)
        ends = now + self.rng.uniform(0.5, 3)
        for user_id in (d.user_a, d.user_b):
            user = self.by_id.get(user_id)
            if user is None:
                continue
            self.waiting.pop(user_id, None)
            user.state, user.ready_at = "chatting", ends + self.rng.uniform(0.5, 2)
            end = ChatEnd(d.match_id, user_id, d.shard, ends, "hangup")
            self.later.append((ends, end))
            if self.rng.random() < 0.1:
                self.later.append((ends + 0.5, end))
        for user_id in (d.user_a, d.user_b):
            user = self.by_id.get(user_id)
            if user is not None:
                self.later.append((user.ready_at, _Idle(user)))


@dataclass(slots=True)
class _Idle:
    user: User


async def follow_decisions(traffic: Traffic, stop: asyncio.Event) -> None:
    settings = traffic.settings
    parts = [TopicPartition(settings.topic(names.DECISIONS), p) for p in range(settings.partitions)]
    async with read_from_earliest(traffic.bootstrap, "chaos-follow", parts) as reader:
        async for batch in reader.batches(stop, timeout_ms=100):
            for rec in batch:
                record = decode_record(rec.value or b"")
                if isinstance(record, MatchDecision):
                    traffic.on_decision(record, time.time())


@dataclass(slots=True)
class Fleet:
    """Worker processes: start, kill -9, SIGTERM, each with its own log file."""

    settings: Settings
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    starts: dict[str, float] = field(default_factory=dict)  # worker name -> process start
    leaving: dict[subprocess.Popen[bytes], float] = field(default_factory=dict)  # SIGTERM'd -> when
    stopped: set[subprocess.Popen[bytes]] = field(default_factory=set)  # exits we caused (kill -9, SIGTERM)
    crashes: int = 0  # exits we did not cause
    stop_s: list[float] = field(default_factory=list)  # SIGTERM -> exit, per worker stopped
    spawned: int = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        self.spawned += 1
        log = (self.logs / f"worker-{self.spawned}.log").open("ab")
        name = f"chaos-worker-{self.spawned}"
        env = worker_env(self.settings.with_overrides(worker_name=name))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickmatch", "worker", "--loglevel", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        self.starts[name] = time.time()
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """Running workers, not counting those shutting down after a SIGTERM."""
        return [p for p in self.procs if p.poll() is None and p not in self.leaving]

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM without waiting (traffic goes on while it shuts down, as under a supervisor); a worker still
        there ``grace_s`` later is killed by :meth:`reap`."""
        proc.send_signal(signal.SIGTERM)
        self.stopped.add(proc)
        self.leaving[proc] = time.time()

    def crashed(self) -> int:
        """Workers that exited without being told to since the last call (a supervisor restarts them)."""
        gone = [p for p in self.procs if p.poll() is not None and p not in self.stopped]
        self.stopped.update(gone)
        self.crashes += len(gone)
        return len(gone)

    def reap(self, grace_s: float = 20.0) -> None:
        for proc, since in list(self.leaving.items()):
            if proc.poll() is not None:
                self.stop_s.append(time.time() - since)
                del self.leaving[proc]
            elif time.time() - since > grace_s:
                proc.kill()
                proc.wait()
                self.stop_s.append(time.time() - since)
                del self.leaving[proc]

    def stop_all(self) -> None:
        self.crashed()  # count exits before ours
        for proc in [p for p in self.procs if p.poll() is None]:
            self.stopped.add(proc)
            stop_process(proc, grace_s=20.0)


def recovery_figures(logs: Path) -> tuple[float, int, int]:
    """(max recovery seconds, events replayed, recoveries) from the workers' JSON log lines."""
    worst, replayed, count = 0.0, 0, 0
    for path in logs.glob("worker-*.log"):
        for rec in log_records(path, "partition recovered"):
            worst = max(worst, float(rec.get("recovery_s", 0.0)))
            replayed += int(rec.get("events_replayed", 0))
            count += 1
    return worst, replayed, count


async def final_pools(bootstrap: str, settings: Settings) -> dict[str, set[str]]:
    """Waiting users per shard in the newest snapshot of every partition (the workers' final state)."""
    pointers = Pointers(bootstrap, f"{settings.app_id}-snapshots", settings.topic(names.SNAPSHOTS), settings.partitions)
    await pointers.start()
    pools: dict[str, set[str]] = defaultdict(set)
    try:
        for p in range(settings.partitions):
            offset = await pointers.get(p)
            if offset is None:
                continue
            blob = await read_blob(bootstrap, "chaos-verify", settings.topic(names.SNAPSHOTS), p, offset)
            if blob is None:
                continue
            snap = snapshots.decode(blob)
            for shard, users in snap.users.items():
                pools[shard] |= {u.user_id for u in users}
    finally:
        await pointers.stop()
    return pools


async def read_all(bootstrap: str, settings: Settings) -> dict[str, list[Any]]:
    """(record, partition, offset, timestamp ms) of every record of events, decisions and labels."""
    out: dict[str, list[Any]] = {names.EVENTS: [], names.DECISIONS: [], names.LABELS: [], names.TICKS: []}
    parts = [TopicPartition(settings.topic(t), p) for t in out for p in range(settings.partitions)]
    by_topic = {settings.topic(t): t for t in out}
    async with read_from_earliest(bootstrap, "chaos-verify", parts) as reader:
        async for batch in reader.until_caught_up():
            for rec in batch:
                try:
                    record = decode_record(rec.value or b"")
                except Exception:  # not ours to judge here: the worker dead-letters it
                    continue
                out[by_topic[rec.topic]].append((record, rec.partition, rec.offset, rec.timestamp))
    return out


def verify(records: dict[str, list[Any]], pools: dict[str, set[str]]) -> dict[str, Any]:
    """The verifier's figures (see the module docstring)."""
    join_at: dict[str, tuple[int, int]] = {}  # ticket -> (partition, offset) of its first publication
    user_events: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # user -> (offset, kind, ticket)
    for record, partition, offset, _ in records[names.EVENTS]:
        if isinstance(record, Join):
            if record.ticket not in join_at:
                join_at[record.ticket] = (partition, offset)
                user_events[record.user_id].append((offset, "join", record.ticket))
        elif isinstance(record, Leave):
            user_events[record.user_id].append((offset, "leave", ""))
    decisions: dict[str, MatchDecision] = {}
    duplicate_decisions = 0
    for record, _, _, _ in records[names.DECISIONS]:
        if isinstance(record, MatchDecision):
            if record.match_id in decisions:
                duplicate_decisions += 1
            decisions[record.match_id] = record
    labels: dict[str, int] = defaultdict(int)
    for record, _, _, _ in records[names.LABELS]:
        if isinstance(record, DurationLabel):
            labels[record.match_id] += 1
    answered: dict[str, set[str]] = defaultdict(set)  # ticket -> match ids answering it
    double: set[str] = set()
    after_leave = 0
    for d in decisions.values():
        for user, ticket in ((d.user_a, d.join_a), (d.user_b, d.join_b)):
            if ticket is None:
                continue
            answered[ticket].add(d.match_id)
            if len(answered[ticket]) > 1:
                double.add(user)
            start = join_at.get(ticket)
            if start is None or d.events_offset is None:
                continue
            if any(kind == "leave" and start[1] < off < d.events_offset for off, kind, _ in user_events[user]):
                after_leave += 1
    # The same question asked without the tickets decisions echo (the audit the demo runs): a user in two
    # decisions with no join published between them.
    joins = [r for r, _, _, _ in records[names.EVENTS] if isinstance(r, Join)]
    by_time = double_booked(joins, decisions.values())
    double |= {user for user, _, _ in by_time}
    examples = [[_brief(decisions[m]) for m in (m0, m1)] for _, m0, m1 in by_time[:3]] + [
        [_brief(decisions[m]) for m in sorted(ms)] for ms in answered.values() if len(ms) > 1
    ][:3]
    lost = 0
    waiting_now = {u for users in pools.values() for u in users}
    for user, events in user_events.items():
        events.sort()
        last_join = max((i for i, e in enumerate(events) if e[1] == "join"), default=None)
        if last_join is None:
            continue
        ticket = events[last_join][2]
        left_after = any(kind == "leave" for _, kind, _ in events[last_join + 1 :])
        if not answered.get(ticket) and not left_after and user not in waiting_now:
            lost += 1
    return {
        "joins": len(join_at),
        "decisions": len(decisions),
        "labels": len(labels),
        "double_booked_users": len(double),
        "matched_after_leave": after_leave,
        "lost_waiting_users": lost,
        "waiting_at_end": len(waiting_now),
        "decisions_without_label": sum(1 for m in decisions if m not in labels),
        "duplicate_decisions": duplicate_decisions,
        "duplicate_labels": sum(n - 1 for n in labels.values() if n > 1),
        "double_booked_examples": examples,
    }


def _brief(d: MatchDecision) -> dict[str, Any]:
    """What an investigation of a double booking needs to know about a decision."""
    return {
        "match_id": d.match_id, "shard": d.shard, "users": [d.user_a, d.user_b], "tickets": [d.join_a, d.join_b],
        "tick_id": d.tick_id, "decided_at": d.decided_at, "events_offset": d.events_offset,
    }  # fmt: skip


def restart_delays(starts: dict[str, float], first_pairs: dict[str, float]) -> tuple[list[float], int]:
    """For each restarted worker that lived to tick: seconds from its process start to its first tick that
    decided a pair (its own tick-stats records); and how many restarted workers never got that far (killed or
    stopped again first)."""
    out = [first_pairs[name] - t for name, t in starts.items() if name in first_pairs]
    return out, len(starts) - len(out)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.data or tempfile.mkdtemp(prefix="tickmatch-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(root / "broker") as broker:
        run_id = uuid.uuid4().hex[:8]
        settings = Settings(
            broker_url=broker.url, app_id=f"chaos-{run_id}", topic_prefix=f"chaos-{run_id}.", partitions=4,
            data_dir=str(root), follow_models=False, wait_ttl_s=3600.0, censor_after_s=args.censor_after,
            web_enabled=False,  # several workers on one host: no shared web port
            session_timeout_s=args.session_timeout,
            snapshot_interval_s=args.snapshot_interval,
        )  # fmt: skip
        await ensure_topics(broker.bootstrap, settings)
        fleet = Fleet(settings, root)
        traffic = Traffic(broker.bootstrap, settings, args.rate, args.shards, args.seed)
        traffic.dup_share = args.dup_share
        await traffic.start()
        stop_follow = asyncio.Event()
        follower = asyncio.create_task(follow_decisions(traffic, stop_follow))
        rng = random.Random(args.seed + 1)
        fleet.spawn()
        started = time.time()
        faults = sorted(
            [(rng.uniform(0.1, 0.9) * args.seconds, "kill") for _ in range(args.kills)]
            + [(rng.uniform(0.1, 0.9) * args.seconds, "term") for _ in range(args.terms)]
        )
        scale = [(0.4 * args.seconds, "up"), (0.6 * args.seconds, "down")] if args.scale else []
        plan = sorted(faults + scale)
        restarts: list[tuple[float, str]] = []
        done: dict[str, int] = defaultdict(int)
        say(f"chaos: {args.seconds:.0f} s at {args.rate:.0f} joins/s, {args.kills} kills, {args.terms} SIGTERMs")

        # Runs until the time is up and every planned fault was executed (a fault waits while no worker is
        # alive), at most twice the time.
        def pending() -> bool:
            return any(a in ("kill", "term") for _, a in plan)

        while (now := time.time()) - started < args.seconds or (pending() and now - started < 2 * args.seconds):
            while plan and plan[0][0] <= now - started:
                at, action = plan.pop(0)
                alive = fleet.alive()
                if action in ("kill", "term") and not alive:  # nobody to hit yet: try again in a second
                    plan = sorted([*plan, (at + 1.0, action)])
                    break
                done[action] += 1
                if action == "up":
                    fleet.spawn()
                elif action == "down" and len(alive) > 1:
                    fleet.stopped.add(alive[-1])
                    fleet.terminate(alive[-1])
                elif action in ("kill", "term") and alive:
                    victim = rng.choice(alive)
                    if action == "kill":
                        fleet.stopped.add(victim)
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                    else:
                        fleet.terminate(victim)
                    restarts.append((time.time() + rng.uniform(1, 3), action))
                say(f"chaos: t={now - started:5.1f}s {action}; workers alive {len(fleet.alive())}")
            for _ in [r for r in restarts if r[0] <= now]:
                fleet.spawn()
            restarts = [r for r in restarts if r[0] > now]
            await traffic.step(now)
            fleet.reap()
            for _ in range(fleet.crashed()):
                say(f"chaos: t={now - started:5.1f}s a worker exited on its own (crash); restarting it")
                restarts.append((now + rng.uniform(1, 3), "crash"))
            await asyncio.sleep(STEP_S)
        for _ in restarts:
            fleet.spawn()
        if not fleet.alive():
            fleet.spawn()
        ran_s = time.time() - started
        say("chaos: traffic stopped; draining chat-ends and censoring")
        traffic.joining = False
        drain_until = time.time() + args.censor_after + 15
        while time.time() < drain_until:
            await traffic.step(time.time())
            await asyncio.sleep(STEP_S)
        stop_follow.set()
        await follower
        await traffic.stop()
        fleet.stop_all()
        records = await read_all(broker.bootstrap, settings)
        pools = await final_pools(broker.bootstrap, settings)
    result = verify(records, pools)
    worst, replayed, recoveries = recovery_figures(root)
    first_pairs: dict[str, float] = {}
    for record, _, _, _ in records[names.TICKS]:
        if isinstance(record, TickStats) and record.pairs > 0:
            first_pairs[record.worker] = min(first_pairs.get(record.worker, record.at), record.at)
    restarted = dict(list(fleet.starts.items())[1:])
    delays, never = restart_delays(restarted, first_pairs)
    result.update(
        {
            "benchmark": "chaos",
            "seconds": round(ran_s, 1),
            "offered_joins_per_s": args.rate,
            "events_sent": dict(traffic.sent),
            "kills": done["kill"],
            "dup_share": args.dup_share,
            "terms": done["term"],
            "scaled": bool(args.scale),
            "worker_starts": fleet.spawned,
            "worker_crashes": fleet.crashes + fleet.crashed(),
            "recoveries": recoveries,
            "max_recovery_s": round(worst, 3),
            "events_replayed": replayed,
            "restart_to_decision_s_max": round(max(delays), 2) if delays else None,
            "restart_to_decision_s_median": round(sorted(delays)[len(delays) // 2], 2) if delays else None,
            "restarts_stopped_before_deciding": never,
            "sigterm_to_exit_s_max": round(max(fleet.stop_s), 2) if fleet.stop_s else None,
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--rate", type=float, default=500.0, help="offered joins per second")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=5)
    parser.add_argument("--no-scale", dest="scale", action="store_false", help="skip the 1 -> 2 -> 1 scale")
    parser.add_argument("--censor-after", type=float, default=20.0, help="TICKMATCH_CENSOR_AFTER_S of the run")
    parser.add_argument("--snapshot-interval", type=float, default=10.0)
    parser.add_argument("--dup-share", type=float, default=0.3, help="share of joins published twice at once")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--session-timeout", type=float, default=Settings().session_timeout_s)
    parser.add_argument("--data", default="", help="directory for broker data and worker logs (default: a temp dir)")
    parser.add_argument("--out", default="", help="directory for chaos.json")
    args = parser.parse_args(argv)
    emit(asyncio.run(run(args)), args.out, "chaos.json")
    return 0


def emit(result: dict[str, Any], out: str, name: str) -> None:
    """Print the result as the last stdout line (JSON) and, with ``out``, write it to ``out/name`` too."""
    line = orjson.dumps(result).decode()
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
