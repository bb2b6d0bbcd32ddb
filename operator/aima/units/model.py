"""model.*: create, pull, import, verify, get, list, search and delete Models, and estimate what serving
one needs."""

from __future__ import annotations

import asyncio
import time
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import Field, model_validator

from aima.api.common import API_VERSION, ApiModel, ConditionStatus
from aima.api.model import Model, ModelFormat, ModelPhase, ModelSpec, ModelType, ResourceEstimate
from aima.domain import capacity
from aima.domain import model as model_domain
from aima.domain.sources import parse_source
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


_CLAIM_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ModelImport(Input):
    """Weights that already sit on a PersistentVolumeClaim, served in place: nothing is downloaded."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the new Model."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Model and of the claim; the default namespace when empty."""
    claim: str = Field(min_length=1, max_length=253, pattern=_CLAIM_PATTERN)
    """The PersistentVolumeClaim that holds the files."""
    path: str = Field(default="", max_length=1024)
    """Directory of the files inside the claim; its root when empty."""
    type: ModelType
    """What the model does."""
    format: ModelFormat | None = None
    """How the weights are stored; detected from the files when empty."""

    @model_validator(mode="after")
    def _safe_path(self) -> ModelImport:
        # The path is joined below the claim's mount point: it must not climb out of it.
        if ".." in PurePosixPath(self.path).parts or "\x00" in self.path:
            raise ValueError("path must stay inside the claim: no '..' parts")
        return self


class VerifyInput(ModelRef):
    """A Model, and digests its files must have."""

    checksums: dict[str, Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]] = Field(
        default_factory=dict, max_length=256
    )
    """Expected sha256 (lowercase hex) per file path, checked with the Model's own spec.checksums."""


class Verification(ApiModel):
    """Whether a Model's download is complete and its files have the expected digests."""

    name: str
    namespace: str
    valid: bool
    issues: list[str]
    """What is wrong, one sentence each; empty when valid."""
    files: int = 0
    """Files the loader verified and recorded."""
    checked: int = 0
    """Files whose digest was compared with an expected one."""
    manifest_sha256: str | None = None
    """Digest of the manifest: equal digests mean identical downloads."""


class SearchInput(Input):
    """What to look for among the catalog's presets and the cluster's Models."""

    query: str = Field(default="", max_length=128)
    """Words that must all appear in the name or the source (case-insensitive); everything when empty."""
    type: ModelType | None = None
    """Only models of this type."""
    limit: int = Field(default=20, ge=1, le=200)
    """Most results."""


class SearchResult(ApiModel):
    """One model found: a catalog preset to pull, or a Model that exists."""

    name: str
    origin: str
    """catalog (a preset: model.pull it with these fields) or cluster (a Model that exists)."""
    namespace: str | None = None
    source: str
    type: ModelType
    format: ModelFormat | None = None
    ready: ConditionStatus | None = None
    """For Models in the cluster: their Ready condition."""


class SearchResults(ApiModel):
    """Models found, presets first, by name."""

    items: list[SearchResult]


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
    namespace = context.namespace_of(request.namespace)
    await _require_claim(context, source=request.source, namespace=namespace)
    body = await context.kube.create(_body(request, namespace=namespace))
    return Model.model_validate(body)


@command(
    "model.pull",
    description="Make sure a Model exists and is downloading: create it unless a Model of that name "
    "exists with the same source (a different source is a CONFLICT); with wait, return once it is Ready.",
    examples=[
        Example(
            description="Pull an Ollama model (the CLI's `aima model pull --wait` shows its progress)",
            input={"name": "llama3.2", "source": "ollama://llama3.2:1b", "type": "LLM", "format": "Ollama"},
        ),
    ],
    idempotent=True,
)
async def pull(context: Context, request: ModelPull) -> Model:
    namespace = context.namespace_of(request.namespace)
    body = await context.kube.get(resources.MODELS, name=request.name, namespace=namespace)
    if body is None:
        await _require_claim(context, source=request.source, namespace=namespace)
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
    gpu_memory = request.gpu_memory_mib or capacity.largest_gpu_memory_mib(
        await context.kube.list(resources.NODES), default=context.settings.default_gpu_memory_mib
    )
    return Estimate(
        weights_bytes=weights,
        gpu_memory_mib=gpu_memory,
        estimate=model_domain.estimate_resources(weights_bytes=weights, gpu_memory_mib=gpu_memory),
    )


@command(
    "model.import",
    description="Serve weights that already sit on a PersistentVolumeClaim (in the same namespace): "
    "create a Model with source pvc://claim/path, used in place.",
    examples=[
        Example(
            description="GGUF files in a claim",
            input={
                "name": "local-llama",
                "claim": "models",
                "path": "llama/8b",
                "type": "LLM",
                "format": "GGUF",
            },
        )
    ],
)
async def import_(context: Context, request: ModelImport) -> Model:
    namespace = context.namespace_of(request.namespace)
    await _require_claim(context, source=f"pvc://{request.claim}", namespace=namespace)
    path = request.path.strip("/")
    spec = ModelSpec(
        source=f"pvc://{request.claim}" + (f"/{path}" if path else ""),
        type=request.type,
        format=request.format,
    )
    body = {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {"name": request.name, "namespace": namespace},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    }
    return Model.model_validate(await context.kube.create(body))


@query(
    "model.verify",
    description="Check a Model's download: Ready, each file's sha256 as the loader wrote it, and the "
    "digests of spec.checksums and of the input's checksums.",
    examples=[
        Example(description="Verify a Model", input={"name": "qwen3-0.6b"}),
        Example(
            description="Verify one file's digest",
            input={"name": "qwen3-0.6b", "checksums": {"config.json": "0" * 64}},
        ),
    ],
)
async def verify(context: Context, request: VerifyInput) -> Verification:
    model = Model.model_validate(await _get(context, request.name, request.namespace))
    issues, checked = model_issues(model, expected=model.spec.checksums | request.checksums)
    manifest = model.status.manifest if model.status else None
    return Verification(
        name=request.name,
        namespace=model.metadata.namespace or "",
        valid=not issues,
        issues=issues,
        files=manifest.file_count if manifest else 0,
        checked=checked,
        manifest_sha256=manifest.sha256 if manifest else None,
    )


@query(
    "model.search",
    description="Find models by words in their name or source: the catalog's presets (ready to "
    "model.pull with the fields returned) and the Models in the cluster, in every namespace.",
    examples=[
        Example(description="Qwen models", input={"query": "qwen"}),
        Example(description="Speech recognition models", input={"type": "ASR", "limit": 5}),
    ],
)
async def search(context: Context, request: SearchInput) -> SearchResults:
    words = request.query.lower().split()
    presets = (await shared.catalog(context.settings.catalog_dir)).models
    found = [_preset(m) for m in presets]
    models = [Model.model_validate(b) for b in await context.kube.list(resources.MODELS)]
    found += [_found(m) for m in models if context.allows(m.metadata.namespace)]
    matching = [
        r
        for r in found
        if (request.type is None or r.type == request.type)
        and all(w in f"{r.name} {r.source}".lower() for w in words)
    ]
    matching.sort(key=lambda r: (r.origin != "catalog", r.name, r.namespace or ""))
    return SearchResults(items=matching[: request.limit])


def model_issues(model: Model, *, expected: dict[str, str]) -> tuple[list[str], int]:
    """What is wrong with a Model's download given expected digests, and how many were compared (pure)."""
    status = model.status
    condition = shared.ready(status.conditions if status else [])
    issues = []
    if condition is None or condition.status != ConditionStatus.TRUE:
        why = f"{condition.reason}: {condition.message}" if condition else "no status yet"
        issues.append(f"The Model is not Ready ({why})")
    manifest = status.manifest if status else None
    if manifest is None:
        return [*issues, "No verified manifest: the download has not completed"], 0
    listed = {f.path: f.sha256 for f in manifest.files}
    checked = 0
    for path, digest in sorted(expected.items()):
        if path not in listed:
            issues.append(
                f"{path} is not among the {len(listed)} files listed in status (the volume's manifest has "
                "all of them)"
                if manifest.file_count > len(listed)
                else f"{path} was not downloaded"
            )
            continue
        checked += 1
        if listed[path] != digest:
            issues.append(f"{path} has sha256 {listed[path]}, expected {digest}")
    return issues, checked


def _preset(model: Model) -> SearchResult:
    spec = model.spec
    return SearchResult(
        name=model.metadata.name or "",
        origin="catalog",
        source=spec.source,
        type=spec.type,
        format=spec.format,
    )


def _found(model: Model) -> SearchResult:
    condition = shared.ready(model.status.conditions if model.status else [])
    return SearchResult(
        name=model.metadata.name or "",
        origin="cluster",
        namespace=model.metadata.namespace,
        source=model.spec.source,
        type=model.spec.type,
        format=model.spec.format or (model.status.format if model.status else None),
        ready=condition.status if condition else ConditionStatus.UNKNOWN,
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


async def _require_claim(context: Context, *, source: str, namespace: str) -> None:
    """Refuse a pvc:// source whose claim is not there: its files are read in place, so a Model of it
    could only wait. (The controller says the same of a Model applied without a unit.)"""
    try:
        claim = parse_source(source).claim
    except ValueError:
        return  # no scheme: the API server refuses the Model, and says why
    if claim is None:
        return
    if await context.kube.get(resources.PERSISTENT_VOLUME_CLAIMS, name=claim, namespace=namespace) is None:
        raise UnitError(
            ErrorCode.NOT_FOUND,
            f"PersistentVolumeClaim {claim} not found in namespace {namespace}; a pvc:// source is read "
            "in place, so the claim must exist first",
            {"claim": claim, "namespace": namespace},
        )


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


UNITS = (create, pull, import_, verify, get, list_, search, delete, estimate_resources)
