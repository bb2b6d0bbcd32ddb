"""Voice pipeline benchmark (not a test): time to the first audio byte, streamed against sequential.

Both modes answer the same spoken question with the same engine server (a fake speaking the engines'
OpenAI API with a model's pace: prefill delay, tokens at a fixed rate, speech streamed in chunks):

- sequential: transcribe, then a whole chat completion, then speech for the whole answer, one call
  after the other as a client would chain them; the clock stops at the first byte of the speech reply;
- streamed: `POST /api/v2/pipelines/voice-assistant/run` with `"stream": true` on the units' HTTP app;
  the clock stops at the first `pipeline.audio` event (a sentence spoken while the model still writes).

The Pipeline is the catalog's voice-assistant, served from memory rather than an API server, since
only the data path is measured.

    .venv/bin/python hack/bench/pipeline.py --runs 5 --tokens 120 --token-delay 0.03

"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from aima.doors.http import create_app
from aima.kube import KubeClient, Resource, resources
from aima.settings import Settings
from aima.units import Context, registry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from aima_testenv.engines import EngineOptions, FakeEngine, wav_bytes  # noqa: E402
from fakes.serving import running  # noqa: E402

VOICE = yaml.safe_load((ROOT / "catalog" / "pipelines" / "voice-assistant.yaml").read_text())
WORDS_PER_SENTENCE = 12


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ProseEngine(FakeEngine):
    """The fake engine, writing sentences (a full stop every few words) and taking time to transcribe."""

    def __init__(self, options: EngineOptions, *, asr_seconds: float) -> None:
        super().__init__(options)
        self.asr_seconds = asr_seconds

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        tokens: list[str],
        usage: dict[str, int] | None,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        return await super()._stream(request, head, _prose(tokens), usage, chat=chat)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], *, prompt_tokens: int, chat: bool = False
    ) -> web.StreamResponse:
        if body.get("stream"):
            return await super()._generate(request, body, prompt_tokens=prompt_tokens, chat=chat)
        reply = await super()._generate(request, body, prompt_tokens=prompt_tokens, chat=chat)
        assert isinstance(reply, web.Response) and reply.text is not None
        payload = json.loads(reply.text)
        message = payload["choices"][0]["message"]
        message["content"] = "".join(_prose(message["content"].split(" ")[:-1]))
        return web.json_response(payload)

    async def _transcription(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.asr_seconds)
        return await super()._transcription(request)


def _prose(tokens: list[str]) -> list[str]:
    words = [t.strip() for t in tokens]
    return [w + (". " if (i + 1) % WORDS_PER_SENTENCE == 0 else " ") for i, w in enumerate(words)]


class CatalogKube(KubeClient):
    """Serves the catalog's voice-assistant Pipeline instead of asking an API server."""

    async def get(
        self, resource: Resource, *, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        if resource == resources.PIPELINES and name == VOICE["metadata"]["name"]:
            return VOICE | {"metadata": VOICE["metadata"] | {"namespace": namespace}}
        return None

    async def list(
        self, resource: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return []  # no InferenceServices: every model goes to the engine


async def sequential(http: aiohttp.ClientSession, gateway: str, audio: bytes) -> tuple[float, float]:
    """Time to the first audio byte and to the last, chaining the three calls."""
    config = VOICE["spec"]["config"]
    started = time.perf_counter()
    form = aiohttp.FormData()
    form.add_field("file", audio, filename="question.wav")
    form.add_field("model", config["asrModel"])
    async with http.post(f"{gateway}/v1/audio/transcriptions", data=form) as response:
        question = (await response.json())["text"]
    messages = [{"role": "system", "content": config["systemPrompt"]}, {"role": "user", "content": question}]
    async with http.post(
        f"{gateway}/v1/chat/completions", json={"model": config["llmModel"], "messages": messages}
    ) as response:
        answer = (await response.json())["choices"][0]["message"]["content"]
    speech = {
        "model": config["ttsModel"],
        "input": answer,
        "voice": config["voice"],
        "response_format": "wav",
    }
    async with http.post(f"{gateway}/v1/audio/speech", json=speech) as response:
        await response.content.readany()
        first = time.perf_counter() - started
        await response.read()
    return first, time.perf_counter() - started


async def streamed(http: aiohttp.ClientSession, door: str, audio: bytes) -> tuple[float, float]:
    """Time to the first pipeline.audio event and to pipeline.completed, through the streaming door."""
    started, first = time.perf_counter(), float("nan")
    body = {"inputs": {"audio": base64.b64encode(audio).decode()}, "stream": True}
    async with http.post(f"{door}/api/v2/pipelines/voice-assistant/run", json=body) as response:
        if response.content_type != "text/event-stream":
            raise RuntimeError(f"the door refused the run: {await response.text()}")
        async for raw in response.content:
            line = raw.decode()
            if line.startswith("event: pipeline.audio") and first != first:
                first = time.perf_counter() - started
            if line.startswith("event: pipeline.failed"):
                raise RuntimeError(f"the run failed: {await response.text()}")
    return first, time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    options = EngineOptions(tokens=args.tokens, token_delay=args.token_delay, first_token_delay=args.prefill)
    engine = ProseEngine(options, asr_seconds=args.asr)
    audio = wav_bytes(seconds=2.0)
    async with engine.serve() as gateway, aiohttp.ClientSession() as http:
        settings = Settings(gateway_url=gateway, pipeline_require_services=False)
        kube = CatalogKube(server="http://127.0.0.1:9", session=http)
        context = Context(kube=kube, settings=settings, http=http)
        async with running(create_app(registry=registry(), context=context)) as door:
            await streamed(http, door, audio)  # warm up: imports, connections
            results: dict[str, list[tuple[float, float]]] = {"sequential": [], "streamed": []}
            for _ in range(args.runs):
                results["sequential"].append(await sequential(http, gateway, audio))
                results["streamed"].append(await streamed(http, door, audio))
    say(
        f"voice pipeline: {args.runs} runs each, {args.tokens} tokens at {args.token_delay * 1000:.0f} ms "
        f"after {args.prefill * 1000:.0f} ms prefill, ASR {args.asr * 1000:.0f} ms, "
        f"a sentence every {WORDS_PER_SENTENCE} words"
    )
    for mode, times in results.items():
        firsts, totals = [t[0] for t in times], [t[1] for t in times]
        say(
            f"  {mode:<10} first audio byte: median {statistics.median(firsts) * 1000:7.0f} ms "
            f"(min {min(firsts) * 1000:.0f}, max {max(firsts) * 1000:.0f}); "
            f"last byte: median {statistics.median(totals) * 1000:7.0f} ms"
        )
    ratio = statistics.median(t[0] for t in results["sequential"]) / statistics.median(
        t[0] for t in results["streamed"]
    )
    say(f"  streaming brings the first audio byte {ratio:.1f}x sooner")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=120, help="Tokens per answer.")
    parser.add_argument(
        "--token-delay", type=float, default=0.03, help="Seconds per token (and per audio chunk)."
    )
    parser.add_argument("--prefill", type=float, default=0.15, help="Seconds before the first token.")
    parser.add_argument("--asr", type=float, default=0.2, help="Seconds the transcription takes.")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
