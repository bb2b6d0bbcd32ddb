"""The whole `aima gateway serve` application: the OpenAI routes, the units door, /healthz and one
/metrics, with the units door behind the gateway's API keys.

A key reaches the units door only if its Secret grants it (``data.units``: ``read`` or ``write``),
and a ``read`` key runs queries only. The door's inference.* units call this same gateway over
loopback with a key of the process's own, so they work in any release and namespace.
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web
from pydantic import SecretStr

from aima.doors.auth import Check, guard, key_required, presented_token
from aima.doors.http import create_app
from aima.gateway.app import install
from aima.gateway.keys import ApiKey, KeyStore, UnitsAccess
from aima.gateway.proxy import Proxy
from aima.kube import KubeClient
from aima.settings import Settings
from aima.units import Context, registry
from aima.units.errors import ErrorCode, UnitError

__all__ = ["gateway_server_app", "loopback_url"]

_QUERY_PATHS = ("/api/v2/query/", "/api/v2/units", "/api/v2/resources")


def loopback_url(host: str, port: int) -> str:
    """How this process reaches its own listener on ``host``:``port``."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard listener is reached on loopback
        host = "127.0.0.1"
    elif host == "::" or ":" in host:
        host = "[::1]" if host == "::" else f"[{host}]"
    return f"http://{host}:{port}"


def gateway_server_app(
    settings: Settings, *, kube: KubeClient, proxy: Proxy, self_url: str
) -> web.Application:
    """/v1 through ``proxy`` and /api/v2 acting in ``settings.gateway_namespace`` through ``kube``;
    ``self_url`` is where this process listens, for the units that call the gateway."""
    own: dict[str, object] = {"gateway_url": self_url, "gateway_token_file": None}
    if proxy.keys is not None:
        token = secrets.token_urlsafe(32)
        proxy.keys.pin(token, ApiKey(name="units-door"))
        own["gateway_api_key"] = SecretStr(token)
    context = Context(
        kube=kube, settings=settings.model_copy(update=own), namespace=settings.gateway_namespace
    )
    # The units door keeps /healthz and /metrics; the gateway's metrics join its exposition.
    app = create_app(registry=registry(), context=context, extra_metrics=proxy.metrics.render)
    install(app, proxy)
    if proxy.keys is not None:  # /api/ needs a key whenever /v1 does
        app.middlewares.append(guard(_units_access(proxy.keys)))
    return app


def _units_access(keys: KeyStore) -> Check:
    """The units door takes the gateway's keys that grant it, and a read key for queries only."""

    async def check(request: web.Request) -> UnitError | None:
        key = await keys.authenticate(presented_token(request.headers))
        if key is None:
            return key_required()
        if key.units is UnitsAccess.NONE:
            return UnitError(
                ErrorCode.FORBIDDEN,
                f"The API key {key.name} has no access to /api/v2: give its Secret data.units: read or write",
            )
        if key.units is UnitsAccess.READ and not await _is_query(request):
            return UnitError(
                ErrorCode.FORBIDDEN, f"The API key {key.name} may run queries only (its data.units is read)"
            )
        return None

    return check


async def _is_query(request: web.Request) -> bool:
    """Whether the request only reads: a GET, a query route, or an execute envelope of type query."""
    if request.method == "GET" or request.path.startswith(_QUERY_PATHS):
        return True
    if request.path != "/api/v2/execute":
        return False
    try:
        envelope = json.loads(await request.read())  # aiohttp keeps the body for the handler
    except (ValueError, RecursionError):  # no JSON (or nested too deeply): the handler says so
        return False
    return isinstance(envelope, dict) and envelope.get("type") == "query"
