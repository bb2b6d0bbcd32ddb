"""A streamed request held while its service scales from zero: its reply starts before a replica is
ready, so that proxies and clients do not give up on a silent connection.

The gateway sends ``200`` with ``text/event-stream`` at once and an SSE comment
(``: waiting for a replica``) every few seconds, which clients ignore. When a replica is ready, the
proxy writes its stream into the same reply, as it passes any stream through. When none comes, or
the replica answers an error, the status line is gone already, so the error travels as one SSE
event in OpenAI's shape, ``data: {"error": {...}}``, and the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Final

from aiohttp import web

from aima.gateway.errors import GatewayError

__all__ = ["HEARTBEAT", "HEARTBEAT_SECONDS", "HeldStream", "held_stream"]

HEARTBEAT: Final = b": waiting for a replica\n\n"
HEARTBEAT_SECONDS = 5.0
"""Time between heartbeats: well below the idle timeouts of proxies (nginx's 60 s) and clients."""


def held_stream(request: web.Request) -> HeldStream | None:
    """The held stream started for ``request``, if one was."""
    return request.get(_KEY)


class HeldStream:
    """The SSE reply of a held request: heartbeats, then the replica's stream or an error event."""

    def __init__(self, response: web.StreamResponse, *, heartbeat: float) -> None:
        self.response = response
        self._heartbeat = heartbeat
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, request: web.Request, *, heartbeat: float) -> HeldStream:
        """Send the reply's head and the first heartbeat; keep beating until :meth:`stop`."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        held = request[_KEY] = cls(response, heartbeat=heartbeat)
        held._beating = asyncio.create_task(held._beat(), name="held-stream-heartbeat")
        return held

    async def _beat(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # the client left; its handler is cancelled
            while True:
                await self.response.write(HEARTBEAT)
                await asyncio.sleep(self._heartbeat)

    def stop(self) -> None:
        """End the heartbeats (before anything else is written)."""
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None

    async def fail(self, error: GatewayError) -> web.StreamResponse:
        """End the stream with ``error`` as its last event."""
        self.stop()
        with contextlib.suppress(ConnectionResetError):
            await self.response.write(b"data: " + json.dumps(error.body()).encode() + b"\n\n")
            await self.response.write_eof()
        return self.response


_KEY: Final = web.RequestKey("held_stream", HeldStream)
"""Where a request's held stream is kept (aiohttp's per-request storage)."""
