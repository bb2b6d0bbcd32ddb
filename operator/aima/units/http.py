"""The HTTP door: the unit registry on aiohttp, with the seeds' envelope, a catalog, metrics and OpenAPI.

Routes: `POST /api/v2/execute` ({type, unit, input}); `POST /api/v2/command/{unit}` and
`POST /api/v2/query/{unit}` (the body is the input); `GET /api/v2/units[/{unit}]`; `GET /openapi.json`;
`GET /healthz`; `GET /metrics`; `GET /api/v2/resources[/watch]?uri=aima://...` (`aima.units.watch`).
With API keys configured, `/api/v2/*` requires `Authorization: Bearer <key>` or `X-API-Key: <key>`;
health, metrics and OpenAPI stay open.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from aima.exposition import Histogram, counter_lines
from aima.pipelines.http import add_pipeline_routes
from aima.units import watch
from aima.units.core import Context, Kind, Registry
from aima.units.envelope import ErrorInfo, Meta, Request, Response, execute
from aima.units.errors import ErrorCode, http_status
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
    app = web.Application(middlewares=[_authenticate(frozenset(api_keys))])
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authenticate(keys: frozenset[str]) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if keys and request.path.startswith("/api/") and not _authorized(request, keys):
            return _failure(
                ErrorCode.UNAUTHORIZED, "A valid API key is required: Authorization: Bearer <key>"
            )
        return await handler(request)

    return authenticate


def _authorized(request: web.Request, keys: frozenset[str]) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else request.headers.get("X-API-Key", "")
    # Compare with every key in constant time, so timing tells nothing about which prefix matched.
    return any(hmac.compare_digest(given.encode(), key.encode()) for key in keys) if given else False


async def _execute(request: web.Request) -> web.Response:
    body = await _json(request)
    if isinstance(body, web.Response):
        return body
    try:
        call = Request.model_validate(body)
    except ValidationError as invalid:
        return _failure(ErrorCode.INVALID_INPUT, f"Invalid request envelope: {invalid.errors()[0]['msg']}")
    return await _run(request, call)


async def _execute_unit(request: web.Request) -> web.Response:
    body = await _json(request, empty={})
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _failure(ErrorCode.INVALID_INPUT, "The body is the unit's input: a JSON object")
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
    status = http_status(response.error.code) if response.error else 200
    return web.json_response(response.dump(), status=status)


async def _units(request: web.Request) -> web.Response:
    return _ok({"units": [describe(u) for u in request.app[_REGISTRY]]})


async def _unit(request: web.Request) -> web.Response:
    unit = request.app[_REGISTRY].get(request.match_info["unit"])
    if unit is None:
        return _failure(ErrorCode.UNIT_NOT_FOUND, f"No unit named {request.match_info['unit']}")
    return _ok(describe(unit))


async def _openapi(request: web.Request) -> web.Response:
    return _ok(request.app[_OPENAPI])


async def _health(_: web.Request) -> web.Response:
    return _ok({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    text = request.app[_METRICS].render() + request.app[_EXTRA_METRICS]()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _json(request: web.Request, *, empty: Any = None) -> Any:
    raw = await request.read()
    if not raw.strip() and empty is not None:
        return empty
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as invalid:  # not JSON, no Unicode, or nested too deeply
        return _failure(ErrorCode.INVALID_INPUT, f"The body is not JSON: {invalid}")


def _ok(payload: Any) -> web.Response:
    return web.json_response(payload)


def _failure(code: ErrorCode, message: str) -> web.Response:
    meta = Meta(request_id=f"req_{secrets.token_hex(8)}", duration_ms=0)
    response = Response(success=False, error=ErrorInfo(code=code, message=message), meta=meta)
    return web.json_response(response.dump(), status=http_status(code))
