"""Join chat-end events to match decisions and turn them into duration labels.

Rules (all times in seconds, clock injected so tests need no sleeping):
- a label is emitted as soon as both participants reported the end, or ``grace_s`` after the first report;
  its duration is the earliest reported end minus the decision time (clamped at 0 against clock skew);
- a match with no report ``censor_after_s`` after the decision gets a censored label with
  ``duration_s = censor_after_s``: the chat lasted at least that long (survival-analysis convention);
- a chat-end for a match not known yet is held ``orphan_grace_s`` (the decision may still be in flight),
  then dead-lettered as unknown;
- a chat-end arriving after its match was labelled is counted as late and dropped (it is not malformed);
- every decision gets exactly one label.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from tickmatch.schemas.records import ChatEnd, DurationLabel, MatchDecision


class EndOutcome(Enum):
    """What happened to one chat-end event."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    HELD = "held"
    WRONG_USER = "wrong-user"


@dataclass(slots=True)
class _Open:
    decision: MatchDecision
    ends: dict[str, float] = field(default_factory=dict)
    first_end_seen_at: float | None = None


@dataclass(frozen=True, slots=True)
class OpenMatch:
    """An open match as a snapshot holds it: the decision, the ends reported so far, when the first arrived."""

    decision: MatchDecision
    ends: dict[str, float]
    first_end_seen_at: float | None


CLOSED_MEMORY_S = (
    300.0  # a snapshot remembers matches labelled this recently: a chat-end for one is "late", not unknown
)


class LabelJoin:
    """State of open matches for the shards a worker owns."""

    def __init__(
        self, grace_s: float, censor_after_s: float, orphan_grace_s: float, remember_closed: int = 100_000
    ) -> None:
        self.grace_s = grace_s
        self.censor_after_s = censor_after_s
        self.orphan_grace_s = orphan_grace_s
        self._open: dict[str, _Open] = {}
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
        self._open[decision.match_id] = _Open(decision)
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
        if entry.first_end_seen_at is None:
            entry.first_end_seen_at = now
            heapq.heappush(self._deadlines, (now + self.grace_s, end.match_id))
        return EndOutcome.ACCEPTED, None

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
                elif not entry.ends and now >= entry.decision.decided_at + self.censor_after_s:
                    labels.append(self._close(match_id, censored=True, now=now))
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

    def _close(self, match_id: str, censored: bool, now: float) -> DurationLabel:
        entry = self._open.pop(match_id)
        self._closed[match_id] = (entry.decision.shard, now)
        if len(self._closed) > self._remember_closed:
            self._closed.popitem(last=False)
        decision = entry.decision
        duration = self.censor_after_s if censored else max(0.0, min(entry.ends.values()) - decision.decided_at)
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
        )

    def forget_shards(self, shards: set[str]) -> int:
        """Drop open matches and held chat-ends of shards this worker no longer owns; returns how many open
        matches were dropped."""
        gone = [m for m, e in self._open.items() if e.decision.shard in shards]
        for match_id in gone:
            del self._open[match_id]
        for match_id in [m for m, held in self._orphans.items() if held and held[0][0].shard in shards]:
            del self._orphans[match_id]
        return len(gone)

    def close_published(self, published: dict[str, str], now: float) -> int:
        """Mark as closed the matches (match id -> shard) whose label is already in the labels topic, closing
        those still open without a new label (recovery: the previous owner emitted it, e.g. a censored label,
        before it stopped). Returns how many were open."""
        done = 0
        for match_id, shard in published.items():
            if self._open.pop(match_id, None) is not None:
                done += 1
            self._closed[match_id] = (shard, now)
        while len(self._closed) > self._remember_closed:
            self._closed.popitem(last=False)
        return done

    def export(
        self, shards: set[str], now: float, closed_within_s: float = CLOSED_MEMORY_S
    ) -> tuple[list[OpenMatch], list[tuple[ChatEnd, float]], list[tuple[str, str, float]]]:
        """The open matches, held chat-ends and recently closed matches (``(match id, shard, closed at)``, closed
        within ``closed_within_s``) of ``shards``, for a partition snapshot."""
        opened = [
            OpenMatch(e.decision, dict(e.ends) if e.ends else {}, e.first_end_seen_at)
            for e in self._open.values()
            if e.decision.shard in shards
        ]
        held = [item for items in self._orphans.values() for item in items if item[0].shard in shards]
        since = now - closed_within_s
        closed = [(m, shard, at) for m, (shard, at) in self._closed.items() if shard in shards and at >= since]
        return opened, held, closed

    def restore(
        self, opened: list[OpenMatch], held: list[tuple[ChatEnd, float]], closed: list[tuple[str, str, float]]
    ) -> None:
        """Re-create open matches, held chat-ends (deadlines included) and closed matches from a snapshot."""
        for match_id, shard, at in closed:
            self._closed[match_id] = (shard, at)
        for item in opened:
            match_id = item.decision.match_id
            self._open[match_id] = _Open(item.decision, dict(item.ends), item.first_end_seen_at)
            heapq.heappush(self._deadlines, (item.decision.decided_at + self.censor_after_s, match_id))
            if item.first_end_seen_at is not None:
                heapq.heappush(self._deadlines, (item.first_end_seen_at + self.grace_s, match_id))
        for end, seen in held:
            self._orphans.setdefault(end.match_id, []).append((end, seen))
            heapq.heappush(self._deadlines, (seen + self.orphan_grace_s, end.match_id))
