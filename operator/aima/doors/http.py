"""The HTTP door: the unit registry on aiohttp, with the seeds' envelope, a catalog, metrics and OpenAPI.

Routes: `POST /api/v2/execute` ({type, unit, input}); `POST /api/v2/command/{unit}` and
`POST /api/v2/query/{unit}` (the body is the input); `GET /api/v2/units[/{unit}]`; `GET /openapi.json`;
`GET /healthz`; `GET /metrics`; `GET /api/v2/resources[/watch]?uri=aima://...` (`aima.doors.watch`);
`POST /api/v2/pipelines/{name}/run` (`aima.doors.pipelines`). With API keys configured, `/api/v2/*`
requires `Authorization: Bearer <key>` or `X-API-Key: <key>` (`aima.doors.auth`); health, metrics
and OpenAPI stay open.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from aima.doors import watch
from aima.doors.auth import DoorKeys, guard
from aima.doors.pipelines import add_pipeline_routes
from aima.doors.wire import read_json, refuse, reply
from aima.exposition import Histogram, counter_lines
from aima.units.core import Context, Kind, Registry
from aima.units.envelope import Request, execute
from aima.units.errors import ErrorCode, UnitError
from aima.units.schema import describe, openapi

__all__ = ["Metrics", "create_app"]

_REGISTRY: Final = web.AppKey("registry", Registry)
_CONTEXT: Final = web.AppKey("context", Context)
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Request counts by unit and code, and latency histograms by unit, in Prometheus text format."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, ...]] = Counter()
        self._duration = Histogram(
            "aima_unit_request_duration_seconds", "Time to run a unit.", ("unit",), buckets=_BUCKETS
        )

    def observe(self, *, unit: str, kind: str, code: str, seconds: float) -> None:
        """Count one call of `unit` that ended with `code` ("OK" on success)."""
        self._counts[(unit, kind, code)] += 1
        self._duration.observe((unit,), seconds)

    def render(self) -> str:
        """The exposition text."""
        lines = counter_lines(
            "aima_unit_requests_total",
            "Unit calls by unit, type and result code.",
            ("unit", "type", "code"),
            self._counts,
        )
        return "\n".join(lines + self._duration.render()) + "\n"


_METRICS: Final = web.AppKey("metrics", Metrics)
_OPENAPI: Final = web.AppKey("openapi", dict[str, Any])
_EXTRA_METRICS: Final[web.AppKey[Callable[[], str]]] = web.AppKey("extra_metrics")


def create_app(
    *,
    registry: Registry,
    context: Context,
    api_keys: Iterable[str] = (),
    extra_metrics: Callable[[], str] | None = None,
) -> web.Application:
    """The HTTP door for `registry`, acting through `context`; keys empty means no authentication.
    `extra_metrics` adds exposition text to /metrics (the gateway's, when one process serves both)."""
    keys = DoorKeys(api_keys)
    app = web.Application(middlewares=[guard(keys.check)] if keys else [])
    app[_EXTRA_METRICS] = extra_metrics or (lambda: "")
    app[_REGISTRY] = registry
    app[_CONTEXT] = context
    app[_METRICS] = Metrics()
    app[_OPENAPI] = openapi(registry)
    app.router.add_post("/api/v2/execute", _execute)
    app.router.add_post("/api/v2/{kind:command|query}/{unit}", _execute_unit)
    app.router.add_get("/api/v2/units", _units)
    app.router.add_get("/api/v2/units/{unit}", _unit)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", _metrics)
    watch.add_routes(app, registry=registry, context=context)
    add_pipeline_routes(app, registry=registry, context=context)
    return app


async def _execute(request: web.Request) -> web.Response:
    try:
        call = Request.model_validate(await read_json(request))
    except UnitError as refused:
        return refuse(refused)
    except ValidationError as invalid:
        message = f"Invalid request envelope: {invalid.errors()[0]['msg']}"
        return refuse(UnitError(ErrorCode.INVALID_INPUT, message))
    return await _run(request, call)


async def _execute_unit(request: web.Request) -> web.Response:
    try:
        body = await read_json(request, empty={})
    except UnitError as refused:
        return refuse(refused)
    if not isinstance(body, dict):
        return refuse(UnitError(ErrorCode.INVALID_INPUT, "The body is the unit's input: a JSON object"))
    kind = Kind(request.match_info["kind"])
    return await _run(request, Request(type=kind, unit=request.match_info["unit"], input=body))


async def _run(request: web.Request, call: Request) -> web.Response:
    registry = request.app[_REGISTRY]
    started = time.monotonic()
    response = await execute(registry, request.app[_CONTEXT], call)
    unit = registry.get(call.unit)
    if unit is not None:  # unknown names are not counted: label values stay bounded
        code = response.error.code if response.error else "OK"
        request.app[_METRICS].observe(
            unit=unit.name, kind=str(unit.kind), code=code, seconds=time.monotonic() - started
        )
    return reply(response)


async def _units(request: web.Request) -> web.Response:
    return _ok({"units": [describe(u) for u in request.app[_REGISTRY]]})


async def _unit(request: web.Request) -> web.Response:
    unit = request.app[_REGISTRY].get(request.match_info["unit"])
    if unit is None:
        return refuse(UnitError(ErrorCode.UNIT_NOT_FOUND, f"No unit named {request.match_info['unit']}"))
    return _ok(describe(unit))


async def _openapi(request: web.Request) -> web.Response:
    return _ok(request.app[_OPENAPI])


async def _health(_: web.Request) -> web.Response:
    return _ok({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    text = request.app[_METRICS].render() + request.app[_EXTRA_METRICS]()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def _ok(payload: Any) -> web.Response:
    return web.json_response(payload)
