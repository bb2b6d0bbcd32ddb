"""Reading what routing needs from a request body (pure): the ``model`` field and a chat prefix.

The body is forwarded as received, but for its ``model`` where the engine knows the model by another
name than the client asked for.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aima.gateway.errors import GatewayError

__all__ = ["affinity_key", "json_model", "multipart_field", "with_model", "with_multipart_field"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def json_model(body: bytes) -> tuple[str, dict[str, Any]]:
    """The ``model`` of a JSON request body, with the parsed body (for affinity)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise GatewayError(400, "The body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "The body must be a JSON object", code="invalid_json")
    return _required(payload.get("model")), payload


def with_model(payload: dict[str, Any], model: str) -> bytes:
    """The JSON body again, naming ``model``: written anew only when the engine knows the model by
    another name than the client asked for."""
    return json.dumps(payload | {"model": model}, separators=(",", ":")).encode()


def multipart_field(body: bytes, content_type: str, name: str) -> str:
    """A text field of a multipart/form-data body (the ``model`` of an audio upload)."""
    span = _field_span(body, content_type, name)
    return _required(None if span is None else body[span[0] : span[1]].decode(errors="replace").strip())


def with_multipart_field(body: bytes, content_type: str, name: str, value: str) -> bytes:
    """The multipart body again with its text field ``name`` set to ``value``, the other parts (the
    audio file) copied as they came; unchanged when it has no such field."""
    span = _field_span(body, content_type, name)
    return body if span is None else body[: span[0]] + value.encode() + body[span[1] :]


def _field_span(body: bytes, content_type: str, name: str) -> tuple[int, int] | None:
    """Where the value of the part named ``name`` lies in ``body``, found by walking the parts by
    their boundary with ``find``, without copying the (possibly large) file."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise GatewayError(400, "A multipart body needs a boundary", code="invalid_multipart")
    delimiter = b"--" + match.group(1).encode()
    wanted = f'name="{name}"'.encode()
    position = body.find(delimiter)
    while position != -1:
        start = position + len(delimiter)
        end = body.find(b"\r\n" + delimiter, start)
        if end == -1:
            break
        head_end = body.find(b"\r\n\r\n", start, end)
        if head_end != -1 and _names(body[start:head_end], wanted):
            return head_end + 4, end
        position = end + 2
    return None


def _names(headers: bytes, wanted: bytes) -> bool:
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-disposition:"):
            return any(p.strip() == wanted for p in line.split(b";"))
    return False


def _required(model: Any) -> str:
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "You must provide a model parameter", code="missing_model", param="model")
    return model


def affinity_key(payload: dict[str, Any], *, chars: int) -> bytes | None:
    """The conversation's prefix: system messages and the first user message, cut at ``chars``."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return None
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        parts.append(str(message.get("content", "")))
        if message.get("role") == "user":
            break
    prefix = "\n".join(parts)[:chars]
    return prefix.encode() if prefix else None
