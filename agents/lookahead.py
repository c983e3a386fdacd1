"""Leaves the worker holds but has not applied yet: nobody whose leave is known is matched before it.

Two places hold events the runtime has not applied:

- **the fetch buffer.** Before each tick the worker loop takes everything its consumer has fetched. Applying all of
  it first (what the loop did) made ticks wait: Tansu answers a fetch with whole producer batches, up to ~30,000
  events per partition whatever ``max_partition_fetch_bytes`` says, and with a backlog the loop spent 1-1.5 s per
  tick applying them (bench.live backlog: ticks 1.5-1.9 s apart instead of 0.5 s). Now the loop applies a bounded
  part and notes the leaves in the rest;
- **a recovered partition's tail** (``agents.recovery``): the events after its last published decision, which the
  loop consumes while it ticks instead of recovery replaying them all before the first tick.

Noting a leave takes that user out of the pool at once (their leave is on its way: for matching, it has
happened), and a join of theirs applied before that leave is recorded (its ticket) but not queued. A later join
(after the leave) queues them again as usual. Everything else in the unapplied events waits for its turn: a
profile update is at most one tick late, as if it had arrived a tick later.

Why that is safe to snapshot: the state then is that of a log prefix with some leaves applied early, and those
leaves are in the log after the snapshot's offset; whoever recovers from it replays them (no-ops by then).
"""

from __future__ import annotations

LEAVE_MARK = b"leave"  # in every encoded leave (its type string): a record without it is not one, and is not decoded

Key = tuple[str, str]  # (shard, user)


class LeavesAhead:
    """The offset of the last noted, not yet applied leave of each (shard, user)."""

    def __init__(self) -> None:
        self._at: dict[Key, int] = {}

    def __len__(self) -> int:
        return len(self._at)

    def note(self, key: Key, offset: int) -> None:
        """A leave of ``key`` at ``offset`` is on its way."""
        if self._at.get(key, -1) < offset:
            self._at[key] = offset

    def join_is_moot(self, key: Key, offset: int) -> bool:
        """Whether a join at ``offset`` is followed by a noted leave (so the user must not be queued)."""
        return self._at.get(key, -1) > offset

    def applied(self, key: Key, offset: int) -> None:
        """The leave of ``key`` at ``offset`` was applied: once it was the last one noted, nothing is ahead."""
        if self._at.get(key) == offset:
            del self._at[key]

    def forget_shards(self, shards: set[str]) -> None:
        """Drop the leaves of shards this worker no longer owns."""
        if shards and self._at:
            self._at = {key: at for key, at in self._at.items() if key[0] not in shards}
