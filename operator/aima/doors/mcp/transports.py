"""Serving the MCP door: over stdio (for a local agent) or streamable HTTP at /mcp (in a cluster).

The API server client lives on the event loop that serves: it is connected when serving starts and
closed when it stops, so the server object can be built before any loop exists. Over HTTP every
request to /mcp presents one of the door's API keys as a Bearer token (/healthz needs none), checked
as every door checks keys (`aima.doors.auth`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from aima.doors.auth import AsgiGuard, DoorKeys
from aima.doors.mcp.server import Policy, build_server
from aima.units.core import Context, Registry

__all__ = ["McpDoor"]


class McpDoor:
    """An MCP server for a registry, and the Context it acts through while it serves."""

    def __init__(
        self,
        registry: Registry,
        *,
        connect: Callable[[], Awaitable[Context]],
        policy: Policy | None = None,
        namespace: str = "default",
    ) -> None:
        self._connect = connect
        self._context: Context | None = None
        self.server: MCPServer[Any] = build_server(registry, self.context, policy=policy, namespace=namespace)

    def context(self) -> Context:
        """The Context of the running server."""
        if self._context is None:
            raise RuntimeError("the MCP door is not serving")
        return self._context

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[Context]:
        """Connect to the API server for as long as the block runs."""
        self._context = await self._connect()
        try:
            yield self._context
        finally:
            await self._context.kube.close()
            self._context = None

    async def serve_stdio(self) -> None:
        """Serve one client on stdin/stdout (nothing else may write to stdout meanwhile)."""
        async with self.connected():
            await self.server.run_stdio_async()

    def http_app(
        self,
        *,
        host: str,
        allowed_hosts: tuple[str, ...] = (),
        check_host: bool = True,
        stateless: bool = False,
        api_keys: Iterable[str] = (),
    ) -> Starlette:
        """A Starlette app: streamable HTTP at /mcp and /healthz. The SDK accepts only loopback Host
        headers unless told otherwise: behind a Service, name it in `allowed_hosts` (name and name:*),
        or turn the check off behind a proxy that already controls Host. With `api_keys`, /mcp needs
        one of them; without, it is open (only behind a proxy that authenticates)."""
        security = None
        if not check_host:
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        elif allowed_hosts:
            security = TransportSecuritySettings(allowed_hosts=list(allowed_hosts))
        mcp_app = self.server.streamable_http_app(
            transport_security=security, stateless_http=stateless, host=host
        )

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            # A mounted app's own lifespan never runs: the session manager is entered here.
            async with self.connected(), self.server.session_manager.run():
                yield

        keys = DoorKeys(api_keys)
        middleware = [Middleware(AsgiGuard, keys=keys, open_paths=["/healthz"])] if keys else []
        return Starlette(
            routes=[Route("/healthz", _health), Mount("/", app=mcp_app)],
            lifespan=lifespan,
            middleware=middleware,
        )


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})
