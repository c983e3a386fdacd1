"""The chat-end ⋈ decision join, driven by an explicit clock (no sleeping)."""

from __future__ import annotations

from tickmatch.outcomes import EndOutcome, LabelJoin
from tickmatch.schemas import ChatEnd, ChatHeartbeat, MatchDecision


def decision(match_id: str, at: float = 100.0) -> MatchDecision:
    return MatchDecision(match_id, 1, "s", "a", "b", 1.0, "v1", "p", at, 0.0, 0.0)


def end(match_id: str, user: str, at: float) -> ChatEnd:
    return ChatEnd(match_id, user, "s", at, "hangup")


def make() -> LabelJoin:
    return LabelJoin(grace_s=5.0, censor_after_s=60.0, orphan_grace_s=10.0)


def test_both_ends_label_at_once_with_earliest_end() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    assert join.add_end(end("m", "a", 130.0), now=130.0) == (EndOutcome.ACCEPTED, None)
    outcome, label = join.add_end(end("m", "b", 131.0), now=131.0)
    assert outcome is EndOutcome.ACCEPTED and label is not None
    assert (label.duration_s, label.censored, label.ends_reported) == (30.0, False, 2)
    assert join.open_count == 0


def test_one_end_labels_after_grace_not_before() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    join.add_end(end("m", "b", 120.0), now=120.0)
    assert join.sweep(124.9) == ([], [])
    labels, dead = join.sweep(125.0)
    assert [(lb.duration_s, lb.ends_reported, lb.censored) for lb in labels] == [(20.0, 1, False)] and not dead


def test_no_end_is_censored_at_the_deadline_exactly_once() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    assert join.sweep(159.0) == ([], [])
    labels, _ = join.sweep(160.0)
    assert [(lb.duration_s, lb.censored, lb.ends_reported) for lb in labels] == [(60.0, True, 0)]
    assert join.sweep(1000.0) == ([], [])
    assert join.add_end(end("m", "a", 170.0), now=170.0) == (EndOutcome.LATE, None)
    assert join.late_ends == 1


def test_clock_skew_never_gives_negative_duration() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    join.add_end(end("m", "a", 95.0), now=101.0)
    _, label = join.add_end(end("m", "b", 99.0), now=101.0)
    assert label is not None and label.duration_s == 0.0


def test_orphan_is_held_then_dead_lettered() -> None:
    join = make()
    orphan = end("ghost", "a", 50.0)
    assert join.add_end(orphan, now=50.0) == (EndOutcome.HELD, None)
    assert join.sweep(59.9) == ([], [])
    assert join.sweep(60.0) == ([], [orphan])


def test_orphan_joined_when_its_decision_arrives_within_grace() -> None:
    join = make()
    join.add_end(end("m", "a", 130.0), now=100.5)
    join.add_end(end("m", "b", 131.0), now=100.6)
    labels, rejected = join.add_decision(decision("m"), now=101.0)
    assert [lb.duration_s for lb in labels] == [30.0] and rejected == []
    assert join.sweep(200.0) == ([], [])


def test_wrong_user_and_duplicate_are_reported() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    assert join.add_end(end("m", "mallory", 110.0), now=110.0)[0] is EndOutcome.WRONG_USER
    join.add_end(end("m", "a", 110.0), now=110.0)
    assert join.add_end(end("m", "a", 111.0), now=111.0)[0] is EndOutcome.DUPLICATE


def test_every_decision_gets_exactly_one_label() -> None:
    join = make()
    labels = []
    for k in range(30):
        join.add_decision(decision(f"m{k}", at=float(k)), now=float(k))
        if k % 3 == 0:
            labels += [lb for lb in (join.add_end(end(f"m{k}", u, k + 5.0), now=k + 5.0)[1] for u in "ab") if lb]
        elif k % 3 == 1:
            join.add_end(end(f"m{k}", "a", k + 5.0), now=k + 5.0)
        labels += join.sweep(float(k))[0]
    labels += join.sweep(1e9)[0]
    ids = [lb.match_id for lb in labels]
    assert sorted(ids) == sorted(f"m{k}" for k in range(30)) and len(set(ids)) == 30
    assert sum(lb.censored for lb in labels) == 10


def test_forget_shards_drops_open_matches() -> None:
    join = make()
    join.add_decision(decision("m"), now=100.0)
    assert join.forget_shards({"s"}) == 1 and join.open_count == 0


def test_open_matches_survive_compaction_of_their_log_and_a_snapshot_view_stays_put() -> None:
    """Thousands of matches closing in random order: the shard's open-match log compacts (rows renumbered) and
    every match still closes exactly once; a view taken before reads what was open then."""
    join = make()
    n = 10_000
    for i in range(n):
        join.add_decision(decision(f"m{i}"), now=100.0)
    before, _ = join.export({"s"}, now=100.0)
    closing = [i for i in range(n) if i % 4]  # 75 % close, enough to compact
    for i in closing:
        join.add_end(end(f"m{i}", "a", 110.0), now=110.0)
        outcome, label = join.add_end(end(f"m{i}", "b", 111.0), now=111.0)
        assert outcome is EndOutcome.ACCEPTED and label is not None and label.match_id == f"m{i}"
    assert before[0].opened.columns()["match_id"] == [f"m{i}" for i in range(n)]
    after, _ = join.export({"s"}, now=112.0)
    assert after[0].opened.columns()["match_id"] == [f"m{i}" for i in range(n) if i % 4 == 0]
    assert sorted(after[0].closed.columns()["match_id"]) == sorted(f"m{i}" for i in closing)
    labels, _ = join.sweep(100.0 + 60.0)  # the rest are censored, each once
    assert sorted(label.match_id for label in labels) == sorted(f"m{i}" for i in range(0, n, 4))
    assert join.open_count == 0 and len(join.export({"s"}, now=161.0)[0][0].opened) == 0


def test_a_snapshot_keeps_closed_matches_for_five_minutes_only() -> None:
    join = make()
    join.add_decision(decision("old"), now=100.0)
    join.add_decision(decision("new"), now=100.0)
    join.add_end(end("old", "a", 101.0), now=101.0)
    join.add_end(end("old", "b", 101.0), now=101.0)
    join.add_end(end("new", "a", 350.0), now=350.0)
    join.add_end(end("new", "b", 350.0), now=350.0)
    parts, _ = join.export({"s"}, now=450.0)
    assert parts[0].closed.columns()["match_id"] == ["new"]


def beat(match_id: str, user: str, at: float) -> ChatHeartbeat:
    return ChatHeartbeat(match_id, user, "s", at)


def make_hb(timeout_s: float = 30.0) -> LabelJoin:
    return LabelJoin(grace_s=5.0, censor_after_s=600.0, orphan_grace_s=10.0, heartbeat_timeout_s=timeout_s)


def test_a_silently_dropped_chat_is_censored_at_its_last_heartbeat() -> None:
    join = make_hb()
    join.add_decision(decision("m", at=100.0), now=100.0)
    for t in (110.0, 120.0, 130.0):  # alive for 30 s, then the client vanishes
        assert join.add_heartbeat(beat("m", "a", t), now=t) is EndOutcome.ACCEPTED
    assert join.sweep(159.9) == ([], [])  # 29.9 s of silence: not yet
    labels, _ = join.sweep(160.0)
    assert [(lb.duration_s, lb.censored, lb.ends_reported) for lb in labels] == [(30.0, True, 0)]
    assert join.open_count == 0 and join.sweep(700.0) == ([], [])  # exactly one label
    assert join.add_heartbeat(beat("m", "a", 161.0), now=161.0) is EndOutcome.LATE


def test_heartbeats_keep_a_chat_open_and_a_reported_end_still_wins() -> None:
    join = make_hb(timeout_s=10.0)
    join.add_decision(decision("m", at=100.0), now=100.0)
    for t in range(105, 200, 5):
        join.add_heartbeat(beat("m", "b", float(t)), now=float(t))
        assert join.sweep(float(t)) == ([], [])  # never 10 s of silence
    join.add_end(end("m", "a", 200.0), now=200.0)
    join.add_end(end("m", "b", 201.0), now=201.0)
    assert join.open_count == 0


def test_a_chat_without_heartbeats_keeps_the_old_rule_and_strangers_are_turned_away() -> None:
    join = make_hb(timeout_s=10.0)
    join.add_decision(decision("m", at=100.0), now=100.0)
    assert join.add_heartbeat(beat("m", "x", 105.0), now=105.0) is EndOutcome.WRONG_USER
    assert join.add_heartbeat(beat("other", "a", 105.0), now=105.0) is EndOutcome.UNKNOWN
    assert join.sweep(699.0) == ([], [])
    labels, _ = join.sweep(700.0)
    assert [(lb.duration_s, lb.censored) for lb in labels] == [(600.0, True)]


def test_a_heartbeat_survives_a_snapshot_and_the_restored_join_censors_at_it() -> None:
    join = make_hb()
    join.add_decision(decision("m", at=100.0), now=100.0)
    join.add_heartbeat(beat("m", "a", 140.0), now=141.0)
    parts, held = join.export({"s"}, now=142.0)
    restored = make_hb()
    restored.restore(parts, held)
    assert restored.sweep(170.0) == ([], [])
    labels, _ = restored.sweep(171.0)
    assert [(lb.match_id, lb.duration_s, lb.censored) for lb in labels] == [("m", 40.0, True)]
