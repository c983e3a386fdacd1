"""Crash-consistent state without Kafka: a partition snapshot restores exactly what was taken, and replaying the
events log with the published decisions re-applied at their offsets rebuilds the live state exactly, without
deciding again (the Kafka side is exercised by ``tests/integration/test_chaos.py``)."""

from __future__ import annotations

import dataclasses
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from tickmatch.agents import snapshot as snapshots
from tickmatch.agents.recovery import replay_records
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.learning.features import RAW_DIM
from tickmatch.matching.columnlog import ColumnView
from tickmatch.matching.filters import FILTER_ATTRS
from tickmatch.schemas import ChatEnd, Join, Leave, MatchDecision, ProfileUpdate, Record
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink

SETTINGS = Settings(app_id="test-recovery", censor_after_s=30.0, label_grace_s=1.0, orphan_grace_s=5.0)


class Log:
    """An events partition: every message gets the next offset and the clock's time as its timestamp."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.messages: list[Msg] = []

    def batch(self, *records: Record) -> list[Msg]:
        out = []
        for record in records:
            msg = dataclasses.replace(Msg.of(record, 0, len(self.messages)), timestamp=int(self.clock() * 1000))
            self.messages.append(msg)
            out.append(msg)
        return out


def live_runtime(clock: ManualClock) -> tuple[WorkerRuntime, RecordingSink]:
    sink = RecordingSink()
    runtime = WorkerRuntime(SETTINGS, sink, clock)
    runtime.guarded = True
    runtime.claimed[0] = 0
    return runtime, sink


def state(runtime: WorkerRuntime) -> dict[str, Any]:
    """What must survive a restart, in comparable form."""
    pools = {}
    for shard, pool in runtime.pools.items():
        users = sorted(pool.export(), key=lambda u: u.user_id)
        pools[shard] = [(u.user_id, u.joined_at, u.raw.tobytes(), u.attrs, u.wants, u.blocked) for u in users]
    matches, held = runtime.labels.export(set(runtime.pools), runtime.clock())
    ends = {m: (sorted(e.items()), first) for part in matches for m, e, first in part.ends}
    opened = [(m, *ends.get(m, ([], None))) for part in matches for m in part.opened.columns()["match_id"]]
    return {
        "pools": {k: v for k, v in pools.items() if v},
        "bans": {s: sorted(p.forbidden.bans()) for s, p in runtime.pools.items() if p.forbidden.bans()},
        "tickets": runtime.tickets.items(),
        "open": sorted(opened),
        "held": sorted((e.match_id, e.user_id, seen) for e, seen in held),
        "closed": sorted(m for part in matches for m in part.closed.columns()["match_id"]),
        "claimed": dict(runtime.claimed),
    }


def traffic(runtime: WorkerRuntime, sink: RecordingSink, clock: ManualClock, log: Log) -> None:
    """Joins with filters, block lists and profile updates, ticks, leaves, chat-ends (one side, both sides, a late
    one, one for a match not decided yet), and a retried join, in several batches."""
    rng = np.random.default_rng(3)
    for round_ in range(4):
        records: list[Record] = []
        for i in range(30):
            user = f"u{round_}-{i}"
            records.append(
                Join(
                    user,
                    "s" if i % 3 else "t",
                    clock(),
                    country=f"c{i % 4}",
                    gender="fm"[i % 2],
                    want_gender=("f",) if i % 7 == 0 else (),
                    blocked=(f"u{round_}-{i + 1}",) if i % 5 == 0 else (),
                    signals=tuple(float(x) for x in rng.standard_normal(3).round(3)),
                    join_id=f"t-{user}",
                )
            )
        if sink.decisions:  # the last pair decided comes back for another chat (a new ticket each)
            d = sink.decisions[-1]
            records += [Join(u, d.shard, clock(), join_id=f"again-{u}-{round_}") for u in (d.user_a, d.user_b)]
        records.append(ProfileUpdate(f"u{round_}-4", "s", clock(), country="c9", signals=(0.5,)))
        records.append(Leave(f"u{round_}-5", "s", clock()))
        runtime.apply_batch(log.batch(*records))
        clock.advance(0.5)
        runtime.tick()
        ends: list[Record] = []
        for k, d in enumerate(sink.decisions[-6:]):
            ends.append(ChatEnd(d.match_id, d.user_a, d.shard, clock() - 0.1, "hangup"))
            if k % 2 == 0:
                ends.append(ChatEnd(d.match_id, d.user_b, d.shard, clock(), "hangup"))
        ends.append(ChatEnd("not-decided-yet", "x", "s", clock(), "skip"))
        first = sink.decisions[-1]
        ends.append(Join(first.user_a, first.shard, 0.0, join_id=first.join_a))  # a late retry of a matched join
        runtime.apply_batch(log.batch(*ends))
        clock.advance(0.5)


def encode_v2(snap: snapshots.PartitionSnapshot) -> bytes:
    """Format 2 as bee4a2b's ``encode`` wrote it (its code, with its ``pack_columns`` inlined): the reader of
    snapshots written before an upgrade is checked against it."""

    def pack(view: ColumnView) -> dict[str, list[bytes]]:
        cols = view.columns()
        return {name: [msgpack.packb(cols[name][i : i + 16_384]) for i in range(0, len(view), 16_384)] for name in cols}

    shards = []
    for shard, users in snap.users.items():
        raw = np.stack([u.raw for u in users]).astype(np.float32) if users else np.zeros((0, RAW_DIM), np.float32)
        shards.append(
            {
                "shard": shard,
                "ids": [u.user_id for u in users],
                "joined_at": [u.joined_at for u in users],
                "bias": [u.bias for u in users],
                "raw": raw.tobytes(),
                "attrs": {a: [u.attrs.get(a) for u in users] for a in FILTER_ATTRS},
                "wants": {a: [list(u.wants.get(a, ())) for u in users] for a in FILTER_ATTRS},
                "blocked": [list(u.blocked) for u in users],
                "bans": pack(snap.bans[shard]),
            }
        )
    for shard, bans in snap.bans.items():
        if shard not in snap.users:
            shards.append({"shard": shard, "ids": [], "raw": b"", "bans": pack(bans)})
    doc = {
        "format": 2,
        "partition": snap.partition,
        "events_offset": snap.events_offset,
        "decisions_offset": snap.decisions_offset,
        "labels_offset": snap.labels_offset,
        "tick_id": snap.tick_id,
        "taken_at": snap.taken_at,
        "raw_dim": RAW_DIM,
        "shards": shards,
        "tickets": {shard: pack(joins) for shard, joins in snap.tickets.items()},
        "matches": [
            {"shard": m.shard, "open": pack(m.opened), "ends": m.ends, "closed": pack(m.closed)} for m in snap.matches
        ],
        "held": [[end.wire(), seen] for end, seen in snap.held],
    }
    return zlib.compress(msgpack.packb(doc, use_bin_type=True), 1)


@pytest.mark.parametrize("encode", [snapshots.encode, encode_v2], ids=["format 3", "format 2 (before the upgrade)"])
def test_a_snapshot_restores_exactly_what_was_taken(encode: Callable[[snapshots.PartitionSnapshot], bytes]) -> None:
    clock = ManualClock()
    live, sink = live_runtime(clock)
    log = Log(clock)
    traffic(live, sink, clock, log)
    taken = state(live)
    assert taken["pools"] and taken["bans"] and taken["open"] and taken["held"] and taken["closed"]
    snap = snapshots.decode(encode(snapshots.take(live, 0, 17, 5, clock())))
    assert (snap.events_offset, snap.decisions_offset, snap.labels_offset) == (len(log.messages), 17, 5)
    restored, out = live_runtime(clock)
    restored.claimed.clear()
    snapshots.restore(restored, snap)
    assert state(restored) == taken
    assert restored.tick_id == live.tick_id

    # and it behaves as the original: a half-ended chat gets its label, a retried join is still a no-op
    half = next(d for d in sink.decisions[-6:] if d.match_id in {m for m, ends, _ in taken["open"] if len(ends) == 1})
    restored.apply_batch(log.batch(ChatEnd(half.match_id, half.user_b, half.shard, clock(), "hangup")))
    assert [label.match_id for label in out.labels] == [half.match_id] and not out.labels[0].censored
    before = restored.counters.get("joins.duplicate", 0)
    restored.apply_batch(log.batch(Join(half.user_a, half.shard, 0.0, join_id=half.join_a)))
    assert restored.counters["joins.duplicate"] == before + 1 and half.user_a not in restored.pools[half.shard]


def test_replaying_the_log_with_published_decisions_rebuilds_the_live_state_without_deciding() -> None:
    clock = ManualClock()
    live, sink = live_runtime(clock)
    log = Log(clock)
    traffic(live, sink, clock, log)
    assert all(d.events_offset is not None for d in sink.decisions)

    replayed, out = live_runtime(ManualClock(clock()))
    replayed.replaying = True
    replay_records(replayed, log.messages, deque(sorted(sink.decisions, key=lambda d: d.events_offset or 0)))
    replayed.replaying = False
    assert out.decisions == []  # re-applied, not decided again
    assert replayed.tick_id == live.tick_id
    # Labels: with none published (all lost in the crash), those completed by events come again during the replay
    # and the rest (one end + grace) at the first sweep, exactly the live worker's set.
    replayed.sweep_labels(clock())
    assert sorted(label.match_id for label in out.labels) == sorted(label.match_id for label in sink.labels)

    # With every label published, recovery closes their matches instead: the state is the live one.
    again, out = live_runtime(ManualClock(clock()))
    again.replaying, again.published_labels = True, {label.match_id for label in sink.labels}
    replay_records(again, log.messages, deque(sorted(sink.decisions, key=lambda d: d.events_offset or 0)))
    again.replaying = False
    again.labels.close_published({label.match_id: label.shard for label in sink.labels}, clock())
    assert state(again) == state(live)
    assert out.labels == []


def test_labels_published_before_the_restart_are_not_sent_again() -> None:
    clock = ManualClock()
    live, sink = live_runtime(clock)
    log = Log(clock)
    traffic(live, sink, clock, log)
    replayed, out = live_runtime(ManualClock(clock()))
    replayed.replaying, replayed.published_labels = True, {label.match_id for label in sink.labels[:-1]}
    replay_records(replayed, log.messages, deque(sorted(sink.decisions, key=lambda d: d.events_offset or 0)))
    assert [label.match_id for label in out.labels] == [sink.labels[-1].match_id]


def test_a_retry_of_an_older_join_does_not_requeue_a_user_who_joined_again() -> None:
    clock = ManualClock()
    runtime, sink = live_runtime(clock)
    log = Log(clock)
    runtime.apply_batch(log.batch(Join("a", "s", 1.0, join_id="a1"), Join("b", "s", 1.0, join_id="b1")))
    runtime.tick()
    first: MatchDecision = sink.decisions[0]
    assert (first.join_a, first.join_b) == ("a1", "b1")
    runtime.apply_batch(log.batch(Join("a", "s", 2.0, join_id="a2"), Join("c", "s", 2.0, join_id="c2")))
    runtime.tick()
    assert {sink.decisions[1].join_a, sink.decisions[1].join_b} == {"a2", "c2"}
    # the first join's retry arrives last: it answers to a ticket already served, so nothing happens
    runtime.apply_batch(log.batch(Join("a", "s", 1.0, join_id="a1"), Join("d", "s", 3.0)))
    runtime.tick()
    assert len(sink.decisions) == 2 and "a" not in runtime.pools["s"]
    assert runtime.counters["joins.duplicate"] == 1


def test_a_guarded_runtime_applies_each_offset_once_and_only_its_partitions() -> None:
    clock = ManualClock()
    runtime, _ = live_runtime(clock)
    log = Log(clock)
    batch = log.batch(Join("a", "s", 1.0), Join("b", "s", 1.0))
    assert runtime.apply_batch(batch) == 2
    assert runtime.apply_batch(batch) == 0  # fetched again after a seek: already applied
    other = Msg.of(Join("c", "s", 1.0), partition=1, offset=0)
    assert runtime.apply_batch([other]) == 0  # not a partition this worker owns
    assert runtime.claimed == {0: 2} and runtime.counters["events.skipped"] == 3


def test_bytes_that_are_not_a_snapshot_of_this_format_are_refused_with_a_reason() -> None:
    clock = ManualClock()
    live, sink = live_runtime(clock)
    traffic(live, sink, clock, Log(clock))
    good = snapshots.encode(snapshots.take(live, 0, 0, 0, clock()))
    doc = msgpack.unpackb(good[len(snapshots.MAGIC) :], raw=False)
    older = zlib.compress(msgpack.packb({**doc, "format": 1}, use_bin_type=True))  # formats 1-2 had no magic
    old_damaged = zlib.compress(msgpack.packb({**doc, "format": 2}, use_bin_type=True))  # format 3 content
    newer = snapshots.MAGIC + msgpack.packb({**doc, "format": 4}, use_bin_type=True)
    damaged = snapshots.MAGIC + msgpack.packb({**doc, "matches": [{"shard": "s"}]}, use_bin_type=True)
    cut = snapshots.MAGIC + msgpack.packb(
        {**doc, "bans": {"s": {"rows": 5, "alive": zlib.compress(b"\x01"), "blocks": []}}}
    )
    cases = (
        (b"garbage", "not a snapshot"),
        (older, "format 1"),
        (newer, "format 4"),
        (damaged, "damaged"),
        (cut, "damaged"),
        (old_damaged, "damaged"),
    )
    for blob, reason in cases:
        with pytest.raises(snapshots.SnapshotError, match=reason):
            snapshots.decode(blob)
