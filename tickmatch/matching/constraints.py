"""Pairs that must not be matched: block lists and recent repeat pairs, kept as pool-slot keys.

Why slot keys: the scan kernel checks a pair only after it beat a threshold (a few dozen times per user per
tick), so a binary search in one sorted ``int64`` array is cheap, and a per-slot flag skips it for the many
users with no forbidden partner at all. The Python-side bookkeeping runs on join, leave and match, never
inside the tick's scoring.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import numpy.typing as npt

from tickmatch.matching.columnlog import ColumnLog, ColumnView

KEY_SHIFT = 32  # key = lo_slot << 32 | hi_slot
_NO_BLOCKS: frozenset[str] = frozenset()


def pair_key(a: int, b: int) -> int:
    """Order-independent key of two slots."""
    lo, hi = (a, b) if a < b else (b, a)
    return (lo << KEY_SHIFT) | hi


KEY_BASE = 1 << KEY_SHIFT  # what the kernel multiplies the lower slot by


class ForbiddenPairs:
    """Block lists (both directions) and recently matched pairs (for ``repeat_window_s``) of one pool."""

    def __init__(self, repeat_window_s: float = 600.0) -> None:
        self.repeat_window_s = repeat_window_s
        self._recent: dict[str, dict[str, float]] = {}  # user -> partner -> forbidden until
        self._expiry: list[tuple[float, str, str]] = []
        # Every ban in the order given, expired ones retired: what a snapshot reads without walking the bans under
        # the state lock (300,000 of them after 2 minutes at 5,000 joins/s). A superseded ban may linger in it;
        # re-applied in order, the later one wins, as it did here.
        self._log = ColumnLog(("a", "b", "until"))
        self._blocks: dict[str, frozenset[str]] = {}  # waiting user -> users they blocked
        self._blocked_by: dict[str, set[str]] = {}  # user -> waiting users who blocked them
        self._slot_keys: dict[int, set[int]] = {}
        self._keys: set[int] = set()
        self._array = np.zeros(0, dtype=np.int64)
        self._dirty = False
        self.flag = np.zeros(0, dtype=bool)
        # Counts pairs of waiting users that became allowed again (a repeat ban ended while both wait): cached
        # candidate lists left such pairs out, so the engine rebuilds them when this changes.
        self.relaxed = 0

    def resize(self, capacity: int) -> None:
        """Follow the pool's slot capacity."""
        grown = np.zeros(capacity, dtype=bool)
        grown[: self.flag.shape[0]] = self.flag
        self.flag = grown

    def _link(self, a: int, b: int) -> None:
        key = pair_key(a, b)
        if key in self._keys:
            return
        self._keys.add(key)
        for s in (a, b):
            self._slot_keys.setdefault(s, set()).add(key)
            self.flag[s] = True
        self._dirty = True

    def _unlink(self, key: int) -> None:
        if key not in self._keys:
            return
        self._keys.discard(key)
        for s in (key >> KEY_SHIFT, key & (KEY_BASE - 1)):
            keys = self._slot_keys.get(s)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._slot_keys[s]
                    self.flag[s] = False
        self._dirty = True

    def on_add(self, user: str, slot: int, blocked: tuple[str, ...], slot_of: dict[str, int]) -> None:
        """A user entered the pool at ``slot`` with a block list."""
        if not blocked and user not in self._blocked_by and user not in self._recent:
            self._blocks[user] = _NO_BLOCKS  # the common join: nobody to forbid (no sets built per join)
            return
        self._blocks[user] = frozenset(blocked)
        for target in blocked:
            self._blocked_by.setdefault(target, set()).add(user)
        partners = set(blocked) | self._blocked_by.get(user, set()) | set(self._recent.get(user, {}))
        partners.discard(user)
        for partner in partners:
            other = slot_of.get(partner)
            if other is not None:
                self._link(slot, other)

    def on_remove(self, user: str, slot: int) -> None:
        """A user left the pool (matched, left, expired)."""
        for key in list(self._slot_keys.get(slot, ())):
            self._unlink(key)
        for target in self._blocks.pop(user, frozenset()):
            waiting = self._blocked_by.get(target)
            if waiting is not None:
                waiting.discard(user)
                if not waiting:
                    del self._blocked_by[target]

    def record_match(self, a: str, b: str, now: float) -> None:
        """Forbid re-matching ``a`` and ``b`` until ``now + repeat_window_s``."""
        if self.repeat_window_s <= 0:
            return
        self.ban(a, b, now + self.repeat_window_s)

    def ban(self, a: str, b: str, until: float) -> None:
        """Forbid re-matching ``a`` and ``b`` until ``until`` (a snapshot restores bans through here)."""
        self._recent.setdefault(a, {})[b] = until
        self._recent.setdefault(b, {})[a] = until
        heapq.heappush(self._expiry, (until, a, b))
        self._log.append((a, b, until))

    def prune(self, now: float, slot_of: dict[str, int]) -> int:
        """Forget repeat bans that ended; returns how many ended."""
        ended = 0
        while self._expiry and self._expiry[0][0] <= now:
            until, a, b = heapq.heappop(self._expiry)
            if self._recent.get(a, {}).get(b) != until:
                continue  # superseded by a later match of the same pair
            for x, y in ((a, b), (b, a)):
                partners = self._recent.get(x)
                if partners is not None:
                    partners.pop(y, None)
                    if not partners:
                        del self._recent[x]
            ended += 1
            sa, sb = slot_of.get(a), slot_of.get(b)
            still_blocked = b in self._blocks.get(a, ()) or a in self._blocks.get(b, ())
            if sa is not None and sb is not None and not still_blocked:
                self._unlink(pair_key(sa, sb))
                self.relaxed += 1
        if ended:
            self._log.retire_until("until", math.nextafter(now, math.inf))  # the bans ending at or before now
            self._log.compact_if_sparse()
        return ended

    def bans(self) -> list[tuple[str, str, float]]:
        """Live repeat bans as ``(a, b, until)`` with ``a < b`` (for a snapshot)."""
        return [(a, b, until) for a, partners in self._recent.items() for b, until in partners.items() if a < b]

    def ban_view(self) -> ColumnView:
        """The bans as columns ``a, b, until`` for a snapshot: a byte per ban copied (see ``columnlog``)."""
        return self._log.view()

    def blocks(self, user: str) -> tuple[str, ...]:
        """The block list a waiting user joined with."""
        return tuple(sorted(self._blocks.get(user, ())))

    def keys(self) -> npt.NDArray[np.int64]:
        """Sorted keys of forbidden slot pairs currently both in the pool (rebuilt only after a change)."""
        if self._dirty:
            self._array = np.fromiter(sorted(self._keys), dtype=np.int64, count=len(self._keys))
            self._dirty = False
        return self._array

    def remembered(self) -> int:
        """Users with a live repeat ban (bounded by matches in the last ``repeat_window_s``)."""
        return len(self._recent)
