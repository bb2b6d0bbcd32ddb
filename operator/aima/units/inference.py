"""inference.*: calls of the served models through the OpenAI-compatible gateway.

chat, complete, embed, transcribe, synthesize, rerank and retrieve call the gateway at
`Settings.gateway_url`; models and voices list what it offers. Pipeline steps are these units, so
their output field names are what `${steps.<id>.<field>}` reads (text, content, embedding, audio,
passages, context, ...). Audio travels as base64 (marked `contentEncoding: base64` in the schemas,
which is how pipelines know to keep it out of a PipelineRun's status).
"""

from __future__ import annotations

import base64
import math
from typing import Annotated, Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field

from aima.api.common import ApiModel
from aima.units.core import Context, Example, Input, query
from aima.units.errors import ErrorCode, UnitError
from aima.units.gateway_client import decode_audio, open_gateway

__all__ = ["UNITS", "ChatInput", "ChatMessage", "SpeechOutput", "chat_body", "speech_body"]

ModelName = Annotated[str, Field(min_length=1, max_length=256)]
_SILENCE = "data:audio/wav;base64,UklGRsQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YaAAAAA" + "A" * 213
"""10 ms of silence, as a WAV data: URL (the example of inference.transcribe)."""
_AUDIO_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}


class Usage(ApiModel):
    """Tokens used by a call, as the engine reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessage(ApiModel):
    """One message of a conversation."""

    role: Literal["system", "user", "assistant", "tool"] = "user"
    content: str = Field(max_length=1_000_000)


class ChatInput(Input):
    """A chat completion request."""

    model: ModelName
    """The model to ask, by its served name (model.list / inference.models)."""
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    """The conversation so far."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Most tokens to generate."""
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=8)
    """Sequences that end the answer."""


class ChatOutput(ApiModel):
    """The model's answer."""

    content: str
    """The answer's text."""
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()


class CompleteInput(Input):
    """A text completion request."""

    model: ModelName
    prompt: str = Field(max_length=1_000_000)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)


class CompleteOutput(ApiModel):
    """The continuation."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Usage()


class EmbedInput(Input):
    """Texts to embed."""

    model: ModelName
    input: str | list[str] = Field(max_length=2048)
    """One text or a list of texts."""


class EmbedOutput(ApiModel):
    """Embeddings, one per input text."""

    embedding: list[float]
    """The first (or only) input's vector."""
    embeddings: list[list[float]]
    """Every input's vector, in input order."""
    dimensions: int


class TranscribeInput(Input):
    """Speech to transcribe."""

    model: ModelName
    audio: str = Field(min_length=1)
    """The audio: base64, a data: URL or an http(s) URL (wav, mp3, ogg, flac; at most 25 MiB)."""
    language: str | None = Field(default=None, max_length=16)
    """Language of the speech (ISO 639-1, such as en); detected when empty."""
    prompt: str | None = Field(default=None, max_length=4096)
    """Text that guides the transcription (names, spelling)."""
    filename: str = Field(default="audio.wav", max_length=255)
    """File name sent with the upload; engines guess the format from its extension."""


class TranscribeOutput(ApiModel):
    """What was said."""

    text: str
    language: str | None = None
    duration: float | None = None
    """Seconds of audio, when the engine reports it."""


class SynthesizeInput(Input):
    """Text to speak."""

    model: ModelName
    text: str = Field(min_length=1, max_length=100_000)
    voice: str | None = Field(default=None, max_length=128)
    """The voice (inference.voices lists them); the engine's default when empty."""
    format: Literal["wav", "mp3", "opus", "flac", "pcm"] = "wav"
    speed: float | None = Field(default=None, ge=0.25, le=4)


class SpeechOutput(ApiModel):
    """Spoken audio."""

    audio: str = Field(json_schema_extra={"contentEncoding": "base64", "contentMediaType": "audio/*"})
    """The audio, base64-encoded."""
    content_type: str
    """Its media type, such as audio/wav."""
    bytes: int
    """Its size in bytes."""


class RerankInput(Input):
    """Passages to order by relevance to a query."""

    model: ModelName
    query: str = Field(max_length=100_000)
    documents: list[str] = Field(min_length=1, max_length=1024)
    top_n: int | None = Field(default=None, ge=1, le=1024)
    """Keep only the best this many."""


class Ranked(ApiModel):
    """One passage and its score."""

    index: int
    """Its position in the input."""
    score: float
    text: str


class RerankOutput(ApiModel):
    """Passages, best first."""

    results: list[Ranked]
    documents: list[str]
    """The passages' texts, best first (handy in a prompt)."""


class Document(ApiModel):
    """One passage of a document set."""

    id: str = Field(min_length=1, max_length=128)
    """What answers cite, such as a file name or a section number."""
    text: str = Field(min_length=1, max_length=100_000)
    title: str | None = Field(default=None, max_length=512)


class RetrieveInput(Input):
    """A question and a small document set to search by embedding similarity."""

    model: ModelName
    """The embedding model."""
    documents: list[Document] = Field(min_length=1, max_length=512)
    query: str | None = Field(default=None, max_length=100_000)
    """The question; embedded here unless `embedding` is given."""
    embedding: list[float] | None = Field(default=None, max_length=16384)
    """The question's embedding, from an earlier inference.embed step."""
    top_k: int = Field(default=3, ge=1, le=64)
    """How many passages to return."""


class Passage(ApiModel):
    """A retrieved passage."""

    id: str
    title: str | None = None
    text: str
    score: float
    """Cosine similarity to the question."""


class RetrieveOutput(ApiModel):
    """The passages most similar to the question."""

    passages: list[Passage]
    context: str
    """The passages as numbered lines "[id] text", ready for a prompt that asks for citations."""
    citations: list[str]
    """The passages' ids, best first."""


class NoInput(Input):
    """No input."""


class VoicesInput(Input):
    """Which speech model's voices to list."""

    model: str | None = Field(default=None, max_length=256)
    """The speech model; the gateway needs it to know which engine to ask."""


class ModelInfo(ApiModel):
    """A model the gateway serves."""

    id: str
    owned_by: str | None = None


class ModelsOutput(ApiModel):
    """Models the gateway routes to."""

    models: list[ModelInfo]


class VoicesOutput(ApiModel):
    """Voices of the speech engines."""

    voices: list[str]
    message: str | None = None
    """Why the list is empty, such as an engine that does not list its voices."""


def chat_body(request: ChatInput) -> dict[str, Any]:
    """The OpenAI request body of a chat input."""
    return request.model_dump(mode="json", by_alias=False, exclude_none=True)


@query(
    "inference.chat",
    description="Ask a chat model (OpenAI chat completions through the gateway); returns the answer.",
    examples=[
        Example(
            description="One question",
            input={"model": "qwen3-8b", "messages": [{"role": "user", "content": "What is a GPU?"}]},
        )
    ],
)
async def chat(context: Context, request: ChatInput) -> ChatOutput:
    async with open_gateway(context.http, context.settings) as gateway:
        reply = await gateway.post_json("/v1/chat/completions", chat_body(request))
    choice = _first_choice(reply)
    return ChatOutput(
        content=str((choice.get("message") or {}).get("content") or ""),
        model=reply.get("model"),
        finish_reason=choice.get("finish_reason"),
        usage=Usage.model_validate(reply.get("usage") or {}),
    )


@query(
    "inference.complete",
    description="Continue a text with a language model (OpenAI completions through the gateway).",
    examples=[Example(description="A continuation", input={"model": "qwen3-8b", "prompt": "Once upon"})],
)
async def complete(context: Context, request: CompleteInput) -> CompleteOutput:
    async with open_gateway(context.http, context.settings) as gateway:
        reply = await gateway.post_json(
            "/v1/completions", request.model_dump(by_alias=False, exclude_none=True)
        )
    choice = _first_choice(reply)
    return CompleteOutput(
        text=str(choice.get("text") or ""),
        finish_reason=choice.get("finish_reason"),
        usage=Usage.model_validate(reply.get("usage") or {}),
    )


@query(
    "inference.embed",
    description="Embed one text or a list of texts with an embedding model.",
    examples=[Example(description="One sentence", input={"model": "bge-m3", "input": "GPUs run models."})],
)
async def embed(context: Context, request: EmbedInput) -> EmbedOutput:
    vectors = await _embeddings(context, request.model, request.input)
    return EmbedOutput(embedding=vectors[0], embeddings=vectors, dimensions=len(vectors[0]))


@query(
    "inference.transcribe",
    description="Transcribe speech (OpenAI audio transcriptions through the gateway).",
    examples=[
        Example(
            description="A short WAV file as a data: URL (an http(s) URL or bare base64 work too)",
            input={"model": "faster-whisper-large-v3", "audio": _SILENCE, "language": "en"},
        )
    ],
)
async def transcribe(context: Context, request: TranscribeInput) -> TranscribeOutput:
    async with open_gateway(context.http, context.settings) as gateway:
        audio = await decode_audio(gateway, request.audio)
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=request.filename, content_type="application/octet-stream")
        form.add_field("model", request.model)
        form.add_field("response_format", "json")
        for name, value in (("language", request.language), ("prompt", request.prompt)):
            if value:
                form.add_field(name, value)
        reply = await gateway.post_form("/v1/audio/transcriptions", form)
    return TranscribeOutput.model_validate(reply | {"text": str(reply.get("text", "")).strip()})


def speech_body(request: SynthesizeInput) -> dict[str, Any]:
    """The OpenAI request body of a speech input."""
    body = {"model": request.model, "input": request.text, "response_format": request.format}
    return body | {k: v for k, v in (("voice", request.voice), ("speed", request.speed)) if v is not None}


@query(
    "inference.synthesize",
    description="Speak a text (OpenAI audio speech through the gateway); returns base64 audio.",
    examples=[
        Example(
            description="A WAV greeting", input={"model": "kokoro-82m", "text": "Hello!", "voice": "af_heart"}
        )
    ],
)
async def synthesize(context: Context, request: SynthesizeInput) -> SpeechOutput:
    async with open_gateway(context.http, context.settings) as gateway:
        audio, content_type = await gateway.post_bytes("/v1/audio/speech", speech_body(request))
    return speech_output(audio, content_type or _AUDIO_TYPES[request.format])


def speech_output(audio: bytes, content_type: str) -> SpeechOutput:
    """The output of synthesized audio."""
    return SpeechOutput(audio=base64.b64encode(audio).decode(), content_type=content_type, bytes=len(audio))


@query(
    "inference.rerank",
    description="Order passages by relevance to a query with a reranker model (best first).",
    examples=[
        Example(
            description="Pick the best of three",
            input={
                "model": "bge-reranker-v2-m3",
                "query": "GPU memory",
                "documents": ["a", "b", "c"],
                "topN": 1,
            },
        )
    ],
)
async def rerank(context: Context, request: RerankInput) -> RerankOutput:
    body: dict[str, Any] = {"model": request.model, "query": request.query, "documents": request.documents}
    if request.top_n is not None:
        body["top_n"] = request.top_n
    async with open_gateway(context.http, context.settings) as gateway:
        reply = await gateway.post_json("/v1/rerank", body)
    results = [
        Ranked(
            index=int(r["index"]),
            score=float(r.get("relevance_score", 0.0)),
            text=request.documents[int(r["index"])],
        )
        for r in reply.get("results", [])
        if 0 <= int(r.get("index", -1)) < len(request.documents)
    ]
    results.sort(key=lambda r: -r.score)
    return RerankOutput(results=results, documents=[r.text for r in results])


@query(
    "inference.retrieve",
    description="Find the passages of a small document set most similar to a question, by embedding "
    "similarity; returns them with a numbered context for prompts that cite sources.",
    examples=[
        Example(
            description="Search three passages",
            input={
                "model": "bge-m3",
                "query": "How much memory does the H100 have?",
                "documents": [
                    {"id": "h100", "text": "The H100 has 80 GB of HBM3."},
                    {"id": "a10", "text": "The A10 has 24 GB of GDDR6."},
                    {"id": "l4", "text": "The L4 has 24 GB of GDDR6."},
                ],
                "topK": 1,
            },
        )
    ],
)
async def retrieve(context: Context, request: RetrieveInput) -> RetrieveOutput:
    if request.embedding is None and not request.query:
        raise UnitError(ErrorCode.INVALID_INPUT, "inference.retrieve needs a query or an embedding")
    texts = [d.text for d in request.documents]
    vectors = await _embeddings(
        context, request.model, texts if request.embedding else [request.query or "", *texts]
    )
    question = request.embedding or vectors[0]
    scored = sorted(
        zip(request.documents, vectors[-len(texts) :], strict=True),
        key=lambda pair: -_cosine(question, pair[1]),
    )[: request.top_k]
    passages = [
        Passage(id=d.id, title=d.title, text=d.text, score=round(_cosine(question, v), 6)) for d, v in scored
    ]
    return RetrieveOutput(
        passages=passages,
        context="\n".join(f"[{p.id}] {p.text}" for p in passages),
        citations=[p.id for p in passages],
    )


@query(
    "inference.models",
    description="Models the gateway serves now (GET /v1/models).",
    examples=[Example(description="Every model", input={})],
)
async def models(context: Context, request: NoInput) -> ModelsOutput:
    async with open_gateway(context.http, context.settings) as gateway:
        reply = await gateway.get_json("/v1/models")
    return ModelsOutput(
        models=[ModelInfo(id=str(m["id"]), owned_by=m.get("owned_by")) for m in reply.get("data", [])]
    )


@query(
    "inference.voices",
    description="Voices of the speech engines (GET /v1/audio/voices).",
    examples=[Example(description="Voices of one model", input={"model": "kokoro-82m"})],
)
async def voices(context: Context, request: VoicesInput) -> VoicesOutput:
    path = "/v1/audio/voices" + (f"?model={quote(request.model, safe='')}" if request.model else "")
    async with open_gateway(context.http, context.settings) as gateway:
        try:
            reply = await gateway.get_json(path)
        except UnitError as failure:
            if (failure.details or {}).get("status") != 404:
                raise
            return VoicesOutput(
                voices=[],
                message="The speech engine does not list its voices (GET /v1/audio/voices answered 404); "
                "see its documentation for the voice names",
            )
    listed = reply.get("voices", reply.get("data", []))
    return VoicesOutput(
        voices=[str(v.get("id", v.get("name")) if isinstance(v, dict) else v) for v in listed]
    )


async def _embeddings(context: Context, model: str, texts: str | list[str]) -> list[list[float]]:
    async with open_gateway(context.http, context.settings) as gateway:
        reply = await gateway.post_json("/v1/embeddings", {"model": model, "input": texts})
    data = sorted(reply.get("data", []), key=lambda d: int(d.get("index", 0)))
    if not data:
        raise UnitError(ErrorCode.UNAVAILABLE, f"{model} returned no embeddings")
    return [[float(x) for x in d["embedding"]] for d in data]


def _first_choice(reply: dict[str, Any]) -> dict[str, Any]:
    choices = reply.get("choices") or []
    if not choices:
        raise UnitError(ErrorCode.UNAVAILABLE, "The model's reply had no choices")
    first: dict[str, Any] = choices[0]
    return first


def _cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"The question's embedding has {len(a)} dimensions, the documents' {len(b)}: use one model",
        )
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


UNITS = (chat, complete, embed, transcribe, synthesize, rerank, retrieve, models, voices)
