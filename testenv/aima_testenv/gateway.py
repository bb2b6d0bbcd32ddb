"""The gateway on the local control plane, with every ready replica answered by a local fake engine.

kwok's pod IPs (10.244.0.0/16) are not on this machine, and the API server refuses loopback
addresses in EndpointSlices, so one hop cannot be real here: :class:`LocalReplicas` plays the
network. For every ready endpoint the gateway's watch sees, it starts a fake engine on 127.0.0.1 and
hands the gateway that address in place of the pod's, through the same ``Routes`` seam the
benchmark uses. Everything else (InferenceServices, EndpointSlices, API-key Secrets) comes from the
real API server, as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field, replace

from aiohttp import web

from aima.gateway import open_gateway
from aima.gateway.routes import Backend, Routes
from aima.gateway.server import gateway_server_app
from aima.gateway.watching import ClusterRoutes
from aima.kube import connect
from aima.settings import Settings
from aima_testenv.engines import EngineOptions, FakeEngine
from aima_testenv.threads import LoopThread

__all__ = ["LocalGateway", "LocalReplicas"]

_DEAD_ADDRESS = "http://127.0.0.1:9"  # discard: nothing listens there


@dataclass
class LocalReplicas:
    """Routes whose pod addresses are replaced by fake engines on 127.0.0.1, started as pods become ready."""

    inner: Routes
    options: EngineOptions = field(default_factory=EngineOptions)
    dead: int = 0
    """How many of the first replicas refuse connections (their address is a closed port)."""
    engines: dict[str, FakeEngine] = field(default_factory=dict)
    _urls: dict[str, str] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def started(self) -> int:
        """Replicas given a local address (dead ones included)."""
        return len(self._urls)

    def lookup(self, model: str) -> Backend | None:
        backend = self.inner.lookup(model)
        return None if backend is None else self._local(backend)

    def backends(self) -> list[Backend]:
        return [self._local(b) for b in self.inner.backends()]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _local(self, backend: Backend) -> Backend:
        return replace(backend, endpoints=tuple(self._urls[e] for e in backend.endpoints if e in self._urls))

    async def run(self, stack: contextlib.AsyncExitStack) -> None:
        """Start an engine for every new ready endpoint; ``stack`` stops them."""
        while True:
            for backend in self.inner.backends():
                for endpoint in backend.endpoints:
                    if endpoint not in self._urls:
                        self._urls[endpoint] = await self._start(endpoint, stack)
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            await self.inner.wait_changed()

    async def _start(self, endpoint: str, stack: contextlib.AsyncExitStack) -> str:
        if self.dead > 0:
            self.dead -= 1
            return _DEAD_ADDRESS
        options = replace(self.options, name=endpoint, fail_statuses=[])
        engine = self.engines[endpoint] = FakeEngine(options)
        return await stack.enter_async_context(engine.serve())


class LocalGateway(LoopThread):
    """`aima gateway serve` (the /v1 routes, the units door, keys from Secrets) in a daemon thread of
    this process, its replicas local fake engines; a context manager that stops it on exit."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        super().__init__(name="aima-gateway")
        self.settings = settings
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        """Where it listens (the port is the real one once started, also when 0 was asked for)."""
        return f"http://{self.host}:{self.port}"

    async def serve(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            kube = await connect(kubeconfig=self.settings.kubeconfig)
            stack.push_async_callback(kube.close)
            routes = ClusterRoutes(
                kube, home=self.settings.gateway_namespace, namespaces=self.settings.gateway_routed_namespaces
            )
            await routes.start()
            stack.push_async_callback(routes.stop)
            replicas = LocalReplicas(routes, options=EngineOptions(token_delay=0.02))
            watcher = asyncio.create_task(replicas.run(stack))
            stack.callback(watcher.cancel)
            proxy = await stack.enter_async_context(open_gateway(self.settings, kube=kube, routes=replicas))
            # Bound first, so the units door knows the real port (also when 0 was asked for).
            listener = socket.create_server((self.host, self.port))
            self.port = listener.getsockname()[1]
            app = gateway_server_app(self.settings, kube=kube, proxy=proxy, self_url=self.url)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, listener).start()
            self.mark_ready()
            await stop.wait()
