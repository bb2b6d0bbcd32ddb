"""inference.* units against a real HTTP server speaking the engines' OpenAI API (standing in for the
gateway): request shapes, outputs, and errors mapped to unit codes."""

from __future__ import annotations

import asyncio
import base64
import io
import wave
from typing import Any

import aiohttp
import pytest

from aima.kube import KubeClient
from aima.settings import Settings
from aima.units import Context, Request, Response, execute, registry
from aima_testenv.engines import EngineOptions, FakeEngine, wav_bytes

pytestmark = pytest.mark.integration


def call(
    engine: FakeEngine,
    unit: str,
    payload: dict[str, Any],
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> Response:
    """Run one unit against `engine` (or `url` when given) through the envelope every door uses."""

    async def go() -> Response:
        async with engine.serve() as served, aiohttp.ClientSession() as http:
            settings = Settings(gateway_url=url or served, gateway_api_key=api_key)
            kube = KubeClient(server="http://127.0.0.1:9", session=http)  # unused by inference.*
            context = Context(kube=kube, settings=settings, http=http)
            return await execute(registry(), context, Request(unit=unit, input=payload))

    return asyncio.run(go())


def test_chat_returns_the_answer_and_sends_the_key() -> None:
    engine = FakeEngine(EngineOptions(tokens=3))
    response = call(
        engine,
        "inference.chat",
        {"model": "m", "messages": [{"content": "hi"}], "maxTokens": 10},
        api_key="sk-test",
    )
    assert response.success, response.error
    assert response.data["content"] == "tok0 tok1 tok2 "
    assert response.data["usage"]["completionTokens"] == 3
    assert engine.stats.bodies[0]["max_tokens"] == 10
    assert engine.stats.headers[0]["Authorization"] == "Bearer sk-test"


def test_transcribe_uploads_the_decoded_audio() -> None:
    audio = wav_bytes(seconds=0.5)
    engine = FakeEngine()
    payload = {"model": "whisper", "audio": base64.b64encode(audio).decode(), "language": "en"}
    response = call(engine, "inference.transcribe", payload)
    assert response.success, response.error
    assert response.data["text"] == f"transcribed {len(audio)} bytes from audio.wav"
    assert engine.stats.bodies[0]["language"] == "en"


def test_synthesize_returns_real_wav_audio_as_base64() -> None:
    response = call(FakeEngine(), "inference.synthesize", {"model": "tts", "text": "one two three"})
    assert response.success, response.error
    audio = base64.b64decode(response.data["audio"])
    assert response.data["bytes"] == len(audio)
    with wave.open(io.BytesIO(audio)) as reader:
        assert reader.getnframes() / reader.getframerate() == pytest.approx(0.15)


def test_embed_retrieve_and_rerank() -> None:
    engine = FakeEngine(EngineOptions(embedding_size=16))
    embedded = call(engine, "inference.embed", {"model": "e", "input": ["a", "b"]})
    assert embedded.data["dimensions"] == 16 and len(embedded.data["embeddings"]) == 2
    documents = [{"id": "h100", "text": "80 GB"}, {"id": "a10", "text": "24 GB"}]
    # The fake embeds by hash: the question "80 GB" is identical to the first passage.
    retrieved = call(
        engine, "inference.retrieve", {"model": "e", "query": "80 GB", "documents": documents, "topK": 1}
    )
    assert retrieved.success, retrieved.error
    assert retrieved.data["citations"] == ["h100"]
    assert retrieved.data["context"] == "[h100] 80 GB"
    ranked = call(
        engine, "inference.rerank", {"model": "r", "query": "gpu memory", "documents": ["cpu", "gpu memory"]}
    )
    assert ranked.data["documents"] == ["gpu memory", "cpu"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "UNAVAILABLE"), (404, "MODEL_NOT_FOUND"), (400, "INVALID_INPUT"), (401, "UNAUTHORIZED")],
)
def test_gateway_errors_map_to_unit_codes(status: int, code: str) -> None:
    engine = FakeEngine(EngineOptions(fail_statuses=[status]))
    response = call(engine, "inference.chat", {"model": "m", "messages": [{"content": "hi"}]})
    assert response.error is not None
    assert (response.error.code, response.error.details) == (code, {"status": status})
    assert "injected failure" in response.error.message


def test_an_unreachable_gateway_is_unavailable_and_named() -> None:
    response = call(FakeEngine(), "inference.models", {}, url="http://127.0.0.1:9")
    assert response.error is not None and response.error.code == "UNAVAILABLE"
    assert "http://127.0.0.1:9 could not be reached" in response.error.message


def test_models_lists_what_the_gateway_serves() -> None:
    response = call(FakeEngine(EngineOptions(models=("a", "b"))), "inference.models", {})
    assert [m["id"] for m in response.data["models"]] == ["a", "b"]


def test_voices_says_when_the_engine_does_not_list_them() -> None:
    response = call(FakeEngine(), "inference.voices", {"model": "tts"})
    assert response.data["voices"] == [] and "does not list its voices" in response.data["message"]


def test_bad_audio_is_invalid_input() -> None:
    response = call(FakeEngine(), "inference.transcribe", {"model": "w", "audio": "not base64!"})
    assert response.error is not None and response.error.code == "INVALID_INPUT"
