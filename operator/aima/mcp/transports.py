"""Serving the MCP door: over stdio (for a local agent) or streamable HTTP at /mcp (in a cluster).

The API server client lives on the event loop that serves: it is connected when serving starts and
closed when it stops, so the server object can be built before any loop exists. Over HTTP every
request to /mcp presents one of the door's API keys as a Bearer token (/healthz needs none).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aima.gateway.keys import presented_token
from aima.mcp.server import Policy, build_server
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

        keys = [key.encode() for key in api_keys]
        middleware = [Middleware(_BearerKeys, keys=keys)] if keys else []
        return Starlette(
            routes=[Route("/healthz", _health), Mount("/", app=mcp_app)],
            lifespan=lifespan,
            middleware=middleware,
        )


class _BearerKeys:
    """ASGI middleware: every HTTP request but /healthz presents one of ``keys`` as ``Authorization:
    Bearer <key>`` (or ``X-API-Key``, as the gateway takes them). Plain ASGI, not BaseHTTPMiddleware,
    so the SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp, *, keys: list[bytes]) -> None:
        self._app, self._keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz" or self._accepts(Headers(scope=scope)):
            await self._app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"error": "unauthorized", "message": "A valid API key is required: Authorization: Bearer <key>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)

    def _accepts(self, headers: Headers) -> bool:
        given = presented_token(headers).encode()
        # Compared with every key in constant time: timing says nothing about which prefix matched.
        return bool(given) and any(hmac.compare_digest(given, key) for key in self._keys)


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})
