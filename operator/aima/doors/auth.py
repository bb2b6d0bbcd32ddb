"""One authentication for the doors: the key a request presents, checked against the keys a door takes.

A request presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>` (`presented_token`;
the gateway reads its own keys with it too). A door given keys refuses a request without one of
them: UNAUTHORIZED in the units envelope, with a Bearer challenge. A door given none is open (only
behind a proxy that authenticates). `guard` puts a check in front of the aiohttp doors (the gateway
passes its own, which also weighs what a key may do); `AsgiGuard` in front of MCP's Starlette app.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from aima.doors.wire import refusal, refuse, status
from aima.units.errors import ErrorCode, UnitError

__all__ = ["CHALLENGE", "AsgiGuard", "Check", "DoorKeys", "guard", "key_required", "presented_token"]

CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
"""The header of every UNAUTHORIZED reply: how to authenticate."""

Check = Callable[[web.Request], Awaitable[UnitError | None]]
"""Why a request may not pass, or None when it may."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def presented_token(headers: Mapping[str, str]) -> str:
    """The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`; "" for none."""
    header = headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else headers.get("X-API-Key", "")


def key_required() -> UnitError:
    """The refusal of a request that presents no valid key."""
    return UnitError(ErrorCode.UNAUTHORIZED, "A valid API key is required: Authorization: Bearer <key>")


class DoorKeys:
    """The keys a door takes; with none, the door is open."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def accepts(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with `headers` may pass: it presents one of the keys, or there are none."""
        if not self._keys:
            return True
        given = presented_token(headers).encode()
        # Compared with every key in constant time: timing says nothing about which prefix matched.
        return bool(given) and any(hmac.compare_digest(given, key) for key in self._keys)

    async def check(self, request: web.Request) -> UnitError | None:
        """`accepts` as a `Check` for `guard`."""
        return None if self.accepts(request.headers) else key_required()


def guard(check: Check, *, prefix: str = "/api/") -> Middleware:
    """aiohttp middleware: a request under `prefix` passes `check` or gets its refusal; health,
    metrics and OpenAPI stay open."""

    @web.middleware
    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(prefix) and (refused := await check(request)) is not None:
            return refuse(refused, headers=CHALLENGE if refused.code is ErrorCode.UNAUTHORIZED else None)
        return await handler(request)

    return guarded


class AsgiGuard:
    """ASGI middleware: every HTTP request but those to `open_paths` presents one of `keys`. Plain
    ASGI, not Starlette's BaseHTTPMiddleware, so that SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp, *, keys: DoorKeys, open_paths: Iterable[str] = ()) -> None:
        self._app, self._keys, self._open = app, keys, frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open or self._keys.accepts(Headers(scope=scope)):
            await self._app(scope, receive, send)
            return
        refused = refusal(key_required())
        answer = JSONResponse(refused.dump(), status_code=status(refused), headers=CHALLENGE)
        await answer(scope, receive, send)
