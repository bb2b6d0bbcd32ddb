"""The gateway sends an engine the name it serves and gives its reply back under the id the client
asked for."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from aima.gateway import create_app, open_gateway
from aima.gateway.replies import ModelRename
from aima.gateway.routes import Backend, ServiceView, StaticRoutes
from aima.settings import Settings
from aima_testenv.engines import EngineOptions, FakeEngine, wav_bytes
from fakes.serving import running

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


def test_an_audio_upload_reaches_the_engine_under_the_name_it_serves() -> None:
    """vLLM refuses a model name it does not serve, and speaches finds its model by one id: the
    form's ``model`` is renamed as a JSON body's is, the audio passed on as it came."""
    engine = FakeEngine(EngineOptions(name="whisper"))
    view = ServiceView(
        name="whisper",
        namespace="ns",
        served_name=None,
        replicas=1,
        suspended=False,
        scale_from_zero=False,
        answers_to="aima/model",
    )

    async def scenario() -> tuple[int, str]:
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(engine.serve())
            routes = StaticRoutes({"whisper": Backend(service=view, endpoints=(url,), model="whisper")})
            settings = Settings(gateway_require_api_key=False, gateway_engine_metrics_interval_seconds=0)
            proxy = await stack.enter_async_context(open_gateway(settings, kube=None, routes=routes))
            gateway = await stack.enter_async_context(running(create_app(proxy)))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            form = aiohttp.FormData()
            form.add_field("file", wav_bytes(seconds=0.5), filename="a.wav", content_type="audio/wav")
            form.add_field("model", "whisper")
            async with session.post(gateway + "/v1/audio/transcriptions", data=form) as reply:
                return reply.status, (await reply.json())["text"]

    status, text = asyncio.run(scenario())
    assert (status, text) == (200, f"transcribed {len(wav_bytes(seconds=0.5))} bytes from a.wav")
    assert engine.stats.bodies[-1]["model"] == "aima/model"
