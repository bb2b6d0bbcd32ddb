"""Waiting for a ready replica: scale a service up from zero, or tell the client when to retry.

A service whose autoscaler may take it to zero (``spec.autoscaling.minReplicas: 0``) and that is at
zero gets ``spec.replicas: 1`` on the first request, through the scale subresource as ``kubectl
scale`` writes it; that request and the ones after it wait (up to ``wait_seconds``) for the first
ready replica. The gateway acts here as the autoscaler does, on the field the API documents as the
scalers' (GitOps: leave ``spec.replicas`` out of Git, or ignore its differences, for autoscaled
services). A service at zero without autoscaling was set to zero on purpose and is not started;
neither is a suspended one. A service that is starting (replicas wanted, none ready yet) is answered
at once with 503 and Retry-After, so clients do not hold connections for the minutes an engine may
take to load; but one whose status already counts a Ready replica holds the request (a few seconds
at most) until the EndpointSlice lists that replica, which comes a moment later.

Held requests are bounded: past ``max_held`` at once (all models together) a request is answered 503
with Retry-After, saying how many wait already, so a burst against a cold service cannot pile up
connections and memory without end. A held streaming request (``"stream": true``) gets its SSE reply
started at once, with heartbeats while it waits (:mod:`aima.gateway.holding`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from aima.exposition import counter_lines, gauge_lines
from aima.gateway import holding
from aima.gateway.errors import GatewayError
from aima.gateway.metrics import GatewayMetrics
from aima.gateway.routes import LISTING_LAG_SECONDS, Backend, Routes, ServiceView
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
        max_held: int = 1000,
        heartbeat_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes, self._kube, self._metrics = routes, kube, metrics
        self._wait_seconds, self._retry_after, self._clock = wait_seconds, retry_after, clock
        self._max_held, self._heartbeat = max_held, heartbeat_seconds
        self._waking: dict[str, float] = {}  # namespace/name -> until when requests wait for it
        self._patches: dict[str, asyncio.Task[None]] = {}
        self.held: Counter[str] = Counter()
        """Requests waiting for a replica now, by model."""
        self.refused: Counter[str] = Counter()
        """Requests refused because ``max_held`` were waiting, by model."""

    async def endpoints(
        self, backend: Backend, *, request: web.Request | None = None, payload: dict[str, Any] | None = None
    ) -> tuple[str, ...]:
        """Ready replicas of ``backend``, after waking it if needed; raise a 503 GatewayError if none come.

        With ``request`` and a streaming ``payload``, a wait starts the SSE reply and sends heartbeats
        until it ends (:mod:`aima.gateway.holding`); the proxy writes the replica's stream, or the
        error, into that reply.
        """
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
        if service.ready_replicas > 0:
            # Ready in its status, not yet in the table: a client that waited for Ready (kubectl
            # wait, a GitOps health check) is served once the EndpointSlice comes, not refused.
            until = max(until, self._clock() + LISTING_LAG_SECONDS)
        if until <= self._clock():
            raise self._unavailable(backend, "is starting: no replica is ready yet", retry=True)
        stream = request is not None and payload is not None and payload.get("stream") is True
        with self._holding(backend.model):
            if not stream or request is None:
                return await self._wait(backend.model, until)
            heartbeat = self._heartbeat if self._heartbeat is not None else holding.HEARTBEAT_SECONDS
            held = await holding.HeldStream.start(request, heartbeat=heartbeat)
            try:
                return await self._wait(backend.model, until)
            finally:
                held.stop()

    @contextlib.contextmanager
    def _holding(self, model: str) -> Iterator[None]:
        """Count a held request while it waits; refuse it past the cap."""
        if self.held.total() >= self._max_held:
            self.refused[model] += 1
            raise GatewayError(
                503,
                f"The model '{model}' is starting; {self.held[model]} requests wait for it already and"
                f" this gateway holds at most {self._max_held}. Retry later",
                code="model_starting",
                param="model",
                retry_after=self._retry_after,
            )
        self.held[model] += 1
        try:
            yield
        finally:
            self.held[model] -= 1
            if self.held[model] <= 0:
                del self.held[model]

    def metric_lines(self) -> list[str]:
        """Exposition lines of the held requests and the refusals past the cap."""
        lines = gauge_lines(
            "aima_gateway_held_requests",
            "Requests waiting for a replica: of a service waking from zero, or one Ready, not yet listed.",
            ("model",),
            {(m,): n for m, n in self.held.items()},
        )
        return lines + counter_lines(
            "aima_gateway_held_refused_total",
            "Requests refused because the most held requests were waiting already.",
            ("model",),
            {(m,): n for m, n in self.refused.items()},
        )

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
        backend = self._routes.lookup(model)
        try:
            async with asyncio.timeout(max(0.0, until - self._clock())):
                while backend is not None:
                    if backend.endpoints:
                        return backend.endpoints
                    if not self._coming(backend.service):
                        break
                    await self._routes.wait_changed()
                    backend = self._routes.lookup(model)
        except TimeoutError:
            pass
        if backend is not None and backend.service.ready_replicas > 0:
            raise self._unavailable(
                backend, "is starting: its Ready replica is not in its EndpointSlices yet", retry=True
            )
        raise GatewayError(
            503,
            f"The model '{model}' is starting from zero replicas and no replica became ready in time",
            code="model_starting",
            param="model",
            retry_after=self._retry_after,
        )

    def _coming(self, service: ServiceView) -> bool:
        """Whether a replica of ``service`` may soon be listed: it is being woken, or its status
        counts one Ready."""
        return service_key(service) in self._waking or service.ready_replicas > 0

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
