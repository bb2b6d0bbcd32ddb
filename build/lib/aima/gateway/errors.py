"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status."""

from __future__ import annotations

import json

from aiohttp import web

__all__ = ["GatewayError"]

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

    def response(self) -> web.Response:
        """The error reply, with Retry-After (whole seconds, at least 1) when there is one."""
        kind = _TYPES.get(self.status, "server_error")
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
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
