"""Agents driven through Faust's ``agent.test_context()`` (in-memory transport, no broker), built by the app
factory around a recording sink and a manual clock (``tickmatch.testing``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tickmatch.agents.app import Built, create_app
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.learning.scorer import Scorer, heuristic_scorer
from tickmatch.matching.bilinear import BilinearModel
from tickmatch.schemas import ChatEnd, Join, Leave, encode
from tickmatch.stream.settings import Settings
from tickmatch.testing import ManualClock, RecordingSink


@pytest.fixture()
async def built() -> AsyncIterator[tuple[Built, RecordingSink, ManualClock]]:
    # test_context() uses an in-memory channel: this address is never connected to.
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


def key(shard: str) -> bytes:
    return shard.encode()


async def test_join_and_leave_update_the_pool(built: tuple[Built, RecordingSink, ManualClock]) -> None:
    made, recorder, _ = built
    async with made.ingest.test_context() as agent:
        await agent.put(key=key("s"), value=encode(Join("a", "s", 1.0, gender="f")))
        await agent.put(key=key("s"), value=encode(Join("b", "s", 1.0)))
        await agent.put(key=key("s"), value=encode(Leave("a", "s", 2.0)))
    pool = made.runtime.pools["s"]
    assert "b" in pool and "a" not in pool and len(pool) == 1
    assert recorder.dead == []


async def test_malformed_events_are_dead_lettered_and_the_agent_keeps_going(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, _ = built
    async with made.ingest.test_context() as agent:
        await agent.put(key=key("s"), value=b"\x00\x01 not msgpack")
        await agent.put(key=key("other"), value=encode(Join("a", "s", 1.0)))
        await agent.put(key=key("s"), value=encode(Join("b", "s", 1.0)))
    reasons = [(d.value, d.reason) for d in recorder.dead]
    assert reasons[0] == (b"\x00\x01 not msgpack", "not-msgpack")
    assert reasons[1][1] == "key-mismatch"
    assert "b" in made.runtime.pools["s"] and "a" not in made.runtime.pools["s"]


async def test_tick_matches_emits_decisions_and_labels_follow_chat_ends(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime: WorkerRuntime = made.runtime
    async with made.ingest.test_context() as agent:
        for user in "abcd":
            await agent.put(key=key("s"), value=encode(Join(user, "s", 1.0)))
        clock.advance(3.0)
        stats = await runtime.tick()
        assert stats.pairs == 2 and stats.waiting == 4 and len(runtime.pools["s"]) == 0
        first, second = recorder.decisions
        assert {first.user_a, first.user_b, second.user_a, second.user_b} == set("abcd")
        assert first.wait_a_s == 3.0 and first.model_version == runtime.model_version
        clock.advance(10.0)
        for user in (first.user_a, first.user_b):
            await agent.put(key=key("s"), value=encode(ChatEnd(first.match_id, user, "s", clock.now, "hangup")))
        await agent.put(key=key("s"), value=encode(ChatEnd("nope", "a", "s", clock.now, "hangup")))
    assert [(lb.match_id, lb.duration_s, lb.censored) for lb in recorder.labels] == [(first.match_id, 10.0, False)]
    clock.advance(5.0)
    await runtime.tick()
    assert recorder.reasons() == ["unknown-match"]
    clock.advance(30.0)
    await runtime.tick()
    assert [(lb.match_id, lb.censored) for lb in recorder.labels[1:]] == [(second.match_id, True)]
    assert len(recorder.ticks) == 3


async def test_revoked_partitions_drop_their_shards(built: tuple[Built, RecordingSink, ManualClock]) -> None:
    made, _, _ = built
    await made.runtime.apply(Join("a", "s0", 1.0), partition=0)
    await made.runtime.apply(Join("b", "s1", 1.0), partition=1)
    assert made.runtime.drop_partitions({1}) == ["s1"]
    assert set(made.runtime.pools) == {"s0"}


async def test_block_lists_repeat_window_and_model_hot_swap_reach_the_decisions(
    built: tuple[Built, RecordingSink, ManualClock],
) -> None:
    made, recorder, clock = built
    runtime: WorkerRuntime = made.runtime
    await runtime.apply(Join("a", "s", 1.0, blocked=("b",)), partition=0)
    await runtime.apply(Join("b", "s", 1.0), partition=0)
    await runtime.tick()
    assert recorder.decisions == []  # the only pair is blocked
    await runtime.apply(Join("c", "s", 1.0), partition=0)
    current = runtime.scorer
    runtime.set_model(Scorer(current.projection, BilinearModel(current.bilinear.weights, "duration-v7")))
    await runtime.tick()
    (decision,) = recorder.decisions
    assert decision.model_version == "duration-v7" and decision.policy == runtime.policy == "auction-top8"
    pair = {decision.user_a, decision.user_b}
    assert "c" in pair and pair != {"a", "b"}
    # the same two users again, within the repeat window (and the third one gone): not matched a second time
    (other,) = {"a", "b", "c"} - pair
    await runtime.apply(Leave(other, "s", clock.now), partition=0)
    for user in sorted(pair):
        await runtime.apply(Join(user, "s", clock.now), partition=0)
    await runtime.tick()
    assert len(recorder.decisions) == 1
    with pytest.raises(ValueError, match="this worker needs"):
        runtime.set_model(heuristic_scorer(runtime.settings.embed_dim + 1))
