"""The whole `aima gateway serve` application: the OpenAI routes, the units' HTTP door, /healthz
and one /metrics, with the units door behind the gateway's API keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from aima.gateway.app import install
from aima.gateway.keys import KeyStore, presented_token
from aima.gateway.proxy import Proxy
from aima.kube import KubeClient
from aima.settings import Settings
from aima.units import Context, registry
from aima.units.envelope import ErrorInfo, Meta, Response
from aima.units.errors import ErrorCode, http_status
from aima.units.http import create_app

__all__ = ["gateway_server_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gateway_server_app(settings: Settings, *, kube: KubeClient, proxy: Proxy) -> web.Application:
    """/v1 through ``proxy`` and /api/v2 acting in ``settings.gateway_namespace`` through ``kube``."""
    context = Context(kube=kube, settings=settings, namespace=settings.gateway_namespace)
    # The units door keeps /healthz and /metrics; the gateway's metrics join its exposition.
    app = create_app(registry=registry(), context=context, extra_metrics=proxy.metrics.render)
    install(app, proxy)
    app.middlewares.append(_units_guard(proxy.keys))
    return app


def _units_guard(keys: KeyStore | None) -> Middleware:
    """The units door takes the gateway's keys: /api/ needs a key whenever /v1 does."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            keys is not None
            and request.path.startswith("/api/")
            and not keys.accepts(presented_token(request.headers))
        ):
            error = ErrorInfo(
                code=ErrorCode.UNAUTHORIZED,
                message="A valid API key is required: Authorization: Bearer <key>",
            )
            reply = Response(success=False, error=error, meta=Meta(request_id="unauthorized", duration_ms=0))
            return web.json_response(reply.dump(), status=http_status(ErrorCode.UNAUTHORIZED))
        return await handler(request)

    return guard
