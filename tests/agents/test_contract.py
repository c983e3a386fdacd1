"""The input contract as the worker enforces it: events on a partition that does not own their shard (another
partitioner, or no key) are re-routed, never matched there; implausible times are dead-lettered with a reason;
fields a newer producer added are ignored and counted."""

from __future__ import annotations

import dataclasses

import msgpack

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.schemas import Join, decode_event
from tickmatch.stream.partitioning import partition_for
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink

NOW = 1_764_600_000.0  # a plausible wall clock (2025-12-01)


def live(clock: ManualClock) -> tuple[WorkerRuntime, RecordingSink]:
    sink = RecordingSink()
    runtime = WorkerRuntime(Settings(app_id="test-contract", partitions=4), sink, clock)
    runtime.route_partitions = True
    return runtime, sink


def test_an_event_on_a_partition_not_owning_its_shard_is_rerouted_keyed_or_not() -> None:
    clock = ManualClock(NOW)
    runtime, sink = live(clock)
    home = partition_for("lang-en", 4)
    wrong = (home + 1) % 4
    keyed = Msg.of(Join("a", "lang-en", NOW), partition=wrong, offset=7)
    keyless = Msg(keyed.value, None, partition=(home + 2) % 4, offset=3)
    assert runtime.apply_batch([keyed, keyless]) == 0
    assert "lang-en" not in runtime.pools  # never matched where it landed
    assert [(k, p, o) for k, _, p, o in sink.rerouted] == [
        (b"lang-en", home, f"events/{wrong}/7"),
        (b"lang-en", home, f"events/{(home + 2) % 4}/3"),
    ]
    assert decode_event(sink.rerouted[0][1]) == Join("a", "lang-en", NOW)  # the original bytes, unchanged
    # where it belongs it is applied (a keyless event there too)
    assert runtime.apply_batch([Msg(keyed.value, None, partition=home, offset=0)]) == 1
    assert "a" in runtime.pools["lang-en"] and runtime.counters["events.rerouted"] == 2


def test_a_replay_does_not_reroute_again_what_was_rerouted_before_the_restart() -> None:
    clock = ManualClock(NOW)
    runtime, sink = live(clock)
    wrong = (partition_for("s", 4) + 1) % 4
    runtime.replaying, runtime.quiet_below = True, {wrong: 5}
    stamp = int(NOW * 1000)  # replay takes "now" from each record's Kafka timestamp
    before = dataclasses.replace(Msg.of(Join("a", "s", NOW), partition=wrong, offset=4), timestamp=stamp)
    after = dataclasses.replace(Msg.of(Join("b", "s", NOW), partition=wrong, offset=5), timestamp=stamp)
    runtime.apply_batch([before, after])
    assert [o for _, _, _, o in sink.rerouted] == [f"events/{wrong}/5"]


def test_times_far_from_the_clock_are_dead_lettered_with_a_reason() -> None:
    clock = ManualClock(NOW)
    runtime, sink = live(clock)
    runtime.route_partitions = False
    millis = Msg.of(Join("a", "s", NOW * 1000.0))
    ancient = Msg.of(Join("b", "s", 1.0))
    fine = Msg.of(Join("c", "s", NOW - 3600.0))
    assert runtime.apply_batch([millis, ancient, fine]) == 1
    assert sink.reasons() == ["implausible-time", "implausible-time"]
    assert "seconds since the epoch" in sink.dead[0].detail and "limit +-86400 s" in sink.dead[0].detail


def test_fields_a_newer_producer_added_are_ignored_and_counted() -> None:
    clock = ManualClock(NOW)
    runtime, sink = live(clock)
    runtime.route_partitions = False
    value = msgpack.packb({"type": "join", "v": 1, "user_id": "a", "shard": "s", "ts": NOW, "premium": True})
    assert runtime.apply_batch([Msg(value, b"s")]) == 1
    assert "a" in runtime.pools["s"] and sink.dead == []
    assert runtime.counters["events.unknown_fields"] == 1
