"""The live market: publishes real join / leave / chat-end events to the broker and reacts to decisions.

Time is scaled: a simulated 90 s chat lasts ``90 * time_scale`` real seconds, so a 20 s demo sees many
complete chats. Some chats never report an end (censoring) or report only one side, as real clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from tickmatch.market.population import Population
from tickmatch.schemas import ChatEnd, Join, Leave, MatchDecision, Record, encode

IDLE, WAITING, CHATTING = 0, 1, 2
END_REASONS = ("hangup", "skip", "hangup", "hangup", "disconnect")

Send = Callable[[bytes, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """Knobs of the live market (real-time seconds unless named otherwise)."""

    rate_per_s: float = 40.0
    n_users: int = 20_000
    seed: int = 7
    time_scale: float = 0.04
    p_no_end: float = 0.04
    p_one_end: float = 0.06
    p_return: float = 0.3  # chance to come back after a chat...
    p_return_aha: float = 0.5  # ...plus up to this much more after a long one (simulated seconds below)
    aha_s: float = 180.0
    return_after_s: float = 2.0
    step_s: float = 0.05


class LiveMarket:
    """Drives a :class:`Population` in real time through ``send(key, value)``."""

    def __init__(self, send: Send, config: MarketConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.pop = Population.generate(config.n_users, config.seed)
        self.state = np.zeros(self.pop.n, dtype=np.int8)
        self.visit = np.zeros(self.pop.n, dtype=np.int64)
        self.rng = np.random.default_rng(config.seed + 1)
        self.clock = clock
        self.sent = 0
        self.chats = 0
        self.left = 0
        self._send = send
        self._queue: asyncio.Queue[Record] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.accepting = True

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sender = asyncio.create_task(self._drain(), name="market-sender")

    async def _drain(self) -> None:
        while True:
            record = await self._queue.get()
            await self._send(record.shard.encode(), encode(record))  # type: ignore[attr-defined]
            self.sent += 1

    def _emit(self, record: Record) -> None:
        self._queue.put_nowait(record)

    def _later(self, delay_s: float, fn: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        self._loop.call_later(max(delay_s, 0.0), fn, *args)

    def join(self, i: int) -> None:
        """User ``i`` starts waiting; schedules their leave when their patience runs out."""
        pop = self.pop
        self.state[i] = WAITING
        self.visit[i] += 1
        visit = int(self.visit[i])
        attrs = pop.attrs(i)
        self._emit(
            Join(
                user_id=pop.user_id(i),
                shard=pop.shard_of(i),
                ts=self.clock(),
                country=attrs["country"],
                language=attrs["language"],
                gender=attrs["gender"],
                age_band=attrs["age_band"],
                signals=pop.signal_tuple(i),
                want_gender=pop.want_gender[i],
            )
        )
        self._later(float(pop.patience_s[i]) * self.config.time_scale, self._give_up, i, visit)

    def _give_up(self, i: int, visit: int) -> None:
        if self.state[i] == WAITING and self.visit[i] == visit:
            self.state[i] = IDLE
            self.left += 1
            self._emit(Leave(user_id=self.pop.user_id(i), shard=self.pop.shard_of(i), ts=self.clock()))

    def on_decision(self, decision: MatchDecision) -> None:
        """Both users start chatting; schedule the chat-ends the clients will report."""
        a, b = _index(decision.user_a), _index(decision.user_b)
        if a is None or b is None or max(a, b) >= self.pop.n:
            return
        self.chats += 1
        self.state[a] = self.state[b] = CHATTING
        self.visit[a] += 1
        self.visit[b] += 1
        simulated = self.pop.sample_duration_s(a, b, self.rng)
        duration = simulated * self.config.time_scale
        roll = self.rng.random()
        reporters = (
            []
            if roll < self.config.p_no_end
            else [a]
            if roll < self.config.p_no_end + self.config.p_one_end
            else [a, b]
        )
        reason = END_REASONS[int(self.rng.integers(len(END_REASONS)))]
        for k, user in enumerate(reporters):
            self._later(duration + 0.05 * k, self._end, decision, user, reason, simulated)
        for user in (a, b):
            if user not in reporters:  # a client that never reports still leaves the chat
                self._later(duration, self._finish, user, simulated)

    def _end(self, decision: MatchDecision, user: int, reason: str, simulated_s: float) -> None:
        skew = float(self.pop.clock_skew_s[user]) * self.config.time_scale  # the client's clock, not ours
        self._emit(
            ChatEnd(
                match_id=decision.match_id,
                user_id=self.pop.user_id(user),
                shard=decision.shard,
                ended_at=max(self.clock() + skew, 0.0),
                reason=reason,
            )
        )
        self._finish(user, simulated_s)

    def _finish(self, user: int, simulated_s: float) -> None:
        """The chat is over for ``user``; a long chat makes coming back likelier (the "aha moment")."""
        self.state[user] = IDLE
        cfg = self.config
        p_back = cfg.p_return + cfg.p_return_aha * (1.0 - float(np.exp(-simulated_s / cfg.aha_s)))
        if self.accepting and self.rng.random() < p_back:
            self._later(cfg.return_after_s, self._come_back, user)

    def _come_back(self, user: int) -> None:
        if self.state[user] == IDLE and self.accepting:
            self.join(user)

    async def run_arrivals(self, seconds: float) -> None:
        """Poisson arrivals of idle users for ``seconds``; the sleeps here are the arrival schedule."""
        step = self.config.step_s
        deadline = self.clock() + seconds
        while self.clock() < deadline:
            for _ in range(int(self.rng.poisson(self.config.rate_per_s * step))):
                idle = np.flatnonzero(self.state == IDLE)
                if idle.size:
                    self.join(int(idle[int(self.rng.integers(idle.size))]))
            await asyncio.sleep(step)
        self.accepting = False

    def waiting(self) -> int:
        return int(np.count_nonzero(self.state == WAITING))

    async def stop(self) -> None:
        """Flush queued events and stop the sender."""
        while not self._queue.empty():
            record = self._queue.get_nowait()
            await self._send(record.shard.encode(), encode(record))  # type: ignore[attr-defined]
            self.sent += 1
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender


def _index(user_id: str) -> int | None:
    if user_id.startswith("u") and user_id[1:].isdigit():
        return int(user_id[1:])
    return None
