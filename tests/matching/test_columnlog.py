"""Append-only columns: a view taken for a snapshot stays exactly as it was while the log goes on changing."""

from __future__ import annotations

from tickmatch.matching.columnlog import COMPACT_MIN_ROWS, ColumnLog, ColumnView


def filled(n: int) -> ColumnLog:
    log = ColumnLog(("id", "at"))
    for i in range(n):
        assert log.append((f"r{i}", float(i))) == i
    return log


def test_a_view_is_unchanged_by_later_appends_retires_and_compaction() -> None:
    n = COMPACT_MIN_ROWS * 2
    log = filled(n)
    for row in range(0, n, 3):
        log.retire(row)
    view = log.view()
    expected: dict[str, list[object]] = {
        "id": [f"r{i}" for i in range(n) if i % 3],
        "at": [float(i) for i in range(n) if i % 3],
    }
    assert view.columns() == expected and len(view) == len(expected["id"]) == len(log)

    log.append(("late", -1.0))
    for row in range(n):  # retire nearly everything: the log compacts into new lists
        log.retire(row)
    kept = log.compact_if_sparse()
    assert kept == [n] and log.column("id") == ["late"] and log.rows == 1
    assert view.columns() == expected  # the view still reads the lists it was given


def test_compaction_waits_for_half_the_rows_retired_and_reports_the_rows_kept() -> None:
    log = filled(COMPACT_MIN_ROWS)
    for row in range(COMPACT_MIN_ROWS // 2 - 1):
        log.retire(row)
    assert log.compact_if_sparse() is None  # fewer than half retired: nothing rebuilt
    log.retire(COMPACT_MIN_ROWS - 1)
    log.retire(COMPACT_MIN_ROWS - 2)
    kept = log.compact_if_sparse()
    assert kept == list(range(COMPACT_MIN_ROWS // 2 - 1, COMPACT_MIN_ROWS - 2))
    assert log.column("id") == [f"r{i}" for i in kept] and all(log.is_alive(r) for r in range(len(kept)))
    assert filled(10).compact_if_sparse() is None  # a small log is never rebuilt


def test_retire_until_retires_the_leading_rows_below_the_bound_once() -> None:
    log = filled(10)
    log.retire(2)
    assert log.retire_until("at", 5.0) == 4  # rows 0, 1, 3, 4 (row 2 was retired already)
    assert log.retire_until("at", 5.0) == 0
    assert list(log.alive_values("id")) == [f"r{i}" for i in range(5, 10)]


def test_a_view_of_plain_columns_checks_their_lengths() -> None:
    view = ColumnView.of(("id", "at"), {"id": ["a", "b"], "at": [1.0, 2.0]})
    assert view.columns() == {"id": ["a", "b"], "at": [1.0, 2.0]} and len(view) == 2
    try:
        ColumnView.of(("id", "at"), {"id": ["a"], "at": []})
    except ValueError as exc:
        assert "lengths" in str(exc)
    else:
        raise AssertionError("columns of different lengths accepted")


def test_the_repeat_ban_view_holds_the_live_bans_and_rebuilds_them() -> None:
    from tickmatch.matching.constraints import ForbiddenPairs

    bans = ForbiddenPairs(repeat_window_s=10.0)
    bans.record_match("a", "b", 0.0)  # until 10
    bans.record_match("c", "d", 5.0)  # until 15
    bans.ban("e", "f", 12.0)
    bans.prune(10.0, {})  # a-b ends at exactly 10
    cols = bans.ban_view().columns()
    again = ForbiddenPairs(repeat_window_s=10.0)
    for a, b, until in zip(cols["a"], cols["b"], cols["until"], strict=True):
        again.ban(a, b, until)
    assert sorted(again.bans()) == sorted(bans.bans()) == [("c", "d", 15.0), ("e", "f", 12.0)]
