"""Join tickets: recognise a retried join, also after a restart.

A join carries a ticket (its ``join_id``, or ``user@ts``). The same ticket again is a retry (a client or producer
resending) and changes nothing, whether the user still waits, was matched or left; without this a late retry
re-queued a matched user, who was matched twice. A retry of any of a user's last :data:`PER_USER` joins is
recognised, not only of the newest.

Kept per shard, for two reasons measured in issue 10: a revoke drops a shard's tickets in O(1) instead of walking
a million-entry LRU, and a snapshot reads a shard's append-only ticket log (``columnlog``) without copying it.
The log keeps the joins of the last :data:`MEMORY_S` seconds: after a restart, a retry is recognised if its join
was applied that recently (retries come seconds after the original; README, Reliability).
"""

from __future__ import annotations

from collections import OrderedDict

from tickmatch.matching.columnlog import ColumnLog, ColumnView

PER_USER = 4
MAX_USERS = 1_000_000  # (shard, user) pairs remembered in memory over all shards; the least recent go first
MEMORY_S = 300.0  # a snapshot holds the tickets of joins applied this recently (= the default wait TTL)
FIELDS = ("user", "ticket", "at")
_TRIM_EVERY = 4096  # appends between trims of a shard's log to the memory window


class JoinTickets:
    """The recent join tickets of the shards a worker owns."""

    def __init__(self, max_users: int = MAX_USERS, memory_s: float = MEMORY_S) -> None:
        self.max_users = max_users
        self.memory_s = memory_s
        self._users: dict[str, OrderedDict[str, tuple[str, ...]]] = {}
        self._logs: dict[str, ColumnLog] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def seen(self, shard: str, user: str, ticket: str) -> bool:
        """Whether ``ticket`` is one of the user's recent joins (the join is a retry)."""
        users = self._users.get(shard)
        return users is not None and ticket in users.get(user, ())

    def last(self, shard: str, user: str) -> str | None:
        """The ticket of the user's latest join, if remembered."""
        users = self._users.get(shard)
        seen = users.get(user) if users is not None else None
        return seen[-1] if seen else None

    def add(self, shard: str, user: str, ticket: str, at: float) -> None:
        """Remember a (new) join's ticket, applied at ``at``."""
        users = self._users.get(shard)
        if users is None:
            users = self._users[shard] = OrderedDict()
            self._logs[shard] = ColumnLog(FIELDS)
        seen = users.get(user)
        if seen is None:
            self._count += 1
            users[user] = (ticket,)
        else:
            users[user] = (*seen[-(PER_USER - 1) :], ticket)
            users.move_to_end(user)
        if self._count > self.max_users and len(users) > 1:
            users.popitem(last=False)
            self._count -= 1
        log = self._logs[shard]
        if log.append((user, ticket, at)) % _TRIM_EVERY == 0:
            log.retire_until("at", at - self.memory_s)
            log.compact_if_sparse()

    def drop_shards(self, shards: set[str]) -> None:
        """Forget the tickets of shards this worker no longer owns."""
        for shard in shards:
            users = self._users.pop(shard, None)
            self._logs.pop(shard, None)
            if users is not None:
                self._count -= len(users)

    def view(self, shard: str, now: float) -> ColumnView | None:
        """The shard's joins of the last :data:`MEMORY_S` seconds (columns :data:`FIELDS`) for a snapshot."""
        log = self._logs.get(shard)
        if log is None:
            return None
        log.retire_until("at", now - self.memory_s)
        log.compact_if_sparse()
        return log.view()

    def restore(self, shard: str, joins: ColumnView) -> None:
        """Re-remember a shard's joins from a snapshot, oldest first."""
        cols = joins.columns()
        for user, ticket, at in zip(cols["user"], cols["ticket"], cols["at"], strict=True):
            if not self.seen(shard, user, ticket):
                self.add(shard, user, ticket, at)

    def items(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """(shard, user) -> tickets, oldest first (for tests and debugging)."""
        return {(shard, user): t for shard, users in self._users.items() for user, t in users.items()}
