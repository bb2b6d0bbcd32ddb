"""model.*: create, pull, get, list, delete Models, and estimate what serving one needs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import Field, model_validator

from aima.api.common import API_VERSION, ApiModel, ConditionStatus
from aima.api.model import Model, ModelPhase, ModelSpec, ModelType, ResourceEstimate
from aima.domain import model as model_domain
from aima.kube import resources
from aima.units import shared
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError
from aima.units.shared import Deleted

__all__ = ["UNITS", "ModelSummary", "summarize"]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ModelRef(Input):
    """Names one Model."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the Model."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Model; the default namespace when empty."""


class ModelCreate(ModelSpec):
    """A new Model: its name and namespace, and its spec."""

    model_config = Input.model_config

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the Model, such as qwen2.5-7b."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Model; the default namespace when empty."""


class ModelPull(ModelCreate):
    """A Model to download, created unless it exists with the same source."""

    wait: bool = False
    """Wait until the Model is Ready (downloaded and verified), or failed, or timeoutSeconds passed."""
    timeout_seconds: int = Field(default=600, ge=1, le=86400)
    """How long to wait when wait is true."""


class ModelListInput(Input):
    """Which Models to list."""

    namespace: str | None = Field(default=None, max_length=63)
    """Namespace to list; the default namespace when empty."""
    all_namespaces: bool = False
    """List Models of every namespace."""
    type: ModelType | None = None
    """Only Models of this type."""


class ModelSummary(ApiModel):
    """One line about a Model."""

    name: str
    namespace: str
    type: ModelType
    source: str
    phase: ModelPhase | None = None
    ready: ConditionStatus = ConditionStatus.UNKNOWN
    reason: str | None = None
    progress: int | None = None
    """Percent of bytes downloaded."""
    size: str | None = None


class ModelList(ApiModel):
    """Models, by namespace and name."""

    items: list[ModelSummary]


class EstimateInput(Input):
    """What to estimate: a downloaded Model, or a size in bytes or parameters."""

    name: str | None = Field(default=None, max_length=63, pattern=NAME_PATTERN)
    """A Model whose downloaded files are measured."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Model."""
    weights_bytes: int | None = Field(default=None, ge=1)
    """Size of the weights in bytes."""
    parameters_billions: float | None = Field(default=None, gt=0, le=10000)
    """Parameter count in billions, assuming 16-bit weights."""
    gpu_memory_mib: int | None = Field(default=None, ge=1)
    """Memory per GPU; the largest nvidia.com/gpu.memory node label (or the operator's default) when
    empty."""

    @model_validator(mode="after")
    def _one_subject(self) -> EstimateInput:
        given = [x for x in (self.name, self.weights_bytes, self.parameters_billions) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of name, weightsBytes or parametersBillions")
        return self


class Estimate(ApiModel):
    """The estimate and what it was computed from."""

    weights_bytes: int
    gpu_memory_mib: int
    """Memory per GPU the estimate assumes."""
    estimate: ResourceEstimate


@command(
    "model.create",
    description="Create a Model: the operator downloads its weights into a volume. Fails with CONFLICT "
    "when a Model of that name exists.",
    examples=[
        Example(
            description="A small LLM from Hugging Face",
            input={"name": "qwen3-0.6b", "source": "hf://Qwen/Qwen3-0.6B", "type": "LLM"},
        )
    ],
)
async def create(context: Context, request: ModelCreate) -> Model:
    body = await context.kube.create(_body(request, namespace=context.namespace_of(request.namespace)))
    return Model.model_validate(body)


@command(
    "model.pull",
    description="Make sure a Model exists and is downloading: create it unless a Model of that name "
    "exists with the same source (a different source is a CONFLICT); with wait, return once it is Ready.",
    examples=[
        Example(
            description="Pull an Ollama model and wait for it",
            input={
                "name": "llama3.2",
                "source": "ollama://llama3.2:1b",
                "type": "LLM",
                "format": "Ollama",
                "wait": True,
                "timeoutSeconds": 900,
            },
        )
    ],
    idempotent=True,
)
async def pull(context: Context, request: ModelPull) -> Model:
    namespace = context.namespace_of(request.namespace)
    body = await context.kube.get(resources.MODELS, name=request.name, namespace=namespace)
    if body is None:
        body = await context.kube.create(_body(request, namespace=namespace))
    elif body["spec"]["source"] != request.source:
        raise UnitError(
            ErrorCode.CONFLICT,
            f"Model {request.name} exists with source {body['spec']['source']}; "
            "delete it or choose another name",
            {"name": request.name, "namespace": namespace, "source": body["spec"]["source"]},
        )
    model = Model.model_validate(body)
    if request.wait:
        model = await _wait_ready(context, model, timeout=request.timeout_seconds)
    return model


@query(
    "model.get",
    description="One Model with its spec and status (conditions, progress, manifest, estimate).",
    examples=[Example(description="A Model by name", input={"name": "qwen3-0.6b"})],
)
async def get(context: Context, request: ModelRef) -> Model:
    return Model.model_validate(await _get(context, request.name, request.namespace))


@query(
    "model.list",
    description="Models with their type, source, phase, readiness and download progress.",
    examples=[
        Example(description="Models in the default namespace", input={}),
        Example(
            description="Embedding models everywhere", input={"allNamespaces": True, "type": "Embedding"}
        ),
    ],
)
async def list_(context: Context, request: ModelListInput) -> ModelList:
    namespace = None if request.all_namespaces else context.namespace_of(request.namespace)
    models = [Model.model_validate(b) for b in await context.kube.list(resources.MODELS, namespace=namespace)]
    items = [summarize(m) for m in models if request.type is None or m.spec.type == request.type]
    return ModelList(items=sorted(items, key=lambda s: (s.namespace, s.name)))


@command(
    "model.delete",
    description="Delete a Model; its cache volume goes too unless its reclaimPolicy is Retain.",
    examples=[Example(description="Delete a Model", input={"name": "qwen3-0.6b"})],
    destructive=True,
)
async def delete(context: Context, request: ModelRef) -> Deleted:
    namespace = context.namespace_of(request.namespace)
    await _get(context, request.name, namespace)
    await context.kube.delete(resources.MODELS, name=request.name, namespace=namespace)
    return Deleted(kind="Model", name=request.name, namespace=namespace)


@query(
    "model.estimate_resources",
    description="GPU memory and GPUs needed to serve weights of a size: of a downloaded Model, or of a "
    "size in bytes or parameters; on the cluster's GPUs unless gpuMemoryMib is given.",
    examples=[
        Example(
            description="An 8B model on 80 GiB GPUs", input={"parametersBillions": 8, "gpuMemoryMib": 81920}
        ),
        Example(description="A 70B model on the cluster's GPUs", input={"parametersBillions": 70}),
    ],
)
async def estimate_resources(context: Context, request: EstimateInput) -> Estimate:
    weights = request.weights_bytes
    if request.parameters_billions is not None:
        weights = round(request.parameters_billions * 1e9 * 2)
    if request.name is not None:
        model = Model.model_validate(await _get(context, request.name, request.namespace))
        manifest = model.status.manifest if model.status else None
        if manifest is None:
            raise UnitError(
                ErrorCode.CONFLICT,
                f"Model {request.name} is not downloaded yet, so its size is unknown; give weightsBytes",
                {"name": request.name},
            )
        weights = manifest.total_bytes
    assert weights is not None  # the input validator requires one subject
    gpu_memory = request.gpu_memory_mib or await _largest_gpu_memory(context)
    return Estimate(
        weights_bytes=weights,
        gpu_memory_mib=gpu_memory,
        estimate=model_domain.estimate_resources(weights_bytes=weights, gpu_memory_mib=gpu_memory),
    )


def summarize(model: Model) -> ModelSummary:
    """The list line of a Model."""
    status = model.status
    condition = shared.ready(model.status.conditions if model.status else [])
    return ModelSummary(
        name=model.metadata.name or "",
        namespace=model.metadata.namespace or "",
        type=model.spec.type,
        source=model.spec.source,
        phase=status.phase if status else None,
        ready=condition.status if condition else ConditionStatus.UNKNOWN,
        reason=condition.reason if condition else None,
        progress=status.progress.percent if status and status.progress else None,
        size=status.size if status else None,
    )


async def _get(context: Context, name: str, namespace: str | None) -> dict[str, Any]:
    namespace = context.namespace_of(namespace)
    body = await context.kube.get(resources.MODELS, name=name, namespace=namespace)
    if body is None:
        raise UnitError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {name} not found in namespace {namespace}",
            {"name": name, "namespace": namespace},
        )
    return body


def _body(request: ModelCreate, *, namespace: str) -> dict[str, Any]:
    spec = ModelSpec.model_validate(
        request.model_dump(include=set(ModelSpec.model_fields), exclude_unset=True)
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": request.name, "namespace": namespace},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }


async def _wait_ready(context: Context, model: Model, *, timeout: float) -> Model:
    # Polling is enough here: a pull is a long operation and one GET a second is cheap.
    deadline = time.monotonic() + timeout
    name, namespace = model.metadata.name or "", model.metadata.namespace
    while True:
        condition = shared.ready(model.status.conditions if model.status else [])
        if condition is not None and condition.status == ConditionStatus.TRUE:
            return model
        if model.status is not None and model.status.phase == ModelPhase.FAILED:
            raise UnitError(
                ErrorCode.INTERNAL,
                f"Model {name} failed: {condition.message if condition else 'no message'}",
                {"name": name, "namespace": namespace, "reason": condition.reason if condition else None},
            )
        if time.monotonic() >= deadline:
            raise UnitError(
                ErrorCode.TIMEOUT,
                f"Model {name} was not Ready after {timeout:g}s: "
                + (condition.message if condition else "no status yet"),
                {"name": name, "namespace": namespace, "reason": condition.reason if condition else None},
            )
        await asyncio.sleep(1)
        model = Model.model_validate(await _get(context, name, namespace))


async def _largest_gpu_memory(context: Context) -> int:
    nodes = await context.kube.list(resources.NODES)
    sizes = [
        int(label)
        for node in nodes
        if (label := node["metadata"].get("labels", {}).get("nvidia.com/gpu.memory", "")).isdigit()
    ]
    return max(sizes, default=context.settings.default_gpu_memory_mib)


UNITS = (create, pull, get, list_, delete, estimate_resources)
