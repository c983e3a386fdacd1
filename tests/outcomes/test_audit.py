"""The independent double-booking audit."""

from __future__ import annotations

from tickmatch.outcomes import double_booked
from tickmatch.schemas import Join, MatchDecision


def d(match_id: str, a: str, b: str, at: float) -> MatchDecision:
    return MatchDecision(match_id, 1, "s", a, b, 0.0, "v", "p", at, 0.0, 0.0)


def test_rejoin_between_decisions_is_fine() -> None:
    joins = [Join("a", "s", 1.0), Join("b", "s", 1.0), Join("c", "s", 1.0), Join("a", "s", 15.0)]
    assert double_booked(joins, [d("m1", "a", "b", 10.0), d("m2", "a", "c", 20.0)]) == []


def test_second_decision_without_rejoin_is_flagged() -> None:
    joins = [Join("a", "s", 1.0), Join("b", "s", 1.0), Join("c", "s", 1.0)]
    assert double_booked(joins, [d("m1", "a", "b", 10.0), d("m2", "c", "a", 20.0)]) == [("a", "m1", "m2")]


def test_rejoin_before_first_decision_does_not_count() -> None:
    joins = [Join("a", "s", 1.0), Join("a", "s", 5.0)]
    assert double_booked(joins, [d("m1", "a", "b", 10.0), d("m2", "a", "c", 20.0)]) == [("a", "m1", "m2")]


def test_self_pair_is_flagged() -> None:
    assert double_booked([], [d("m1", "a", "a", 1.0)]) == [("a", "m1", "m1")]
