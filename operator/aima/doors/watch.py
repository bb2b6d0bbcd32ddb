"""Resources by URI on the HTTP door: read one, or watch it over server-sent events.

`GET /api/v2/resources?uri=aima://services/qwen` answers the envelope of the address's query unit.
`GET /api/v2/resources/watch?uri=...` is an SSE stream: an `update` event with the envelope now,
then another each time it changes. Changes are noticed by watching the API resource behind the
address (a Model, an InferenceService, ...), or by polling for addresses without one; a comment
line every `heartbeat` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final

import aiohttp
from aiohttp import web

from aima.doors.wire import refuse, reply
from aima.kube.watch import Sink, keep_watching
from aima.units.core import Context, Registry
from aima.units.envelope import Request, execute
from aima.units.errors import ErrorCode, UnitError
from aima.units.uris import Address, offered, resolve

__all__ = ["add_routes"]


_REGISTRY: Final = web.AppKey("resources_registry", Registry)
_CONTEXT: Final = web.AppKey("resources_context", Context)
_HEARTBEAT: Final = web.AppKey("resources_heartbeat", float)


def add_routes(
    app: web.Application, *, registry: Registry, context: Context, heartbeat: float = 15.0
) -> None:
    """Add `/api/v2/resources` (list of addresses, or one read) and `/api/v2/resources/watch`."""
    app[_REGISTRY] = registry
    app[_CONTEXT] = context
    app[_HEARTBEAT] = heartbeat
    app.router.add_get("/api/v2/resources", _read)
    app.router.add_get("/api/v2/resources/watch", _watch)


async def _read(request: web.Request) -> web.Response:
    registry = request.app[_REGISTRY]
    if "uri" not in request.query:
        listed = [
            {"uri": a.template, "unit": a.unit, "description": a.description} for a in offered(registry)
        ]
        return web.json_response({"resources": listed})
    found = _resolve(request)
    if isinstance(found, web.Response):
        return found
    address, parameters = found
    return reply(await execute(registry, request.app[_CONTEXT], Request(unit=address.unit, input=parameters)))


async def _watch(request: web.Request) -> web.StreamResponse:
    found = _resolve(request)
    if isinstance(found, web.Response):
        return found
    address, parameters = found
    context = request.app[_CONTEXT]
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    changed = asyncio.Event()
    watcher = asyncio.create_task(_notice_changes(context, address, parameters, changed))
    try:
        await _send_updates(request, stream, address, parameters, changed)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the client went away: that is how a watch ends
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return stream


async def _send_updates(
    request: web.Request,
    stream: web.StreamResponse,
    address: Address,
    parameters: dict[str, Any],
    changed: asyncio.Event,
) -> None:
    registry, context, heartbeat = request.app[_REGISTRY], request.app[_CONTEXT], request.app[_HEARTBEAT]
    last: Any = None
    while True:
        response = await execute(registry, context, Request(unit=address.unit, input=parameters))
        current = response.error.model_dump(mode="json") if response.error else response.data
        if current != last:
            payload = json.dumps(response.dump(), separators=(",", ":"))
            await stream.write(f"event: update\ndata: {payload}\n\n".encode())
            last = current
        try:
            await asyncio.wait_for(changed.wait(), timeout=heartbeat)
        except TimeoutError:
            await stream.write(b": still watching\n\n")
        changed.clear()


async def _notice_changes(
    context: Context, address: Address, parameters: dict[str, Any], changed: asyncio.Event
) -> None:
    """Set `changed` on every event of the address's API resource, and after every break of its
    watch (which may have missed a change); without one, the heartbeat polls."""
    resource = address.watches
    if resource is None:
        return
    namespace = (parameters.get("namespace") or context.namespace) if resource.namespaced else None
    sink = Sink(relisted=lambda _: changed.set(), changed=lambda _kind, _obj: changed.set())
    await keep_watching(context.kube, resource, sink, namespace=namespace)


def _resolve(request: web.Request) -> tuple[Address, dict[str, Any]] | web.Response:
    uri = request.query.get("uri", "")
    found = resolve(request.app[_REGISTRY], uri)
    if found is None:
        message = f"No resource {uri!r}; GET /api/v2/resources lists the URIs"
        return refuse(UnitError(ErrorCode.NOT_FOUND, message, {"uri": uri}))
    return found
