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
from tickmatch.schemas.codec import decode_event
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


def tail_traffic(live: WorkerRuntime, clock: ManualClock, log: Log) -> list[Msg]:
    """Events after the last decision (no tick): new joins, leaves of waiting and of tail users, a user who leaves
    and comes back, profile updates, a chat-end, a retried join; logged and applied live, in batches."""
    waiting = [u.user_id for u in live.pools["s"].export()][:6]
    records: list[Record] = [Join(f"n{i}", "s", clock(), country=f"c{i % 3}", join_id=f"n{i}") for i in range(12)]
    records += [
        Leave(waiting[0], "s", clock()),
        Leave("n1", "s", clock()),
        ProfileUpdate("n2", "s", clock(), age_band="x"),
    ]
    records += [Leave("n3", "s", clock()), Join("n3", "s", clock(), join_id="n3-again"), Join("n4", "s", clock())]
    records += [
        Leave(waiting[1], "s", clock()),
        Join(waiting[1], "s", clock(), join_id="back"),
        Leave("n5", "s", clock()),
    ]
    open_ = next(iter(live.labels._open.values())).decision
    records.append(ChatEnd(open_.match_id, open_.user_a, open_.shard, clock(), "hangup"))
    start = len(log.messages)
    for i in range(0, len(records), 5):
        live.apply_batch(log.batch(*records[i : i + 5]))
        clock.advance(0.125)  # exact in milliseconds: record timestamps give back the live times
    return log.messages[start:]


def live_with_tail() -> tuple[ManualClock, WorkerRuntime, RecordingSink, Log, list[Msg], list[MatchDecision]]:
    """A live worker's traffic with ticks, then a tail of events after its last decision."""
    clock = ManualClock()
    live, sink = live_runtime(clock)
    log = Log(clock)
    traffic(live, sink, clock, log)
    tail = tail_traffic(live, clock, log)
    return clock, live, sink, log, tail, sorted(sink.decisions, key=lambda d: d.events_offset or 0)


def recovered_to_tail(clock: ManualClock, log: Log, tail: list[Msg], decided: list[MatchDecision]) -> tuple[
    WorkerRuntime, RecordingSink, int
]:  # fmt: skip
    """A runtime recovered as ``agents.recovery`` does: replayed up to the tail, the tail's leaves noted."""
    caught, out = live_runtime(clock)
    caught.replaying = True
    replay_records(caught, log.messages[: tail[0].offset], deque(decided))
    caught.replaying = False
    early = caught.note_leaves(tail)
    caught.catch_up_to(0, tail[-1].offset + 1)
    return caught, out, early


def test_a_tail_noted_and_applied_in_parts_ends_as_its_full_replay() -> None:
    clock, live, sink, log, tail, decided = live_with_tail()

    whole, _ = live_runtime(ManualClock(clock()))
    whole.replaying = True
    replay_records(whole, log.messages, deque(decided))
    whole.replaying = False

    caught, _, early = recovered_to_tail(ManualClock(clock()), log, tail, decided)
    assert early == 2  # the two waiting users whose leave is in the tail (one of them comes back after it)
    for i in range(0, len(tail), 4):
        assert caught.catch_up  # until the last record is applied
        caught.apply_batch(tail[i : i + 4])
    assert not caught.catch_up and not caught.leaves_ahead
    published = {label.match_id: label.shard for label in sink.labels}  # recovery closes them (test above)
    for runtime in (whole, caught):
        runtime.labels.close_published(published, clock())
    assert state(caught) == state(whole) == state(live)
    assert caught.counters["joins.leaving"] == 3  # n1, n5 and n3 joined, then left in the tail: not queued


def test_ticks_during_a_tail_match_no_one_who_leaves_in_it_and_hold_label_deadlines() -> None:
    clock, _, _, log, tail, decided = live_with_tail()
    leaving = {m.user_id for m in (decode_event(t.value) for t in tail) if isinstance(m, Leave)} - {"n3"}
    restart = ManualClock(clock.advance(SETTINGS.censor_after_s + 5))  # every open match is past its deadline

    caught, out, _ = recovered_to_tail(restart, log, tail, decided)
    replayed = len(out.labels)  # labels of chat-ends in the replay (none published in this test)
    caught.apply_batch(tail[:12])  # the new joins
    caught.tick()
    matched = {u for d in out.decisions for u in (d.user_a, d.user_b)}
    assert matched and not matched & leaving, matched & leaving
    joined = {t.offset: t.timestamp / 1000.0 for t in tail}
    for d in out.decisions:  # waits count from the log's join times, not from the restart
        assert d.wait_a_s > SETTINGS.censor_after_s and d.wait_b_s > SETTINGS.censor_after_s
    assert min(joined.values()) < restart() - SETTINGS.censor_after_s
    assert out.labels[replayed:] == []  # deadlines held: the chat-end further down the tail labels its match
    caught.apply_batch(tail[12:])
    assert not caught.catch_up
    caught.tick()
    after = {label.match_id: label for label in out.labels[replayed:]}
    ended = decode_event(tail[-1].value)
    assert isinstance(ended, ChatEnd) and not after[ended.match_id].censored  # from its chat-end, not censored
    assert any(label.censored for label in after.values())  # the others' deadlines are swept now
