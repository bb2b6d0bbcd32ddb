"""The operator's own small HTTP server: /healthz for the kubelet's probes and /metrics for
Prometheus. It runs on the operator's event loop, so a loop that hangs fails the liveness probe.

A replica waiting for the leader Lease is healthy too (it stands by, and a rollout must not wait for
it to lead); /healthz says which role it has.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from aima.controllers.runtime import ReconcileMetrics

__all__ = ["OperatorState", "serving_health"]


@dataclass
class OperatorState:
    """What the health server reports."""

    leading: bool = False
    """The controllers run in this replica (it holds the Lease, or there is no election)."""
    metrics: ReconcileMetrics = field(default_factory=ReconcileMetrics)


_STATE: Final = web.AppKey("state", OperatorState)


@contextlib.asynccontextmanager
async def serving_health(state: OperatorState, *, host: str, port: int) -> AsyncIterator[int]:
    """Serve /healthz and /metrics on ``host``:``port`` (a free port when 0) while the block runs;
    yields the port."""
    app = web.Application()
    app[_STATE] = state
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _health(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return web.json_response({"status": "ok", "role": "leader" if state.leading else "standby"})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[_STATE].metrics.render(), content_type="text/plain", charset="utf-8")
