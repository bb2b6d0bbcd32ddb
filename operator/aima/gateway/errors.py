"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status."""

from __future__ import annotations

import contextlib
import json

from aiohttp import web

__all__ = ["GatewayError", "upstream_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A request the gateway answers itself; ``response()`` renders it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str | None]]:
        """The error object, ``{"error": {...}}`` (also sent as an SSE event in a started stream)."""
        kind = _TYPES.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        """The error reply, with Retry-After (whole seconds, at least 1) when there is one."""
        body = self.body()
        headers = (
            {"Retry-After": str(max(1, round(self.retry_after + 0.499)))}
            if self.retry_after is not None
            else None
        )
        return web.Response(
            status=self.status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers=headers,
        )


def upstream_error(status: int, data: bytes, *, label: str) -> GatewayError:
    """A replica's error reply as a GatewayError: its OpenAI error's message and code when it sent
    one (pure)."""
    body: object = None
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(data)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, code = str(error.get("message") or ""), error.get("code")
        return GatewayError(status, message or f"HTTP {status}", code=str(code or "upstream_error"))
    return GatewayError(status, f"The replica of '{label}' answered HTTP {status}", code="upstream_error")
