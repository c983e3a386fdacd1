"""``tickmatch demo``: embedded broker + a real worker process + a trainer process + the live market + an
independent reader.

The worker (``tickmatch worker``) and the trainer (``tickmatch trainer``) run as their own processes, exactly as
in production; the demo only talks to them through Kafka topics. The worker starts with the heuristic model;
as chats end, labels flow to the trainer, whose versions flow back to the worker and show up in the decisions.
The summary is computed from records read back from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tickmatch.agents.runtime import latency_summary
from tickmatch.market.live import LiveMarket, MarketConfig
from tickmatch.outcomes import double_booked
from tickmatch.stream.broker import BrokerError, broker_for, stop_process
from tickmatch.stream.readback import Readback, Seen
from tickmatch.stream.settings import ENV, Settings
from tickmatch.stream.topics import bootstrap_of, ensure_topics

WORKER_READY_TIMEOUT_S = 90.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seconds: float
    rate: float
    json: bool
    seed: int = 7
    spawn_worker: bool = True
    report: Path | None = None  # write tickmatch report's HTML of the run here at the end


def demo_settings(settings: Settings) -> Settings:
    """Time-scaled defaults for a short demo (explicit environment variables still win)."""
    defaults = {
        "censor_after_s": 12.0,
        "label_grace_s": 1.0,
        "orphan_grace_s": 5.0,
        "wait_ttl_s": 60.0,
        "train_min_labels": 100,  # a 20 s demo produces ~500 labels: several versions, not one
        "train_every": 100,
    }
    changes: dict[str, Any] = {k: v for k, v in defaults.items() if not os.environ.get(ENV[k])}
    if not os.environ.get(ENV["topic_prefix"]):
        changes["topic_prefix"] = f"demo-{uuid.uuid4().hex[:8]}."
    if not os.environ.get(ENV["app_id"]):
        changes["app_id"] = f"tickmatch-demo-{uuid.uuid4().hex[:8]}"
    demo = settings.with_overrides(**changes)
    demo.validate()
    return demo


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a ``tickmatch worker`` process use exactly these settings."""
    env = dict(os.environ)
    for name, var in ENV.items():
        value = getattr(settings, name)
        if value is not None:
            env[var] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@contextlib.contextmanager
def worker_process(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``tickmatch worker`` in a child process; terminated (then killed) on exit."""
    with service_process(settings, log_path, "worker", "--loglevel", "warning") as proc:
        yield proc


@contextlib.contextmanager
def service_process(settings: Settings, log_path: Path, *command: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``tickmatch <command>`` in a child process with these settings; terminated (then killed) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickmatch", *command],
            env=worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        stop_process(proc, grace_s=15.0)


def summarize(seen: Seen, market_sent: int, elapsed_s: float) -> dict[str, Any]:
    """The demo's result object (also used by tests)."""
    ticks = latency_summary([t.elapsed_ms for t in seen.ticks])
    waits = [w for d in seen.decisions for w in (d.wait_a_s, d.wait_b_s)]
    labelled = {label.match_id for label in seen.labels}
    versions: list[str] = []
    for d in sorted(seen.decisions, key=lambda d: (d.decided_at, d.tick_id)):
        if not versions or versions[-1] != d.model_version:
            versions.append(d.model_version)
    return {
        "events": seen.events,
        "events_sent": market_sent,
        "decisions": len(seen.decisions),
        "matched_users": 2 * len(seen.decisions),
        "labels": len(seen.labels),
        "censored_labels": sum(1 for label in seen.labels if label.censored),
        "unlabelled_decisions": sum(1 for d in seen.decisions if d.match_id not in labelled),
        "duplicate_labels": len(seen.labels) - len(labelled),
        "dlq": len(seen.dlq),
        "double_booked": len(double_booked(seen.joins, seen.decisions)),
        "ticks": len(seen.ticks),
        "tick_p50_ms": round(ticks["p50"], 3),
        "tick_p99_ms": round(ticks["p99"], 3),
        "tick_max_ms": round(ticks["max"], 3),
        "mean_wait_s": round(sum(waits) / len(waits), 3) if waits else 0.0,
        "mean_duration_s": round(
            sum(label.duration_s for label in seen.labels if not label.censored)
            / max(1, sum(1 for label in seen.labels if not label.censored)),
            3,
        ),
        "model_versions": versions,
        "models_published": len(seen.models),
        "learned_decisions": sum(1 for d in seen.decisions if d.model_version.startswith("duration-")),
        "model_lag_s_max": _model_lag_max(seen),
        "experiment_arms": _arms(seen),
        "elapsed_s": round(elapsed_s, 1),
    }


def _arms(seen: Seen) -> dict[str, int]:
    """Decisions per ``experiment/arm`` (empty without TICKMATCH_EXPERIMENT_FILE; README, Experiments)."""
    out: dict[str, int] = {}
    for d in seen.decisions:
        if d.experiment is not None:
            key = f"{d.experiment}/{d.arm}"
            out[key] = out.get(key, 0) + 1
    return out


def _model_lag_max(seen: Seen) -> float:
    """Staleness bound of the scorer, measured: for each published version that decisions used, seconds from
    the trainer publishing it to the first decision scored with it (publish, consume, re-embed, next tick).
    Trainer and worker share this machine's clock."""
    first_use: dict[str, float] = {}
    for d in seen.decisions:
        first_use[d.model_version] = min(first_use.get(d.model_version, d.decided_at), d.decided_at)
    lags = [first_use[m.version] - m.trained_at for m in seen.models if m.version in first_use]
    return round(max(lags), 3) if lags else 0.0


def _progress(seen: Seen, market: LiveMarket, started: float, phase: str, tty: bool) -> None:
    ticks = latency_summary([t.elapsed_ms for t in seen.ticks[-200:]])
    line = (
        f"[{time.monotonic() - started:5.1f}s {phase:8}] events {market.sent:6d}  waiting {market.waiting():5d}  "
        f"decisions {len(seen.decisions):6d}  labels {len(seen.labels):6d} "
        f"(censored {sum(1 for lb in seen.labels if lb.censored)})  dlq {len(seen.dlq)}  "
        f"model {seen.decisions[-1].model_version if seen.decisions else '-'}  tick p99 {ticks['p99']:.1f} ms"
    )
    print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)


async def _run(settings: Settings, options: DemoOptions, worker_log: Path) -> dict[str, Any]:
    assert settings.broker_url is not None
    bootstrap = bootstrap_of(settings.broker_url)
    await ensure_topics(bootstrap, settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    events_topic = settings.topic("events")

    async def send(key: bytes, value: bytes) -> None:
        await producer.send(events_topic, value=value, key=key)

    market = LiveMarket(send, MarketConfig(rate_per_s=options.rate, seed=options.seed))
    reader = Readback(bootstrap, settings, on_decision=market.on_decision)
    await reader.start()
    tty = sys.stderr.isatty()
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if options.spawn_worker:
                trainer_log = worker_log.with_name(worker_log.name.replace("worker-", "trainer-"))
                worker = stack.enter_context(worker_process(settings, worker_log))
                trainer = stack.enter_context(service_process(settings, trainer_log, "trainer"))
                print(f"worker pid {worker.pid} (log: {worker_log})", file=sys.stderr)
                print(f"trainer pid {trainer.pid} (log: {trainer_log})", file=sys.stderr)
            ready = await reader.wait_for(lambda s: len(s.ticks) > 0, WORKER_READY_TIMEOUT_S)
            if not ready:
                raise BrokerError(f"worker did not tick within {WORKER_READY_TIMEOUT_S}s; see {worker_log}")
            print(f"worker ready after {time.monotonic() - started:.1f}s", file=sys.stderr)
            await market.start()
            arrivals = asyncio.create_task(market.run_arrivals(options.seconds))
            while not arrivals.done():
                await asyncio.wait({arrivals}, timeout=1.0 if tty else 5.0)
                _progress(reader.seen, market, started, "running", tty)
            await arrivals
            # Drain: every decision must be labelled (ended or censored) before the summary.
            drain_deadline = settings.censor_after_s + settings.label_grace_s + 10.0
            drained = asyncio.create_task(
                reader.wait_for(
                    lambda s: bool(s.decisions) and len({lb.match_id for lb in s.labels}) >= len(s.decisions),
                    drain_deadline,
                )
            )
            while not drained.done():
                await asyncio.wait({drained}, timeout=1.0 if tty else 5.0)
                _progress(reader.seen, market, started, "draining", tty)
            await market.stop()
            # Events sent while draining (leaves, late chat-ends) must be read back too before counting.
            await producer.flush()
            await reader.wait_for(lambda s: s.events >= market.sent, 15.0)
            if tty:
                print(file=sys.stderr)
        result = summarize(reader.seen, market.sent, time.monotonic() - started)
        if options.report is not None:
            from tickmatch.reporting import load_run, write_report

            window = max(1.0, options.seconds / 20)  # a short demo still gets a curve
            result["report"] = str(write_report(await load_run(settings, bootstrap, window), options.report))
        return result
    finally:
        await reader.stop()
        await producer.stop()


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Run the demo and print the summary (human table, or one JSON line last with ``--json``).

    With ``spawn_worker=False`` (``tickmatch simulate``) it only drives the market against workers that
    run elsewhere (docker-compose), reading their decisions back from the broker."""
    if options.spawn_worker:
        settings = demo_settings(settings)
    with broker_for(settings) as live:
        worker_log = Path(live.data_dir) / f"worker-{live.app_id}.log"
        try:
            import uvloop

            result = uvloop.run(_run(live, options, worker_log))
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker at {live.broker_url}: {exc}") from exc
    ok = result["decisions"] > 0 and result["labels"] > 0 and result["double_booked"] == 0 and result["dlq"] == 0
    if options.json:
        print(orjson.dumps(result).decode())
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print("OK" if ok else "CHECK: see the numbers above", file=sys.stderr)
    return 0 if ok else 1
