"""The device agent's loop: read NVML, apply requested power limits, publish the node's
NodeDevices status at a bounded rate, and serve the latest reading as Prometheus metrics.

Everything the agent decides comes from its NodeDevices object as read each sample (the last
status written and when, the power limits asked for), so a restarted agent carries on where the
last one stopped and keeps no state worth losing but the refusals it already reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from aiohttp import web

from aima import __version__
from aima.api.common import API_VERSION
from aima.api.device import NodeDevices, PowerLimitResult, PowerLimitState
from aima.device import metrics
from aima.device.nvml import GpuSource, PowerLimitRefused
from aima.domain import devices
from aima.domain.objects import status_patch
from aima.kube import KubeClient, resources
from aima.settings import Settings

__all__ = ["DeviceAgent"]

logger = logging.getLogger("aima.device")

Body = dict[str, Any]


class DeviceAgent:
    """One node's agent; `tick()` is one sample, `run()` samples until stopped."""

    def __init__(self, *, source: GpuSource, kube: KubeClient, settings: Settings) -> None:
        self.source = source
        self.kube = kube
        self.node = settings.device_node_name
        self.settings = settings
        self.policy = devices.PublishPolicy(
            min_seconds=settings.device_publish_min_seconds,
            figures_seconds=settings.device_publish_seconds,
            heartbeat_seconds=settings.device_heartbeat_seconds,
        )
        self.latest = devices.Reading(nvml=False, message="not read yet")
        self._refused: dict[tuple[str, int], str] = {}

    async def tick(self, *, now: datetime.datetime | None = None) -> bool:
        """Read, apply power limits, publish if worth it; True when it wrote the status."""
        now = now or datetime.datetime.now(datetime.UTC)
        self.latest = await asyncio.to_thread(self.source.read)
        body = await self.kube.get(resources.NODE_DEVICES, name=self.node) or await self._create()
        current = NodeDevices.model_validate(body)
        limits = await self._power_limits(current)
        previous = current.status if current.status and current.status.updated_at else None
        status = devices.node_status(
            self.latest,
            previous=previous,
            power_limits=limits,
            power_limits_allowed=self.settings.device_power_limits_allowed,
            generation=current.metadata.generation,
            agent_version=__version__,
            now=now,
        )
        since = (now - previous.updated_at).total_seconds() if previous and previous.updated_at else None
        if not devices.should_publish(previous, status, seconds_since=since, policy=self.policy):
            return False
        patch = status_patch(status, observed=body.get("status"))
        if patch is None:
            return False
        await self.kube.patch_status(resources.NODE_DEVICES, name=self.node, namespace=None, status=patch)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every `device_sample_seconds` until ``stop`` is set; serve metrics meanwhile."""
        server = await self._serve_metrics()
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:
                    logger.exception("Device sample failed; trying again next sample")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.device_sample_seconds)
        finally:
            if server is not None:
                await server.cleanup()

    async def _create(self) -> Body:
        """This node's NodeDevices, owned by the Node so that it goes when the node goes."""
        node = await self.kube.get(resources.NODES, name=self.node)
        owner = (
            [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node["metadata"]["uid"]}]
            if node is not None
            else []
        )
        return await self.kube.create(
            {
                "apiVersion": API_VERSION,
                "kind": "NodeDevices",
                "metadata": {"name": self.node, "ownerReferences": owner},
                "spec": {"nodeName": self.node},
            }
        )

    async def _power_limits(self, current: NodeDevices) -> list[PowerLimitResult]:
        known, to_try = devices.plan_power_limits(
            current.spec.power_limits,
            self.latest.gpus,
            allowed=self.settings.device_power_limits_allowed,
            refused=self._refused,
        )
        for request in to_try:
            try:
                await asyncio.to_thread(self.source.set_power_limit, uuid=request.gpu, watts=request.watts)
                state, message = PowerLimitState.APPLIED, ""
                logger.info("Power limit applied: gpu=%s watts=%d", request.gpu, request.watts)
            except PowerLimitRefused as refusal:
                self._refused[(request.gpu, request.watts)] = str(refusal)
                state, message = PowerLimitState.REFUSED, str(refusal)
            known.append(PowerLimitResult(gpu=request.gpu, watts=request.watts, state=state, message=message))
        if to_try:
            self.latest = await asyncio.to_thread(self.source.read)  # show the limits now in force
        order = {r.gpu: i for i, r in enumerate(current.spec.power_limits)}
        return sorted(known, key=lambda r: order[r.gpu])

    async def _serve_metrics(self) -> web.AppRunner | None:
        if not self.settings.device_metrics_port:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, port=self.settings.device_metrics_port).start()
        return runner

    async def _metrics(self, _: web.Request) -> web.Response:
        text = metrics.render(self.latest, node=self.node)
        return web.Response(body=text.encode(), headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")
