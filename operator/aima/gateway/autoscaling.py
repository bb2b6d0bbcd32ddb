"""The request-based autoscaler of services with ``spec.autoscaling``: replicas follow the requests
in flight through this gateway.

Every tick, a service's wish is ``ceil(in-flight / targetActiveRequests)`` within its bounds (the
minimum, possibly zero, when idle). The replica count goes up to the wish at once, and down only to
the highest wish of the last ``scaleDownDelaySeconds`` (the stabilization window of Kubernetes' HPA),
so a lull between bursts does not drain replicas that the next burst needs. Writes go through the
scale subresource, the field the API documents as the scalers'; nothing is written while the count
is right. Going up from zero on a request is the Waker's (aima.gateway.scaling), which does not wait
for a tick.

Several gateway replicas share the traffic a Service spreads among them: each multiplies what it
sees by ``gateway_replicas`` to estimate the whole, and the window smooths their differences.

The same signals, and what the engines report of their queues and KV caches
(:mod:`aima.gateway.engine_load`), are gauges on the gateway's /metrics by ``namespace`` and
``service`` (:func:`signal_lines`), so that another autoscaler (KEDA's prometheus scaler, an HPA on
external metrics) can scale services that leave ``spec.autoscaling`` out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aima.exposition import gauge_lines
from aima.gateway.engine_load import EngineReport
from aima.gateway.routes import Autoscaling, Backend, Routes
from aima.gateway.scaling import service_key, write_replicas
from aima.kube import KubeClient

__all__ = ["Autoscaler", "Signals", "Wishes", "signal_lines", "signals", "wish"]

logger = logging.getLogger("aima.gateway.autoscaling")


def wish(in_flight: float, bounds: Autoscaling) -> int:
    """Replicas for ``in_flight`` requests: enough for the target per replica, within the bounds."""
    wanted = math.ceil(in_flight / bounds.target_active_requests) if in_flight > 0 else 0
    return min(bounds.max_replicas, max(bounds.min_replicas, wanted))


@dataclass(frozen=True, slots=True)
class Signals:
    """What one service's load looks like from this gateway."""

    namespace: str
    service: str
    in_flight: int
    """Requests in flight through this gateway (held ones included): the built-in autoscaler's input."""
    replicas: int
    """spec.replicas."""
    ready: int
    """Ready replicas (the routing table's endpoints)."""
    reporting: int
    """Ready replicas whose engine reported its load at the last scrape."""
    waiting: float
    """Requests queued in the engines, all reporting replicas together."""
    running: float
    """Requests in the engines' running batches, all reporting replicas together."""
    kv_usage: float | None
    """Mean share of the KV cache in use over the replicas that report it."""


def requests_in_flight(backend: Backend, in_flight: Mapping[str, int]) -> int:
    """Requests in flight to ``backend``'s service: to its model and to each of its adapters."""
    adapters = (f"{backend.model}:{name}" for name, _ in backend.service.adapters)
    return in_flight.get(backend.model, 0) + sum(in_flight.get(model, 0) for model in adapters)


def signals(
    backends: Iterable[Backend], *, in_flight: Mapping[str, int], reports: Mapping[str, EngineReport]
) -> list[Signals]:
    """Each service's signals (pure); an adapter counts towards its service."""
    result = []
    for backend in backends:
        if backend.adapter is not None:
            continue
        loads = [r.load for e in backend.endpoints if (r := reports.get(e)) is not None]
        kv = [load.kv_usage for load in loads if load.kv_usage is not None]
        result.append(
            Signals(
                namespace=backend.service.namespace,
                service=backend.service.name,
                in_flight=requests_in_flight(backend, in_flight),
                replicas=backend.service.replicas,
                ready=len(backend.endpoints),
                reporting=len(loads),
                waiting=sum(load.waiting for load in loads),
                running=sum(load.running for load in loads),
                kv_usage=sum(kv) / len(kv) if kv else None,
            )
        )
    return result


_SIGNALS = (
    ("aima_gateway_service_in_flight", "in_flight", "Requests in flight through this gateway."),
    ("aima_gateway_service_replicas", "replicas", "Replicas the service asks for (spec.replicas)."),
    ("aima_gateway_service_ready_replicas", "ready", "Ready replicas the gateway routes to."),
    ("aima_gateway_engine_reporting_replicas", "reporting", "Ready replicas whose engine reports its load."),
    ("aima_gateway_engine_requests_waiting", "waiting", "Requests queued in the engines (engine-reported)."),
    ("aima_gateway_engine_requests_running", "running", "Requests the engines run (engine-reported)."),
    ("aima_gateway_engine_kv_cache_usage", "kv_usage", "Mean share of the engines' KV cache in use, 0 to 1."),
)


def signal_lines(services: Iterable[Signals]) -> list[str]:
    """The gauges of every service, by ``namespace`` and ``service`` (pure)."""
    services = list(services)
    lines: list[str] = []
    for name, attribute, help_text in _SIGNALS:
        values: dict[tuple[str, ...], float] = {
            (s.namespace, s.service): value for s in services if (value := getattr(s, attribute)) is not None
        }
        lines += gauge_lines(name, help_text, ("namespace", "service"), values)
    return lines


@dataclass
class Wishes:
    """One service's recent wishes: (time, replicas), oldest first."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, replicas: int, *, window: float) -> int:
        """Record a wish; the replicas to run now: the highest wish within ``window`` seconds."""
        self.samples.append((now, replicas))
        while self.samples and self.samples[0][0] < now - window:
            self.samples.popleft()
        return max(r for _, r in self.samples)


class Autoscaler:
    """Sets ``spec.replicas`` of the autoscaled services from the gateway's in-flight requests."""

    def __init__(
        self,
        routes: Routes,
        *,
        kube: KubeClient,
        in_flight: Counter[str],
        interval: float,
        gateway_replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes, self._kube, self._in_flight = routes, kube, in_flight
        self._interval, self._gateway_replicas, self._clock = interval, gateway_replicas, clock
        self._wishes: dict[str, Wishes] = {}

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except Exception:  # one bad tick must not end autoscaling for good
                logger.exception("Autoscaler tick failed")

    async def tick(self) -> None:
        """Compare each autoscaled service's replicas with its wish; write where they differ."""
        now, seen = self._clock(), set()
        for backend in self._routes.backends():
            service, bounds = backend.service, backend.service.autoscaling
            if bounds is None or service.suspended or backend.adapter is not None:
                continue
            key = service_key(service)
            seen.add(key)
            wishes = self._wishes.get(key)
            if wishes is None:  # first sight: the present count counts as a wish, so no early drain
                wishes = self._wishes[key] = Wishes()
                wishes.add(now, service.replicas, window=bounds.scale_down_delay_seconds)
            load = requests_in_flight(backend, self._in_flight) * self._gateway_replicas
            target = wishes.add(now, wish(load, bounds), window=bounds.scale_down_delay_seconds)
            if target != service.replicas:
                await write_replicas(self._kube, service, target, why="for the requests in flight")
        for gone in self._wishes.keys() - seen:
            del self._wishes[gone]
