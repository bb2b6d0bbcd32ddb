"""A service whose status counts a Ready replica before its EndpointSlice lists it: the request waits
for the listing (bounded) rather than being refused, and one still loading is refused at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from aima.gateway import scaling
from aima.gateway.errors import GatewayError
from aima.gateway.metrics import GatewayMetrics
from aima.gateway.routes import Backend, service_view
from aima.gateway.scaling import Waker

pytestmark = pytest.mark.unit

REPLICA = "http://10.244.0.5:8000"


class ChangingRoutes:
    """One model whose backend a test replaces, waking those that wait for a change."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._changed = asyncio.Event()

    def lookup(self, model: str) -> Backend | None:
        return self.backend if model == self.backend.model else None

    def backends(self) -> list[Backend]:
        return [self.backend]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def list_replica(self) -> None:
        self.backend = replace(self.backend, endpoints=(REPLICA,))
        self._changed.set()
        self._changed = asyncio.Event()


def backend(ready_replicas: int) -> Backend:
    body = {
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"modelRef": {"name": "m"}, "replicas": 1},
        "status": {"readyReplicas": ready_replicas},
    }
    return Backend(service=service_view(body), endpoints=(), model="chat")


def waker(routes: ChangingRoutes) -> Waker:
    return Waker(routes, kube=None, metrics=GatewayMetrics(), wait_seconds=30, retry_after=5)


def test_a_ready_replica_not_yet_listed_is_waited_for() -> None:
    async def scenario() -> tuple[str, ...]:
        routes = ChangingRoutes(backend(ready_replicas=1))
        asyncio.get_running_loop().call_later(0.2, routes.list_replica)
        return await waker(routes).endpoints(routes.backend)

    assert asyncio.run(scenario()) == (REPLICA,)


def test_a_ready_replica_never_listed_is_refused_after_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaling, "LISTING_LAG_SECONDS", 0.3)
    routes = ChangingRoutes(backend(ready_replicas=1))
    started = time.monotonic()
    with pytest.raises(GatewayError) as refused:
        asyncio.run(waker(routes).endpoints(routes.backend))
    assert 0.3 <= time.monotonic() - started < 5
    assert (refused.value.status, refused.value.code) == (503, "model_not_ready")
    assert "not in its EndpointSlices yet" in str(refused.value)


def test_a_service_with_no_ready_replica_is_refused_at_once() -> None:
    routes = ChangingRoutes(backend(ready_replicas=0))
    started = time.monotonic()
    with pytest.raises(GatewayError) as refused:
        asyncio.run(waker(routes).endpoints(routes.backend))
    assert time.monotonic() - started < 0.1
    assert refused.value.code == "model_not_ready"
    assert "no replica is ready yet" in str(refused.value)
