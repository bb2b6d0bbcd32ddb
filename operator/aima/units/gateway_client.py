"""A small client of the OpenAI-compatible gateway: JSON calls, streamed chat, speech and uploads,
with the gateway's errors mapped to unit error codes.

It speaks to `Settings.gateway_url`; pointed at a single engine it works the same, which is how the
tests run it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import aiohttp

from aima.settings import Settings
from aima.units.errors import ErrorCode, UnitError

__all__ = ["MAX_AUDIO_BYTES", "Gateway", "decode_audio", "open_gateway"]

MAX_AUDIO_BYTES: Final = 25 * 2**20
"""Largest audio accepted as input (OpenAI's own limit for transcriptions)."""

_CODES: Final = {
    400: ErrorCode.INVALID_INPUT,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.MODEL_NOT_FOUND,
    408: ErrorCode.TIMEOUT,
    413: ErrorCode.INVALID_INPUT,
    422: ErrorCode.INVALID_INPUT,
    429: ErrorCode.UNAVAILABLE,
    504: ErrorCode.TIMEOUT,
}


_WHERE: Final = (
    "Outside the cluster, name the gateway's address: aima mcp serve --gateway-url URL (or "
    "AIMA_GATEWAY_URL; `aima dev up` serves it on http://127.0.0.1:8080, and `kubectl port-forward -n "
    "aima-system svc/aima-gateway 8080:80` reaches a cluster's)"
)
"""What to do about a gateway that cannot be reached: the default address resolves only in-cluster."""


class Gateway:
    """Calls of one gateway through one session."""

    def __init__(self, *, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base = settings.gateway_url.rstrip("/")
        token = settings.gateway_credential()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=settings.inference_timeout_seconds)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a JSON body; the JSON reply."""
        async with self._request("POST", path, json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
            return reply

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET a JSON document."""
        async with self._request("GET", path) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
            return reply

    async def post_form(self, path: str, form: aiohttp.FormData) -> dict[str, Any]:
        """POST a multipart form (audio uploads); the JSON reply."""
        async with self._request("POST", path, data=form) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
            return reply

    async def post_bytes(self, path: str, body: Mapping[str, Any]) -> tuple[bytes, str]:
        """POST a JSON body whose reply is binary (speech); the bytes and their content type."""
        async with self._request("POST", path, json=body) as response:
            return await response.read(), response.content_type

    async def stream_chat(self, body: Mapping[str, Any]) -> AsyncIterator[str]:
        """The text deltas of a streamed chat completion, as the server sends them."""
        async with self._request("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                for choice in json.loads(data).get("choices", []):
                    if text := (choice.get("delta") or {}).get("content"):
                        yield text

    async def fetch(self, url: str) -> bytes:
        """The bytes at an http(s) URL (audio given by URL), at most MAX_AUDIO_BYTES."""
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status >= 400:
                    raise UnitError(ErrorCode.INVALID_INPUT, f"Fetching {url} answered {response.status}")
                data = await response.content.read(MAX_AUDIO_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as failure:
            raise UnitError(ErrorCode.INVALID_INPUT, f"Could not fetch {url}: {failure}") from None
        if len(data) > MAX_AUDIO_BYTES:
            raise UnitError(ErrorCode.INVALID_INPUT, f"{url} holds more than {MAX_AUDIO_BYTES} bytes")
        return data

    @contextlib.asynccontextmanager
    async def _request(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        url = self._base + path
        try:
            async with self._session.request(
                method, url, headers=self._headers, timeout=self._timeout, **kwargs
            ) as response:
                if response.status >= 400:
                    raise await _error(response)
                yield response
        except aiohttp.ClientError as failure:
            raise UnitError(
                ErrorCode.UNAVAILABLE,
                f"The gateway at {self._base} could not be reached ({failure}). {_WHERE}",
                {"gatewayUrl": self._base},
            ) from None
        except TimeoutError:
            raise UnitError(
                ErrorCode.TIMEOUT, f"{path} took longer than {self._timeout.total:g} s at {self._base}"
            ) from None


async def _error(response: aiohttp.ClientResponse) -> UnitError:
    text = await response.text(errors="replace")
    try:
        error = json.loads(text).get("error", {})
        message = str(error.get("message", text) if isinstance(error, dict) else error)
    except (json.JSONDecodeError, AttributeError):
        message = text
    code = _CODES.get(response.status, ErrorCode.UNAVAILABLE)
    where = f"{response.method} {response.url.path}"
    return UnitError(
        code, f"{where} answered {response.status}: {message[:500]}", {"status": response.status}
    )


@contextlib.asynccontextmanager
async def open_gateway(session: aiohttp.ClientSession | None, settings: Settings) -> AsyncIterator[Gateway]:
    """A Gateway on `session`, or on a session of its own closed afterwards."""
    if session is not None:
        yield Gateway(session=session, settings=settings)
        return
    async with aiohttp.ClientSession() as own:
        yield Gateway(session=own, settings=settings)


async def decode_audio(gateway: Gateway, audio: str) -> bytes:
    """Audio given as base64, a data: URL or an http(s) URL, as bytes."""
    if audio.startswith(("http://", "https://")):
        return await gateway.fetch(audio)
    payload = audio.partition(",")[2] if audio.startswith("data:") else audio
    if len(payload) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise UnitError(ErrorCode.INVALID_INPUT, f"The audio is larger than {MAX_AUDIO_BYTES} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UnitError(
            ErrorCode.INVALID_INPUT, "audio must be base64, a data: URL or an http(s) URL"
        ) from None
