"""``tickmatch analytics`` (live figures on ``/metrics``) and ``tickmatch report`` (one HTML page of a run).

Both feed ``tickmatch.experiments.analytics.Analytics`` from the topics: the service from its own consumer group
(``<app id>-analytics``, reading from the start on every assignment: its state is rebuilt from the logs, so it
commits nothing), the report from a group-less read of every partition up to the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from tickmatch.experiments.analytics import CHAT_BUCKETS_S, WAIT_BUCKETS_S, Analytics, Histogram
from tickmatch.schemas import decode_record
from tickmatch.schemas.codec import DecodeError
from tickmatch.stream import topics as names
from tickmatch.stream.readers import read_from_earliest
from tickmatch.stream.settings import Settings

log = logging.getLogger(__name__)
TOPICS = (names.EVENTS, names.DECISIONS, names.LABELS)


def analytics_key(settings: Settings) -> bytes:
    """The pseudonymisation key: ``TICKMATCH_ANALYTICS_KEY``, or a random one for this process (ids are then
    pseudonymous but not comparable across runs)."""
    return settings.analytics_key.encode() if settings.analytics_key else os.urandom(32)


def feed(analytics: Analytics, value: bytes | None) -> bool:
    """Decode one record into ``analytics``; False for bytes that are not a record (dead-lettered by the worker)."""
    try:
        analytics.add(decode_record(value or b""))
    except DecodeError:
        return False
    return True


class _FromStart(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            await self.consumer.seek_to_beginning(*assigned)


async def serve_analytics(settings: Settings, bootstrap: str) -> None:
    """Consume events, decisions and labels and serve the figures on ``/metrics`` until SIGTERM/SIGINT."""
    analytics = Analytics(analytics_key(settings), settings.stats_window_s)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{settings.app_id}-analytics",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=max(100, int(settings.session_timeout_s * 1000) // 4),
    )
    await consumer.start()
    consumer.subscribe([settings.topic(t) for t in TOPICS], listener=_FromStart(consumer))
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=analytics.prometheus(), content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.web_bind, settings.analytics_port).start()
    print(f"analytics: http://{settings.web_bind}:{settings.analytics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in polled.values():
                for rec in records:
                    feed(analytics, rec.value)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await runner.cleanup()


async def load_run(settings: Settings, bootstrap: str, window_s: float | None = None) -> Analytics:
    """Every record of a run's events, decisions and labels, read to the end, in windows of ``window_s``
    (default ``TICKMATCH_STATS_WINDOW_S``)."""
    analytics = Analytics(analytics_key(settings), window_s or settings.stats_window_s)
    parts = [TopicPartition(settings.topic(t), p) for t in TOPICS for p in range(settings.partitions)]
    async with read_from_earliest(bootstrap, f"{settings.app_id}-report", parts) as reader:
        async for batch in reader.until_caught_up():
            for rec in batch:
                feed(analytics, rec.value)
    return analytics


def write_report(analytics: Analytics, out: Path) -> Path:
    """One self-contained HTML page (plots embedded as PNG) of what ``analytics`` holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig: Any) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'

    windows = sorted({w for w, *_ in analytics.cells})
    origin = windows[0] * analytics.window_s if windows else 0.0  # x axes: seconds since the run's first window
    arms = sorted({arm for _, _, arm, _ in analytics.cells})
    models = sorted({m for *_, m in analytics.cells})
    sections: list[str] = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
    for arm in arms:
        xs, chat, wait = [], [], []
        for w in windows:
            durations, waits = Histogram(CHAT_BUCKETS_S), Histogram(WAIT_BUCKETS_S)
            for (x, _, a, _), cell in analytics.cells.items():
                if x == w and a == arm:
                    durations.merge(cell.durations)
                    waits.merge(cell.waits)
            xs.append(w * analytics.window_s - origin)
            chat.append(durations.mean)
            wait.append(waits.mean)
        ax1.plot(xs, chat, marker=".", label=f"arm {arm}")
        ax2.plot(xs, wait, marker=".", label=f"arm {arm}")
    ax1.set(title="mean chat duration (uncensored)", xlabel="window start (s into the run)", ylabel="s")
    ax2.set(title="mean wait of matched users", xlabel="window start (s into the run)", ylabel="s")
    ax1.legend()
    sections.append("<h2>Durations and waits per arm</h2>" + png(fig))
    fig, ax = plt.subplots(figsize=(11, 3))
    for model in models:
        counts = [sum(c.decisions for (x, _, _, m), c in analytics.cells.items() if x == w and m == model)
                  for w in windows]  # fmt: skip
        ax.plot([w * analytics.window_s - origin for w in windows], counts, marker=".", label=model)
    ax.set(title="decisions per window by model version", xlabel="window start (s into the run)")
    ax.legend()
    sections.append("<h2>Model versions over time</h2>" + png(fig))
    readouts = analytics.readouts()
    if readouts:
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(readouts)))
        names_ = list(readouts)
        for i, name in enumerate(names_):
            r = readouts[name]
            ax.errorbar([r.effect], [i], xerr=[[r.effect - r.ci95[0]], [r.ci95[1] - r.effect]], fmt="o", capsize=4)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(names_)), names_)
        ax.set(title="switch-back effect on chat seconds, 95 % CI", xlabel="s")
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(r.treatment)} - {html.escape(r.control)}</td>"
            f"<td>{r.effect:.2f}</td><td>[{r.ci95[0]:.2f}, {r.ci95[1]:.2f}]</td><td>{r.cells}</td></tr>"
            for n, r in readouts.items()
        )
        sections.append("<h2>Experiment read-out</h2>" + png(fig) + "<table><tr><th>experiment</th><th>effect</th>"
                        "<th>estimate (s)</th><th>95 % CI</th><th>cells</th></tr>" + rows + "</table>")  # fmt: skip
    else:
        sections.append("<h2>Experiment read-out</h2><p>No experiment with two arms in the labels.</p>")
    funnel = analytics.funnel()[:10]
    if funnel and funnel[0].users:
        rows = "".join(f"<tr><td>{html.escape(s.condition.name)}</td><td>{s.precision:.3f}</td><td>{s.recall:.3f}</td>"
                       f"<td>{s.f1:.3f}</td><td>{s.met}</td></tr>" for s in funnel)  # fmt: skip
        head = "<tr><th>condition</th><th>precision</th><th>recall</th><th>F1</th><th>users meeting it</th></tr>"
        sections.append(f"<h2>Aha funnel</h2><p>{funnel[0].users} users observed for two hours after their first "
                        f"chat; returning = a join in the second hour.</p><table>{head}{rows}</table>")  # fmt: skip
    else:
        sections.append("<h2>Aha funnel</h2><p>No user observed for two hours after a first chat yet.</p>")
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>tickmatch report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}</style>"
        f"<h1>tickmatch report</h1><p>{sum(c.decisions for c in analytics.cells.values())} decisions, "
        f"{len(analytics.user_joins)} users (pseudonymised), windows of {analytics.window_s:g} s.</p>"
        + "".join(sections)
    )
    return page
