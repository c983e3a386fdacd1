"""``tickmatch`` command line: ``demo``, ``simulate``, ``worker``, ``trainer``, ``broker``, ``publish``, ``status``,
``flywheel``, ``schemas``, ``settings``.

Errors a user can cause (bad settings, broker not reachable, bad arguments) end with one clear line and exit
code 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from tickmatch.stream.broker import BrokerError, BrokerLost, broker_for
from tickmatch.stream.settings import Settings, SettingsError, markdown_table

if TYPE_CHECKING:
    from tickmatch.agents.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A problem the user can fix; printed as one line."""


def cmd_worker(settings: Settings, loglevel: str) -> int:
    """Run the Faust worker until interrupted."""
    import faust
    import uvloop

    from tickmatch.agents.app import create_app
    from tickmatch.stream import logs
    from tickmatch.stream.topics import bootstrap_of, ensure_topics

    logs.setup(loglevel)  # JSON lines from the start (engine warm-up); Faust's worker gets the same config below
    with broker_for(settings) as live:
        assert live.broker_url is not None
        asyncio.run(ensure_topics(bootstrap_of(live.broker_url), live))
        uvloop.install()
        built = create_app(live)
        prepare_engine(built.runtime)
        worker = faust.Worker(
            built.app, loglevel=loglevel, redirect_stdouts=False, logging_config=logs.dict_config(loglevel)
        )
        try:
            worker.execute_from_commandline()
        except SystemExit:
            if built.loop.lost is not None:  # the broker watchdog gave up: one line and exit code 3, not Faust's
                raise built.loop.lost from None
            raise
        if built.loop.lost is not None:
            raise built.loop.lost
    return 0


def cmd_broker(settings: Settings) -> int:
    """Run the embedded broker alone until interrupted, so several workers and a trainer can share it; prints
    ``BROKER_URL=...`` (the line to export) on stdout."""
    import signal
    import threading

    from tickmatch.stream.broker import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(Path(settings.data_dir), port=settings.broker_port or None) as broker:
        print(f"BROKER_URL={broker.url}", flush=True)
        print(f"embedded Tansu broker on {broker.bootstrap} (log: {broker.log_path}); Ctrl-C stops it", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


def cmd_trainer(settings: Settings) -> int:
    """Train from the labels topic and publish model versions until interrupted (SIGINT/SIGTERM)."""
    import signal

    import uvloop

    from tickmatch.agents.trainer import TrainerService
    from tickmatch.stream import logs
    from tickmatch.stream.topics import bootstrap_of, ensure_topics

    async def run(live: Settings) -> None:
        assert live.broker_url is not None
        bootstrap = bootstrap_of(live.broker_url)
        await ensure_topics(bootstrap, live)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await TrainerService(live, bootstrap).run(stop)

    logs.setup("INFO")
    with broker_for(settings) as live:
        try:
            uvloop.run(run(live))
        except OSError as exc:
            raise UsageError(f"cannot reach the broker at {live.broker_url}: {exc}") from exc
    return 0


def prepare_engine(runtime: WorkerRuntime) -> None:
    """Before the worker joins its consumer group: compile the matching kernels (seconds on a fresh machine;
    inside a tick they would block the event loop past the session timeout), pin BLAS to one thread (the engine
    runs its own threads), and freeze the warmed-up heap so the garbage collector skips it during ticks."""
    from tickmatch.matching.engine import warm_up
    from tickmatch.matching.tuning import blas_info, freeze_heap, set_blas_threads

    started = time.perf_counter()
    set_blas_threads(1)
    warm_up(runtime.engine)
    freeze_heap()
    log.info(
        "matching engine ready",
        extra={"warm_up_s": round(time.perf_counter() - started, 2), "blas": blas_info(), "policy": runtime.policy},
    )


def cmd_publish(settings: Settings, events: list[str]) -> int:
    """Publish JSON events (arguments, or one per line on stdin with ``-``) as the contract says."""
    from tickmatch.ops import PublishError, publish
    from tickmatch.stream.topics import bootstrap_of, ensure_topics

    lines = sys.stdin.read().splitlines() if events == ["-"] else events
    if not settings.broker_url:
        raise UsageError("publish needs BROKER_URL (start one with `tickmatch broker`)")

    async def run() -> list[str]:
        assert settings.broker_url is not None
        bootstrap = bootstrap_of(settings.broker_url)
        await ensure_topics(bootstrap, settings)
        return await publish(bootstrap, settings, lines)

    try:
        for line in asyncio.run(run()):
            print(line)
    except PublishError as exc:
        raise UsageError(f"not an event: {exc}") from exc
    return 0


def cmd_status(settings: Settings, url: str | None) -> int:
    """Print a worker's readiness and figures; exit 0 if ready, 1 if not."""
    from tickmatch.ops import status_text

    ready, text = status_text(url or f"http://127.0.0.1:{settings.web_port}")
    print(text)
    return 0 if ready else 1


def cmd_schemas(out: Path) -> int:
    """Export JSON Schemas of every record."""
    from tickmatch.schemas.export import export_json_schemas

    for path in export_json_schemas(out):
        print(path)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Embedded broker + worker + simulator, live progress, then a JSON summary."""
    from tickmatch.demo import DemoOptions, run_demo

    options = DemoOptions(
        seconds=args.seconds,
        rate=args.rate,
        json=args.json,
        seed=args.seed,
        spawn_worker=args.command == "demo",
        report=args.report,
    )
    if not options.spawn_worker and not settings.broker_url:
        raise UsageError("simulate drives workers that run elsewhere: set BROKER_URL (e.g. kafka://kafka:9092)")
    return run_demo(settings, options)


def cmd_flywheel(args: argparse.Namespace) -> int:
    """Simulated market runs of every policy over several seeds; JSON summary and PNGs."""

    from tickmatch.market.flywheel import print_progress, run_flywheel, write_plots
    from tickmatch.market.policies import POLICIES

    unknown = sorted(set(args.policies) - set(POLICIES))
    if unknown:
        raise UsageError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"flywheel: {len(args.policies)} policies x {len(seeds)} seeds x {args.hours} h", file=sys.stderr)
    summary, runs = run_flywheel(args.hours, seeds, args.policies, progress=print_progress)
    try:
        summary["plots"] = [str(p) for p in write_plots(summary, runs, args.out)]
    except ImportError:
        print("flywheel: matplotlib is not installed; no PNGs (pip install matplotlib)", file=sys.stderr)
    _emit(summary, args.out / "flywheel.json", args.json)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """The switch-back study (``tickmatch.study``): per-seed read-outs against the true effect, and the A/B bias."""
    from dataclasses import replace

    from tickmatch.study import StudyConfig, run_study

    cfg = replace(StudyConfig(), minutes=args.minutes, truth_seeds=args.truth_seeds)
    print(f"experiment: {args.seeds} seeds x (switch-back, A/B) + {cfg.truth_seeds} x 2 truth runs, "
          f"{cfg.minutes:g} market minutes each", file=sys.stderr)  # fmt: skip
    summary = run_study(args.seeds, cfg, progress=lambda line: print(line, file=sys.stderr, flush=True))
    _emit(summary, args.out / "experiment.json" if args.out else None, args.json, skip=("per_seed",))
    return 0


def cmd_analytics(settings: Settings) -> int:
    """Serve the outcome figures of a running deployment on /metrics (needs BROKER_URL)."""
    import uvloop

    from tickmatch.reporting import serve_analytics
    from tickmatch.stream.topics import bootstrap_of

    if not settings.broker_url:
        raise UsageError("tickmatch analytics reads a running deployment's topics: set BROKER_URL")
    uvloop.run(serve_analytics(settings, bootstrap_of(settings.broker_url)))
    return 0


def cmd_report(settings: Settings, out: Path, window_s: float | None) -> int:
    """One HTML page of a run from its topics (BROKER_URL, and TICKMATCH_TOPIC_PREFIX of the run)."""
    import uvloop

    from tickmatch.reporting import load_run, write_report
    from tickmatch.stream.topics import bootstrap_of

    if not settings.broker_url:
        raise UsageError("tickmatch report reads a run's topics: set BROKER_URL (and TICKMATCH_TOPIC_PREFIX)")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError("tickmatch report draws with matplotlib: pip install matplotlib") from exc
    analytics = uvloop.run(load_run(settings, bootstrap_of(settings.broker_url), window_s))
    print(write_report(analytics, out))
    return 0


def _emit(summary: dict[str, Any], path: Path | None, as_json: bool, skip: tuple[str, ...] = ()) -> None:
    """Write a study's JSON summary to ``path`` (if any) and print it: one JSON line, or one line per figure."""
    import orjson

    text = orjson.dumps(summary, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    if as_json:
        print(text)
        return
    for key, value in summary.items():
        if key not in skip:
            print(f"{key:<26} {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickmatch", description="Real-time 1:1 matchmaking on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a live demo on the embedded broker (or BROKER_URL)")
    simulate = sub.add_parser("simulate", help="drive the market against running workers (needs BROKER_URL)")
    for p in (demo, simulate):
        p.add_argument("--seconds", type=_positive, default=30.0, help="how long users keep arriving")
        p.add_argument("--rate", type=_positive, default=40.0, help="arrivals per second")
        p.add_argument("--seed", type=int, default=7, help="simulator seed")
        p.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line)")
        p.add_argument("--report", type=Path, default=None, help="also write tickmatch report's HTML here")
    worker = sub.add_parser("worker", help="run the matcher worker (Faust)")
    worker.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    sub.add_parser("trainer", help="train from the labels topic, publish model versions (needs the broker)")
    sub.add_parser("broker", help="run the embedded broker alone and print its BROKER_URL (for several processes)")
    pub = sub.add_parser("publish", help="publish events given as JSON objects (or '-' for one per stdin line)")
    pub.add_argument("events", nargs="+", help='e.g. \'{"type": "join", "user_id": "u1", "shard": "en"}\'')
    status = sub.add_parser("status", help="a worker's readiness, tick p99, lag and pools (from its /metrics)")
    status.add_argument("--url", default=None, help="worker base URL (default http://127.0.0.1:TICKMATCH_WEB_PORT)")
    fly = sub.add_parser("flywheel", help="simulated market: every policy, the learned one training from labels")
    fly.add_argument("--hours", type=_positive, default=1.0, help="simulated hours per run")
    fly.add_argument("--seed", type=int, default=0, help="first seed")
    fly.add_argument("--seeds", type=_count, default=3, help="how many seeds (seed, seed+1, ...)")
    fly.add_argument("--policies", nargs="+", default=["random", "fifo", "heuristic", "learned", "oracle"])
    fly.add_argument("--out", type=Path, default=Path("flywheel-out"), help="where JSON and PNGs go")
    fly.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line)")
    exp = sub.add_parser("experiment", help="simulated switch-back study: read-out vs true effect, A/B bias")
    exp.add_argument("--seeds", type=_count, default=20, help="markets, one switch-back and one A/B test each")
    exp.add_argument("--minutes", type=_positive, default=100.0, help="measured market minutes per run")
    exp.add_argument("--truth-seeds", type=_count, default=16, help="markets run all-learned and all-heuristic")
    exp.add_argument("--out", type=Path, default=None, help="directory for experiment.json")
    exp.add_argument("--json", action="store_true", help="print the summary as one JSON line (last line)")
    sub.add_parser("analytics", help="serve match rate, waits, durations, read-outs, aha funnel on /metrics")
    report = sub.add_parser("report", help="one HTML page (plots) of a run from its topics")
    report.add_argument("--out", type=Path, required=True, help="directory for report.html")
    report.add_argument("--window-s", type=_positive, default=None, help="window width (default the stats window)")
    sub.add_parser("settings", help="list every setting: environment variable, default, meaning")
    schemas = sub.add_parser("schemas", help="export JSON Schemas of all records")
    schemas.add_argument("--out", type=Path, required=True, help="directory to write *.json into")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tickmatch`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "worker":
            return cmd_worker(settings, args.loglevel)
        if args.command == "schemas":
            return cmd_schemas(args.out)
        if args.command == "settings":
            print(markdown_table())
            return 0
        if args.command == "flywheel":
            return cmd_flywheel(args)
        if args.command == "experiment":
            return cmd_experiment(args)
        if args.command == "analytics":
            return cmd_analytics(settings)
        if args.command == "report":
            return cmd_report(settings, args.out, args.window_s)
        if args.command == "trainer":
            return cmd_trainer(settings)
        if args.command == "broker":
            return cmd_broker(settings)
        if args.command == "publish":
            return cmd_publish(settings, args.events)
        if args.command == "status":
            return cmd_status(settings, args.url)
        return cmd_demo(settings, args)
    except (SettingsError, BrokerError, UsageError) as exc:
        print(f"tickmatch: error: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # from any command's first contact with the broker: connect, metadata, topics
        where = os.environ.get("BROKER_URL") or "the embedded broker"
        print(f"tickmatch: error: cannot reach the broker at {where}: {exc}", file=sys.stderr)
        return 2
    except BrokerLost as exc:  # the worker lost its broker for longer than it waits: a supervisor restarts it
        print(f"tickmatch: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
