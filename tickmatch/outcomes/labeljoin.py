"""Join chat-end events to match decisions and turn them into duration labels.

Rules (all times in seconds, clock injected so tests need no sleeping):
- a label is emitted as soon as both participants reported the end, or ``grace_s`` after the first report;
  its duration is the earliest reported end minus the decision time (clamped at 0 against clock skew);
- a match with no report ``censor_after_s`` after the decision gets a censored label with
  ``duration_s = censor_after_s``: the chat lasted at least that long (survival-analysis convention);
- a match that sent heartbeats, then none for ``heartbeat_timeout_s`` (worker clock) and no end, gets a label
  censored at its last heartbeat (``duration_s`` = last heartbeat - decision time): its client dropped silently,
  and "lasted at least until the last sign of life" is what is known, not "at least ``censor_after_s``";
- a chat-end for a match not known yet is held ``orphan_grace_s`` (the decision may still be in flight),
  then dead-lettered as unknown;
- a chat-end arriving after its match was labelled is counted as late and dropped (it is not malformed);
- every decision gets exactly one label.

Open and recently closed matches are also kept per shard as append-only columns (``columnlog``), so a snapshot of
a shard's matches costs a byte per match under the state lock, not a Python object per match (issue 10).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter

from tickmatch.matching.columnlog import ColumnLog, ColumnView
from tickmatch.schemas.records import ChatEnd, ChatHeartbeat, DurationLabel, MatchDecision


class EndOutcome(Enum):
    """What happened to one chat-end event."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    HELD = "held"
    WRONG_USER = "wrong-user"
    UNKNOWN = "unknown"  # a heartbeat for a match not open here (in flight, or another worker's): ignored


@dataclass(slots=True)
class _Open:
    decision: MatchDecision
    row: int  # in its shard's open-matches log
    ends: dict[str, float] = field(default_factory=dict)
    first_end_seen_at: float | None = None
    last_alive: float | None = None  # latest heartbeat time (client clock)
    heard_at: float | None = None  # when that heartbeat arrived (worker clock)


# What a snapshot keeps of an open match: the decision without its feature vectors (they were most of the bytes,
# ~650 B a match; a label emitted after a restart for a match open across it carries none, and the trainer skips
# it: README, Reliability). The shard is the log's own.
OPEN_FIELDS = (
    "match_id", "tick_id", "user_a", "user_b", "score", "model_version", "policy", "decided_at", "wait_a_s",
    "wait_b_s", "events_offset", "join_a", "join_b", "experiment", "arm", "slice_id", "washout", "propensity",
    "explore_group", "last_alive", "heard_at",
)  # fmt: skip
_DECISION_FIELDS = OPEN_FIELDS[:-2]  # the decision's own; last_alive and heard_at are the label join's
_decision_columns = attrgetter(*_DECISION_FIELDS)  # one C call per decision (the tick's hot path)
CLOSED_FIELDS = ("match_id", "closed_at")
CLOSED_MEMORY_S = (
    300.0  # a snapshot remembers matches labelled this recently: a chat-end for one is "late", not unknown
)


@dataclass(slots=True)
class _ShardBook:
    opened: ColumnLog = field(default_factory=lambda: ColumnLog(OPEN_FIELDS))
    closed: ColumnLog = field(default_factory=lambda: ColumnLog(CLOSED_FIELDS))
    partial: dict[str, _Open] = field(default_factory=dict)  # open matches with a chat-end reported already


@dataclass(frozen=True, slots=True)
class ShardMatches:
    """One shard's matches as a snapshot holds them: the open ones (columns :data:`OPEN_FIELDS`), the chat-ends
    reported so far for the few open ones that have any (match id, user -> ended at, first end seen at), and the
    ones closed in the last :data:`CLOSED_MEMORY_S` (columns :data:`CLOSED_FIELDS`)."""

    shard: str
    opened: ColumnView
    ends: list[tuple[str, dict[str, float], float | None]]
    closed: ColumnView


class LabelJoin:
    """State of open matches for the shards a worker owns."""

    def __init__(
        self,
        grace_s: float,
        censor_after_s: float,
        orphan_grace_s: float,
        remember_closed: int = 100_000,
        heartbeat_timeout_s: float = 30.0,
    ) -> None:
        self.grace_s = grace_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.censor_after_s = censor_after_s
        self.orphan_grace_s = orphan_grace_s
        self._open: dict[str, _Open] = {}
        self._books: dict[str, _ShardBook] = {}
        self._closed: OrderedDict[str, tuple[str, float]] = OrderedDict()  # match id -> (shard, closed at)
        self._remember_closed = remember_closed
        self._orphans: dict[str, list[tuple[ChatEnd, float]]] = {}
        self._deadlines: list[tuple[float, str]] = []  # (time, match_id) min-heap, lazily invalidated
        self.late_ends = 0
        self.duplicate_ends = 0

    @property
    def open_count(self) -> int:
        """Matches still waiting for a label."""
        return len(self._open)

    def add_decision(
        self, decision: MatchDecision, now: float
    ) -> tuple[list[DurationLabel], list[tuple[ChatEnd, EndOutcome]]]:
        """Track a new decision. Chat-ends that were held for it are applied now: returns the labels they
        completed and those that were rejected (wrong user, duplicate)."""
        if decision.match_id in self._open or decision.match_id in self._closed:
            return [], []
        self._track(decision)
        heapq.heappush(self._deadlines, (decision.decided_at + self.censor_after_s, decision.match_id))
        labels: list[DurationLabel] = []
        rejected: list[tuple[ChatEnd, EndOutcome]] = []
        for end, _ in self._orphans.pop(decision.match_id, []):
            outcome, label = self.add_end(end, now)
            if label is not None:
                labels.append(label)
            if outcome in (EndOutcome.WRONG_USER, EndOutcome.DUPLICATE):
                rejected.append((end, outcome))
        return labels, rejected

    def add_end(self, end: ChatEnd, now: float) -> tuple[EndOutcome, DurationLabel | None]:
        """Record one chat-end; returns its outcome and the label if this end completed the match."""
        entry = self._open.get(end.match_id)
        if entry is None:
            if end.match_id in self._closed:
                self.late_ends += 1
                return EndOutcome.LATE, None
            self._orphans.setdefault(end.match_id, []).append((end, now))
            heapq.heappush(self._deadlines, (now + self.orphan_grace_s, end.match_id))
            return EndOutcome.HELD, None
        decision = entry.decision
        if end.user_id not in (decision.user_a, decision.user_b):
            return EndOutcome.WRONG_USER, None
        if end.user_id in entry.ends:
            self.duplicate_ends += 1
            return EndOutcome.DUPLICATE, None
        entry.ends[end.user_id] = end.ended_at
        if len(entry.ends) == 2:
            return EndOutcome.ACCEPTED, self._close(end.match_id, censored=False, now=now)
        self._books[decision.shard].partial[end.match_id] = entry
        if entry.first_end_seen_at is None:
            entry.first_end_seen_at = now
            heapq.heappush(self._deadlines, (now + self.grace_s, end.match_id))
        return EndOutcome.ACCEPTED, None

    def add_heartbeat(self, beat: ChatHeartbeat, now: float) -> EndOutcome:
        """Record that a chat was alive at ``beat.at``: ACCEPTED, LATE (already labelled), UNKNOWN (not open here;
        ignored: heartbeats are frequent, and a later one will count) or WRONG_USER."""
        entry = self._open.get(beat.match_id)
        if entry is None:
            return EndOutcome.LATE if beat.match_id in self._closed else EndOutcome.UNKNOWN
        decision = entry.decision
        if beat.user_id not in (decision.user_a, decision.user_b):
            return EndOutcome.WRONG_USER
        first = entry.heard_at is None
        if entry.last_alive is None or beat.at > entry.last_alive:
            entry.last_alive = beat.at
        entry.heard_at = now if entry.heard_at is None else max(entry.heard_at, now)
        opened = self._books[decision.shard].opened
        opened.set(entry.row, "last_alive", entry.last_alive)
        opened.set(entry.row, "heard_at", entry.heard_at)
        if first:
            heapq.heappush(self._deadlines, (entry.heard_at + self.heartbeat_timeout_s, beat.match_id))
        return EndOutcome.ACCEPTED

    def sweep(self, now: float) -> tuple[list[DurationLabel], list[ChatEnd]]:
        """Labels due at ``now`` (grace over, or censored) and orphan chat-ends whose grace ran out."""
        labels: list[DurationLabel] = []
        dead: list[ChatEnd] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, match_id = heapq.heappop(self._deadlines)
            entry = self._open.get(match_id)
            if entry is not None:
                if entry.ends and entry.first_end_seen_at is not None and now >= entry.first_end_seen_at + self.grace_s:
                    labels.append(self._close(match_id, censored=False, now=now))
                elif entry.ends:
                    pass
                elif entry.heard_at is not None and now >= entry.heard_at + self.heartbeat_timeout_s:
                    labels.append(self._close(match_id, censored=True, now=now, at_heartbeat=True))
                elif now >= entry.decision.decided_at + self.censor_after_s:
                    labels.append(self._close(match_id, censored=True, now=now))
                elif entry.heard_at is not None:  # heard from since this deadline was set: wait for silence again
                    heapq.heappush(self._deadlines, (entry.heard_at + self.heartbeat_timeout_s, match_id))
                continue
            held = self._orphans.get(match_id)
            if held:
                expired = [e for e, seen in held if now >= seen + self.orphan_grace_s]
                remaining = [(e, seen) for e, seen in held if now < seen + self.orphan_grace_s]
                dead.extend(expired)
                if remaining:
                    self._orphans[match_id] = remaining
                else:
                    del self._orphans[match_id]
        return labels, dead

    def _book(self, shard: str) -> _ShardBook:
        book = self._books.get(shard)
        if book is None:
            book = self._books[shard] = _ShardBook()
        return book

    def _track(self, decision: MatchDecision) -> _Open:
        row = self._book(decision.shard).opened.append((*_decision_columns(decision), None, None))
        entry = self._open[decision.match_id] = _Open(decision, row)
        return entry

    def _mark_closed(self, match_id: str, shard: str, now: float) -> None:
        """Forget an open match (if it is one) and remember it as closed."""
        entry = self._open.pop(match_id, None)
        book = self._book(shard)
        if entry is not None:
            book.partial.pop(match_id, None)
            book.opened.retire(entry.row)
            kept = book.opened.compact_if_sparse()
            if kept is not None:  # rows renumbered: new row i holds the match that was in row kept[i]
                for row, open_id in enumerate(book.opened.column("match_id")):
                    self._open[open_id].row = row
        if match_id in self._closed:
            return
        book.closed.append((match_id, now))
        self._closed[match_id] = (shard, now)
        if len(self._closed) > self._remember_closed:
            self._closed.popitem(last=False)

    def _close(self, match_id: str, censored: bool, now: float, at_heartbeat: bool = False) -> DurationLabel:
        entry = self._open[match_id]
        self._mark_closed(match_id, entry.decision.shard, now)
        decision = entry.decision
        if at_heartbeat and entry.last_alive is not None:
            duration = min(max(0.0, entry.last_alive - decision.decided_at), self.censor_after_s)
        elif censored:
            duration = self.censor_after_s
        else:
            duration = max(0.0, min(entry.ends.values()) - decision.decided_at)
        return DurationLabel(
            match_id=match_id,
            shard=decision.shard,
            duration_s=duration,
            censored=censored,
            ends_reported=len(entry.ends),
            model_version=decision.model_version,
            policy=decision.policy,
            decided_at=decision.decided_at,
            features_a=decision.features_a,
            features_b=decision.features_b,
            experiment=decision.experiment,
            arm=decision.arm,
            slice_id=decision.slice_id,
            washout=decision.washout,
            propensity=decision.propensity,
            explore_group=decision.explore_group,
        )

    def forget_shards(self, shards: set[str]) -> int:
        """Drop open matches and held chat-ends of shards this worker no longer owns; returns how many open
        matches were dropped."""
        dropped = 0
        for shard in shards:
            book = self._books.pop(shard, None)
            if book is None:
                continue
            for match_id in book.opened.alive_values("match_id"):
                del self._open[match_id]
                dropped += 1
        for match_id in [m for m, held in self._orphans.items() if held and held[0][0].shard in shards]:
            del self._orphans[match_id]
        return dropped

    def close_published(self, published: dict[str, str], now: float) -> int:
        """Mark as closed the matches (match id -> shard) whose label is already in the labels topic, closing
        those still open without a new label (recovery: the previous owner emitted it, e.g. a censored label,
        before it stopped). Returns how many were open."""
        done = 0
        for match_id, shard in published.items():
            done += match_id in self._open
            self._mark_closed(match_id, shard, now)
        return done

    def export(
        self, shards: set[str], now: float, closed_within_s: float = CLOSED_MEMORY_S
    ) -> tuple[list[ShardMatches], list[tuple[ChatEnd, float]]]:
        """The matches of ``shards`` (open, and closed within ``closed_within_s``) and their held chat-ends, for a
        partition snapshot. Costs a byte per stored match plus the few partly ended ones: the columns are read
        later, without the lock (see ``columnlog``)."""
        out = []
        for shard in sorted(shards):
            book = self._books.get(shard)
            if book is None:
                continue
            book.closed.retire_until("closed_at", now - closed_within_s)
            book.closed.compact_if_sparse()
            ends = [(m, dict(e.ends), e.first_end_seen_at) for m, e in book.partial.items()]
            out.append(ShardMatches(shard, book.opened.view(), ends, book.closed.view()))
        held = [item for items in self._orphans.values() for item in items if item[0].shard in shards]
        return out, held

    def restore(self, matches: list[ShardMatches], held: list[tuple[ChatEnd, float]]) -> None:
        """Re-create open matches, closed matches and held chat-ends (deadlines included) from a snapshot."""
        for part in matches:
            book = self._book(part.shard)
            closed = part.closed.columns()
            for match_id, at in zip(closed["match_id"], closed["closed_at"], strict=True):
                book.closed.append((match_id, at))
                self._closed[match_id] = (part.shard, at)
            cols = part.opened.columns()
            for i, match_id in enumerate(cols["match_id"]):
                decision = MatchDecision(shard=part.shard, **{name: cols[name][i] for name in _DECISION_FIELDS})
                entry = self._track(decision)
                heapq.heappush(self._deadlines, (decision.decided_at + self.censor_after_s, match_id))
                entry.last_alive, entry.heard_at = cols["last_alive"][i], cols["heard_at"][i]
                if entry.heard_at is not None:
                    book.opened.set(entry.row, "last_alive", entry.last_alive)
                    book.opened.set(entry.row, "heard_at", entry.heard_at)
                    heapq.heappush(self._deadlines, (entry.heard_at + self.heartbeat_timeout_s, match_id))
            for match_id, ends, first in part.ends:
                partial = self._open.get(match_id)
                if partial is None:
                    continue
                partial.ends, partial.first_end_seen_at = dict(ends), first
                book.partial[match_id] = partial
                if first is not None:
                    heapq.heappush(self._deadlines, (first + self.grace_s, match_id))
        for end, seen in held:
            self._orphans.setdefault(end.match_id, []).append((end, seen))
            heapq.heappush(self._deadlines, (seen + self.orphan_grace_s, end.match_id))
