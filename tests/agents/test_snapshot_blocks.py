"""Snapshot blocks: a snapshot reuses the blocks earlier ones encoded, and still decodes to exactly the log as it is."""

from __future__ import annotations

from tickmatch.agents.snapshot import BlockCache, pack_columns, unpack_columns
from tickmatch.matching.columnlog import CHUNK_ROWS, ColumnLog

NAMES = ("id", "at", "seen")


def filled(rows: int) -> ColumnLog:
    log = ColumnLog(NAMES)
    for i in range(rows):
        log.append((f"m{i}", float(i), None))
    return log


def alive_rows(log: ColumnLog) -> dict[str, list[object]]:
    return log.view().columns()


def roundtrip(log: ColumnLog, cache: BlockCache) -> dict[str, list[object]]:
    cache.next_round()
    return unpack_columns(NAMES, pack_columns(log.view(), cache=cache)).columns()


def test_later_snapshots_encode_only_the_blocks_that_changed() -> None:
    log = filled(3 * CHUNK_ROWS + 10)  # three full blocks and a tail
    cache = BlockCache()
    assert roundtrip(log, cache) == alive_rows(log)
    assert (cache.hits, cache.misses) == (0, 3)  # the tail is never cached: rows are still being added to it

    for row in range(0, 3 * CHUNK_ROWS, 7):  # retiring rows changes no stored value: every full block is reused
        log.retire(row)
    log.append(("late", -1.0, None))
    assert roundtrip(log, cache) == alive_rows(log)
    assert (cache.hits, cache.misses) == (3, 3)

    log.set(CHUNK_ROWS + 1, "seen", 42.0)  # a value changed in place: only its block is encoded again
    decoded = roundtrip(log, cache)
    assert decoded == alive_rows(log) and decoded["seen"].count(42.0) == 1
    assert (cache.hits, cache.misses) == (5, 4)


def test_a_compacted_log_is_encoded_anew_and_decodes_to_the_rows_it_kept() -> None:
    log = filled(2 * CHUNK_ROWS)
    cache = BlockCache()
    roundtrip(log, cache)
    for row in range(0, 2 * CHUNK_ROWS, 2):
        log.retire(row)
    log.retire(1)
    assert log.compact_if_sparse() is not None  # new lists, new row numbers: no old block may be reused
    before = cache.hits
    decoded = roundtrip(log, cache)
    assert cache.hits == before and decoded == alive_rows(log) and decoded["id"][0] == "m3"


def test_blocks_no_snapshot_used_for_a_few_rounds_are_forgotten() -> None:
    cache = BlockCache()
    roundtrip(filled(2 * CHUNK_ROWS), cache)
    assert len(cache) == 2
    other = filled(CHUNK_ROWS)
    for _ in range(BlockCache.KEEP_ROUNDS):
        roundtrip(other, cache)
    assert len(cache) == 3  # still within the rounds kept
    roundtrip(other, cache)
    assert len(cache) == 1  # the first log's blocks went; the one in use stays
