"""Per-shard waiting pool as preallocated contiguous arrays with O(1) add/remove through slot reuse.

Why arrays and not per-user objects: the tick reads every waiting user's embedding and filters; contiguous
float32 rows let scoring be one matrix product, and no per-user Python objects means nothing for the garbage
collector to walk during a tick. The only per-user Python state is the id <-> slot map, touched on
join/leave/match, never inside scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt

from tickmatch.matching.constraints import ForbiddenPairs
from tickmatch.matching.filters import ANY, FILTER_ATTRS, MAX_VALUES, UNKNOWN

MAX_CACHED_ROWS = 4096  # distinct (profile, wants) combinations whose filter rows a pool keeps (then starts over)


class PoolError(ValueError):
    """A request the pool cannot honour (reported to the dead-letter topic by the caller)."""


class Vocabulary:
    """Maps attribute strings to small codes (bit positions) for one attribute of one pool."""

    __slots__ = ("_codes", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._codes: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        """Code of ``value``, assigning the next free one; ``UNKNOWN`` for None."""
        if value is None:
            return UNKNOWN
        code = self._codes.get(value)
        if code is None:
            if len(self._codes) >= MAX_VALUES:
                raise PoolError(f"more than {MAX_VALUES} distinct values of {self.name} in one shard")
            code = len(self._codes)
            self._codes[value] = code
        return code

    def values(self, mask: np.uint64) -> tuple[str, ...]:
        """The values a mask accepts, inverse of :meth:`mask` (empty for accept-anyone)."""
        if mask == ANY:
            return ()
        bits = int(mask)
        return tuple(value for value, code in self._codes.items() if bits >> code & 1)

    def value(self, code: int) -> str | None:
        """The value of a code, inverse of :meth:`code`."""
        if code == UNKNOWN:
            return None
        for value, c in self._codes.items():
            if c == code:
                return value
        raise KeyError(code)

    def mask(self, wanted: tuple[str, ...]) -> np.uint64:
        """Bit mask of acceptable partner values; all ones when the user accepts anyone."""
        if not wanted:
            return ANY
        bits = 0
        for value in wanted:
            bits |= 1 << self.code(value)
        return np.uint64(bits)


class WaitingUser(NamedTuple):
    """One waiting user as :meth:`Pool.add` takes them (what a snapshot stores; the embedding is derived)."""

    user_id: str
    joined_at: float
    raw: npt.NDArray[np.float32]
    attrs: dict[str, str | None]
    wants: dict[str, tuple[str, ...]]
    blocked: tuple[str, ...]
    bias: float


class Pool:
    """Waiting users of one shard.

    Slots ``[0, capacity)`` hold users; ``active`` marks occupied ones. Arrays grow by doubling, so the
    amortised cost of a join is O(1) and steady-state ticks allocate nothing here.
    """

    def __init__(self, dim: int, capacity: int = 1024, repeat_window_s: float = 600.0, raw_dim: int = 0) -> None:
        self.dim = dim
        self.raw_dim = raw_dim
        self.forbidden = ForbiddenPairs(repeat_window_s)
        self.capacity = 0
        self.size = 0
        self.vocab = {name: Vocabulary(name) for name in FILTER_ATTRS}
        # (attribute values, wanted values) -> their (codes, masks) rows: a value's code never changes in a pool,
        # and most joins share a handful of profiles, so a join costs one dict lookup here instead of six
        # vocabulary calls and two list-to-array conversions (4.3 -> 3.1 us a join, measured).
        self._rows: dict[tuple[Any, ...], tuple[npt.NDArray[np.int8], npt.NDArray[np.uint64]]] = {}
        self.emb = np.zeros((0, dim), dtype=np.float32)
        # The raw feature vector each embedding was projected from: a new model version re-embeds from it.
        self.raw = np.zeros((0, raw_dim), dtype=np.float32)
        self.bias = np.zeros(0, dtype=np.float32)
        self.joined_at = np.zeros(0, dtype=np.float64)
        self.active = np.zeros(0, dtype=bool)
        self.attr = np.zeros((0, len(FILTER_ATTRS)), dtype=np.int8)
        self.want = np.zeros((0, len(FILTER_ATTRS)), dtype=np.uint64)
        # Auction prices (as partner, as "stays unmatched") from the last tick this user took part in: the
        # market's value of each waiting user, reused as the next tick's starting point. NaN: none yet.
        self.price = np.zeros((0, 2), dtype=np.float64)
        # Bumped whenever what a slot holds changes (a user joins into it, or its features change): the engine's
        # pair cache compares it to tell a cached score of this slot from a stale one (see matching.paircache).
        self.gen = np.zeros(0, dtype=np.int64)
        self.ids: list[str | None] = []
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        self.emb = _resized(self.emb, (capacity, self.dim))
        self.raw = _resized(self.raw, (capacity, self.raw_dim))
        self.bias = _resized(self.bias, (capacity,))
        self.joined_at = _resized(self.joined_at, (capacity,))
        self.active = _resized(self.active, (capacity,))
        self.attr = _resized(self.attr, (capacity, len(FILTER_ATTRS)))
        self.want = _resized(self.want, (capacity, len(FILTER_ATTRS)))
        self.price = _resized(self.price, (capacity, 2))
        self.gen = _resized(self.gen, (capacity,))
        self.forbidden.resize(capacity)
        self.ids.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))  # pop() hands out low slots first
        self.capacity = capacity

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._slot

    def __len__(self) -> int:
        return self.size

    def slot_of(self, user_id: str) -> int | None:
        """Slot of a waiting user, or None."""
        return self._slot.get(user_id)

    def add(
        self,
        user_id: str,
        joined_at: float,
        embedding: npt.NDArray[np.float32],
        attrs: dict[str, str | None],
        wants: dict[str, tuple[str, ...]],
        bias: float = 0.0,
        blocked: tuple[str, ...] = (),
        raw: npt.NDArray[np.float32] | None = None,
    ) -> int:
        """Add (or refresh) a waiting user; a repeated join keeps the original join time. Returns the slot.

        ``blocked``: users this user must never be matched with (applied in both directions)."""
        key = (*map(attrs.get, FILTER_ATTRS), *map(wants.get, FILTER_ATTRS))
        try:
            rows = self._rows.get(key)
        except TypeError:  # unhashable values (a list of wanted values): computed, not cached
            rows = self._filter_rows(attrs, wants)
        if rows is None:
            rows = self._filter_rows(attrs, wants)
            if len(self._rows) >= MAX_CACHED_ROWS:
                self._rows.clear()
            self._rows[key] = rows
        codes, masks = rows
        slot = self._slot.get(user_id)
        if slot is not None:
            self.forbidden.on_remove(user_id, slot)  # a repeated join replaces the block list
        if slot is None:
            if not self._free:
                self._grow(self.capacity * 2)
            slot = self._free.pop()
            self._slot[user_id] = slot
            self.ids[slot] = user_id
            self.joined_at[slot] = joined_at
            self.price[slot] = np.nan
            self.active[slot] = True
            self.size += 1
        self.emb[slot] = embedding
        if raw is not None:
            self.raw[slot] = raw
        self.bias[slot] = bias
        self.attr[slot] = codes
        self.gen[slot] += 1
        self.want[slot] = masks
        self.forbidden.on_add(user_id, slot, blocked, self._slot)
        return slot

    def _filter_rows(
        self, attrs: dict[str, str | None], wants: dict[str, tuple[str, ...]]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.uint64]]:
        """The ``attr`` and ``want`` rows of a user (assigns codes to new values; raises :class:`PoolError`)."""
        codes = [self.vocab[name].code(attrs.get(name)) for name in FILTER_ATTRS]
        masks = [self.vocab[name].mask(wants.get(name, ())) for name in FILTER_ATTRS]
        return np.array(codes, dtype=np.int8), np.array(masks, dtype=np.uint64)

    def update_features(
        self,
        user_id: str,
        embedding: npt.NDArray[np.float32],
        attrs: dict[str, str | None],
        bias: float | None = None,
        raw: npt.NDArray[np.float32] | None = None,
    ) -> bool:
        """In-place refresh of a waiting user's embedding and attributes; False if the user is not waiting."""
        slot = self._slot.get(user_id)
        if slot is None:
            return False
        self.emb[slot] = embedding
        self.gen[slot] += 1
        if raw is not None:
            self.raw[slot] = raw
        if bias is not None:
            self.bias[slot] = bias
        for i, name in enumerate(FILTER_ATTRS):
            if attrs.get(name) is not None:
                self.attr[slot, i] = self.vocab[name].code(attrs[name])
        return True

    def set_bias(self, slots: npt.NDArray[np.intp], values: npt.NDArray[np.floating[Any]]) -> None:
        """Overwrite the biases of waiting users (a policy that re-values users every tick). Goes through here, not
        ``pool.bias[...] =``, because the engine's pair cache must learn that these users' scores changed."""
        self.bias[slots] = values
        self.gen[slots] += 1

    def remove(self, user_id: str) -> float | None:
        """Remove a waiting user; returns their join time, or None if they were not waiting."""
        slot = self._slot.pop(user_id, None)
        if slot is None:
            return None
        self.forbidden.on_remove(user_id, slot)
        self.active[slot] = False
        self.ids[slot] = None
        self._free.append(slot)
        self.size -= 1
        return float(self.joined_at[slot])

    @property
    def slot_map(self) -> dict[str, int]:
        """user id -> slot of every waiting user (read-only use)."""
        return self._slot

    def take_pair(self, a: int, b: int, now: float) -> tuple[str, str]:
        """The users in slots ``a`` and ``b`` were matched at ``now``: remove both and ban the pair from being
        matched again within the repeat window. Returns their ids. The one place a decision changes a pool (the
        live worker and the simulator both go through it); read what the decision needs from the slots first."""
        user_a, user_b = self.ids[a], self.ids[b]
        if user_a is None or user_b is None or a == b:
            raise PoolError(f"slots {a} and {b} do not hold two waiting users")
        self.remove(user_a)
        self.remove(user_b)
        self.forbidden.record_match(user_a, user_b, now)
        return user_a, user_b

    def reembed(self, embed: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]) -> int:
        """A new model version: every waiting user's embedding recomputed from their stored raw features with
        ``embed`` (raw rows -> embedding rows, one matrix product for the whole pool). Returns how many.

        ``gen`` is not bumped: the engine's pair cache notices the new model object and rebuilds every list."""
        slots = self.active_slots()
        if slots.size:
            self.emb[slots] = embed(self.raw[slots])
        return int(slots.size)

    def export(self) -> list[WaitingUser]:
        """Every waiting user as :meth:`add` took them (for a partition snapshot; recovery re-adds them)."""
        out = []
        for slot in self.active_slots().tolist():
            user = self.ids[slot]
            assert user is not None
            attrs = {name: self.vocab[name].value(int(self.attr[slot, i])) for i, name in enumerate(FILTER_ATTRS)}
            wants = {name: self.vocab[name].values(self.want[slot, i]) for i, name in enumerate(FILTER_ATTRS)}
            blocked = self.forbidden.blocks(user)
            raw = self.raw[slot].copy()
            out.append(
                WaitingUser(user, float(self.joined_at[slot]), raw, attrs, wants, blocked, float(self.bias[slot]))
            )
        return out

    def active_slots(self) -> npt.NDArray[np.intp]:
        """Occupied slots in ascending order."""
        return np.flatnonzero(self.active[: self.capacity])

    def expire(self, now: float, ttl_s: float) -> list[tuple[str, float]]:
        """Remove users waiting longer than ``ttl_s``; returns (user_id, waited_s) of each."""
        slots = np.flatnonzero(self.active & (self.joined_at < now - ttl_s))
        out = []
        for slot in slots.tolist():
            user_id = self.ids[slot]
            assert user_id is not None
            joined = self.remove(user_id)
            assert joined is not None
            out.append((user_id, now - joined))
        return out


A = TypeVar("A", bound="np.ndarray[Any, Any]")


def _resized(arr: A, shape: tuple[int, ...]) -> A:
    """A zero-filled copy of ``arr`` grown to ``shape`` along the first axis (same dtype, C-contiguous)."""
    out = np.zeros(shape, dtype=arr.dtype)
    if arr.shape[0]:
        out[: arr.shape[0]] = arr
    return cast(A, out)
