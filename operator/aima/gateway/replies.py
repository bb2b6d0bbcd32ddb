"""What an engine answered, given back under the id the client asked for (pure).

The gateway asks an engine for the name it serves (vLLM refuses any other), so the engine's replies
name that: ``chat`` where the client asked for ``team-a/chat``. A client, an agent above all, reuses
the ``model`` it was answered with, and ``chat`` is another model or none outside the home namespace.
"""

from __future__ import annotations

import json

__all__ = ["ModelRename"]


class ModelRename:
    """Puts the asked-for id back in the ``"model"`` fields of a reply, JSON or SSE, fed in chunks.

    A search and replace on the bytes, not a parse: replies pass through as they come. A chunk that
    ends inside a ``"model": "..."`` field keeps that end back until the next chunk (an SSE event
    ends in a blank line, so this does not happen between events and delays nothing).
    """

    def __init__(self, *, served: str, asked: str) -> None:
        old, new = json.dumps(served).encode(), json.dumps(asked).encode()
        self._pairs = [(b'"model"' + gap + old, b'"model"' + gap + new) for gap in (b":", b": ")]
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The part of the reply so far that can be sent, renamed."""
        data = self._held + chunk
        for old, new in self._pairs:
            data = data.replace(old, new)
        keep = self._unfinished(data)
        self._held = data[len(data) - keep :]
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        """What was kept back, at the end of the reply."""
        held, self._held = self._held, b""
        return held

    def _unfinished(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` may be the start of a field to rename (each starts
        with a quote, so only the quotes near the end are tried)."""
        longest = max(len(old) for old, _ in self._pairs) - 1
        at = data.find(b'"', max(0, len(data) - longest))
        while at != -1:
            tail = data[at:]
            if any(old.startswith(tail) for old, _ in self._pairs):
                return len(tail)
            at = data.find(b'"', at + 1)
        return 0
