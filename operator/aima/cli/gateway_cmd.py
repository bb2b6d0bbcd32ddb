"""`aima gateway serve`: the OpenAI-compatible gateway and the units' HTTP door in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

import click
from aiohttp import web

from aima.gateway import Proxy, open_gateway
from aima.gateway.server import gateway_server_app, loopback_url
from aima.kube import connect
from aima.settings import Settings

__all__ = ["gateway_group"]

logger = logging.getLogger(__name__)


@click.group(name="gateway")
def gateway_group() -> None:
    """The OpenAI-compatible gateway."""


@gateway_group.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")  # noqa: S104
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--namespace", help="Home namespace: its InferenceServices by name, its API-key Secrets.")
@click.option(
    "--route-namespaces",
    help="Other namespaces to route to, comma-separated, as <namespace>/<name> models; '*' for all.",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve /v1 without API keys (only behind a proxy that authenticates). Default: keys required.",
)
@click.option(
    "--kubeconfig", type=click.Path(path_type=Path, dir_okay=False), help="Kubeconfig; in-cluster when empty."
)
def serve(
    host: str,
    port: int,
    namespace: str | None,
    route_namespaces: str | None,
    no_auth: bool,
    kubeconfig: Path | None,
) -> None:
    """Serve /v1 (models, chat and text completions, embeddings, audio, rerank), /api/v2 (the units),
    /healthz and /metrics.

    Other settings come from AIMA_GATEWAY_* variables (see aima.settings.Settings), e.g.
    AIMA_GATEWAY_PREFIX_AFFINITY=true or AIMA_GATEWAY_SCALE_WAIT_SECONDS=300.
    """
    settings = Settings.from_env()
    changes: dict[str, object] = {"gateway_require_api_key": settings.gateway_require_api_key and not no_auth}
    if namespace:
        changes["gateway_namespace"] = namespace
    if route_namespaces is not None:
        changes["gateway_route_namespaces"] = tuple(n for n in route_namespaces.split(",") if n)
    if kubeconfig:
        changes["kubeconfig"] = kubeconfig
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings.model_copy(update=changes), host=host, port=port))


async def _serve(settings: Settings, *, host: str, port: int) -> None:
    kube = await connect(kubeconfig=settings.kubeconfig)
    try:
        async with open_gateway(settings, kube=kube) as proxy:
            app = gateway_server_app(settings, kube=kube, proxy=proxy, self_url=loopback_url(host, port))
            # A client that disconnects cancels its handler, and so the request to the engine. The
            # drain is ours (_drain): aiohttp's own shutdown waits its timeout twice over, graceful
            # then cancelled, so it only gets half a second for what the drain left.
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
            await runner.setup()
            # What start-up allocated lives as long as the process: keep the collector off it, so a
            # full collection does not walk it in the middle of requests (fewer latency spikes).
            gc.freeze()
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            try:
                site = web.TCPSite(runner, host, port, backlog=1024)
                await site.start()
                click.echo(f"Serving the gateway on http://{host}:{port} (/v1, /api/v2)", err=True)
                await stop.wait()
                await _drain(site, proxy, seconds=settings.gateway_drain_seconds)
            finally:
                await runner.cleanup()
    finally:
        await kube.close()


async def _drain(site: web.TCPSite, proxy: Proxy, *, seconds: float) -> None:
    """Take no more connections, then give the model requests in flight (/v1, which the gateway
    counts; the units door's are short but for watches) up to ``seconds`` to finish."""
    await site.stop()
    logger.info(
        "Stopping: %d requests in flight get up to %.0f s", sum(proxy.metrics.in_flight.values()), seconds
    )
    deadline = time.monotonic() + seconds
    while (left := sum(proxy.metrics.in_flight.values())) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if left:
        logger.warning("Cutting %d requests still in flight after %.0f s", left, seconds)
