"""service.*: InferenceServices: create, delete, scale, start, stop, get, list, logs and recommend.

Who writes what in `spec`: controllers never do; units do, only on a person's (or an agent's)
request, and each unit writes exactly one field. `service.stop` and `service.start` scale to and from
zero by flipping `spec.suspend`: the controller then runs 0 replicas, and `spec.replicas` is never
touched, so the previous count is remembered where it already lives, a stop does not fight a replica
count that Git or a scaler owns, and a start brings back exactly the count they chose. `service.scale`
writes `spec.replicas` (the scale subresource's field), as `kubectl scale` does.

`service.create`, `service.scale` and `service.start` refuse with INSUFFICIENT_RESOURCES a replica
that no node could ever hold (more GPUs than the largest node has, or a GPU product no node has);
GPUs that are only busy now are no refusal: the service waits, and its status says for what. A
cluster whose autoscaler adds bigger GPU nodes on demand turns the check off
(`AIMA_REFUSE_UNFITTABLE_SERVICES=false`): there, what fits no node today may fit one tomorrow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import Field, ValidationError

from aima.api.common import API_VERSION, ApiModel, ConditionStatus, Keys
from aima.api.engine import Accelerator, Engine
from aima.api.inference_service import (
    InferenceService,
    InferenceServicePhase,
    InferenceServiceSpec,
    ServiceResources,
    TrafficTarget,
)
from aima.api.model import Model
from aima.domain import capacity, engine_choice
from aima.domain.inference_service import CONTAINER
from aima.kube import KubeError, resources
from aima.units import resource, shared
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError, first_error
from aima.units.shared import Deleted

__all__ = ["UNITS", "ServiceSummary"]

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
logger = logging.getLogger("aima.units.service")
_POLL_SECONDS = 0.25
_UNHALTED = {"annotations": {Keys.ROLLOUT_HALTED: None}}
"""A rollout or rollback starts afresh: a rollout guard's halt goes."""


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


class ServiceUpdate(ServiceRef):
    """Changes to a service's spec."""

    spec: dict[str, Any] = Field(min_length=1)
    """Fields of service.create to change, as a merge patch; null removes one."""


class ServiceRollout(ServiceRef):
    """Part of a service's requests for another service."""

    to: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """The InferenceService (same namespace) that takes the share."""
    weight: int = Field(ge=0, le=100)
    """Its percent; 100 promotes it fully."""


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
    traffic: list[TrafficTarget] = Field(default_factory=list)
    """The split of its requests, when it has one."""
    warning: str | None = None
    """What the change just made will run into, such as replicas the free GPUs cannot hold now."""


class ServiceList(ApiModel):
    """InferenceServices, by namespace and name."""

    items: list[ServiceSummary]


class LogsInput(ServiceRef):
    """Which log lines of a service's replicas to read."""

    tail: int = Field(default=100, ge=1, le=5000)
    """Last lines of each replica."""
    since_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Only lines written in the last seconds."""
    previous: bool = False
    """The log of the previous (crashed) container instead of the running one."""
    pod: str | None = Field(default=None, max_length=253)
    """Only this replica's pod."""
    contains: str | None = Field(default=None, max_length=256)
    """Only lines that contain this text."""


class PodLog(ApiModel):
    """The log lines of one replica."""

    pod: str
    node: str | None = None
    phase: str | None = None
    lines: list[str] = Field(default_factory=list)
    error: str | None = None
    """Why the log could not be read, such as a container that has not started."""


class ServiceLogs(ApiModel):
    """Log lines per replica, pods by name."""

    name: str
    namespace: str
    pods: list[PodLog]
    message: str | None = None
    """Why there are no replicas, when there are none."""


class RecommendInput(Input):
    """A Model to serve, and optionally where and how much."""

    model: str = Field(min_length=1, max_length=63)
    """Name of the Model."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Model; the default namespace when empty."""
    gpu_product: str | None = Field(default=None, max_length=128)
    """Only nodes with this GPU model (nvidia.com/gpu.product)."""
    replicas: int = Field(default=1, ge=1, le=1000)
    """Replicas wanted."""


class Recommendation(ApiModel):
    """How to serve a Model on this cluster now, and whether it fits."""

    model: str
    engine: str | None = None
    """The Engine AIMA would choose; empty when none serves the model here."""
    variant: str | None = None
    gpus: int
    """GPUs per replica: the Model's estimate once downloaded, else the Engine's default."""
    gpu_memory: str | None = None
    """GPU memory the weights and KV cache need, once the Model is downloaded."""
    replicas: int
    fits: bool
    """Whether that many replicas fit in the free GPUs now."""
    nodes: list[str]
    """Where each replica would land."""
    message: str
    """Why this engine and size, and where it fits or why not."""
    service: dict[str, Any]
    """The input of service.create that does it."""


@command(
    "service.create",
    description="Create an InferenceService that serves a Model (which must exist) on an Engine (chosen "
    "by the operator when engineRef is empty); returns its first status. CONFLICT when the name is taken.",
    examples=[
        Example(
            description="Serve a Model on vLLM with one GPU",
            input={"name": "qwen", "modelRef": {"name": "qwen3-0.6b"}, "engineRef": {"name": "vllm"}},
        ),
        Example(
            description="Two replicas of two GPUs each",
            input={
                "name": "qwen-tp2",
                "modelRef": {"name": "qwen3-0.6b"},
                "replicas": 2,
                "resources": {"gpus": 2},
            },
        ),
    ],
)
async def create(context: Context, request: ServiceCreate) -> ServiceSummary:
    namespace = context.namespace_of(request.namespace)
    await _require_model(context, request.model_ref.name, namespace)
    if request.engine_ref is not None:
        await _require_engine(context, request.engine_ref.name)
    spec = InferenceServiceSpec.model_validate(
        request.model_dump(include=set(InferenceServiceSpec.model_fields), exclude_unset=True)
    )
    warning = None
    if runs_after(spec, change={}):
        warning = await _check_capacity(context, spec, resolved=None, name=request.name, namespace=namespace)
    body = {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": request.name, "namespace": namespace},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }
    created = await _settled(context, await context.kube.create(body))
    return summarize(InferenceService.model_validate(created)).model_copy(update={"warning": warning})


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


@command(
    "service.update",
    description="Change a service's spec (Model, Engine, adapters, ...); serving never pauses: new replicas "
    "start (once a new Model is downloaded) before old ones drain.",
    examples=[
        Example(
            description="Cap the context length",
            input={"name": "qwen", "spec": {"engineArgs": {"max-model-len": "8192"}}},
        ),
    ],
    idempotent=True,
)
async def update(context: Context, request: ServiceUpdate) -> ServiceSummary:
    namespace = context.namespace_of(request.namespace)
    current = InferenceService.model_validate(await _get(context, request.name, namespace))
    merged = merge_patch(current.spec.model_dump(mode="json", by_alias=True, exclude_none=True), request.spec)
    try:
        spec = InferenceServiceSpec.model_validate(merged)
    except ValidationError as invalid:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"Invalid spec for service.update: {first_error(invalid, model=InferenceServiceSpec)}",
            {"name": request.name, "namespace": namespace},
        ) from None
    if spec.model_ref != current.spec.model_ref:
        await _require_model(context, spec.model_ref.name, namespace)
    if spec.engine_ref is not None and spec.engine_ref != current.spec.engine_ref:
        await _require_engine(context, spec.engine_ref.name)
    return await _patch(context, request, {"spec": request.spec})


@command(
    "service.rollout",
    description="Send weight % of a service's requests to another service (a canary); raise it step by "
    "step, 100 promotes. Sets spec.traffic, lifts a rollout guard's halt.",
    examples=[
        Example(description="10 % to a canary", input={"name": "qwen", "to": "qwen-tp2", "weight": 10})
    ],
    idempotent=True,
)
async def rollout(context: Context, request: ServiceRollout) -> ServiceSummary:
    namespace = context.namespace_of(request.namespace)
    if request.to == request.name:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"to names {request.name} itself; service.rollback sends all its requests back to it",
            {"name": request.name, "to": request.to},
        )
    if await context.kube.get(resources.INFERENCE_SERVICES, name=request.to, namespace=namespace) is None:
        raise UnitError(
            ErrorCode.SERVICE_NOT_FOUND,
            f"InferenceService {request.to} not found in namespace {namespace}; create it with "
            "service.create first",
            {"name": request.to, "namespace": namespace},
        )
    split = [
        {"service": request.name, "weight": 100 - request.weight},
        {"service": request.to, "weight": request.weight},
    ]
    return await _patch(context, request, {"metadata": _UNHALTED, "spec": {"traffic": split}})


@command(
    "service.rollback",
    description="Send all of a service's requests back to its own replicas (clears spec.traffic).",
    examples=[Example(description="End a canary", input={"name": "qwen"})],
    idempotent=True,
)
async def rollback(context: Context, request: ServiceRef) -> ServiceSummary:
    return await _patch(context, request, {"metadata": _UNHALTED, "spec": {"traffic": None}})


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


@query(
    "service.logs",
    description="Recent log lines of a service's replicas (the engine container), per pod: the last "
    "tail lines, optionally since some seconds, of the previous crashed container, or only lines with "
    "some text.",
    examples=[
        Example(description="The last 20 lines of each replica", input={"name": "qwen", "tail": 20}),
        Example(
            description="Why the last container crashed",
            input={"name": "qwen", "previous": True, "contains": "Error"},
        ),
    ],
)
async def logs(context: Context, request: LogsInput) -> ServiceLogs:
    namespace = context.namespace_of(request.namespace)
    service = InferenceService.model_validate(await _get(context, request.name, namespace))
    pods = await replica_pods(context, name=request.name, namespace=namespace)
    if request.pod is not None:
        pods = [p for p in pods if p["metadata"]["name"] == request.pod]
    params = log_params(tail=request.tail, since_seconds=request.since_seconds, previous=request.previous)
    read = [await _pod_log(context, pod, params=params, contains=request.contains) for pod in pods]
    message = None if pods else f"No replicas run: {summarize(service).message or 'none exist yet'}"
    return ServiceLogs(name=request.name, namespace=namespace, pods=read, message=message)


@query(
    "service.recommend",
    description="How to serve a Model here: the Engine and variant AIMA would choose, GPUs per replica, "
    "whether the replicas fit in the free GPUs now and where, and the service.create input that does it.",
    examples=[
        Example(description="One replica of a Model", input={"model": "qwen3-0.6b"}),
        Example(
            description="Two replicas on H100s",
            input={"model": "qwen3-0.6b", "replicas": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
        ),
    ],
)
async def recommend(context: Context, request: RecommendInput) -> Recommendation:
    namespace = context.namespace_of(request.namespace)
    body = await context.kube.get(resources.MODELS, name=request.model, namespace=namespace)
    if body is None:
        raise UnitError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {request.model} not found in namespace {namespace}; model.search finds presets",
            {"name": request.model, "namespace": namespace},
        )
    model = Model.model_validate(body)
    engines = [Engine.model_validate(e) for e in await context.kube.list(resources.ENGINES)]
    nodes = await context.kube.list(resources.NODES)
    pods = await context.kube.list(resources.PODS)
    return plan_recommendation(
        model, engines=engines, nodes=nodes, pods=pods, gpu_product=request.gpu_product,
        replicas=request.replicas,
    )  # fmt: skip


def plan_recommendation(
    model: Model,
    *,
    engines: list[Engine],
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    gpu_product: str | None,
    replicas: int,
) -> Recommendation:
    """The recommendation for `model` given the cluster's Engines, Nodes and Pods (pure)."""
    estimate = model.status.estimate if model.status else None
    wanted = estimate.gpus if estimate and estimate.gpus else None
    probe = InferenceService(
        metadata={"name": model.metadata.name},
        spec=InferenceServiceSpec(
            model_ref={"name": model.metadata.name or ""},
            resources=ServiceResources(gpus=wanted, gpu_product=gpu_product),
        ),
    )
    infos = [engine_choice.node_info(n) for n in nodes]
    choice = engine_choice.choose(probe, model=model, engines=engines, nodes=infos)
    gpus = 0
    if choice.variant is not None and choice.variant.accelerator is Accelerator.NVIDIA_GPU:
        gpus = wanted or (choice.engine.spec.resources.gpus if choice.engine else 1)
    matching = capacity.nodes_with_product(nodes, gpu_product)
    placement = resource.place(resource.status_of(matching, pods), gpus=max(gpus, 1), replicas=replicas)
    fits = choice.engine is not None and (gpus == 0 or placement.fits)
    where = "it runs on CPU nodes" if gpus == 0 else placement.message
    service: dict[str, Any] = {
        "name": _service_name(model.metadata.name or ""),
        "modelRef": {"name": model.metadata.name},
    }
    if choice.engine is not None:
        service["engineRef"] = {"name": choice.engine.metadata.name}
    service |= {
        "replicas": replicas,
        "resources": {"gpus": gpus} | ({"gpuProduct": gpu_product} if gpu_product else {}),
    }
    return Recommendation(
        model=model.metadata.name or "",
        engine=choice.engine.metadata.name if choice.engine else None,
        variant=choice.variant.name if choice.variant else None,
        gpus=gpus,
        gpu_memory=estimate.gpu_memory if estimate else None,
        replicas=replicas,
        fits=fits,
        nodes=placement.nodes if gpus else [],
        message=f"{choice.message}. {where}",
        service=service,
    )


async def replica_pods(context: Context, *, name: str, namespace: str) -> list[dict[str, Any]]:
    """The pods of an InferenceService's replicas, by name."""
    pods = await context.kube.list(
        resources.PODS, namespace=namespace, label_selector=f"{Keys.INFERENCE_SERVICE}={name}"
    )
    return sorted(pods, key=lambda p: str(p["metadata"]["name"]))


def log_params(*, tail: int | None, since_seconds: int | None, previous: bool) -> dict[str, str]:
    """Query parameters of a pod log request for the engine container."""
    params = {"container": CONTAINER, "limitBytes": str(shared.LOG_LIMIT_BYTES)}
    if tail is not None:
        params["tailLines"] = str(tail)
    if since_seconds is not None:
        params["sinceSeconds"] = str(since_seconds)
    if previous:
        params["previous"] = "true"
    return params


async def _pod_log(
    context: Context, pod: dict[str, Any], *, params: dict[str, str], contains: str | None
) -> PodLog:
    meta = pod["metadata"]
    found = PodLog(
        pod=meta["name"], node=pod["spec"].get("nodeName"), phase=pod.get("status", {}).get("phase")
    )
    try:
        text = await shared.pod_log(
            context.kube, namespace=meta["namespace"], pod=meta["name"], params=params
        )
    except KubeError as refused:
        found.error = refused.message or refused.reason
        return found
    found.lines = [line for line in text.splitlines() if contains is None or contains in line]
    return found


def _service_name(model: str) -> str:
    # Service names are DNS labels starting with a letter; Model names may hold dots or start with a digit.
    name = model.replace(".", "-")
    return (name if name[:1].isalpha() else f"m-{name}")[:63].rstrip("-")


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
        traffic=service.spec.traffic,
    )


async def _require_model(context: Context, name: str, namespace: str) -> None:
    if await context.kube.get(resources.MODELS, name=name, namespace=namespace) is None:
        raise UnitError(
            ErrorCode.MODEL_NOT_FOUND,
            f"Model {name} not found in namespace {namespace}; create it first with model.pull",
            {"name": name, "namespace": namespace},
        )


async def _require_engine(context: Context, name: str) -> None:
    if await context.kube.get(resources.ENGINES, name=name) is None:
        raise UnitError(
            ErrorCode.ENGINE_NOT_FOUND, f"Engine {name} not found; engine.list lists them", {"name": name}
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386), as the API server will (pure)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


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
    """Merge ``patch`` into the service and return the state it led to; one that would then run
    replicas no node holds is refused, and one the free GPUs cannot hold now says so."""
    namespace = context.namespace_of(request.namespace)
    current = await _get(context, request.name, namespace)  # a merge patch of a missing object is a bare 404
    service = InferenceService.model_validate(current)
    warning = None
    if runs_after(service.spec, change=patch["spec"]):
        resolved = service.status.gpus if service.status else None
        spec = service.spec.model_copy(update={k: v for k, v in patch["spec"].items() if k != "suspend"})
        warning = await _check_capacity(
            context, spec, resolved=resolved, name=request.name, namespace=namespace
        )
    body = await context.kube.patch(
        resources.INFERENCE_SERVICES, name=request.name, namespace=namespace, patch=patch
    )
    settled = InferenceService.model_validate(await _settled(context, body))
    return summarize(settled).model_copy(update={"warning": warning})


async def _settled(context: Context, body: dict[str, Any]) -> dict[str, Any]:
    """The service once the operator has reported on this generation of it, or as it is after the
    settings' `unit_settle_seconds`: a result shows the state a change led to, not the one before."""
    deadline = time.monotonic() + context.settings.unit_settle_seconds
    meta = body["metadata"]
    while not _observed(body) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
        body = await _get(context, meta["name"], meta["namespace"])
    return body


def _observed(body: dict[str, Any]) -> bool:
    observed = body.get("status", {}).get("observedGeneration")
    return observed is not None and observed >= body["metadata"].get("generation", 0)


def runs_after(spec: InferenceServiceSpec, *, change: dict[str, Any]) -> bool:
    """Whether replicas run once ``change`` (a merge patch of the spec) is applied (pure)."""
    return change.get("replicas", spec.replicas) > 0 and not change.get("suspend", spec.suspend)


def replica_gpus(wanted: ServiceResources, *, resolved: int | None) -> int:
    """GPUs one replica asks for, as far as a unit can tell before the operator resolves the engine
    (pure): the spec's count, else the count the operator resolved (``status.gpus``), else one when a
    GPU product is named; 0 when it runs on CPU or the count is the engine's choice, still unknown."""
    if wanted.gpus is not None:
        return wanted.gpus
    if resolved is not None:
        return resolved
    return 1 if wanted.gpu_product else 0


async def _check_capacity(
    context: Context, spec: InferenceServiceSpec, *, resolved: int | None, name: str, namespace: str
) -> str | None:
    """Raise INSUFFICIENT_RESOURCES when no node could ever hold one replica (see resource.never_fits);
    otherwise say how many of the replicas still to start the free GPUs hold now, when not all."""
    gpus = replica_gpus(spec.resources, resolved=resolved)
    if gpus == 0 or not context.settings.refuse_unfittable_services:
        return None
    try:
        current = await resource.observe(context)
        started = await replica_pods(context, name=name, namespace=namespace)
    except KubeError as refused:
        if refused.status not in (401, 403):
            raise
        # A person who may create services but not list nodes and pods gets the status's word instead.
        logger.info("Not checking GPU capacity, nodes or pods unreadable: %s", refused)
        return None
    if (
        refusal := resource.never_fits(current, gpus=gpus, gpu_product=spec.resources.gpu_product)
    ) is not None:
        raise refusal
    return capacity_warning(current, gpus=gpus, replicas=spec.replicas, placed=_placed(started))


def capacity_warning(status: resource.ResourceStatus, *, gpus: int, replicas: int, placed: int) -> str | None:
    """Words for replicas the free GPUs cannot hold now (pure): ``placed`` replicas already hold
    theirs, the others need ``gpus`` free on one node each. None when they all fit."""
    wanted = replicas - placed
    if wanted <= 0:
        return None
    placement = resource.place(status, gpus=gpus, replicas=wanted)
    if placement.fits:
        return None
    return (
        f"Only {len(placement.nodes)} of the {wanted} replicas to start fit in the free GPUs now "
        f"({status.summary}); the rest wait as Pending until GPUs free up. resource_can_allocate shows "
        f"what fits; service_scale to {placed + len(placement.nodes)} avoids the wait"
    )


def _placed(pods: list[dict[str, Any]]) -> int:
    """Replicas bound to a node and not finished: they hold their GPUs already."""
    return sum(1 for p in pods if capacity.holding_node(p))


UNITS = (create, delete, scale, stop, start, update, rollout, rollback, get, list_, logs, recommend)
