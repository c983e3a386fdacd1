"""The worker's state and logic, independent of Faust: pools per shard, the label join, tick bookkeeping.

Agents stay thin: they hand raw messages to :class:`WorkerRuntime` and it writes results through a
:class:`Sink`. Tests drive the same runtime with a recording sink and an injected clock.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import numpy as np

from tickmatch.agents.sink import Sink
from tickmatch.learning.features import RAW_DIM, featurize, update_raw
from tickmatch.learning.scorer import Scorer, heuristic_scorer
from tickmatch.matching.engine import Engine, EngineConfig, gc_paused
from tickmatch.matching.pool import Pool, PoolError
from tickmatch.outcomes import EndOutcome, LabelJoin
from tickmatch.schemas import (
    ChatEnd,
    DecodeError,
    Join,
    Leave,
    MatchDecision,
    ProfileUpdate,
    TickStats,
    decode_event,
    encode,
)
from tickmatch.schemas.records import InputEvent
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)


class WorkerRuntime:
    """Everything one worker knows about the shards it owns."""

    def __init__(self, settings: Settings, sink: Sink, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.worker = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        self.pools: dict[str, Pool] = {}
        self.shard_partition: dict[str, int] = {}
        self.labels = LabelJoin(settings.label_grace_s, settings.censor_after_s, settings.orphan_grace_s)
        self.tick_id = 0
        self.engine = Engine(settings.embed_dim, EngineConfig(k=settings.match_k, threads=settings.match_threads))
        self.scorer: Scorer = heuristic_scorer(settings.embed_dim)
        self.last_swap_ms = 0.0
        self.curve = settings.wait_curve()
        cfg = self.engine.config
        self.policy = f"{cfg.matcher}-top{cfg.k}"
        self.counters: dict[str, int] = {}

    @property
    def model_version(self) -> str:
        """Version of the model the next tick will use."""
        return self.scorer.version

    def set_model(self, scorer: Scorer) -> None:
        """Hot-swap the scoring model: re-embed every waiting user from their stored raw features with the new
        projection, then switch. Runs between ticks (no await inside, and a tick matches all its pools without
        awaiting), so a tick sees either the old scorer and old embeddings or the new scorer and new
        embeddings, never a mix. Costs one (waiting x raw_dim) x (raw_dim x dim) product per pool, measured in
        ``last_swap_ms``."""
        if scorer.dim != self.settings.embed_dim or scorer.raw_dim != RAW_DIM:
            raise ValueError(
                f"model {scorer.version} maps {scorer.raw_dim} raw features to {scorer.dim} dims; this worker "
                f"needs {RAW_DIM} -> {self.settings.embed_dim}"
            )
        started = time.perf_counter()
        for pool in self.pools.values():
            pool.reembed(scorer.embed)
        self.scorer = scorer
        self.last_swap_ms = (time.perf_counter() - started) * 1000.0
        self.count("model_swaps")
        log.info("model swapped", extra={"version": scorer.version, "swap_ms": round(self.last_swap_ms, 3)})

    def close(self) -> None:
        """Stop the matching engine's threads."""
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
        return pool

    async def on_message(
        self, key: bytes | None, value: bytes | None, partition: int, origin: str
    ) -> InputEvent | None:
        """Decode, validate and apply one raw input message; anything wrong goes to the DLQ with a reason."""
        try:
            event = decode_event(value)
            if key is not None and key != event.shard.encode():
                raise DecodeError("key-mismatch", f"message key {key!r} differs from shard {event.shard!r}")
        except DecodeError as exc:
            self.count(f"dlq.{exc.reason}")
            await self.sink.dead_letter(key, value, exc.reason, str(exc), origin)
            return None
        try:
            await self.apply(event, partition)
        except PoolError as exc:
            self.count("dlq.rejected")
            await self.sink.dead_letter(key, value, "rejected", str(exc), origin)
            return None
        return event

    async def apply(self, event: InputEvent, partition: int) -> None:
        """Apply a validated event to the shard state."""
        self.shard_partition[event.shard] = partition
        if isinstance(event, Join):
            attrs = _profile(event)
            wants = {"country": event.want_country, "language": event.want_language, "gender": event.want_gender}
            raw = featurize(attrs, event.signals)
            self.pool(event.shard).add(
                event.user_id,
                self.clock(),
                self.scorer.embed(raw[None, :])[0],
                attrs,
                wants,
                blocked=event.blocked,
                raw=raw,
            )
            self.count("joins")
        elif isinstance(event, Leave):
            self.pool(event.shard).remove(event.user_id)
            self.count("leaves")
        elif isinstance(event, ProfileUpdate):
            pool = self.pool(event.shard)
            slot = pool.slot_of(event.user_id)
            if slot is not None:
                attrs = _profile(event)
                raw = update_raw(pool.raw[slot].copy(), attrs, event.signals or None)
                pool.update_features(event.user_id, self.scorer.embed(raw[None, :])[0], attrs, raw=raw)
            self.count("profile_updates")
        else:
            await self._on_chat_end(event)

    async def _on_chat_end(self, end: ChatEnd) -> None:
        outcome, label = self.labels.add_end(end, self.clock())
        self.count(f"chat_end.{outcome.value}")
        if label is not None:
            await self.sink.label(label)
        if outcome is EndOutcome.WRONG_USER:
            await self.sink.dead_letter(
                end.shard.encode(),
                encode(end),
                "user-not-in-match",
                f"user {end.user_id!r} is not part of match {end.match_id!r}",
                "labels",
            )

    async def tick(self) -> TickStats:
        """One matching round over every local shard, then label deadlines; emits decisions and stats."""
        self.tick_id += 1
        now = self.clock()
        model = self.scorer.bilinear  # read once: every pool of this tick uses the same version
        started = time.perf_counter()
        waiting = 0
        decisions: list[MatchDecision] = []
        for shard, pool in self.pools.items():
            expired = pool.expire(now, self.settings.wait_ttl_s)
            if expired:
                self.count("expired", len(expired))
            pool.forbidden.prune(now, pool.slot_map)
            waiting += len(pool)
            with gc_paused():
                found = self.engine.match(pool, model, self.curve, now)
            for a, b, score in zip(found.a.tolist(), found.b.tolist(), found.score.tolist(), strict=True):
                wait_a, wait_b = now - pool.joined_at[a], now - pool.joined_at[b]
                features_a, features_b = tuple(pool.raw[a].tolist()), tuple(pool.raw[b].tolist())
                user_a, user_b = pool.take_pair(a, b, now)
                decisions.append(
                    MatchDecision(
                        match_id=uuid.uuid4().hex,
                        tick_id=self.tick_id,
                        shard=shard,
                        user_a=user_a,
                        user_b=user_b,
                        score=float(score),
                        model_version=model.version,
                        policy=self.policy,
                        decided_at=now,
                        wait_a_s=float(max(wait_a, 0.0)),
                        wait_b_s=float(max(wait_b, 0.0)),
                        features_a=features_a,
                        features_b=features_b,
                    )
                )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        for decision in decisions:
            await self.sink.decision(decision)
            labels, rejected = self.labels.add_decision(decision, now)
            for label in labels:
                await self.sink.label(label)
            for end, outcome in rejected:
                await self.sink.dead_letter(
                    end.shard.encode(), encode(end), outcome.value, f"held chat-end rejected: {outcome.value}", "labels"
                )
        await self.sweep_labels(now)
        stats = TickStats(
            worker=self.worker,
            tick_id=self.tick_id,
            at=now,
            waiting=waiting,
            pairs=len(decisions),
            elapsed_ms=elapsed_ms,
        )
        await self.sink.tick_stats(stats)
        self.count("decisions", len(decisions))
        return stats

    async def sweep_labels(self, now: float) -> None:
        """Emit labels whose grace or censoring deadline passed; dead-letter chat-ends of unknown matches."""
        labels, dead = self.labels.sweep(now)
        for label in labels:
            await self.sink.label(label)
        for end in dead:
            self.count("dlq.unknown-match")
            await self.sink.dead_letter(
                end.shard.encode(),
                encode(end),
                "unknown-match",
                f"no decision {end.match_id!r} within {self.settings.orphan_grace_s}s",
                "labels",
            )

    def drop_partitions(self, partitions: set[int]) -> list[str]:
        """Forget shards whose partition was revoked: another worker owns them now (no double matching)."""
        gone = [s for s, p in self.shard_partition.items() if p in partitions]
        for shard in gone:
            self.pools.pop(shard, None)
            del self.shard_partition[shard]
        dropped = self.labels.forget_shards(set(gone))
        if gone:
            log.info("partitions revoked", extra={"shards": gone, "open_matches_dropped": dropped})
        return gone

    def waiting(self) -> int:
        """Users waiting over all local shards."""
        return int(sum(len(p) for p in self.pools.values()))


def _profile(event: Join | ProfileUpdate) -> dict[str, str | None]:
    """The profile attributes an event carries (None where not given)."""
    return {"country": event.country, "language": event.language, "gender": event.gender, "age_band": event.age_band}


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """p50/p99/max of tick latencies (empty input gives zeros)."""
    if not samples_ms:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    arr = np.asarray(samples_ms)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}
