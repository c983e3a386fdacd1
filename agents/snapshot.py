"""A partition snapshot: everything a worker knows about the shards of one events partition, as compact bytes.

What it holds (and why each): the waiting users exactly as ``Pool.add`` took them (raw feature vectors as float32
bytes, join times, filter values, wants, block lists, bias), the repeat-pair bans, the recent join tickets (so a
retried join stays a no-op after a restart), the open matches with the chat-ends reported so far, the held
chat-ends and the matches labelled in the last five minutes (so every decision still gets exactly one label and a
late chat-end stays "late"), the tick counter, and three offsets: the next
``events`` offset it reflects and the next ``decisions`` / ``labels`` offsets of the partition at that moment.
Recovery (``tickmatch.agents.recovery``) loads it and replays only what came after those offsets.

Embeddings are not stored: they are recomputed from the raw vectors with the model the recovering worker runs
(a model swap re-embeds the same way). Encoding: msgpack, columnar per shard, zlib level 1 (one-hot raw vectors
compress ~5x).

Cost: :func:`take` runs under the worker's state lock, so it copies only what is small (waiting users,
partly ended chats, held chat-ends); open matches, recently closed ones, repeat-pair bans and join tickets —
hundreds of thousands on a busy worker — are kept as append-only columns and taken as views (a byte per row),
which :func:`encode` reads later in the snapshot thread. Measured with 300,000 open matches and 600,000
tickets: the take went from 1,272 ms to under 1 ms, the encoding (snapshot thread) from 2,679 ms to 627 ms.
The big columns are encoded in blocks that later snapshots reuse (:class:`BlockCache`), so a snapshot's
encoding costs what was appended since the previous one, not the size of the state.
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import msgpack
import numpy as np

from tickmatch.agents import tickets as join_tickets
from tickmatch.agents.runtime import WorkerRuntime
from tickmatch.learning.features import RAW_DIM
from tickmatch.matching.columnlog import CHUNK_ROWS, ColumnView
from tickmatch.matching.filters import FILTER_ATTRS
from tickmatch.matching.pool import WaitingUser
from tickmatch.outcomes.labeljoin import CLOSED_FIELDS, OPEN_FIELDS, ShardMatches
from tickmatch.schemas import ChatEnd

BAN_FIELDS = ("a", "b", "until")
# 3: big columns as cached blocks of stored rows + alive bytes, no outer zlib. Format 2 is still read (an upgrade
# must not replay whole partitions); anything else is refused with its number: recovery then replays the partition.
SNAPSHOT_FORMAT = 3
MAGIC = b"TMSNAP\x03\n"


class SnapshotError(ValueError):
    """The bytes are not a snapshot this code can read."""


@dataclass(slots=True)
class PartitionSnapshot:
    """The state of one events partition's shards (see the module docstring)."""

    partition: int
    events_offset: int
    decisions_offset: int
    labels_offset: int
    tick_id: int
    taken_at: float
    users: dict[str, list[WaitingUser]] = field(default_factory=dict)
    bans: dict[str, ColumnView] = field(default_factory=dict)  # shard -> repeat bans (columns a, b, until)
    tickets: dict[str, ColumnView] = field(default_factory=dict)  # shard -> recent joins (tickets.FIELDS)
    matches: list[ShardMatches] = field(default_factory=list)
    held: list[tuple[ChatEnd, float]] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return sum(len(u) for u in self.users.values())


def take(
    runtime: WorkerRuntime, partition: int, decisions_offset: int, labels_offset: int, now: float
) -> PartitionSnapshot:
    """Snapshot the runtime's shards of ``partition`` (call it between ticks, with every output delivered)."""
    shards = runtime.shards_of(partition)
    snap = PartitionSnapshot(
        partition=partition,
        events_offset=runtime.claimed.get(partition, 0),
        decisions_offset=decisions_offset,
        labels_offset=labels_offset,
        tick_id=runtime.tick_id,
        taken_at=now,
    )
    for shard in shards:
        pool = runtime.pools.get(shard)
        if pool is None:
            continue
        snap.users[shard] = pool.export()
        snap.bans[shard] = pool.forbidden.ban_view()
        joins = runtime.tickets.view(shard, now)
        if joins is not None:
            snap.tickets[shard] = joins
    snap.matches, snap.held = runtime.labels.export(set(shards), now)
    return snap


def restore(runtime: WorkerRuntime, snap: PartitionSnapshot) -> None:
    """Load a snapshot into the runtime (the partition's shards must not be there yet) and claim the partition
    from the snapshot's events offset."""
    for shard, bans in snap.bans.items():  # every shard of the partition has an entry here (see take)
        runtime.shard_partition[shard] = snap.partition
        pool = runtime.pool(shard)
        cols = bans.columns()  # bans first: adding a waiting user links the bans that concern them
        for a, b, until in zip(cols["a"], cols["b"], cols["until"], strict=True):
            pool.forbidden.ban(a, b, until)
    for shard, users in snap.users.items():
        pool = runtime.pool(shard)
        if not users:
            continue
        raw = np.stack([u.raw for u in users]).astype(np.float32, copy=False)
        emb = runtime.scorer_for(shard).embed(raw)
        for i, u in enumerate(users):
            pool.add(u.user_id, u.joined_at, emb[i], u.attrs, u.wants, bias=u.bias, blocked=u.blocked, raw=raw[i])
    for shard, joins in snap.tickets.items():
        runtime.tickets.restore(shard, joins)
    runtime.labels.restore(snap.matches, snap.held)
    runtime.tick_id = max(runtime.tick_id, snap.tick_id)
    runtime.claimed[snap.partition] = snap.events_offset


class BlockCache:
    """Encoded blocks of the big columns, kept between snapshots (only the snapshot thread uses it).

    A full block's stored rows never change under its key (``columnlog``), so its bytes are encoded once and
    reused by every later snapshot: a snapshot encodes what was appended since the last one, not the whole state.
    Measured in-process with 450,000 open matches, 900,000 join tickets and 450,000 bans (what bench.live's
    10,000 joins/s builds in 90 s): a full encode 1.27 s, and in a forked encoder child 2.3 s plus 171,000
    copy-on-write page faults, which slowed the parent's ticks 2-6x while it ran. Entries not used for
    :data:`KEEP_ROUNDS` snapshots (blocks of compacted-away lists, dropped shards) are dropped, so the cache holds
    about one snapshot's worth of bytes (45 MB after 2 minutes of 10,000 joins/s with no chat ending)."""

    KEEP_ROUNDS = 3

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, int, int, int], tuple[bytes, int]] = {}  # key -> (bytes, round last used)
        self.round = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, key: tuple[int, int, int, int]) -> bytes | None:
        entry = self._blocks.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._blocks[key] = (entry[0], self.round)
        return entry[0]

    def put(self, key: tuple[int, int, int, int], data: bytes) -> None:
        self._blocks[key] = (data, self.round)

    def next_round(self) -> None:
        """Start a snapshot round; forget what the last :data:`KEEP_ROUNDS` rounds did not use."""
        self.round += 1
        oldest = self.round - self.KEEP_ROUNDS
        self._blocks = {key: entry for key, entry in self._blocks.items() if entry[1] >= oldest}


def encode(snap: PartitionSnapshot, pause: Callable[[], None] = lambda: None, cache: BlockCache | None = None) -> bytes:
    """Compact bytes of a snapshot: :data:`MAGIC`, then msgpack of the offsets, the small state (zlib) and the big
    columns as zlib blocks (:func:`pack_columns`). ``pause`` is called after each block encoded anew: the worker's
    snapshot thread sleeps there, so it takes a bounded share of the GIL from the tick and ingest. ``cache``
    (:class:`BlockCache`) supplies the blocks encoded by earlier snapshots."""

    def _pack(view: ColumnView) -> dict[str, Any]:
        return pack_columns(view, pause, cache)

    shards = []
    for shard, users in snap.users.items():
        raw = np.stack([u.raw for u in users]).astype(np.float32) if users else np.zeros((0, RAW_DIM), np.float32)
        shards.append(
            {
                "shard": shard,
                "ids": [u.user_id for u in users],
                "joined_at": [u.joined_at for u in users],
                "bias": [u.bias for u in users],
                "raw": raw.tobytes(),
                "attrs": {a: [u.attrs.get(a) for u in users] for a in FILTER_ATTRS},
                "wants": {a: [list(u.wants.get(a, ())) for u in users] for a in FILTER_ATTRS},
                "blocked": [list(u.blocked) for u in users],
            }
        )
    small = {
        "shards": shards,
        "ends": {m.shard: m.ends for m in snap.matches},
        "held": [[end.wire(), seen] for end, seen in snap.held],
    }
    doc = {
        "format": SNAPSHOT_FORMAT,
        "partition": snap.partition,
        "events_offset": snap.events_offset,
        "decisions_offset": snap.decisions_offset,
        "labels_offset": snap.labels_offset,
        "tick_id": snap.tick_id,
        "taken_at": snap.taken_at,
        "raw_dim": RAW_DIM,
        "state": zlib.compress(msgpack.packb(small, use_bin_type=True), 1),
        "bans": {shard: _pack(bans) for shard, bans in snap.bans.items()},
        "tickets": {shard: _pack(joins) for shard, joins in snap.tickets.items()},
        "matches": [{"shard": m.shard, "open": _pack(m.opened), "closed": _pack(m.closed)} for m in snap.matches],
    }
    body: bytes = msgpack.packb(doc, use_bin_type=True)
    return MAGIC + body


def decode(blob: bytes) -> PartitionSnapshot:
    """A snapshot from :func:`encode`'s bytes, or from the format-2 bytes earlier versions wrote (so an upgrade
    does not replay whole partitions); :class:`SnapshotError` if they are not one this code reads."""
    reader = _from_doc
    try:
        if blob.startswith(MAGIC):
            doc = msgpack.unpackb(memoryview(blob)[len(MAGIC) :], raw=False, strict_map_key=False)
        else:  # format 2 and older: zlib'd msgpack without the magic
            doc = msgpack.unpackb(zlib.decompress(blob), raw=False, strict_map_key=False)
            reader = _from_doc_v2
    except Exception as exc:  # zlib and msgpack raise several unrelated types for garbage
        raise SnapshotError(f"not a snapshot: {type(exc).__name__}: {exc}") from exc
    if not isinstance(doc, dict):
        raise SnapshotError("not a snapshot: no format")
    if doc.get("format") != (SNAPSHOT_FORMAT if reader is _from_doc else 2):
        raise SnapshotError(f"unsupported snapshot format {doc.get('format')!r}")
    if doc.get("raw_dim") != RAW_DIM:
        raise SnapshotError(f"snapshot raw vectors have {doc.get('raw_dim')} values, this worker {RAW_DIM}")
    was = gc.isenabled()
    gc.disable()  # millions of new objects, none of them garbage: collections would only walk them (~25 %)
    try:
        return reader(doc)
    except (KeyError, IndexError, TypeError, ValueError, zlib.error, msgpack.UnpackException) as exc:
        raise SnapshotError(f"damaged snapshot: {type(exc).__name__}: {exc}") from exc
    finally:
        if was:
            gc.enable()


def _header(doc: dict[str, Any]) -> PartitionSnapshot:
    return PartitionSnapshot(
        partition=doc["partition"],
        events_offset=doc["events_offset"],
        decisions_offset=doc["decisions_offset"],
        labels_offset=doc["labels_offset"],
        tick_id=doc["tick_id"],
        taken_at=doc["taken_at"],
    )


def _users(item: dict[str, Any]) -> list[WaitingUser]:
    """One shard's waiting users from their columns (the same in formats 2 and 3)."""
    ids = item["ids"]
    raw = np.frombuffer(item["raw"], dtype=np.float32).reshape(len(ids), RAW_DIM)
    return [
        WaitingUser(
            user_id,
            float(item["joined_at"][i]),
            raw[i].copy(),
            {a: item["attrs"][a][i] for a in FILTER_ATTRS},
            {a: tuple(item["wants"][a][i]) for a in FILTER_ATTRS if item["wants"][a][i]},
            tuple(item["blocked"][i]),
            float(item["bias"][i]),
        )
        for i, user_id in enumerate(ids)
    ]


def _held(items: list[Any]) -> list[tuple[ChatEnd, float]]:
    return [(ChatEnd.from_dict(end), float(seen)) for end, seen in items]


def _from_doc(doc: dict[str, Any]) -> PartitionSnapshot:
    snap = _header(doc)
    small = msgpack.unpackb(zlib.decompress(doc["state"]), raw=False, strict_map_key=False)
    snap.bans = {shard: unpack_columns(BAN_FIELDS, cols) for shard, cols in doc["bans"].items()}
    snap.users = {item["shard"]: _users(item) for item in small["shards"]}
    snap.tickets = {shard: unpack_columns(join_tickets.FIELDS, cols) for shard, cols in doc["tickets"].items()}
    ends = small["ends"]
    snap.matches = [
        ShardMatches(
            m["shard"],
            unpack_columns(OPEN_FIELDS, m["open"]),
            [(match_id, dict(ended), first) for match_id, ended, first in ends[m["shard"]]],
            unpack_columns(CLOSED_FIELDS, m["closed"]),
        )
        for m in doc["matches"]
    ]
    snap.held = _held(small["held"])
    return snap


def _from_doc_v2(doc: dict[str, Any]) -> PartitionSnapshot:
    """Format 2 (written up to bee4a2b): one zlib'd document; each shard's bans inside its users' entry; big
    columns as lists of msgpack chunks of their alive values."""

    def columns(names: tuple[str, ...], packed: dict[str, list[bytes]]) -> ColumnView:
        cols: dict[str, list[Any]] = {name: [] for name in names}
        for name in names:
            for part in packed[name]:
                cols[name].extend(msgpack.unpackb(part, raw=False))
        return ColumnView.of(names, cols)

    snap = _header(doc)
    for item in doc["shards"]:
        snap.bans[item["shard"]] = columns(BAN_FIELDS, item["bans"])
        if item["ids"]:
            snap.users[item["shard"]] = _users(item)
    snap.tickets = {shard: columns(join_tickets.FIELDS, cols) for shard, cols in doc["tickets"].items()}
    snap.matches = [
        ShardMatches(
            m["shard"],
            columns(OPEN_FIELDS, m["open"]),
            [(match_id, dict(ended), first) for match_id, ended, first in m["ends"]],
            columns(CLOSED_FIELDS, m["closed"]),
        )
        for m in doc["matches"]
    ]
    snap.held = _held(doc["held"])
    return snap


def pack_columns(
    view: ColumnView, pause: Callable[[], None] = lambda: None, cache: BlockCache | None = None
) -> dict[str, Any]:
    """A view as ``{"rows", "alive", "blocks"}``: its alive bytes (zlib) and, per block of :data:`CHUNK_ROWS`
    stored rows, the msgpack of its columns' stored values (retired rows included), zlib level 1.

    Why stored rows and not only the alive ones: a full block's stored values are final (``columnlog``), so its
    bytes can come from ``cache``; which rows are alive changes all the time and travels as the (tiny, well
    compressing) alive bytes. ``pause()`` follows each block encoded anew: packing holds the GIL, and in one go
    a snapshot of 300,000 open matches held it for over a second and stalled the tick (bench.live, 5,000
    joins/s: decision latency p99 0.65 s without snapshots, 1.19-1.49 s with)."""
    blocks: list[bytes] = []
    full = view.rows // CHUNK_ROWS
    for index in range(-(-view.rows // CHUNK_ROWS)):
        key = None
        if view.key is not None and index < full:
            key = (*view.key, index, view.versions.get(index, 0))
            cached = cache.get(key) if cache is not None else None
            if cached is not None:
                blocks.append(cached)
                continue
        packed = msgpack.packb([view.block(name, index) for name in view.names], use_bin_type=True)
        data = zlib.compress(packed, 1)  # zlib lets go of the GIL while it compresses
        if key is not None and cache is not None:
            cache.put(key, data)
        blocks.append(data)
        pause()
    return {"rows": view.rows, "alive": zlib.compress(view.alive, 1), "blocks": blocks}


def unpack_columns(names: tuple[str, ...], packed: dict[str, Any]) -> ColumnView:
    """The alive rows of :func:`pack_columns`' output as plain columns (ValueError if its parts disagree)."""
    rows, alive = packed["rows"], zlib.decompress(packed["alive"])
    stored: list[list[Any]] = [[] for _ in names]
    for block in packed["blocks"]:
        columns = msgpack.unpackb(zlib.decompress(block), raw=False, strict_map_key=False)
        if len(columns) != len(names):
            raise ValueError(f"a block of {len(columns)} columns for {len(names)}")
        for values, more in zip(stored, columns, strict=True):
            values.extend(more)
    if len(alive) != rows or any(len(values) != rows for values in stored):
        raise ValueError(f"columns of {rows} rows hold {len(alive)} alive flags / other lengths")
    if alive.count(0):
        stored = [list(compress(values, alive)) for values in stored]
    return ColumnView.of(names, dict(zip(names, stored, strict=True)))
