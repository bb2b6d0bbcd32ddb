"""Speech helpers of the streaming voice flow: cut streamed text into sentences worth speaking, and
join the audio of several sentences into one file."""

from __future__ import annotations

import io
import re
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["SentenceSplitter", "join_audio"]

_SENTENCE_END: Final = re.compile(
    r"(?<=[.!?;:\u3002\uff01\uff1f\uff1b])[\"')\]]*\s+"  # Latin: punctuation, closing quotes, a space
    r"|(?<=[\u3002\uff01\uff1f])"  # CJK full stops need no space
)
"""The end of a sentence: final punctuation (and closing quotes) followed by a space; CJK full
stops need no space."""


@dataclass
class SentenceSplitter:
    """Feed text deltas, get whole sentences as soon as they end.

    A sentence shorter than `min_chars` waits for the next one (tiny clips sound choppy and each
    costs a request); text running past `max_chars` without an end is cut at a space, so a model
    that never punctuates still starts speaking early.
    """

    min_chars: int = 12
    max_chars: int = 200
    _buffer: str = field(default="", init=False)

    def feed(self, delta: str) -> Iterator[str]:
        """The sentences completed by `delta`."""
        self._buffer += delta
        while True:
            cut = self._cut()
            if cut is None:
                return
            sentence, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if sentence:
                yield sentence

    def flush(self) -> str:
        """What is left once the text ended."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest

    def _cut(self) -> int | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            if match.end() >= self.min_chars:
                return match.end()
        if len(self._buffer) > self.max_chars:
            space = self._buffer.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None


def join_audio(parts: Sequence[bytes]) -> bytes:
    """One audio file from consecutive parts: WAV parts of one format become one WAV (one header,
    the frames in order); anything else (mp3, opus, raw PCM) is concatenated as is."""
    if len(parts) == 1:
        return parts[0]
    try:
        decoded = [_frames(part) for part in parts]
    except (wave.Error, EOFError):
        return b"".join(parts)
    formats = {params for params, _ in decoded}
    if len(formats) != 1:
        return b"".join(parts)
    channels, width, rate = formats.pop()
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        for _, frames in decoded:
            writer.writeframes(frames)
    return out.getvalue()


def _frames(wav: bytes) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(io.BytesIO(wav), "rb") as reader:
        params = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
        return params, reader.readframes(reader.getnframes())
