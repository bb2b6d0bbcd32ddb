"""service.*: InferenceServices: create, delete, scale, start, stop, get, list.

`service.stop` and `service.start` flip `spec.suspend` and never touch `spec.replicas` (see the
docstring of `aima.api.inference_service`): a stop does not fight a replica count Git or a scaler owns,
and a start brings back exactly the count they chose.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aima.api.common import API_VERSION, ApiModel, ConditionStatus
from aima.api.inference_service import InferenceService, InferenceServicePhase, InferenceServiceSpec
from aima.kube import resources
from aima.units import shared
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError
from aima.units.shared import Deleted

__all__ = ["UNITS", "ServiceSummary"]

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ServiceRef(Input):
    """Names one InferenceService."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the InferenceService."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the InferenceService; the default namespace when empty."""


class ServiceCreate(InferenceServiceSpec):
    """A new InferenceService: its name and namespace, and its spec."""

    model_config = Input.model_config

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the InferenceService; also the Kubernetes Service and, by default, the served model name."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the InferenceService; the default namespace when empty."""


class ServiceScale(ServiceRef):
    """A new replica count."""

    replicas: int = Field(ge=0, le=1000)
    """Desired replicas; 0 keeps the service but runs nothing (service.stop does the same and keeps
    the count)."""


class ServiceListInput(Input):
    """Which InferenceServices to list."""

    namespace: str | None = Field(default=None, max_length=63)
    """Namespace to list; the default namespace when empty."""
    all_namespaces: bool = False
    """List InferenceServices of every namespace."""
    model: str | None = Field(default=None, max_length=63)
    """Only services of this Model."""


class ServiceSummary(ApiModel):
    """One line about an InferenceService: what runs, how much of it, and why not."""

    name: str
    namespace: str
    model: str
    engine: str | None = None
    replicas: int
    """Desired replicas (spec)."""
    ready_replicas: int = 0
    suspend: bool = False
    phase: InferenceServicePhase | None = None
    ready: ConditionStatus = ConditionStatus.UNKNOWN
    reason: str | None = None
    message: str | None = None
    """Why the service is or is not ready, such as which resource is short."""
    gpus: int | None = None
    """GPUs per replica."""
    endpoint: str | None = None


class ServiceList(ApiModel):
    """InferenceServices, by namespace and name."""

    items: list[ServiceSummary]


@command(
    "service.create",
    description="Create an InferenceService that serves a Model (which must exist) on an Engine (chosen "
    "by the operator when engineRef is empty). Fails with CONFLICT when one of that name exists.",
    examples=[
        Example(
            description="Serve a Model on vLLM with one GPU",
            input={"name": "qwen", "modelRef": {"name": "qwen3-0.6b"}, "engineRef": {"name": "vllm"}},
        ),
        Example(
            description="Two replicas of two GPUs each",
            input={"name": "big", "modelRef": {"name": "llama-70b"}, "replicas": 2, "resources": {"gpus": 2}},
        ),
    ],
)
async def create(context: Context, request: ServiceCreate) -> InferenceService:
    namespace = context.namespace_of(request.namespace)
    if await context.kube.get(resources.MODELS, name=request.model_ref.name, namespace=namespace) is None:
        raise UnitError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {request.model_ref.name} not found in namespace {namespace}; "
            "create it first with model.pull",
            {"name": request.model_ref.name, "namespace": namespace},
        )
    if (
        request.engine_ref is not None
        and await context.kube.get(resources.ENGINES, name=request.engine_ref.name) is None
    ):
        raise UnitError(
            ErrorCode.ENGINE_NOT_FOUND,
            f"Engine {request.engine_ref.name} not found; engine.list lists them",
            {"name": request.engine_ref.name},
        )
    spec = InferenceServiceSpec.model_validate(
        request.model_dump(include=set(InferenceServiceSpec.model_fields), exclude_unset=True)
    )
    body = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": request.name, "namespace": namespace},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }
    return InferenceService.model_validate(await context.kube.create(body))


@command(
    "service.delete",
    description="Delete an InferenceService and its replicas; the Model stays.",
    examples=[Example(description="Delete a service", input={"name": "qwen"})],
    destructive=True,
)
async def delete(context: Context, request: ServiceRef) -> Deleted:
    namespace = context.namespace_of(request.namespace)
    await _get(context, request.name, namespace)
    await context.kube.delete(resources.INFERENCE_SERVICES, name=request.name, namespace=namespace)
    return Deleted(kind="InferenceService", name=request.name, namespace=namespace)


@command(
    "service.scale",
    description="Set the desired replicas (spec.replicas, as kubectl scale does).",
    examples=[Example(description="Three replicas", input={"name": "qwen", "replicas": 3})],
    idempotent=True,
)
async def scale(context: Context, request: ServiceScale) -> ServiceSummary:
    return await _patch(context, request, {"spec": {"replicas": request.replicas}})


@command(
    "service.stop",
    description="Stop a service: no replicas run, its configuration and replica count are kept "
    "(sets spec.suspend).",
    examples=[Example(description="Stop a service", input={"name": "qwen"})],
    destructive=True,
    idempotent=True,
)
async def stop(context: Context, request: ServiceRef) -> ServiceSummary:
    return await _patch(context, request, {"spec": {"suspend": True}})


@command(
    "service.start",
    description="Start a stopped service with the replica count it had (clears spec.suspend).",
    examples=[Example(description="Start a service", input={"name": "qwen"})],
    idempotent=True,
)
async def start(context: Context, request: ServiceRef) -> ServiceSummary:
    return await _patch(context, request, {"spec": {"suspend": False}})


@query(
    "service.get",
    description="One InferenceService with its spec and status (conditions explain why it is not ready).",
    examples=[Example(description="A service by name", input={"name": "qwen"})],
)
async def get(context: Context, request: ServiceRef) -> InferenceService:
    return InferenceService.model_validate(
        await _get(context, request.name, context.namespace_of(request.namespace))
    )


@query(
    "service.list",
    description="InferenceServices with their model, engine, replicas, readiness and the reason.",
    examples=[
        Example(description="Services in the default namespace", input={}),
        Example(
            description="Services of one Model everywhere",
            input={"allNamespaces": True, "model": "qwen3-0.6b"},
        ),
    ],
)
async def list_(context: Context, request: ServiceListInput) -> ServiceList:
    namespace = None if request.all_namespaces else context.namespace_of(request.namespace)
    bodies = await context.kube.list(resources.INFERENCE_SERVICES, namespace=namespace)
    services = [InferenceService.model_validate(b) for b in bodies]
    items = [
        summarize(s) for s in services if request.model is None or s.spec.model_ref.name == request.model
    ]
    return ServiceList(items=sorted(items, key=lambda s: (s.namespace, s.name)))


def summarize(service: InferenceService) -> ServiceSummary:
    """The list line of an InferenceService."""
    status = service.status
    condition = shared.ready(status.conditions if status else [])
    return ServiceSummary(
        name=service.metadata.name or "",
        namespace=service.metadata.namespace or "",
        model=service.spec.model_ref.name,
        engine=(status.engine if status else None)
        or (service.spec.engine_ref.name if service.spec.engine_ref else None),
        replicas=service.spec.replicas,
        ready_replicas=status.ready_replicas if status else 0,
        suspend=service.spec.suspend,
        phase=status.phase if status else None,
        ready=condition.status if condition else ConditionStatus.UNKNOWN,
        reason=condition.reason if condition else None,
        message=condition.message or None if condition else None,
        gpus=(status.gpus if status else None) or service.spec.resources.gpus,
        endpoint=status.endpoint if status else None,
    )


async def _get(context: Context, name: str, namespace: str) -> dict[str, Any]:
    body = await context.kube.get(resources.INFERENCE_SERVICES, name=name, namespace=namespace)
    if body is None:
        raise UnitError(
            ErrorCode.SERVICE_NOT_FOUND,
            f"InferenceService {name} not found in namespace {namespace}",
            {"name": name, "namespace": namespace},
        )
    return body


async def _patch(context: Context, request: ServiceRef, patch: dict[str, Any]) -> ServiceSummary:
    namespace = context.namespace_of(request.namespace)
    await _get(context, request.name, namespace)  # a merge patch of a missing object is a bare 404
    body = await context.kube.patch(
        resources.INFERENCE_SERVICES, name=request.name, namespace=namespace, patch=patch
    )
    return summarize(InferenceService.model_validate(body))


UNITS = (create, delete, scale, stop, start, get, list_)
