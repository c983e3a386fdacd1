"""The worker built by the app factory around a recording sink and a manual clock (``tickmatch.testing``): batches
of consumed messages go through the runtime as the worker loop hands them over; the outcome-stats agent is driven
through Faust's ``agent.test_context()`` (in-memory transport, no broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from tickmatch.agents.app import Built, create_app
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.learning.scorer import Scorer, heuristic_scorer
from tickmatch.matching.bilinear import BilinearModel
from tickmatch.schemas import ChatEnd, Join, Leave, ShardStats, encode
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, Msg, RecordingSink


@pytest.fixture()
async def built() -> AsyncIterator[tuple[Built, RecordingSink, ManualClock]]:
    # nothing here connects: test_context() uses an in-memory channel and the worker loop is not started
    settings = Settings(
        broker_url="kafka://127.0.0.1:9",
        app_id="test-agents",
        label_grace_s=2.0,
        censor_after_s=30.0,
        orphan_grace_s=5.0,
    )
    recorder, clock = RecordingSink(), ManualClock()
    made = create_app(settings, sink=recorder, clock=clock)
    made.app.finalize()
    made.app.flow_control.resume()
    yield made, recorder, clock
    made.runtime.close()


async def test_join_and_leave_update_the_pool(built: tuple[Built, RecordingSink, ManualClock]) -> None:
    made, recorder, _ = built
    applied = made.runtime.apply_batch(
        [Msg.of(Join("a", "s", 1.0, gender="f")), Msg.of(Join("b", "s", 1.0)), Msg.of(Leave("a", "s", 2.0))]
    )
    pool = made.runtime.pools["s"]
    assert applied == 3 and "b" in pool and "a" not in pool and len(pool) == 1
    assert recorder.dead == []


async def test_malformed_events_are_dead_lettered_and_the_batch_goes_on(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, _ = built
    applied = made.runtime.apply_batch(
        [
            Msg(b"\x00\x01 not msgpack", b"s", offset=7),
            Msg(encode(Join("a", "s", 1.0)), b"other", offset=8),
            Msg.of(Join("b", "s", 1.0), offset=9),
        ]
    )
    assert applied == 1
    reasons = [(d.value, d.reason, d.origin) for d in recorder.dead]
    assert reasons[0] == (b"\x00\x01 not msgpack", "not-msgpack", "events/0/7")
    assert reasons[1][1:] == ("key-mismatch", "events/0/8")
    assert "b" in made.runtime.pools["s"] and "a" not in made.runtime.pools["s"]


async def test_a_batch_embeds_its_joins_as_single_events_would(built: tuple[Built, RecordingSink, ManualClock]) -> None:
    made, _, _ = built
    runtime = made.runtime
    joins = [Join(f"u{i}", "s", 1.0, country=f"c{i % 3}", signals=(float(i), -1.0)) for i in range(20)]
    runtime.apply_batch([Msg.of(j) for j in joins])
    single = WorkerRuntime(runtime.settings, RecordingSink(), ManualClock())
    for j in joins:
        single.apply(j, partition=0)
    for j in joins:
        a, b = runtime.pools["s"].slot_of(j.user_id), single.pools["s"].slot_of(j.user_id)
        assert a is not None and b is not None
        np.testing.assert_allclose(runtime.pools["s"].emb[a], single.pools["s"].emb[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(runtime.pools["s"].raw[a], single.pools["s"].raw[b])
    single.close()


async def test_outcome_stats_fold_shard_stats_into_tumbling_windows(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime = made.runtime
    runtime.apply_batch([Msg.of(Join(u, "s", 1.0)) for u in "abcde"] + [Msg.of(Leave("e", "s", 1.0))])
    clock.advance(2.0)
    runtime.tick()
    (shard,) = recorder.shards
    assert (shard.shard, shard.waiting, shard.arrivals, shard.departures, shard.matched_users) == ("s", 4, 5, 1, 4)
    assert shard.wait_sum_s == 8.0
    async with made.outcome_stats.test_context() as agent:
        await agent.put(key=b"s", value=encode(shard))
        await agent.put(key=b"w", value=encode(recorder.ticks[0]))  # the worker's tick-stats: skipped
        await agent.put(key=b"s", value=encode(shard))
    sums = made.stats.latest("s")
    assert sums["arrivals"] == 10.0 and sums["departures"] == 2.0
    assert sums["matched_users"] == 8.0 and sums["wait_sum_s"] == 16.0
    later = ShardStats("s", 99, shard.at + 2 * made.runtime.settings.stats_window_s, 0, 3, 0, 0, 0.0)
    async with made.outcome_stats.test_context() as agent:
        await agent.put(key=b"s", value=encode(later))  # a later window starts from zero
    assert made.stats.latest("s")["arrivals"] == 3.0 and len(made.stats.windows("s")) == 2


async def test_tick_matches_emits_decisions_and_labels_follow_chat_ends(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime: WorkerRuntime = made.runtime
    runtime.apply_batch([Msg.of(Join(user, "s", 1.0)) for user in "abcd"])
    clock.advance(3.0)
    stats = runtime.tick()
    assert stats.pairs == 2 and stats.waiting == 4 and len(runtime.pools["s"]) == 0
    first, second = recorder.decisions
    assert {first.user_a, first.user_b, second.user_a, second.user_b} == set("abcd")
    assert first.wait_a_s == 3.0 and first.model_version == runtime.model_version
    clock.advance(10.0)
    ends = [ChatEnd(first.match_id, user, "s", clock.now, "hangup") for user in (first.user_a, first.user_b)]
    runtime.apply_batch([Msg.of(end) for end in [*ends, ChatEnd("nope", "a", "s", clock.now, "hangup")]])
    assert [(lb.match_id, lb.duration_s, lb.censored) for lb in recorder.labels] == [(first.match_id, 10.0, False)]
    clock.advance(5.0)
    runtime.tick()
    assert recorder.reasons() == ["unknown-match"]
    clock.advance(30.0)
    runtime.tick()
    assert [(lb.match_id, lb.censored) for lb in recorder.labels[1:]] == [(second.match_id, True)]
    assert len(recorder.ticks) == 3


async def test_revoked_partitions_drop_their_shards(built: tuple[Built, RecordingSink, ManualClock]) -> None:
    made, _, _ = built
    made.runtime.apply(Join("a", "s0", 1.0), partition=0)
    made.runtime.apply(Join("b", "s1", 1.0), partition=1)
    assert made.runtime.drop_partitions({1}) == ["s1"]
    assert set(made.runtime.pools) == {"s0"}


async def test_block_lists_repeat_window_and_model_hot_swap_reach_the_decisions(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime: WorkerRuntime = made.runtime
    runtime.apply(Join("a", "s", 1.0, blocked=("b",)), partition=0)
    runtime.apply(Join("b", "s", 1.0), partition=0)
    runtime.tick()
    assert recorder.decisions == []  # the only pair is blocked
    runtime.apply(Join("c", "s", 1.0), partition=0)
    current = runtime.scorer
    runtime.set_model(Scorer(current.projection, BilinearModel(current.bilinear.weights, "duration-v7")))
    runtime.tick()
    (decision,) = recorder.decisions
    assert decision.model_version == "duration-v7" and decision.policy == runtime.policy == "auction-top8"
    pair = {decision.user_a, decision.user_b}
    assert "c" in pair and pair != {"a", "b"}
    # the same two users again, within the repeat window (and the third one gone): not matched a second time
    (other,) = {"a", "b", "c"} - pair
    runtime.apply(Leave(other, "s", clock.now), partition=0)
    for user in sorted(pair):
        runtime.apply(Join(user, "s", clock.now), partition=0)
    runtime.tick()
    assert len(recorder.decisions) == 1
    with pytest.raises(ValueError, match="this worker needs"):
        runtime.set_model(heuristic_scorer(runtime.settings.embed_dim + 1))


async def test_a_retried_join_changes_nothing_whether_waiting_matched_or_left(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime = made.runtime
    a, b, c = (Join(u, "s", 5.0) for u in "abc")
    runtime.apply_batch([Msg.of(a), Msg.of(b), Msg.of(a)])  # retried while waiting
    assert len(runtime.pools["s"]) == 2 and runtime.counters["joins.duplicate"] == 1
    runtime.tick()
    assert len(recorder.decisions) == 1
    runtime.apply_batch([Msg.of(c), Msg.of(Leave("c", "s", 6.0)), Msg.of(a), Msg.of(b), Msg.of(c)])  # late retries
    assert len(runtime.pools["s"]) == 0 and runtime.counters["joins.duplicate"] == 4
    clock.advance(1000.0)  # past the repeat window
    runtime.apply_batch([Msg.of(Join("a", "s", 9.0)), Msg.of(Join("b", "s", 9.0))])  # new joins: wait again
    runtime.tick()
    assert len(recorder.decisions) == 2
