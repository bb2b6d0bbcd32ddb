"""`aima device-agent`: the per-node GPU agent (a DaemonSet on GPU nodes)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import signal
from typing import TYPE_CHECKING, Any

import click

from aima import __version__
from aima.settings import Settings

if TYPE_CHECKING:
    from aima.device.nvml import GpuSource


@click.command(name="device-agent")
@click.option(
    "--once", is_flag=True, help="Read the GPUs once, print the status as JSON and exit (no cluster)."
)
def device_agent(once: bool) -> None:
    """Read this node's GPUs through NVML, publish them as the node's NodeDevices object, serve
    Prometheus metrics and apply requested power limits.

    Configured from AIMA_DEVICE_* environment variables (see aima.settings.Settings), e.g.
    AIMA_DEVICE_NODE_NAME (required unless --once) and AIMA_DEVICE_POWER_LIMITS_ALLOWED=true.
    """
    from aima.device.nvml import NvmlSource  # pynvml is imported only where the agent runs

    settings = Settings.from_env()
    if not once and not settings.device_node_name:
        raise click.UsageError(
            "set AIMA_DEVICE_NODE_NAME to the node's name (the downward API's spec.nodeName)"
        )
    source = NvmlSource()
    try:
        if once:
            click.echo(json.dumps(_status_once(source, settings), indent=2))
        else:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
            asyncio.run(_run(settings, source))
    finally:
        source.close()


def _status_once(source: GpuSource, settings: Settings) -> dict[str, Any]:
    from aima.domain import devices

    status = devices.node_status(
        source.read(),
        previous=None,
        power_limits=(),
        power_limits_allowed=settings.device_power_limits_allowed,
        generation=None,
        agent_version=__version__,
        now=datetime.datetime.now(datetime.UTC),
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


async def _run(settings: Settings, source: GpuSource) -> None:
    from aima.device.agent import DeviceAgent
    from aima.kube import connect

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    kube = await connect(kubeconfig=settings.kubeconfig)
    try:
        await DeviceAgent(source=source, kube=kube, settings=settings).run(stop)
    finally:
        await kube.close()
