"""Join tickets: retries recognised per shard, for a user's last four joins, and carried by snapshots for the
memory window."""

from __future__ import annotations

from tickmatch.agents.tickets import PER_USER, JoinTickets


def test_a_retry_of_any_of_the_last_joins_is_recognised_and_older_ones_are_not() -> None:
    tickets = JoinTickets()
    for k in range(PER_USER + 1):
        tickets.add("s", "u", f"t{k}", float(k))
    assert [tickets.seen("s", "u", f"t{k}") for k in range(PER_USER + 1)] == [False] + [True] * PER_USER
    assert tickets.last("s", "u") == f"t{PER_USER}" and tickets.last("s", "other") is None
    assert not tickets.seen("t", "u", "t1")  # tickets are per shard


def test_the_least_recent_users_go_first_past_the_limit() -> None:
    tickets = JoinTickets(max_users=3)
    for user in "abc":
        tickets.add("s", user, f"{user}1", 0.0)
    tickets.add("s", "a", "a2", 1.0)  # a is the most recent now
    tickets.add("s", "d", "d1", 2.0)
    assert len(tickets) == 3 and not tickets.seen("s", "b", "b1") and tickets.seen("s", "a", "a1")


def test_dropping_a_shard_forgets_its_tickets_only() -> None:
    tickets = JoinTickets()
    tickets.add("s", "u", "t1", 0.0)
    tickets.add("x", "u", "t1", 0.0)
    tickets.drop_shards({"s"})
    assert not tickets.seen("s", "u", "t1") and tickets.seen("x", "u", "t1") and len(tickets) == 1
    assert tickets.view("s", 0.0) is None


def test_a_snapshot_view_holds_the_memory_window_and_restores_the_same_tickets() -> None:
    tickets = JoinTickets(memory_s=100.0)
    tickets.add("s", "old", "o1", 0.0)
    for k in range(6):
        tickets.add("s", "u", f"t{k}", 50.0 + k)
    view = tickets.view("s", now=120.0)
    assert view is not None and view.columns()["user"] == ["u"] * 6
    again = JoinTickets()
    again.restore("s", view)
    assert again.items() == {("s", "u"): tickets.items()[("s", "u")]}
