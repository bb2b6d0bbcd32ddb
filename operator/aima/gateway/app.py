"""Composing the gateway: watches, key store, connection pool and handlers, as an aiohttp app.

``open_gateway`` starts what the proxy needs and stops it afterwards; ``install`` adds the /v1 routes
to an application (the units door's, in ``aima gateway serve``), ``create_app`` makes a standalone
one with /healthz and /metrics. Pass ``routes`` to feed a fixed routing table instead of watches
(the benchmark's seam; see :class:`aima.gateway.routes.StaticRoutes`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from aima.gateway.autoscaling import Autoscaler, signal_lines, signals
from aima.gateway.balancer import Balancer
from aima.gateway.engine_load import EngineReport, EngineScraper
from aima.gateway.identity import ServiceAccountReviewer
from aima.gateway.keys import KeyStore
from aima.gateway.metrics import GatewayMetrics
from aima.gateway.proxy import GET_ROUTES, POST_ROUTES, Proxy, ProxyOptions, stamp_response
from aima.gateway.quotas import MemoryStore, Quotas, RedisStore, Store
from aima.gateway.routes import Routes
from aima.gateway.scaling import Waker
from aima.gateway.watching import ClusterRoutes, watch_keys
from aima.kube import KubeClient
from aima.settings import Settings

__all__ = ["create_app", "install", "open_gateway", "upstream_session"]

_PROXY: Final = web.AppKey("gateway", Proxy)


def upstream_session(settings: Settings) -> aiohttp.ClientSession:
    """The one connection pool to the replicas.

    Replies pass through compressed as the engine sent them (no auto-decompression); no total
    timeout, since a generation may stream for minutes; a connect timeout, so a dead replica is
    replaced quickly.
    """
    connector = aiohttp.TCPConnector(
        limit=settings.gateway_upstream_connections,
        limit_per_host=0,
        # Shorter than the engines' own idle timeouts (uvicorn's and cpp-httplib's are 5 s): a
        # connection the engine may be closing is not taken for the next request.
        keepalive_timeout=4,
        enable_cleanup_closed=True,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.gateway_connect_timeout_seconds)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


@contextlib.asynccontextmanager
async def open_gateway(
    settings: Settings, *, kube: KubeClient | None, routes: Routes | None = None, keys: KeyStore | None = None
) -> AsyncIterator[Proxy]:
    """A running proxy: routes from watches of ``settings.gateway_namespace`` and the
    ``gateway_route_namespaces`` unless given, keys from the home namespace's Secrets when
    ``gateway_require_api_key`` (unless a store is given), none otherwise; the keys' quotas counted
    in ``gateway_quota_redis_url``'s Redis, or in this process without one."""
    metrics = GatewayMetrics()
    async with contextlib.AsyncExitStack() as stack:
        if routes is None:
            if kube is None:
                raise ValueError("routes from the cluster need a KubeClient")
            watched = ClusterRoutes(
                kube,
                home=settings.gateway_namespace,
                namespaces=settings.gateway_routed_namespaces,
                restarts=metrics.watch_restarts,
            )
            await watched.start()
            stack.push_async_callback(watched.stop)
            routes = watched
        if keys is None and settings.gateway_require_api_key:
            if kube is None:
                raise ValueError("API keys from Secrets need a KubeClient")
            reviewer = ServiceAccountReviewer(
                kube,
                audience=settings.gateway_token_audience,
                trusted=settings.gateway_trusted_service_accounts,
            )
            keys = KeyStore(review=reviewer.review)
            mirror = watch_keys(
                kube, keys, namespace=settings.gateway_namespace, restarts=metrics.watch_restarts
            )
            await mirror.start()
            stack.push_async_callback(mirror.stop)
        session = await stack.enter_async_context(upstream_session(settings))
        url = settings.gateway_quota_redis_url
        store: Store = MemoryStore() if url is None else RedisStore(url.get_secret_value())
        stack.push_async_callback(store.close)
        quotas = Quotas(
            store,
            reserve_tokens=settings.gateway_quota_reserve_tokens,
            errors=metrics.quota_store_errors,
        )
        waker = Waker(
            routes,
            kube=kube,
            metrics=metrics,
            wait_seconds=settings.gateway_scale_wait_seconds,
            retry_after=settings.gateway_retry_after_seconds,
            max_held=settings.gateway_max_held_requests,
        )
        reports: dict[str, EngineReport] = {}
        balancer = Balancer(
            load_factor=settings.gateway_affinity_load_factor,
            engine_reports=reports if settings.gateway_engine_aware_balancing else None,
        )
        if settings.gateway_engine_metrics_interval_seconds > 0:
            scraper = EngineScraper(
                routes,
                session=session,
                reports=reports,
                outstanding=balancer.outstanding,
                interval=settings.gateway_engine_metrics_interval_seconds,
            )
            scraping = asyncio.create_task(scraper.run(), name="engine-metrics")
            stack.callback(scraping.cancel)
        table = routes
        metrics.sources += [
            waker.metric_lines,
            lambda: signal_lines(signals(table.backends(), in_flight=metrics.in_flight, reports=reports)),
        ]
        if kube is not None and settings.gateway_autoscale_interval_seconds > 0:
            autoscaler = Autoscaler(
                routes,
                kube=kube,
                in_flight=metrics.in_flight,
                interval=settings.gateway_autoscale_interval_seconds,
                gateway_replicas=settings.gateway_replicas,
            )
            ticking = asyncio.create_task(autoscaler.run(), name="autoscaler")
            stack.callback(ticking.cancel)
        yield Proxy(
            routes=routes,
            keys=keys,
            quotas=quotas,
            session=session,
            waker=waker,
            metrics=metrics,
            balancer=balancer,
            kube=kube,
            options=ProxyOptions(
                max_body_bytes=settings.gateway_max_body_bytes,
                prefix_affinity=settings.gateway_prefix_affinity,
                affinity_prefix_chars=settings.gateway_affinity_prefix_chars,
                retry_after_seconds=settings.gateway_retry_after_seconds,
            ),
        )


def install(app: web.Application, proxy: Proxy) -> None:
    """Add the OpenAI routes to ``app``."""
    app[_PROXY] = proxy
    app.on_response_prepare.append(stamp_response)
    app.router.add_get("/v1/models", proxy.models)
    app.router.add_get("/v1/models/{model}", proxy.model)
    app.router.add_get("/v1/quotas", proxy.standing)
    for path in POST_ROUTES:
        app.router.add_post(path, proxy.forward)
    for path in GET_ROUTES:
        app.router.add_get(path, proxy.forward)


def create_app(proxy: Proxy) -> web.Application:
    """A standalone gateway app: the OpenAI routes, /healthz and /metrics."""
    app = web.Application()
    install(app, proxy)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=proxy.metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics)
    return app
