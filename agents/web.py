"""The worker's operations endpoints, ``/ready`` and ``/metrics`` (see ``agents.metrics``), on a small aiohttp
server the worker loop starts first thing.

Why not Faust's web server: Faust starts it only after its own consumer group joined and its tables recovered,
so it would answer nothing while the worker is starting or recovering, exactly when a healthcheck needs a 503.
aiohttp is what Faust's server runs on, so this adds no dependency.
"""

from __future__ import annotations

import logging

from aiohttp import web

from tickmatch.agents import metrics
from tickmatch.agents.metrics import WorkerLoop

log = logging.getLogger(__name__)


class OpsServer:
    """``/ready`` (200 ticking, 503 otherwise, JSON body) and ``/metrics`` (Prometheus text) of one loop."""

    def __init__(self, loop: WorkerLoop, host: str, port: int) -> None:
        self.loop, self.host, self.port = loop, host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:  # a second worker on one host: it runs, without endpoints
            log.warning("ops endpoints not served", extra={"host": self.host, "port": self.port, "error": str(exc)})
            await runner.cleanup()
            return
        self._runner = runner
        log.info("ops endpoints", extra={"ready": f"http://{self.host}:{self.port}/ready"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ready(self, request: web.Request) -> web.Response:
        ok, why = metrics.readiness(self.loop)
        body = {"ready": ok, "why": why, "worker": self.loop.runtime.worker}
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=metrics.prometheus(self.loop), content_type="text/plain", charset="utf-8")
