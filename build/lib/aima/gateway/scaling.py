"""Waiting for a ready replica: scale a service up from zero, or tell the client when to retry.

A service whose autoscaler may take it to zero (``spec.autoscaling.minReplicas: 0``) and that is at
zero gets ``spec.replicas: 1`` on the first request, through the scale subresource as ``kubectl
scale`` writes it; that request and the ones after it wait (up to ``wait_seconds``) for the first
ready replica. The gateway acts here as the autoscaler does, on the field the API documents as the
scalers' (GitOps: leave ``spec.replicas`` out of Git, or ignore its differences, for autoscaled
services). A service at zero without autoscaling was set to zero on purpose and is not started;
neither is a suspended one. A service that is starting (replicas wanted, none ready yet) is answered
at once with 503 and Retry-After, so clients do not hold connections for the minutes an engine may
take to load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aima.gateway.errors import GatewayError
from aima.gateway.metrics import GatewayMetrics
from aima.gateway.routes import Backend, Routes, ServiceView
from aima.kube import KubeClient, KubeError
from aima.kube.resources import INFERENCE_SERVICES

__all__ = ["Waker", "service_key", "write_replicas"]

logger = logging.getLogger("aima.gateway.scaling")


class Waker:
    """Finds ready replicas for a backend, scaling it from zero when it may."""

    def __init__(
        self,
        routes: Routes,
        *,
        kube: KubeClient | None,
        metrics: GatewayMetrics,
        wait_seconds: float,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes, self._kube, self._metrics = routes, kube, metrics
        self._wait_seconds, self._retry_after, self._clock = wait_seconds, retry_after, clock
        self._waking: dict[str, float] = {}  # namespace/name -> until when requests wait for it
        self._patches: dict[str, asyncio.Task[None]] = {}

    async def endpoints(self, backend: Backend) -> tuple[str, ...]:
        """Ready replicas of ``backend``, after waking it if needed; raise a 503 GatewayError if none come."""
        if backend.endpoints:
            return backend.endpoints
        service = backend.service
        if service.suspended:
            raise self._unavailable(backend, "is suspended (spec.suspend); start it to use it", retry=False)
        if service.replicas == 0 and not service.scale_from_zero:
            raise self._unavailable(
                backend,
                "has zero replicas and no autoscaling.minReplicas: 0; scale it up to use it",
                retry=False,
            )
        if service.replicas == 0:
            self._wake(backend)
        until = self._waking.get(service_key(service), 0.0)
        if until <= self._clock():
            raise self._unavailable(backend, "is starting: no replica is ready yet", retry=True)
        return await self._wait(backend.model, until)

    def _wake(self, backend: Backend) -> None:
        name = service_key(backend.service)
        if name in self._patches or self._kube is None:
            return
        self._waking[name] = self._clock() + self._wait_seconds
        self._metrics.scale_ups[backend.model] += 1
        task = asyncio.create_task(self._scale_up(self._kube, backend), name=f"scale-up-{name}")
        self._patches[name] = task
        task.add_done_callback(lambda _: self._patches.pop(name, None))

    async def _scale_up(self, kube: KubeClient, backend: Backend) -> None:
        if not await write_replicas(kube, backend.service, 1, why="for a request"):
            self._waking.pop(service_key(backend.service), None)

    async def _wait(self, model: str, until: float) -> tuple[str, ...]:
        try:
            async with asyncio.timeout(max(0.0, until - self._clock())):
                while True:
                    backend = self._routes.lookup(model)
                    if backend is not None and backend.endpoints:
                        return backend.endpoints
                    if backend is None or service_key(backend.service) not in self._waking:
                        break
                    await self._routes.wait_changed()
        except TimeoutError:
            pass
        raise GatewayError(
            503,
            f"The model '{model}' is starting from zero replicas and no replica became ready in time",
            code="model_starting",
            param="model",
            retry_after=self._retry_after,
        )

    def _unavailable(self, backend: Backend, what: str, *, retry: bool) -> GatewayError:
        return GatewayError(
            503,
            f"The model '{backend.model}' {what}",
            code="model_not_ready",
            param="model",
            retry_after=self._retry_after if retry else None,
        )


def service_key(service: ServiceView) -> str:
    """``namespace/name``: services of two namespaces may share a name."""
    return f"{service.namespace}/{service.name}"


async def write_replicas(kube: KubeClient, service: ServiceView, replicas: int, *, why: str) -> bool:
    """Set the service's replicas through its scale subresource, as scalers do; False when refused."""
    logger.info("Scaling %s from %d to %d replicas %s", service_key(service), service.replicas, replicas, why)
    try:
        await kube.patch(
            INFERENCE_SERVICES,
            name=service.name,
            namespace=service.namespace,
            patch={"spec": {"replicas": replicas}},
            subresource="scale",
        )
    except (KubeError, OSError, TimeoutError) as error:
        logger.warning("Could not scale %s: %s", service_key(service), error)
        return False
    return True
