"""The worker's state and logic, independent of Faust and Kafka: pools per shard, the label join, ticks.

Everything here is synchronous: the worker loop (``tickmatch.agents.ingest``) hands it whole batches of raw
messages and calls :meth:`WorkerRuntime.tick` between batches, and outputs go to a :class:`Sink` that only queues
them (the loop sends them afterwards, without awaiting each). So no event is applied while a tick runs, and a
tick never interleaves with another or with a model swap. Tests drive the same runtime with
``tickmatch.testing.RecordingSink`` and ``ManualClock``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from tickmatch.agents.lookahead import LEAVE_MARK, LeavesAhead
from tickmatch.agents.sink import Sink
from tickmatch.agents.tickets import JoinTickets
from tickmatch.experiments.switchback import Assignment, Experiment
from tickmatch.learning.features import RAW_DIM, featurize, featurize_many, update_raw
from tickmatch.learning.scorer import Scorer, heuristic_scorer
from tickmatch.matching.allowed import allowed_matrix
from tickmatch.matching.bilinear import BilinearModel
from tickmatch.matching.engine import Engine, EngineConfig, Matching, gc_paused
from tickmatch.matching.pool import Pool, PoolError
from tickmatch.outcomes import EndOutcome, LabelJoin
from tickmatch.schemas import (
    ChatEnd,
    ChatHeartbeat,
    DecodeError,
    DurationLabel,
    Join,
    Leave,
    MatchDecision,
    ProfileUpdate,
    ShardStats,
    TickStats,
    encode,
)
from tickmatch.schemas.codec import decode_event_fields
from tickmatch.schemas.fields import f32_native
from tickmatch.schemas.records import InputEvent
from tickmatch.stream.partitioning import partition_for
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)
EXPLORE_POLICY = "explore-uniform"
Pair = tuple[int, int, float, float | None, str | None]  # slots a, b, score, propensity, exploration group


class Message(Protocol):
    """What the runtime needs of a consumed Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> int: ...


@dataclass(slots=True)
class _ShardActivity:
    """Counts since the shard's last tick (emitted as a ``ShardStats`` record, then reset)."""

    arrivals: int = 0
    departures: int = 0


class _ShardTick(NamedTuple):
    """One shard's state between its preparation and its decisions within a tick (see ``WorkerRuntime.tick``)."""

    shard: str
    pool: Pool
    model: BilinearModel
    offset: int | None  # events offset of the shard's partition the tick has applied up to
    arm: Assignment | None
    explored: int  # exploration pairs already decided
    before: int  # users waiting before matching
    wait_sum: float  # summed waits of the users decided so far
    decisions: list[MatchDecision]


class WorkerRuntime:
    """Everything one worker knows about the shards it owns."""

    def __init__(self, settings: Settings, sink: Sink, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.worker = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.pools: dict[str, Pool] = {}
        self.shard_partition: dict[str, int] = {}
        self.activity: dict[str, _ShardActivity] = {}
        self.labels = LabelJoin(
            settings.label_grace_s,
            settings.censor_after_s,
            settings.orphan_grace_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
        )
        self.tick_id = 0
        # Match ids: 128 random bits from a generator seeded once from the OS. uuid4() asks the OS for every id
        # (os.urandom: 9 us a call on these machines, 20 ms of a 2,500-pair tick); ids only need to be unique,
        # and a fresh seed per process keeps two workers' (or two runs') streams apart.
        self._ids = random.Random(int.from_bytes(os.urandom(32), "little"))
        self.engine = Engine(settings.embed_dim, EngineConfig(k=settings.match_k, threads=settings.match_threads))
        self._matcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickmatch-match")  # see ``tick``
        self.scorer: Scorer = heuristic_scorer(settings.embed_dim)
        self.heuristic = self.scorer  # what an experiment arm with model "heuristic" scores with
        # The switch-back experiment in force (the loop keeps it in step with TICKMATCH_EXPERIMENT_FILE), and the
        # shards whose current arm scores with another model than ``scorer`` (their pools hold its embeddings).
        self.experiment: Experiment | None = None
        self.pinned: dict[str, Scorer] = {}
        self.explore_rng = np.random.default_rng()  # TICKMATCH_EXPLORE_SHARE's draws (studies and tests seed it)
        self.explore_log: list[tuple[str, list[str], npt.NDArray[np.bool_]]] | None = None
        self.pending_model: Scorer | None = None
        self.last_swap_ms = 0.0
        self.curve = settings.wait_curve()
        cfg = self.engine.config
        self.policy = f"{cfg.matcher}-top{cfg.k}"
        self.counters: dict[str, int] = {}
        self.events = 0  # input messages consumed (applied or dead-lettered), reported on every tick-stats record
        self.tickets = JoinTickets()  # recent join tickets: a join with one of them is a retry
        # Partition -> next events offset to apply, for partitions this worker owns (the worker loop claims them
        # after recovery). With ``guarded`` set, a record below it was applied already and one of a partition not
        # claimed is not ours: both are skipped. Tests that feed messages by hand leave ``guarded`` off.
        self.claimed: dict[int, int] = {}
        self.guarded = False
        # Set while recovery replays a partition (see tickmatch.agents.recovery): joins take their record's
        # timestamp as join time, dead letters below ``quiet_below`` were published before and are not repeated,
        # and labels whose match id is in ``published_labels`` are not emitted again.
        self.replaying = False
        self.quiet_below: dict[int, int] = {}
        # The live worker re-publishes events that arrived on a partition not owning their shard (``_reroute``);
        # ``partition_count`` is the events topic's real partition count (the loop reads it from the broker).
        self.route_partitions = False
        self.partition_count = settings.partitions
        self.published_labels: set[str] = set()
        # Recovered partitions whose log tail the loop is applying, up to which offset (``catch_up``), and leaves
        # noted but not applied yet, in that tail or in what the loop fetched (``agents.lookahead``).
        self.catch_up: dict[int, int] = {}
        self.leaves_ahead = LeavesAhead()

    @property
    def model_version(self) -> str:
        """Version of the model the next tick will use."""
        return self.scorer.version

    def offer_model(self, scorer: Scorer) -> None:
        """Queue a new version; the worker loop swaps it in between two ticks (:meth:`swap_pending_model`). The
        model follower runs on the event loop while a tick may be matching in a thread: it must not re-embed
        pools the tick is reading."""
        self._check_model(scorer)
        self.pending_model = scorer

    def swap_pending_model(self) -> bool:
        """Swap in the newest offered version, if any (older offers were superseded)."""
        scorer, self.pending_model = self.pending_model, None
        if scorer is None:
            return False
        self.set_model(scorer)
        return True

    def set_model(self, scorer: Scorer) -> None:
        """Hot-swap the scoring model: re-embed every waiting user from their stored raw features with the new
        projection, then switch. Call it between ticks: a tick reads the scorer once, so it sees either the old
        scorer and old embeddings or the new scorer and new embeddings, never a mix. Costs one
        (waiting x raw_dim) x (raw_dim x dim) product per pool, measured in ``last_swap_ms``."""
        self._check_model(scorer)
        started = time.perf_counter()
        for shard, pool in self.pools.items():
            if shard not in self.pinned:  # a shard in a "heuristic" arm keeps its embeddings until the arm ends
                pool.reembed(scorer.embed)
        self.scorer = scorer
        self.last_swap_ms = (time.perf_counter() - started) * 1000.0
        self.count("model_swaps")
        log.info("model swapped", extra={"version": scorer.version, "swap_ms": round(self.last_swap_ms, 3)})

    def scorer_for(self, shard: str) -> Scorer:
        """The model ``shard`` is scored with now (its pool holds this model's embeddings)."""
        return self.pinned.get(shard, self.scorer)

    def _follow_arm(self, shard: str, assignment: Assignment | None) -> None:
        """Before a shard's tick: make its pool score with its arm's model (re-embedding it if that changed)."""
        on_heuristic = (
            assignment is not None
            and self.experiment is not None
            and self.experiment.model_of(assignment.arm) == "heuristic"
        )
        wanted = self.heuristic if on_heuristic else self.scorer
        if wanted is self.scorer_for(shard):
            return
        self.pools[shard].reembed(wanted.embed)
        if wanted is self.scorer:
            del self.pinned[shard]
        else:
            self.pinned[shard] = wanted

    def _check_model(self, scorer: Scorer) -> None:
        if scorer.dim != self.settings.embed_dim or scorer.raw_dim != RAW_DIM:
            raise ValueError(
                f"model {scorer.version} maps {scorer.raw_dim} raw features to {scorer.dim} dims; this worker "
                f"needs {RAW_DIM} -> {self.settings.embed_dim}"
            )

    def close(self) -> None:
        """Stop the matching engine's threads."""
        self._matcher.shutdown(wait=True)
        self.engine.close()

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the named counter (read by tests and, later, metrics)."""
        self.counters[name] = self.counters.get(name, 0) + n

    def pool(self, shard: str) -> Pool:
        """The shard's pool, created on first use."""
        pool = self.pools.get(shard)
        if pool is None:
            pool = self.pools[shard] = Pool(
                self.settings.embed_dim, repeat_window_s=self.settings.repeat_window_s, raw_dim=RAW_DIM
            )
            self.activity[shard] = _ShardActivity()
        return pool

    # -- ingest -----------------------------------------------------------------------------------------------
    def apply_batch(self, messages: Sequence[Message]) -> int:
        """Decode, validate and apply consumed messages in order; anything wrong goes to the DLQ with a reason.
        Returns how many were applied.

        The batch's joins are featurized first and embedded with one matrix product (a join's features do not
        depend on the pool), then every event is applied in its offset order, so a join and a leave of the
        same user in one batch end as they would one by one.

        The cyclic garbage collector is paused for the batch: it allocates ~10 tracked objects an event (records,
        tuples, dicts), so with the default threshold (700) a young collection ran every ~70 events and full ones
        walked the whole unfrozen heap: 17-24 us an event with it, 12-15 us paused (200,000 backlog events
        in-process, measured). The batch makes no reference cycles; the collector runs again right after it."""
        with gc_paused():
            return self._apply_batch(messages)

    def _apply_batch(self, messages: Sequence[Message]) -> int:
        if self.guarded:
            messages = self._unseen(messages)
        self.events += len(messages)
        decoded: list[tuple[Message, InputEvent, float]] = []
        now = self.clock()
        catching_up = self.catch_up
        for msg in messages:
            at = self._received_at(msg, now)
            try:
                event, unknown = self._checked(msg, at)
            except DecodeError as exc:
                self._reject(msg, exc.reason, str(exc))
                continue
            if unknown:
                self.count("events.unknown_fields")  # ignored: a newer producer's fields (forward compatible)
            if self.route_partitions and msg.partition != (home := partition_for(event.shard, self.partition_count)):
                self._reroute(msg, event, home)
                continue
            decoded.append((msg, event, at))
        joins = [event for _, event, _ in decoded if type(event) is Join]
        profiles = [_profile(join) for join in joins]
        raw = featurize_many(profiles, [join.signals for join in joins])
        emb = self.scorer.embed(raw) if joins else raw
        if self.pinned and joins:  # joins of shards scored with another model: embedded with that one
            rows: dict[str, list[int]] = {}
            for i, join in enumerate(joins):
                if join.shard in self.pinned:
                    rows.setdefault(join.shard, []).append(i)
            for shard, idx in rows.items():
                emb[idx] = self.pinned[shard].embed(raw[idx])
        j = 0
        applied = 0
        ahead = self.leaves_ahead
        for msg, event, at in decoded:
            try:
                if type(event) is Join:
                    queue = not (ahead and ahead.join_is_moot((event.shard, event.user_id), msg.offset))
                    self._join(event, msg.partition, at, raw[j], emb[j], profiles[j], queue)
                    j += 1
                else:
                    if ahead and type(event) is Leave:
                        ahead.applied((event.shard, event.user_id), msg.offset)
                    self.apply(event, msg.partition, at)
            except PoolError as exc:
                self._reject(msg, "rejected", str(exc))
                continue
            applied += 1
        if catching_up:
            self._end_catch_up()
        return applied

    def _received_at(self, msg: Message, now: float) -> float:
        """The time a message counts as received: ``now``, except in a replay and in a recovered partition's tail
        (:meth:`catch_up_to`), where its Kafka timestamp is (join times and chat-end deadlines come out as the live
        worker had them, within its fetch delay, not as of the recovery)."""
        if self.replaying or (self.catch_up and msg.offset < self.catch_up.get(msg.partition, -1)):
            return msg.timestamp / 1000.0
        return now

    def _checked(self, msg: Message, at: float) -> tuple[InputEvent, list[str]]:
        """Decode and validate one message received at ``at``; raises :class:`DecodeError` with the reason."""
        event, unknown = decode_event_fields(msg.value)
        if msg.key is not None and msg.key != event.shard.encode():
            raise DecodeError("key-mismatch", f"message key {msg.key!r} differs from shard {event.shard!r}")
        ts = _event_time(event)
        skew = self.settings.max_clock_skew_s
        if abs(ts - at) > skew:
            raise DecodeError(
                "implausible-time",
                f"{event.TYPE} time {ts!r} is {ts - at:+.0f} s from the worker's clock (limit +-{skew:.0f} s); "
                "times are seconds since the epoch",
            )
        return event, unknown

    # -- leaves ahead, catching up (agents.lookahead) ------------------------------------------------------------
    def note_leaves(self, messages: Sequence[Message]) -> int:
        """Note the leaves among ``messages`` (not applied yet, of claimed partitions, in offset order per
        partition): their users leave the pool now and joins of theirs before the leave are not queued
        (``agents.lookahead``). Returns how many users left early."""
        early = 0
        now = self.clock()
        for msg in messages:
            value = msg.value
            if not value or LEAVE_MARK not in value:
                continue  # not a leave: not decoded
            if self.guarded and msg.offset < self.claimed.get(msg.partition, msg.offset + 1):
                continue  # applied already, or not a partition of ours
            try:  # against the time apply_batch will check it against (within the seconds until it applies it)
                event, _ = self._checked(msg, self._received_at(msg, now))
            except DecodeError:
                continue  # the loop dead-letters it when it applies it
            if type(event) is not Leave:
                continue
            if self.route_partitions and msg.partition != partition_for(event.shard, self.partition_count):
                continue  # re-routed, applied where it belongs
            self.leaves_ahead.note((event.shard, event.user_id), msg.offset)
            pool = self.pools.get(event.shard)
            if pool is not None and pool.remove(event.user_id) is not None:
                self.activity[event.shard].departures += 1  # counted now: applying the leave later finds no one
                early += 1
        if early:
            self.count("leaves.early", early)
        return early

    def catch_up_to(self, partition: int, until: int) -> None:
        """``partition`` (recovered up to its claimed offset) has a tail up to ``until``, whose leaves were noted:
        until the loop has applied it, its records take their Kafka timestamps as their time and label deadlines
        are not swept (a chat-end further down the tail must not be pre-empted by a label computed at the wall
        clock; ``agents.recovery``)."""
        if until > self.claimed.get(partition, 0):
            self.catch_up[partition] = until

    def _end_catch_up(self) -> None:
        for partition, until in list(self.catch_up.items()):
            if self.claimed.get(partition, until) >= until:
                del self.catch_up[partition]
                log.info("partition caught up", extra={"partition": partition, "offset": until})

    def _unseen(self, messages: Sequence[Message]) -> list[Message]:
        """The messages of claimed partitions not applied yet; advances each partition's claimed offset."""
        out = []
        for msg in messages:
            nxt = self.claimed.get(msg.partition)
            if nxt is None or msg.offset < nxt:
                self.count("events.skipped")
                continue
            self.claimed[msg.partition] = msg.offset + 1
            out.append(msg)
        return out

    def _reroute(self, msg: Message, event: InputEvent, home: int) -> None:
        """Send an event that arrived on a partition not owning its shard (another partitioner, or no key) to the
        partition that does, keyed by its shard; it is applied when it arrives there."""
        self.count("events.rerouted")
        if self.replaying and msg.offset < self.quiet_below.get(msg.partition, 0):
            return  # re-routed before the restart
        origin = f"{msg.topic}/{msg.partition}/{msg.offset}"
        self.sink.reroute(event.shard.encode(), msg.value or b"", home, origin)

    def _reject(self, msg: Message, reason: str, detail: str) -> None:
        self.count(f"dlq.{reason}")
        if self.replaying and msg.offset < self.quiet_below.get(msg.partition, 0):
            return  # dead-lettered before the restart
        self.sink.dead_letter(msg.key, msg.value, reason, detail, f"{msg.topic}/{msg.partition}/{msg.offset}")

    def _reject_end(self, end: ChatEnd, reason: str, detail: str) -> None:
        """Dead-letter a chat-end the label join turned away (re-encoded: the original bytes are long gone)."""
        if self.replaying:
            return
        self.sink.dead_letter(end.shard.encode(), encode(end), reason, detail, "labels")

    def apply(self, event: InputEvent, partition: int, now: float | None = None) -> None:
        """Apply one validated event to the shard state at ``now`` (default: the clock); tests and single
        events; batches use :meth:`apply_batch`."""
        now = self.clock() if now is None else now
        if isinstance(event, Join):
            attrs = _profile(event)
            raw = featurize(attrs, event.signals)
            self._join(event, partition, now, raw, self.scorer_for(event.shard).embed(raw[None, :])[0], attrs)
            return
        self.shard_partition[event.shard] = partition
        if isinstance(event, Leave):
            pool = self.pool(event.shard)
            if pool.remove(event.user_id) is not None:
                self.activity[event.shard].departures += 1
            self.count("leaves")
        elif isinstance(event, ProfileUpdate):
            pool = self.pool(event.shard)
            slot = pool.slot_of(event.user_id)
            if slot is not None:
                attrs = _profile(event)
                raw = update_raw(pool.raw[slot].copy(), attrs, event.signals or None)
                emb = self.scorer_for(event.shard).embed(raw[None, :])[0]
                pool.update_features(event.user_id, emb, attrs, raw=raw)
            self.count("profile_updates")
        elif isinstance(event, ChatHeartbeat):
            outcome = self.labels.add_heartbeat(event, now)
            self.count(f"heartbeat.{outcome.value}")
            if outcome is EndOutcome.WRONG_USER:
                detail = f"user {event.user_id!r} is not part of match {event.match_id!r}"
                if not self.replaying:
                    self.sink.dead_letter(event.shard.encode(), encode(event), "user-not-in-match", detail, "labels")
        else:
            self._on_chat_end(event, now)

    def _join(
        self,
        event: Join,
        partition: int,
        now: float,
        raw: npt.NDArray[np.float32],
        emb: npt.NDArray[np.float32],
        attrs: dict[str, str | None],
        queue: bool = True,
    ) -> None:
        """``queue`` False: the join is recorded (its ticket) but the user not queued (a leave of theirs follows,
        ``agents.lookahead``)."""
        shard, user, ticket = event.shard, event.user_id, event.ticket
        self.shard_partition[shard] = partition
        if self.tickets.seen(shard, user, ticket):
            self.count("joins.duplicate")  # a retry changes nothing (see tickmatch.agents.tickets)
            return
        self.tickets.add(shard, user, ticket, now)
        if not queue:
            self.count("joins.leaving")
            return
        wants = {"country": event.want_country, "language": event.want_language, "gender": event.want_gender}
        self.pool(shard).add(user, now, emb, attrs, wants, blocked=event.blocked, raw=raw)
        self.activity[shard].arrivals += 1
        self.count("joins")

    def _on_chat_end(self, end: ChatEnd, now: float) -> None:
        outcome, label = self.labels.add_end(end, now)
        self.count(f"chat_end.{outcome.value}")
        if label is not None:
            self._label(label)
        if outcome is EndOutcome.WRONG_USER:
            self._reject_end(end, "user-not-in-match", f"user {end.user_id!r} is not part of match {end.match_id!r}")

    # -- tick -------------------------------------------------------------------------------------------------
    def tick(self) -> TickStats:
        """One matching round over every local shard, then label deadlines; queues decisions, labels and stats."""
        self.tick_id += 1
        now = self.clock()
        current = self.scorer  # read once: every pool of this tick not in an experiment arm uses this version
        started = time.perf_counter()
        waiting = 0
        decisions: list[MatchDecision] = []
        shard_stats: list[ShardStats] = []
        # Pipelined over shards: the engine matches shard i+1 in the matcher thread (BLAS and the numba kernels
        # run without the GIL) while this thread turns shard i's pairs into decisions (Python). Pools are disjoint,
        # so the two never touch the same state; each shard is prepared (expiry, bans, arm, exploration) before
        # its match starts, and decisions keep the shard order.
        prepared = [self._prepare(shard, pool, current, now) for shard, pool in self.pools.items()]
        running = self._matcher.submit(self._match, prepared[0], now) if prepared else None
        for i, shard_tick in enumerate(prepared):
            assert running is not None
            found = running.result()
            running = self._matcher.submit(self._match, prepared[i + 1], now) if i + 1 < len(prepared) else None
            shard, pool, model, offset, arm, explored, before, wait_sum, mine = shard_tick
            for a, b, score in zip(found.a.tolist(), found.b.tolist(), found.score.tolist(), strict=True):
                wait_sum += self._decide(mine, pool, shard, (a, b, score, None, None), model, now, offset, arm)
            decisions += mine
            waiting += before
            matched = 2 * (explored + len(found))
            activity = self.activity[shard]
            if before or activity.arrivals or activity.departures:
                counts = (activity.arrivals, activity.departures, matched, wait_sum)
                shard_stats.append(ShardStats(shard, self.tick_id, now, before, *counts))
            activity.arrivals = activity.departures = 0
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        for decision in decisions:
            self.sink.decision(decision)
            labels, rejected = self.labels.add_decision(decision, now)
            for label in labels:
                self._label(label)
            for end, outcome in rejected:
                self._reject_end(end, outcome.value, f"held chat-end rejected: {outcome.value}")
        if not self.catch_up:  # deadlines wait while a recovered tail is applied (catch_up_to)
            self.sweep_labels(now)
        stats = TickStats(
            worker=self.worker,
            tick_id=self.tick_id,
            at=now,
            waiting=waiting,
            pairs=len(decisions),
            elapsed_ms=elapsed_ms,
            events=self.events,
        )
        for record in shard_stats:
            self.sink.shard_stats(record)
        self.sink.tick_stats(stats)
        self.count("decisions", len(decisions))
        return stats

    def _prepare(self, shard: str, pool: Pool, current: Scorer, now: float) -> _ShardTick:
        """A shard's part of a tick before the engine matches it: expiry, ended bans, the experiment arm (the pool
        is re-embedded if the arm switches models), and exploration pairs, which leave the pool first."""
        expired = pool.expire(now, self.settings.wait_ttl_s)
        if expired:
            self.count("expired", len(expired))
        pool.forbidden.prune(now, pool.slot_map)
        arm = self.experiment.assign(shard, now) if self.experiment is not None else None
        self._follow_arm(shard, arm)
        model = self.pinned.get(shard, current).bilinear
        before = len(pool)
        offset = self.claimed.get(self.shard_partition[shard]) if self.guarded else None
        mine: list[MatchDecision] = []
        explored = self._explore(shard, pool, model) if self.settings.explore_share > 0 else []
        wait_sum = sum(self._decide(mine, pool, shard, pair, model, now, offset, arm) for pair in explored)
        return _ShardTick(shard, pool, model, offset, arm, len(explored), before, wait_sum, mine)

    def _match(self, prepared: _ShardTick, now: float) -> Matching:
        """The engine's part of a shard's tick (in the matcher thread)."""
        with gc_paused():
            return self.engine.match(prepared.pool, prepared.model, self.curve, now)

    def _decide(
        self,
        decisions: list[MatchDecision],
        pool: Pool,
        shard: str,
        pair: Pair,
        model: BilinearModel,
        now: float,
        offset: int | None,
        arm: Assignment | None,
    ) -> float:
        """Take a pair out of the pool and record its decision; returns the two users' summed wait."""
        a, b, score, propensity, group = pair
        wait_a = max(now - float(pool.joined_at[a]), 0.0)
        wait_b = max(now - float(pool.joined_at[b]), 0.0)
        features_a, features_b = f32_native(pool.raw[a].tobytes()), f32_native(pool.raw[b].tobytes())
        user_a, user_b = pool.take_pair(a, b, now)
        decisions.append(
            MatchDecision(
                match_id=f"{self._ids.getrandbits(128):032x}",
                tick_id=self.tick_id,
                shard=shard,
                user_a=user_a,
                user_b=user_b,
                score=float(score),
                model_version=model.version,
                policy=self.policy if group is None else EXPLORE_POLICY,
                decided_at=now,
                wait_a_s=wait_a,
                wait_b_s=wait_b,
                features_a=features_a,
                features_b=features_b,
                events_offset=offset,
                join_a=self._ticket(shard, user_a),
                join_b=self._ticket(shard, user_b),
                experiment=arm.experiment if arm else None,
                arm=arm.arm if arm else None,
                slice_id=arm.slice_id if arm else None,
                washout=arm.washout if arm else None,
                propensity=propensity,
                explore_group=group,
            )
        )
        return wait_a + wait_b

    def _explore(self, shard: str, pool: Pool, model: BilinearModel) -> list[Pair]:
        """Exploration: each waiting user joins this tick's group with probability TICKMATCH_EXPLORE_SHARE; the
        group is put in a uniformly random order and consecutive users are paired where allowed. A given pair is
        chosen with probability ``1/(m-1)`` (m even) or ``1/m`` (m odd), its propensity, logged on the decision so
        that any other model's value can be estimated from live outcomes (inverse propensity weighting, as the
        simulator's ``market.ope``). ``explore_log``, when a list, receives each whole group (for studies)."""
        slots = pool.active_slots()
        chosen = slots[self.explore_rng.random(slots.size) < self.settings.explore_share]
        m = int(chosen.size)
        if m < 2:
            return []
        order = self.explore_rng.permutation(chosen)
        allowed = allowed_matrix(pool, order)
        group = f"{self.worker}/{self.tick_id}/{shard}"
        propensity = 1.0 / (m - 1) if m % 2 == 0 else 1.0 / m
        if self.explore_log is not None:
            self.explore_log.append((group, [str(pool.ids[x]) for x in order.tolist()], allowed))
        out: list[Pair] = []
        zero = np.zeros(1, np.float32)
        for k in range(0, m - 1, 2):
            if allowed[k, k + 1]:
                a, b = int(order[k]), int(order[k + 1])
                score = float(model.pair_scores(pool.emb[a : a + 1], pool.emb[b : b + 1], zero, zero)[0])
                out.append((a, b, score, propensity, group))
        return out

    def _ticket(self, shard: str, user: str) -> str | None:
        return self.tickets.last(shard, user)

    def _label(self, label: DurationLabel) -> None:
        if self.replaying and label.match_id in self.published_labels:
            return  # published before the restart
        self.count("labels")
        self.sink.label(label)

    def apply_decision(self, decision: MatchDecision) -> bool:
        """Re-apply a published decision during recovery, exactly as its tick changed the state: the tick's expiry
        and ban pruning at its time, both users out of the pool, the pair banned, the match open for its label.
        Returns False (and counts it) if a user was not waiting, which a consistent log never shows."""
        now = decision.decided_at
        pool = self.pool(decision.shard)
        pool.expire(now, self.settings.wait_ttl_s)
        pool.forbidden.prune(now, pool.slot_map)
        found = [pool.remove(user) is not None for user in (decision.user_a, decision.user_b)]
        pool.forbidden.record_match(decision.user_a, decision.user_b, now)
        self.tick_id = max(self.tick_id, decision.tick_id)
        labels, rejected = self.labels.add_decision(decision, now)
        for label in labels:
            self._label(label)
        for end, outcome in rejected:
            self._reject_end(end, outcome.value, f"held chat-end rejected: {outcome.value}")
        if not all(found):
            self.count("recovery.decision_users_missing")
            return False
        return True

    def sweep_labels(self, now: float) -> None:
        """Emit labels whose grace or censoring deadline passed; dead-letter chat-ends of unknown matches."""
        labels, dead = self.labels.sweep(now)
        for label in labels:
            self._label(label)
        for end in dead:
            self.count("dlq.unknown-match")
            self._reject_end(
                end, "unknown-match", f"no decision {end.match_id!r} within {self.settings.orphan_grace_s}s"
            )

    def shards_of(self, partition: int) -> list[str]:
        """Local shards whose events arrive on ``partition``."""
        return [s for s, p in self.shard_partition.items() if p == partition]

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget the shards of revoked partitions (after their final snapshot): whoever owns them next recovers
        them from Kafka, and nothing here ticks them in the meantime (no double matching)."""
        gone = [s for s, p in self.shard_partition.items() if p in partitions]
        for shard in gone:
            self.pools.pop(shard, None)
            self.activity.pop(shard, None)
            del self.shard_partition[shard]
        for partition in partitions:
            self.claimed.pop(partition, None)
            self.catch_up.pop(partition, None)
        self.tickets.drop_shards(set(gone))
        self.leaves_ahead.forget_shards(set(gone))
        dropped = self.labels.forget_shards(set(gone))
        if gone:
            log.info("partitions revoked", extra={"shards": gone, "open_matches_dropped": dropped})
        return gone

    def waiting(self) -> int:
        """Users waiting over all local shards."""
        return int(sum(len(p) for p in self.pools.values()))


def _event_time(event: InputEvent) -> float:
    """The time an event says it happened (client clock)."""
    if isinstance(event, ChatEnd):
        return event.ended_at
    if isinstance(event, ChatHeartbeat):
        return event.at
    return event.ts


def _profile(event: Join | ProfileUpdate) -> dict[str, str | None]:
    """The profile attributes an event carries (None where not given)."""
    return {"country": event.country, "language": event.language, "gender": event.gender, "age_band": event.age_band}


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """p50/p99/max of tick latencies (empty input gives zeros)."""
    if not samples_ms:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    arr = np.asarray(samples_ms)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}
