"""The doors' wire: request bodies in, the units envelope out.

Every reply of a door is the units envelope `{success, data | error, meta}` with the HTTP status of
its error code, whether `execute` ran a unit or the door refused the call itself (no key, a body
that is not JSON, an unknown resource): a client reads one shape and branches on the code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from aima.units.envelope import ErrorInfo, Meta, Response, new_request_id
from aima.units.errors import ErrorCode, UnitError, http_status

__all__ = ["door_meta", "read_json", "refusal", "refuse", "reply", "status"]


def door_meta(*, unit: str | None = None, started: float | None = None) -> Meta:
    """The meta of a reply a door makes itself; `started` (time.monotonic) times it."""
    duration = 0 if started is None else round((time.monotonic() - started) * 1000)
    return Meta(request_id=new_request_id(), duration_ms=duration, unit=unit)


def refusal(failure: UnitError, *, unit: str | None = None, started: float | None = None) -> Response:
    """The envelope of a call the door ended itself: the one way a door builds an error."""
    return Response(success=False, error=ErrorInfo.of(failure), meta=door_meta(unit=unit, started=started))


def status(response: Response) -> int:
    """The HTTP status of an envelope: its error code's, or 200."""
    return http_status(response.error.code) if response.error else 200


def reply(response: Response, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """An envelope as an aiohttp reply."""
    return web.json_response(response.dump(), status=status(response), headers=headers)


def refuse(
    failure: UnitError,
    *,
    unit: str | None = None,
    started: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The aiohttp reply of a call the door ended itself."""
    return reply(refusal(failure, unit=unit, started=started), headers=headers)


async def read_json(request: web.Request, *, empty: Any = None) -> Any:
    """The request's JSON body; `empty` for a blank one where given. INVALID_INPUT when not JSON."""
    raw = await request.read()
    if not raw.strip() and empty is not None:
        return empty
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as invalid:  # not JSON, no Unicode, or nested too deeply
        raise UnitError(ErrorCode.INVALID_INPUT, f"The body is not JSON: {invalid}") from None
