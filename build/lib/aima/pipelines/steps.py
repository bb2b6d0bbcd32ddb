"""Step runners on the unit registry: every step is one unit call through the same envelope the doors
use; chat steps stream, and a chat step whose answer a synthesize step speaks is spoken sentence by
sentence while the model still writes (the voice assistant's low first-audio latency)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from aima.api.pipeline import PipelineSpec, PipelineStep
from aima.domain.pipeline import speech_fusions
from aima.domain.pipeline_refs import resolve
from aima.pipelines.executor import Emit, Event, EventType, StepFailure
from aima.pipelines.speech import SentenceSplitter, join_audio
from aima.units.core import Context, Registry
from aima.units.envelope import Request, execute
from aima.units.errors import ErrorCode, UnitError
from aima.units.gateway_client import Gateway, open_gateway
from aima.units.inference import ChatInput, ChatOutput, SynthesizeInput, chat_body, speech_body, speech_output

__all__ = ["StreamingSteps", "UnitSteps"]

M = TypeVar("M", ChatInput, SynthesizeInput)


@dataclass(frozen=True)
class UnitSteps:
    """Runs a step as one call of its unit."""

    registry: Registry
    context: Context

    async def __call__(self, step: PipelineStep, inputs: dict[str, Any]) -> dict[str, Any]:
        response = await execute(self.registry, self.context, Request(unit=step.unit, input=inputs))
        if response.error is not None:
            raise StepFailure(response.error.code, response.error.message)
        data: dict[str, Any] = response.data
        return data


async def _ignore(_: Event) -> None:
    return None


@dataclass
class StreamingSteps:
    """Runs steps through the units, streaming chat answers and speaking them as they come.

    One instance serves one run: it resolves a fused synthesize step's other inputs (voice, model)
    from the run's input and config before the chat has finished.
    """

    units: UnitSteps
    spec: PipelineSpec
    inputs: Mapping[str, Any]
    config: Mapping[str, Any]
    emit: Emit = _ignore
    _fusions: dict[str, PipelineStep] = field(init=False)
    _speech: dict[str, asyncio.Task[dict[str, Any]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._fusions = speech_fusions(self.spec)

    async def __call__(self, step: PipelineStep, inputs: dict[str, Any]) -> dict[str, Any]:
        if step.id in self._speech:  # spoken while its chat step streamed
            return await self._speech.pop(step.id)
        if step.unit == "inference.chat":
            return await self._chat(step, inputs)
        output = await self.units(step, inputs)
        if step.unit == "inference.synthesize":
            chunk = {"index": 0, "contentType": output["contentType"], "audio": output["audio"]}
            await self.emit(Event(EventType.AUDIO, step=step.id, data=chunk))
        return output

    def close(self) -> None:
        """Stop speech that no step will collect (the run ended early)."""
        for task in self._speech.values():
            task.cancel()

    async def _chat(self, step: PipelineStep, inputs: dict[str, Any]) -> dict[str, Any]:
        request = _validated(ChatInput, inputs)
        speaker = self._fusions.get(step.id)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        if speaker is not None:
            self._speech[speaker.id] = asyncio.create_task(self._speak(speaker, sentences))
        splitter, parts = SentenceSplitter(), []
        try:
            async with open_gateway(self.units.context.http, self.units.context.settings) as gateway:
                async for delta in gateway.stream_chat(chat_body(request)):
                    parts.append(delta)
                    await self.emit(Event(EventType.DELTA, step=step.id, data={"text": delta}))
                    for sentence in splitter.feed(delta):
                        sentences.put_nowait(sentence)
        except UnitError as failure:
            self._stop_speaking(speaker)
            raise StepFailure(failure.code, failure.message) from None
        except BaseException:
            self._stop_speaking(speaker)
            raise
        if rest := splitter.flush():
            sentences.put_nowait(rest)
        sentences.put_nowait(None)
        output = ChatOutput(content="".join(parts), model=request.model, finish_reason="stop")
        return output.model_dump(mode="json", by_alias=True, exclude_none=True)

    def _stop_speaking(self, speaker: PipelineStep | None) -> None:
        if speaker is not None and (task := self._speech.pop(speaker.id, None)) is not None:
            task.cancel()

    async def _speak(self, step: PipelineStep, sentences: asyncio.Queue[str | None]) -> dict[str, Any]:
        others = resolve({k: v for k, v in step.inputs.items() if k != "text"}, self._scope())
        clips: list[bytes] = []
        content_type = "audio/wav"
        async with open_gateway(self.units.context.http, self.units.context.settings) as gateway:
            while (sentence := await sentences.get()) is not None:
                request = _validated(SynthesizeInput, {**others, "text": sentence})
                clip, content_type = await _speech(gateway, request)
                chunk = {"index": len(clips), "contentType": content_type, "text": sentence}
                clips.append(clip)
                chunk["audio"] = base64.b64encode(clip).decode()
                await self.emit(Event(EventType.AUDIO, step=step.id, data=chunk))
        if not clips:
            raise StepFailure(ErrorCode.INVALID_INPUT, "the chat answer was empty: nothing to speak")
        return speech_output(join_audio(clips), content_type).model_dump(mode="json", by_alias=True)

    def _scope(self) -> dict[str, Any]:
        return {"input": dict(self.inputs), "config": self.spec.config | dict(self.config)}


async def _speech(gateway: Gateway, request: SynthesizeInput) -> tuple[bytes, str]:
    try:
        return await gateway.post_bytes("/v1/audio/speech", speech_body(request))
    except UnitError as failure:
        raise StepFailure(failure.code, failure.message) from None


def _validated(model: type[M], inputs: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(inputs)
    except ValidationError as invalid:
        first = invalid.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StepFailure(ErrorCode.INVALID_INPUT, f"{where}: {first['msg']}") from None
