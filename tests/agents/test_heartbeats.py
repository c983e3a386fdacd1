"""Heartbeats through the worker runtime, on an injected clock: a chat whose client drops silently is labelled
censored at its last heartbeat, not at TICKMATCH_CENSOR_AFTER_S."""

from __future__ import annotations

from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.schemas import ChatHeartbeat, Join
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink


def test_a_dropped_chat_is_censored_at_its_last_heartbeat_by_the_worker() -> None:
    clock = ManualClock(1_800_000_000.0)
    sink = RecordingSink()
    runtime = WorkerRuntime(Settings(censor_after_s=600.0, heartbeat_timeout_s=20.0), sink, clock)
    runtime.apply_batch([Msg.of(Join(u, "s", clock()), offset=i) for i, u in enumerate(("a", "b"))])
    runtime.tick()
    (decision,) = sink.decisions
    decided = decision.decided_at
    for _ in range(6):  # both clients beat every 5 s for 30 s, then both vanish
        clock.advance(5.0)
        beats = [Msg.of(ChatHeartbeat(decision.match_id, u, "s", clock())) for u in ("a", "b")]
        runtime.apply_batch(beats)
        runtime.tick()
    last = clock()
    clock.advance(19.0)
    runtime.tick()
    assert sink.labels == []  # 19 s of silence
    clock.advance(1.0)
    runtime.tick()
    (label,) = sink.labels
    assert label.censored and label.ends_reported == 0 and label.duration_s == last - decided == 30.0
    assert runtime.counters["heartbeat.accepted"] == 12 and not sink.dead
