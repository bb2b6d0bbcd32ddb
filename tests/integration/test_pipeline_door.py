"""The streaming door `POST /api/v2/pipelines/{name}/run` on the units' HTTP app, with the Pipeline in
the real API server and a real engine server as the gateway: the voice assistant streams its
transcript, tokens and sentence audio (the first audio before the model has finished), the
synchronous form returns everything in the envelope, and refusals are explained."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aima.doors.http import create_app
from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, registry
from aima_testenv import ControlPlane
from aima_testenv.engines import EngineOptions, FakeEngine, wav_bytes
from fakes.serving import running

pytestmark = pytest.mark.integration

VOICE = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "catalog/pipelines/voice-assistant.yaml").read_text()
)
AUDIO = base64.b64encode(wav_bytes(seconds=0.5)).decode()
Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def serve_door(plane: ControlPlane, namespace: str, engine: FakeEngine, scenario: Scenario) -> None:
    """Run `scenario` against the HTTP door of this namespace, the engine standing in for the gateway."""

    async def go() -> None:
        kube = await connect(kubeconfig=plane.kubeconfig)
        try:
            async with engine.serve() as gateway, aiohttp.ClientSession() as http:
                settings = Settings(gateway_url=gateway, pipeline_require_services=False)
                context = Context(kube=kube, settings=settings, namespace=namespace, http=http)
                async with running(create_app(registry=registry(), context=context)) as url:
                    await scenario(http, url)
        finally:
            await kube.close()

    asyncio.run(go())


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The Server-Sent Events of a response, as (type, data)."""
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


@pytest.fixture
def voice(aima_crds: ControlPlane, namespace: str) -> ControlPlane:
    aima_crds.apply([VOICE | {"metadata": VOICE["metadata"] | {"namespace": namespace}}])
    return aima_crds


def test_the_voice_assistant_streams_audio_before_the_answer_is_complete(
    voice: ControlPlane, namespace: str
) -> None:
    # 80 tokens 20 ms apart: sentences are cut at ~200 characters, so speech starts mid-answer.
    engine = FakeEngine(EngineOptions(tokens=80, token_delay=0.02))
    seen: list[tuple[str, dict[str, Any]]] = []

    async def scenario(http: aiohttp.ClientSession, url: str) -> None:
        body = {"inputs": {"audio": AUDIO}, "stream": True}
        async with http.post(f"{url}/api/v2/pipelines/voice-assistant/run", json=body) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            seen.extend([event async for event in events(response)])

    serve_door(voice, namespace, engine, scenario)
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "pipeline.started" and kinds[-1] == "pipeline.completed"
    transcript = next(d for k, d in seen if k == "pipeline.step_completed" and d["step"] == "transcribe")
    assert transcript["output"]["text"].startswith("transcribed")
    assert kinds.index("pipeline.step_completed") < kinds.index("pipeline.delta")  # transcript first
    deltas = [i for i, k in enumerate(kinds) if k == "pipeline.delta"]
    audio = [(i, d) for i, (k, d) in enumerate(seen) if k == "pipeline.audio"]
    assert len(deltas) == 80 and len(audio) >= 2
    assert audio[0][0] < deltas[-1], "the first sentence must be spoken before the model finishes"
    for _, chunk in audio:
        with wave.open(io.BytesIO(base64.b64decode(chunk["audio"]))) as reader:
            assert reader.getnframes() > 0
    assert "".join(d["text"] for _, d in audio).replace(" ", "") == "".join(f"tok{i}" for i in range(80))
    outputs = seen[-1][1]["outputs"]
    assert outputs["answer"].startswith("tok0 tok1") and outputs["audio"]["streamed"] is True


def test_the_synchronous_door_returns_every_output(voice: ControlPlane, namespace: str) -> None:
    async def scenario(http: aiohttp.ClientSession, url: str) -> None:
        body = {"inputs": {"audio": AUDIO}, "config": {"voice": "af_bella"}}
        async with http.post(f"{url}/api/v2/pipelines/voice-assistant/run", json=body) as response:
            reply = await response.json()
        assert reply["success"], reply
        data = reply["data"]
        assert data["phase"] == "Succeeded" and [s["phase"] for s in data["steps"]] == ["Succeeded"] * 3
        with wave.open(io.BytesIO(base64.b64decode(data["outputs"]["audio"]))) as reader:
            assert reader.getframerate() == 16000

    engine = FakeEngine(EngineOptions(tokens=30))
    serve_door(voice, namespace, engine, scenario)
    speech = [b for b in engine.stats.bodies if isinstance(b, dict) and "voice" in b]
    assert speech and all(b["voice"] == "af_bella" for b in speech)


def test_the_door_explains_refusals(voice: ControlPlane, namespace: str) -> None:
    async def scenario(http: aiohttp.ClientSession, url: str) -> None:
        async with http.post(f"{url}/api/v2/pipelines/voice-assistant/run", json={"inputs": {}}) as response:
            reply = await response.json()
            assert response.status == 400
            assert reply["error"] == {
                "code": "INVALID_INPUT",
                "message": "the run lacks required inputs: audio",
            }
        async with http.post(f"{url}/api/v2/pipelines/nope/run", json={"inputs": {}}) as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "PIPELINE_NOT_FOUND"

    serve_door(voice, namespace, FakeEngine(), scenario)


def test_a_client_that_goes_away_cancels_the_run(voice: ControlPlane, namespace: str) -> None:
    engine = FakeEngine(EngineOptions(tokens=400, token_delay=0.05))

    async def scenario(http: aiohttp.ClientSession, url: str) -> None:
        body = {"inputs": {"audio": AUDIO}, "stream": True}
        async with http.post(f"{url}/api/v2/pipelines/voice-assistant/run", json=body) as response:
            async for kind, _ in events(response):
                if kind == "pipeline.delta":
                    break  # hang up mid-answer
        for _ in range(100):
            if engine.stats.cancelled:
                break
            await asyncio.sleep(0.1)

    serve_door(voice, namespace, engine, scenario)
    assert engine.stats.cancelled >= 1
