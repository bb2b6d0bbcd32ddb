"""`POST /api/v2/pipelines/{name}/run`: run a Pipeline in this process, synchronously or as a stream.

Body: `{"namespace"?, "inputs": {...}, "config"?: {...}, "stream"?: bool}`. The Pipeline is read from
the API server and run here through the unit registry (the gateway does the inference); the run is
not recorded as a PipelineRun (create one, or call pipeline.run, for a recorded run).

- Without streaming (the default): the unit envelope `{success, data, error, meta}`, where `data` is
  `{phase, reason, message, failedStep, steps: [...], outputs}` and audio outputs are base64 in full.
- With `"stream": true` or `Accept: text/event-stream`: Server-Sent Events, `event: <type>` and
  `data: <json>`, in this order for the voice assistant: `pipeline.started`, then per step
  `pipeline.step_started` / `pipeline.step_completed` (the transcript arrives as the transcribe
  step's output as soon as ASR answers), `pipeline.delta` for each LLM token, `pipeline.audio` for
  each spoken sentence (`{index, text, contentType, audio: base64}`, a complete WAV per sentence,
  sent while the model still writes), and last `pipeline.completed` or `pipeline.failed`. In the
  stream, audio is sent only in `pipeline.audio` events; outputs and step outputs say
  `{bytes, contentType, streamed: true}` in its place. A client that disconnects cancels the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from aima.api.pipeline import Pipeline
from aima.domain.pipeline import binary_fields, step_models, step_services
from aima.domain.pipeline_status import blocking, services_text
from aima.doors.wire import door_meta, read_json, refuse, reply
from aima.kube import KubeError, resources
from aima.pipelines.executor import Emit, Event, EventType, RunResult
from aima.pipelines.start import execute, not_startable
from aima.units.core import Context, Registry
from aima.units.envelope import Response, from_kube_error
from aima.units.errors import ErrorCode, UnitError

__all__ = ["RunRequest", "add_pipeline_routes"]


class RunRequest(BaseModel):
    """The body of a run request."""

    namespace: str | None = Field(default=None, max_length=63)
    inputs: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class _Door:
    registry: Registry
    context: Context


_DOOR: Final = web.AppKey("pipeline_door", _Door)
_UNIT = "pipeline.run"
"""The unit a run through this door stands for, named in its replies' meta."""


def add_pipeline_routes(app: web.Application, *, registry: Registry, context: Context) -> None:
    """Serve `POST /api/v2/pipelines/{name}/run` on `app`."""
    app[_DOOR] = _Door(registry=registry, context=context)
    app.router.add_post("/api/v2/pipelines/{name}/run", _run)


async def _run(request: web.Request) -> web.StreamResponse:
    door, started = request.app[_DOOR], time.monotonic()
    try:
        body = RunRequest.model_validate(await read_json(request, empty={}))
        namespace = door.context.namespace_of(body.namespace)
        if not door.context.allows(namespace):
            raise UnitError(ErrorCode.FORBIDDEN, f"Namespace {namespace} is not allowed for this caller")
        pipeline = await _startable(door, request.match_info["name"], namespace, body)
    except ValidationError as invalid:
        message = f"Invalid body: {invalid.errors()[0]['msg']}"
        return refuse(UnitError(ErrorCode.INVALID_INPUT, message), unit=_UNIT, started=started)
    except UnitError as failure:
        return refuse(failure, unit=_UNIT, started=started)
    except KubeError as refused:
        return refuse(from_kube_error(refused), unit=_UNIT, started=started)
    context = Context(
        kube=door.context.kube,
        settings=door.context.settings,
        namespace=namespace,
        namespaces=door.context.namespaces,
        http=door.context.http,
    )
    if body.stream or "text/event-stream" in request.headers.get("Accept", ""):
        return await _stream(request, door, context, pipeline, body)
    result = await _execute(door, context, pipeline, body, emit=_quiet, cancel=None)
    return _result(result, started)


async def _startable(door: _Door, name: str, namespace: str, body: RunRequest) -> Pipeline:
    """The Pipeline, once it is known to be valid, its inputs complete and its services ready."""
    found = await door.context.kube.get(resources.PIPELINES, name=name, namespace=namespace)
    if found is None:
        raise UnitError(
            ErrorCode.PIPELINE_NOT_FOUND,
            f"Pipeline {name} not found in namespace {namespace}; pipeline.list lists them",
        )
    pipeline = Pipeline.model_validate(found)
    if (refused := not_startable(pipeline, door.registry, body.inputs, body.config)) is not None:
        details = {"problems": [p.model_dump(exclude_none=True) for p in refused.problems]}
        message = refused.message[0].upper() + refused.message[1:] if refused.problems else refused.message
        raise UnitError(ErrorCode.INVALID_INPUT, message, details if refused.problems else None)
    models = step_models(pipeline.spec, pipeline.spec.config | body.config)
    listed = await door.context.kube.list(resources.INFERENCE_SERVICES, namespace=namespace) if models else []
    required = door.context.settings.pipeline_require_services
    if waiting := blocking(step_services(models, listed), require_services=required):
        raise UnitError(ErrorCode.UNAVAILABLE, f"Services are not ready: {services_text(waiting)}")
    return pipeline


async def _execute(
    door: _Door,
    context: Context,
    pipeline: Pipeline,
    body: RunRequest,
    *,
    emit: Emit,
    cancel: asyncio.Event | None,
) -> RunResult:
    return await execute(
        pipeline.spec,
        context,
        door.registry,
        inputs=body.inputs,
        config=body.config,
        emit=emit,
        cancel=cancel,
        timeout=context.settings.pipeline_max_run_seconds,
    )


async def _stream(
    request: web.Request, door: _Door, context: Context, pipeline: Pipeline, body: RunRequest
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    cancel = asyncio.Event()
    binary = _binary_outputs(door.registry, pipeline)

    async def emit(event: Event) -> None:
        if cancel.is_set():
            return
        try:
            await response.write(_sse(event, binary))
        except (ConnectionResetError, RuntimeError):  # the client went away: stop the run
            cancel.set()

    await _execute(door, context, pipeline, body, emit=emit, cancel=cancel)
    if not cancel.is_set():
        await response.write_eof()
    return response


async def _quiet(_: Event) -> None:
    return None


def _binary_outputs(registry: Registry, pipeline: Pipeline) -> dict[str, frozenset[str]]:
    units = {step.id: registry.get(step.unit) for step in pipeline.spec.steps}
    return {step: binary_fields(unit.output) for step, unit in units.items() if unit is not None}


def _sse(event: Event, binary: Mapping[str, frozenset[str]]) -> bytes:
    data: dict[str, Any] = {"step": event.step} if event.step else {}
    payload = dict(event.data)
    if event.type is EventType.STEP_COMPLETED and event.step:
        payload["output"] = _without_audio(payload["output"], binary.get(event.step, frozenset()))
    elif event.type in (EventType.COMPLETED, EventType.FAILED):
        payload["outputs"] = {k: _summarized(v) for k, v in payload["outputs"].items()}
    text = json.dumps(data | payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event.type}\ndata: {text}\n\n".encode()


def _without_audio(output: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: _summarized(output) if k in fields else v for k, v in output.items()}


def _summarized(value: Any) -> Any:
    """A speech output (or its audio) as its size and type: the audio went out as pipeline.audio."""
    if isinstance(value, Mapping) and "audio" in value and "contentType" in value:
        return {"bytes": value.get("bytes"), "contentType": value["contentType"], "streamed": True}
    if isinstance(value, str) and len(value) > 4096:
        return {"bytes": len(value) * 3 // 4, "streamed": True}
    return value


def _result(result: RunResult, started: float) -> web.Response:
    data = {
        "phase": result.phase,
        "reason": result.reason,
        "message": result.message,
        "failedStep": result.failed_step,
        "steps": [
            {
                "id": s.id,
                "phase": s.phase,
                "attempts": s.attempts,
                "durationMs": s.duration_ms,
                "error": s.error,
                "output": s.output,
            }
            for s in result.steps.values()
        ],
        "outputs": result.outputs,
    }
    return reply(Response(success=True, data=data, meta=door_meta(unit=_UNIT, started=started)))
