"""Small real HTTP servers speaking the inference engines' OpenAI-compatible APIs (vLLM, SGLang,
llama.cpp, faster-whisper/speaches, a TTS engine, an embeddings/rerank engine), for tests,
benchmarks and the replicas `aima dev` answers with.

One :class:`FakeEngine` answers every endpoint; what differs between engines here (which paths a
real one serves) does not matter to callers that only need the wire format. Use it as::

    engine = FakeEngine(EngineOptions(name="replica-a", token_delay=0.01))
    async with engine.serve() as url:          # http://127.0.0.1:<free port>
        ...                                    # or engine.serve(host="127.1.0.7", port=8000)
    engine.stats.paths                         # what was asked, in order

Endpoints (all JSON unless said otherwise; the `model` field is echoed, never checked):

- ``GET /health`` (vLLM, speaches) and ``GET /v1/models`` (lists ``options.models``).
- ``GET /metrics``: Prometheus text under vLLM's names (``vllm:num_requests_running``,
  ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``, besides some histogram lines), from
  the completions in progress: with ``options.max_running`` at most that many generate at once and
  the rest wait, as in an engine's batch; ``options.extra_waiting`` and ``options.kv_cache_usage``
  add load from elsewhere. ``options.metrics = False`` answers 404. Scrapes are not counted in the
  stats.
- ``POST /v1/chat/completions`` and ``POST /v1/completions``: ``options.tokens`` tokens
  (``"tok0 tok1 ..."``); with ``"stream": true`` a Server-Sent-Events stream, one chunk per token,
  ``options.token_delay`` seconds apart, then ``data: [DONE]``. Usage is reported in the reply
  (and in a last chunk when ``stream_options.include_usage`` is set), as vLLM does.
- ``POST /v1/embeddings``: one deterministic vector of ``options.embedding_size`` per input.
- ``POST /v1/audio/transcriptions``: multipart (``file``, ``model``, optional
  ``response_format``); the text names the file's size and, for a WAV file, its duration.
- ``POST /v1/audio/speech``: a real WAV file (16-bit mono, 16 kHz, a tone whose length grows with
  the input), sent in ``options.audio_chunk`` byte chunks ``options.token_delay`` seconds apart.
- ``POST /v1/rerank`` (also ``/rerank``): ``{"results": [{"index", "relevance_score", ...}]}``,
  best first, scored by words shared with the query.

Every reply carries ``X-Fake-Engine: <options.name>`` so a test can tell which replica answered;
:class:`EngineStats` counts requests, requests in flight, and requests whose client went away
before the reply ended (``cancelled``). ``options.fail_statuses`` injects error replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import math
import struct
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["EngineOptions", "EngineStats", "FakeEngine", "wav_bytes"]

SAMPLE_RATE = 16000


@dataclass
class EngineOptions:
    """How the fake engine behaves; fields may be changed while it runs."""

    name: str = "fake-engine"
    """Reported in the X-Fake-Engine header of every reply (tells replicas apart)."""
    models: tuple[str, ...] = ("fake-model",)
    """Model ids listed by GET /v1/models."""
    tokens: int = 8
    """Tokens per completion."""
    token_delay: float = 0.0
    """Seconds between streamed tokens (and audio chunks); also the time per token of a non-streamed reply."""
    first_token_delay: float = 0.0
    """Extra seconds before the first token (prefill)."""
    embedding_size: int = 8
    """Length of each embedding vector."""
    audio_chunk: int = 4096
    """Bytes per chunk of streamed speech."""
    voices: tuple[str, ...] = ()
    """Voices listed by GET /v1/audio/voices (Kokoro's and speaches' route); none answers 404."""
    fail_statuses: list[int] = field(default_factory=list)
    """Answer the next requests with these statuses (one per request, consumed), OpenAI error JSON."""
    break_after_tokens: int | None = None
    """Close the connection after this many streamed tokens, as an engine that crashes mid-reply."""
    max_running: int = 0
    """Completions generated at once (the batch); more wait for a place. 0: no limit."""
    extra_waiting: int = 0
    """Requests reported waiting besides this engine's own (load from other clients)."""
    kv_cache_usage: float = 0.0
    """The KV-cache use reported, 0 to 1."""
    metrics: bool = True
    """Serve /metrics; False answers 404, as an engine without metrics."""


@dataclass
class EngineStats:
    """What the fake engine saw."""

    paths: list[str] = field(default_factory=list)
    """Paths of the requests, in order of arrival."""
    bodies: list[Any] = field(default_factory=list)
    """Parsed JSON bodies (or multipart form fields without files), in order of arrival."""
    headers: list[dict[str, str]] = field(default_factory=list)
    """Request headers, in order of arrival."""
    in_flight: int = 0
    """Requests being answered now."""
    peak_in_flight: int = 0
    """Most requests answered at once."""
    completed: int = 0
    """Replies sent in full."""
    cancelled: int = 0
    """Replies abandoned because the client went away."""
    running: int = 0
    """Completions generating now."""
    waiting: int = 0
    """Completions waiting for a place in the batch (``max_running``)."""

    @property
    def requests(self) -> int:
        """Requests received."""
        return len(self.paths)


class FakeEngine:
    """An aiohttp app answering the engines' OpenAI API; see the module docstring."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.stats = EngineStats()
        self._batch = asyncio.Condition()

    def app(self) -> web.Application:
        """A new aiohttp application serving this engine."""
        app = web.Application(client_max_size=64 * 2**20, middlewares=[self._track])
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._transcription)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_get("/v1/audio/voices", self._voices)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/rerank", self._rerank)
        return app

    @contextlib.asynccontextmanager
    async def serve(self, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on ``host:port`` (a free port when 0) in this loop; yield the base URL.

        A client that disconnects cancels its handler (as it does in the engines), which the stats
        count as ``cancelled``.
        """
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            yield f"http://{host}:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()

    # -- bookkeeping -----------------------------------------------------------------------------

    @web.middleware
    async def _track(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/metrics":
            response: web.StreamResponse = await handler(request)
            return response
        self.stats.paths.append(request.path)
        self.stats.headers.append(dict(request.headers))
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        try:
            if self.options.fail_statuses and request.method == "POST":
                return _error(self.options.fail_statuses.pop(0), "injected failure")
            response = await handler(request)
            if not response.prepared:  # streamed replies set it before their headers went out
                response.headers["X-Fake-Engine"] = self.options.name
            self.stats.completed += 1
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1

    async def _json(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.stats.bodies.append(body)
        return body

    # -- endpoints -------------------------------------------------------------------------------

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="")

    async def _models(self, _: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.options.models]
        return web.json_response({"object": "list", "data": data})

    async def _voices(self, _: web.Request) -> web.Response:
        if not self.options.voices:
            raise web.HTTPNotFound(text='{"detail": "Not Found"}', content_type="application/json")
        return web.json_response({"voices": list(self.options.voices)})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return await self._generate(request, body, prompt_tokens=prompt, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        return await self._generate(request, body, prompt_tokens=len(str(body.get("prompt", "")).split()))

    async def _generate(
        self, request: web.Request, body: dict[str, Any], *, prompt_tokens: int, chat: bool = False
    ) -> web.StreamResponse:
        tokens = [f"tok{i} " for i in range(min(self.options.tokens, int(body.get("max_tokens") or 10**6)))]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        head = {
            "id": f"cmpl-{self.options.name}-{self.stats.requests}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
        }
        async with self._place_in_batch():
            await asyncio.sleep(self.options.first_token_delay)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return await self._stream(request, head, tokens, usage if include_usage else None, chat=chat)
            await asyncio.sleep(self.options.token_delay * len(tokens))
        text = "".join(tokens)
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        reply = head | {"choices": [{"index": 0, **choice, "finish_reason": "length"}], "usage": usage}
        return web.json_response(reply)

    @contextlib.asynccontextmanager
    async def _place_in_batch(self) -> AsyncIterator[None]:
        """Wait while ``max_running`` completions generate; count this one as running until it ends."""
        async with self._batch:
            self.stats.waiting += 1
            try:
                await self._batch.wait_for(
                    lambda: not self.options.max_running or self.stats.running < self.options.max_running
                )
            finally:
                self.stats.waiting -= 1
            self.stats.running += 1
        try:
            yield
        finally:
            async with self._batch:
                self.stats.running -= 1
                self._batch.notify()

    async def _metrics(self, _: web.Request) -> web.Response:
        if not self.options.metrics:
            raise web.HTTPNotFound()
        labels = f'{{engine="0",model_name="{self.options.models[0]}"}}'
        gauges = {
            "vllm:num_requests_running": (
                "Number of requests in model execution batches.",
                self.stats.running,
            ),
            "vllm:num_requests_waiting": (
                "Number of requests waiting to be processed.",
                self.stats.waiting + self.options.extra_waiting,
            ),
            "vllm:kv_cache_usage_perc": (
                "KV-cache usage. 1 means 100 percent usage.",
                self.options.kv_cache_usage,
            ),
        }
        lines = []
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{labels} {float(value)}"]
        lines += [  # what the scraper must read past: a histogram, as vLLM exports many
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            f'vllm:time_to_first_token_seconds_bucket{labels[:-1]},le="0.1"}} 0.0',
            f'vllm:time_to_first_token_seconds_bucket{labels[:-1]},le="+Inf"}} 0.0',
            f"vllm:time_to_first_token_seconds_count{labels} 0.0",
            f"vllm:time_to_first_token_seconds_sum{labels} 0.0",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")

    async def _stream(
        self,
        request: web.Request,
        head: dict[str, Any],
        tokens: list[str],
        usage: dict[str, int] | None,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        head = head | {"object": "chat.completion.chunk" if chat else "text_completion"}
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.headers["X-Fake-Engine"] = self.options.name
        await response.prepare(request)
        for index, token in enumerate(tokens):
            if index == self.options.break_after_tokens and request.transport is not None:
                request.transport.close()
                return response
            if index:
                await asyncio.sleep(self.options.token_delay)
            last = index == len(tokens) - 1
            delta = {"delta": {"content": token}} if chat else {"text": token}
            choice = {"index": 0, **delta, "finish_reason": "length" if last else None}
            await response.write(_event(head | {"choices": [choice]}))
        if usage is not None:
            await response.write(_event(head | {"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text), self.options.embedding_size)}
            for i, text in enumerate(inputs)
        ]
        words = sum(len(str(text).split()) for text in inputs)
        usage = {"prompt_tokens": words, "total_tokens": words}
        return web.json_response({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    async def _transcription(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _error(400, "multipart field 'file' is required")
        audio = upload.file.read()
        self.stats.bodies.append({k: v for k, v in form.items() if isinstance(v, str)})
        text = f"transcribed {len(audio)} bytes from {upload.filename}"
        duration = _wav_duration(audio)
        if form.get("response_format") == "text":
            return web.Response(text=text)
        reply: dict[str, Any] = {"text": text}
        if form.get("response_format") == "verbose_json":
            reply |= {"task": "transcribe", "language": form.get("language") or "en", "duration": duration}
        return web.json_response(reply)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        audio = wav_bytes(seconds=0.05 * max(1, len(str(body.get("input", "")).split())))
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.headers["X-Fake-Engine"] = self.options.name
        await response.prepare(request)
        step = self.options.audio_chunk
        for start in range(0, len(audio), step):
            if start:
                await asyncio.sleep(self.options.token_delay)
            await response.write(audio[start : start + step])
        await response.write_eof()
        return response

    async def _rerank(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        query = set(str(body.get("query", "")).lower().split())
        documents = [str(d) for d in body.get("documents", [])]
        scored = [
            {"index": i, "relevance_score": len(query & set(d.lower().split())) / max(1, len(query))}
            for i, d in enumerate(documents)
        ]
        scored.sort(key=lambda r: -float(r["relevance_score"]))
        top = body.get("top_n") or len(scored)
        results = [r | {"document": {"text": documents[int(r["index"])]}} for r in scored[:top]]
        return web.json_response(
            {"id": f"rerank-{self.options.name}", "model": body.get("model"), "results": results}
        )


def wav_bytes(*, seconds: float, frequency: float = 440.0) -> bytes:
    """A WAV file: 16-bit mono PCM at 16 kHz holding a tone of ``seconds``."""
    frames = int(SAMPLE_RATE * seconds)
    samples = (int(12000 * math.sin(2 * math.pi * frequency * n / SAMPLE_RATE)) for n in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


def _wav_duration(audio: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(audio), "rb") as reader:
            return reader.getnframes() / reader.getframerate()
    except (wave.Error, EOFError):
        return None


def _vector(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255, 6) for i in range(size)]


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _error(status: int, message: str) -> web.Response:
    error = {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error"}
    return web.json_response({"error": error | {"code": status}}, status=status)


def failing_models(*models: str) -> Middleware:
    """A middleware making chat requests for these models fail with 503, as a crashed engine does."""

    @web.middleware
    async def fail(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/v1/chat/completions" and (await request.json()).get("model") in models:
            error = {"message": "engine crashed", "type": "server_error", "code": 503}
            return web.json_response({"error": error}, status=503)
        response: web.StreamResponse = await handler(request)
        return response

    return fail


def main() -> None:
    """Run one fake engine on a port, as a pod's program: ``python engines.py --port 8000 --model
    tiny``. Stands in for a real engine where none runs (the real-node tests of the platform's own
    pods, in images.sh's fake-engine image); answers until killed. Run as a script, outside this
    package, so it imports nothing but the standard library and aiohttp."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", action="append", default=[], help="a model id /v1/models lists")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before it listens")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one access line per request
    time.sleep(args.startup_delay)
    options = EngineOptions(models=tuple(args.model) or ("fake-model",), tokens=args.tokens)
    # A pod's program: it listens on every address of the pod.
    web.run_app(FakeEngine(options).app(), host="0.0.0.0", port=args.port, print=None)  # noqa: S104


if __name__ == "__main__":
    main()
