"""The gateway gives an engine's reply back under the id the client asked for."""

from __future__ import annotations

import pytest

from aima.gateway.replies import ModelRename

pytestmark = pytest.mark.unit

EVENTS = (
    b'data: {"id":"chatcmpl-1","model":"chat","choices":[{"delta":{"content":"chat"}}]}\n\n'
    b'data: {"id":"chatcmpl-1", "model": "chat", "usage":{"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
RENAMED = (
    b'data: {"id":"chatcmpl-1","model":"team-a/chat","choices":[{"delta":{"content":"chat"}}]}\n\n'
    b'data: {"id":"chatcmpl-1", "model": "team-a/chat", "usage":{"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


def rename() -> ModelRename:
    return ModelRename(served="chat", asked="team-a/chat")


def test_the_model_field_is_renamed_and_nothing_else() -> None:
    renaming = rename()
    assert renaming.feed(EVENTS) == RENAMED  # whole events: nothing held back
    assert renaming.flush() == b""
    other = b'{"model":"chatty","object":"chat.completion"}'
    assert rename().feed(other) == other


def test_a_stream_cut_anywhere_comes_out_the_same() -> None:
    for cut in range(1, len(EVENTS)):
        renaming = rename()
        out = renaming.feed(EVENTS[:cut]) + renaming.feed(EVENTS[cut:]) + renaming.flush()
        assert out == RENAMED, cut


def test_a_reply_ending_inside_a_field_gives_back_what_it_held() -> None:
    renaming = rename()
    assert renaming.feed(b'{"a":1,"mod') == b'{"a":1,'
    assert renaming.flush() == b'"mod'
