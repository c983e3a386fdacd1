"""Append-only columns whose rows can be retired, and O(1) views of them for snapshots.

Why: a busy worker holds hundreds of thousands of open matches and recent join tickets. A snapshot used to walk
them under the state lock (1.3 s for 300,000 open matches and 600,000 tickets, measured) and build a Python
object per row to encode, which stalled ticks (issue 10). Kept as one Python list per field from the start, a
snapshot copies nothing but a byte per row (which rows are alive) and the list references; the snapshot thread
then packs whole columns in C.

Why a view stays valid without copying the lists: rows are only ever appended to a column list, and compaction
builds *new* lists instead of editing the old ones, so the lists a view holds never change below its row count.
(CPython's GIL makes a list append and a concurrent read of earlier items safe.)

Why blocks, a log id and versions: the stored rows of a block of :data:`CHUNK_ROWS` rows never change once the
block is full, except through :meth:`ColumnLog.set` (which bumps the block's version) or a compaction (which makes
new lists under a new generation). So a snapshot encoder can keep a full block's encoded bytes under the key
``(log id, generation, block, version)`` and reuse them in every later snapshot: each snapshot then encodes only
what was appended since the last one (``agents.snapshot``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, count
from typing import Any

COMPACT_MIN_ROWS = 4096  # below this a log is never compacted (rebuilding it would cost more than it frees)
CHUNK_ROWS = 4096  # rows per block a snapshot encodes and caches: 2.5 ms to pack one of open matches (21 columns)
_log_ids = count(1)
# Runs an iterator in C, keeping nothing: one deque for all appends (a new deque per append cost 0.25 us more).
_exhaust: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend


@dataclass(frozen=True, slots=True)
class ColumnView:
    """The rows of a :class:`ColumnLog` alive when the view was taken; reading it needs no lock."""

    names: tuple[str, ...]
    lists: tuple[list[Any], ...]
    alive: bytes  # one byte per row that existed at the time of the view: 1 alive, 0 retired
    key: tuple[int, int] | None = None  # (log id, generation) of the lists; None: plain columns (never cached)
    versions: Mapping[int, int] = field(default_factory=dict)  # block -> times a value in it was set()

    @property
    def rows(self) -> int:
        """Rows stored when the view was taken, retired ones included."""
        return len(self.alive)

    def block(self, name: str, index: int) -> list[Any]:
        """The stored values (retired rows included) of block ``index`` (:data:`CHUNK_ROWS` rows) of a column."""
        start = index * CHUNK_ROWS
        return self.lists[self.names.index(name)][start : min(start + CHUNK_ROWS, len(self.alive))]

    def __len__(self) -> int:
        return sum(self.alive)

    def columns(self) -> dict[str, list[Any]]:
        """Name -> values of the alive rows, in row order (one C-level pass per column)."""
        return {name: list(compress(values, self.alive)) for name, values in zip(self.names, self.lists, strict=True)}

    @classmethod
    def of(cls, names: Sequence[str], columns: dict[str, list[Any]]) -> ColumnView:
        """A view of plain columns (all rows alive), e.g. decoded from a snapshot."""
        lists = tuple(columns[name] for name in names)
        n = len(lists[0]) if lists else 0
        if any(len(values) != n for values in lists):
            raise ValueError("columns of different lengths")
        return cls(tuple(names), lists, b"\x01" * n)


class ColumnLog:
    """Rows of fixed fields as one list per field; rows are appended, retired, and compacted away in bulk."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._lists: tuple[list[Any], ...] = tuple([] for _ in self.names)
        self._alive = bytearray()
        self.live = 0
        self._front = 0  # rows before it are retired (``retire_until`` moves it)
        self.id = next(_log_ids)
        self.generation = 0  # bumped by each compaction (new lists, new row numbers)
        self._versions: dict[int, int] = {}  # block -> number of set() calls into it (this generation)

    def __len__(self) -> int:
        return self.live

    @property
    def rows(self) -> int:
        """Rows stored, retired ones included (row numbers run from 0 to this)."""
        return len(self._alive)

    def append(self, values: Sequence[Any]) -> int:
        """Add a row (values in field order); returns its row number."""
        if len(values) != len(self._lists):
            raise ValueError(f"{len(values)} values for {len(self._lists)} columns")
        _exhaust(map(list.append, self._lists, values))  # one C-level loop over the columns
        self._alive.append(1)
        self.live += 1
        return len(self._alive) - 1

    def column(self, name: str) -> list[Any]:
        """One column, retired rows included (read it, never change it)."""
        return self._lists[self.names.index(name)]

    def set(self, row: int, name: str, value: Any) -> None:
        """Change one stored value in place. Only for values that only move forward (e.g. "last seen at"), for
        which a view reading the newer value is as right as one reading the older (a snapshot replays the
        events after it, and re-applying them gives the same value)."""
        self._lists[self.names.index(name)][row] = value
        block = row // CHUNK_ROWS
        self._versions[block] = self._versions.get(block, 0) + 1

    def is_alive(self, row: int) -> bool:
        return bool(self._alive[row])

    def retire(self, row: int) -> None:
        """Mark a row gone (it stays stored until the next compaction)."""
        if self._alive[row]:
            self._alive[row] = 0
            self.live -= 1

    def retire_until(self, name: str, bound: Any) -> int:
        """Retire the leading rows whose ``name`` value is below ``bound`` (for logs appended in that value's
        order, e.g. time); stops at the first row that is not. Returns how many were retired."""
        values = self._lists[self.names.index(name)]
        retired = 0
        while self._front < len(values) and values[self._front] < bound:
            if self._alive[self._front]:
                self._alive[self._front] = 0
                self.live -= 1
                retired += 1
            self._front += 1
        return retired

    def view(self) -> ColumnView:
        """The alive rows as of now: copies one byte per row, not the rows."""
        return ColumnView(self.names, self._lists, bytes(self._alive), (self.id, self.generation), dict(self._versions))

    def alive_values(self, name: str) -> Iterable[Any]:
        """The values of ``name`` in the alive rows."""
        return compress(self._lists[self.names.index(name)], self._alive)

    def compact_if_sparse(self) -> list[int] | None:
        """Drop retired rows if they are more than half of a log of at least :data:`COMPACT_MIN_ROWS` rows.
        Returns the old row numbers of the rows kept (new row i was old row ``kept[i]``), or None if nothing
        changed. Amortised O(1) per retired row; new lists are built, so earlier views stay valid."""
        rows = len(self._alive)
        if rows < COMPACT_MIN_ROWS or self.live * 2 > rows:
            return None
        alive = self._alive
        kept = list(compress(range(rows), alive))
        self._lists = tuple(list(compress(column, alive)) for column in self._lists)
        self._alive = bytearray(b"\x01" * len(kept))
        self._front = 0
        self.generation += 1
        self._versions = {}
        return kept
