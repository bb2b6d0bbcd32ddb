"""What production does to the watches behind the operator's caches and the gateway's routing table:
the API server restarted or killed mid-watch, etcd killed, and a watch event of a megabyte. After
each, the views must equal the cluster again (objects changed during and after the break seen,
nothing lost, nothing twice) and the break must be counted.

The control plane is this module's own (etcd and kube-apiserver only), since it is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aima.controllers.runtime import ReconcileMetrics
from aima.gateway.metrics import GatewayMetrics
from aima.gateway.watching import ClusterRoutes, Mirror
from aima.kube import KubeClient, connect
from aima.kube.cache import WatchedList
from aima.kube.resources import SECRETS
from aima_testenv import ControlPlane, Profile, ensure_binaries

pytestmark = pytest.mark.integration

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"

Body = dict[str, Any]


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with ControlPlane(binaries=ensure_binaries(), profile=Profile.API) as plane:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_DIR / "inferenceservices.aima.dev.yaml"))
        plane.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/inferenceservices.aima.dev"
        )
        yield plane


@pytest.fixture
def namespace(plane: ControlPlane) -> str:
    name = f"watch-{secrets.token_hex(3)}"
    plane.kubectl("create", "namespace", name)
    return name


def secret(name: str, namespace: str, value: str = "x") -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"value": value},
    }


def service(name: str, namespace: str) -> Body:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"modelRef": {"name": "tiny"}},
    }


def endpoints(service: str, namespace: str, address: str) -> Body:
    """The EndpointSlice the controller-manager would make for ``service`` with one ready pod."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": service,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    }


@dataclass
class Views:
    kube: KubeClient
    cache: WatchedList
    routes: ClusterRoutes
    operator_metrics: ReconcileMetrics
    gateway_metrics: GatewayMetrics

    def names(self) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.cache.items())

    def route(self, model: str) -> tuple[str, ...] | None:
        backend = self.routes.lookup(model)
        return None if backend is None else backend.endpoints


@contextlib.asynccontextmanager
async def views(plane: ControlPlane, namespace: str) -> AsyncIterator[Views]:
    """The operator's cache of Secrets and the gateway's routing table, fed by one API server."""
    operator_metrics, gateway_metrics = ReconcileMetrics(), GatewayMetrics()
    async with contextlib.AsyncExitStack() as stack:
        kube = await connect(kubeconfig=plane.kubeconfig)
        stack.push_async_callback(kube.close)
        cache = WatchedList(kube, SECRETS, namespaces=[namespace], restarts=operator_metrics.watch_restarts)
        routes = ClusterRoutes(kube, home=namespace, restarts=gateway_metrics.watch_restarts)
        await asyncio.gather(cache.start(), routes.start())
        stack.push_async_callback(cache.stop)
        stack.push_async_callback(routes.stop)
        yield Views(kube, cache, routes, operator_metrics, gateway_metrics)


async def until(check: Callable[[], object], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("component", "crash"),
    [("kube-apiserver", True), ("kube-apiserver", False), ("etcd", True)],
    ids=["api server killed", "api server restarted", "etcd killed"],
)
def test_the_cache_and_the_routing_table_survive_a_restart_and_see_what_changed(
    plane: ControlPlane, namespace: str, component: str, crash: bool
) -> None:
    plane.apply([secret("before", namespace), service("chat", namespace)])
    plane.apply([endpoints("chat", namespace, "10.0.0.1")])

    def crash_then_change() -> None:
        with plane.outage(component, crash=crash):
            time.sleep(2)  # long enough for every watch to notice and try again in vain
        plane.kubectl("delete", "secret", "before", "-n", namespace)
        plane.apply([secret("after", namespace), service("late", namespace)])
        plane.apply([endpoints("chat", namespace, "10.0.0.2"), endpoints("late", namespace, "10.0.0.3")])

    async def scenario() -> None:
        async with views(plane, namespace) as seen:
            await until(lambda: seen.names() == ["before"], what="the first list")
            assert seen.route("chat") == ("http://10.0.0.1:8000",)
            await asyncio.to_thread(crash_then_change)
            await until(lambda: seen.names() == ["after"], what=f"the cache after the {component} crash")
            await until(
                lambda: (
                    seen.route("chat") == ("http://10.0.0.2:8000",)
                    and seen.route("late") == ("http://10.0.0.3:8000",)
                ),
                what=f"the routing table after the {component} crash",
            )
            assert sorted(b.model for b in seen.routes.backends()) == ["chat", "late"]
            if component == "kube-apiserver":  # etcd's restart may pass unseen behind the API server
                assert (
                    'aima_operator_watch_restarts_total{resource="secrets"}' in seen.operator_metrics.render()
                )
                gateway = seen.gateway_metrics.render()
                assert 'aima_gateway_watch_restarts_total{resource="inferenceservices"}' in gateway
                assert 'aima_gateway_watch_restarts_total{resource="endpointslices"}' in gateway

    asyncio.run(scenario())


def test_a_watch_event_of_a_megabyte_reaches_the_cache_and_the_watch_goes_on(
    plane: ControlPlane, namespace: str
) -> None:
    big = "x" * (1024 * 1024 - 64 * 1024)  # the event is over 1 MiB: base64 data, the JSON around it

    async def scenario() -> None:
        async with views(plane, namespace) as seen:
            sizes: dict[str, int] = {}
            mirror: Mirror[int] = Mirror(
                seen.kube,
                SECRETS,
                namespace=namespace,
                trim=lambda o: len(o.get("data", {}).get("value", "")),
                on_change=lambda: sizes.update({k[1]: v for k, v in mirror.values.items()}),
                restarts=seen.gateway_metrics.watch_restarts,
            )
            await mirror.start()
            try:
                await seen.kube.create(secret("big", namespace, big))
                await seen.kube.create(secret("small", namespace))
                await until(lambda: seen.names() == ["big", "small"], what="both Secrets in the cache")
                await until(lambda: set(sizes) == {"big", "small"}, what="both Secrets in the mirror")
            finally:
                await mirror.stop()
            cached = seen.cache.get(namespace, "big")
            assert cached is not None
            assert len(cached["data"]["value"]) == sizes["big"] > 1024 * 1024 - 64 * 1024
            # Taken as it came: no break, no relist.
            assert seen.operator_metrics.watch_restarts == seen.gateway_metrics.watch_restarts == Counter()

    asyncio.run(scenario())
