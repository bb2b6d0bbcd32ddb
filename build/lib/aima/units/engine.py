"""engine.*: the inference servers the cluster can run (cluster-scoped Engine objects)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aima.api.common import ApiModel, ConditionStatus
from aima.api.engine import Accelerator, Architecture, Engine, EngineArgsStyle, OpenAIEndpoint
from aima.api.model import ModelFormat, ModelType
from aima.kube import resources
from aima.units import shared
from aima.units.core import Context, Example, Input, query
from aima.units.errors import ErrorCode, UnitError

__all__ = ["UNITS", "EngineFeatures", "EngineSummary"]


class EngineRef(Input):
    """Names one Engine."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Engine, such as vllm or llama-cpp."""


class EngineListInput(Input):
    """Which Engines to list."""

    model_type: ModelType | None = None
    """Only Engines that serve this model type."""
    model_format: ModelFormat | None = None
    """Only Engines that load this weight format."""


class EngineSummary(ApiModel):
    """One line about an Engine."""

    name: str
    description: str | None = None
    model_types: list[ModelType]
    model_formats: list[ModelFormat]
    accelerators: list[Accelerator]
    priority: int
    ready: ConditionStatus = ConditionStatus.UNKNOWN


class EngineList(ApiModel):
    """Engines, by name."""

    items: list[EngineSummary]


class EngineFeatures(ApiModel):
    """What an Engine can do, for choosing one."""

    name: str
    model_types: list[ModelType]
    model_formats: list[ModelFormat]
    endpoints: list[OpenAIEndpoint]
    """OpenAI-compatible paths it answers."""
    accelerators: list[Accelerator]
    architectures: list[Architecture]
    variants: list[str]
    default_gpus: int
    """GPUs per replica on GPU variants unless a service says otherwise."""
    engine_args_style: EngineArgsStyle
    """How a service's engineArgs are passed (Unsupported: they are not)."""
    port: int


@query(
    "engine.list",
    description="Engines installed in the cluster, with the model types and formats they serve.",
    examples=[
        Example(description="Every Engine", input={}),
        Example(
            description="Engines that serve GGUF LLMs", input={"modelType": "LLM", "modelFormat": "GGUF"}
        ),
    ],
)
async def list_(context: Context, request: EngineListInput) -> EngineList:
    engines = [Engine.model_validate(b) for b in await context.kube.list(resources.ENGINES)]
    items = [
        _summarize(e)
        for e in engines
        if (request.model_type is None or request.model_type in e.spec.model_types)
        and (request.model_format is None or request.model_format in e.spec.model_formats)
    ]
    return EngineList(items=sorted(items, key=lambda s: (-s.priority, s.name)))


@query(
    "engine.get",
    description="One Engine with its variants (images per accelerator), args templates and defaults.",
    examples=[Example(description="The vLLM Engine", input={"name": "vllm"})],
)
async def get(context: Context, request: EngineRef) -> Engine:
    return Engine.model_validate(await _get(context, request.name))


@query(
    "engine.features",
    description="What an Engine serves: model types, formats, OpenAI endpoints, accelerators, defaults.",
    examples=[Example(description="What llama.cpp serves", input={"name": "llama-cpp"})],
)
async def features(context: Context, request: EngineRef) -> EngineFeatures:
    engine = Engine.model_validate(await _get(context, request.name))
    spec = engine.spec
    return EngineFeatures(
        name=request.name,
        model_types=spec.model_types,
        model_formats=spec.model_formats,
        endpoints=spec.endpoints,
        accelerators=sorted({v.accelerator for v in spec.variants}),
        architectures=sorted({v.architecture for v in spec.variants}),
        variants=[v.name for v in spec.variants],
        default_gpus=spec.resources.gpus,
        engine_args_style=spec.engine_args_style,
        port=spec.port,
    )


async def _get(context: Context, name: str) -> dict[str, Any]:
    body = await context.kube.get(resources.ENGINES, name=name)
    if body is None:
        raise UnitError(
            ErrorCode.ENGINE_NOT_FOUND, f"Engine {name} not found; engine.list lists them", {"name": name}
        )
    return body


def _summarize(engine: Engine) -> EngineSummary:
    condition = shared.ready(engine.status.conditions if engine.status else [])
    return EngineSummary(
        name=engine.metadata.name or "",
        description=engine.spec.description,
        model_types=engine.spec.model_types,
        model_formats=engine.spec.model_formats,
        accelerators=sorted({v.accelerator for v in engine.spec.variants}),
        priority=engine.spec.priority,
        ready=condition.status if condition else ConditionStatus.UNKNOWN,
    )


UNITS = (list_, get, features)
