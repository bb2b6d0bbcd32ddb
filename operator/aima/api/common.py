"""Types shared by every AIMA kind: the API group, label and annotation keys, conditions, and the
small building blocks (references, int-or-string quantities, free-form maps) that the kinds reuse.

Everything here is plain pydantic; `aima.api` never imports a Kubernetes client, so the same models
serve the CRD generator, the controllers, the unit registry, MCP and the HTTP schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "API_VERSION",
    "FIELD_MANAGER",
    "FINALIZER",
    "GROUP",
    "VERSION",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "CustomResource",
    "EnvVars",
    "FreeForm",
    "IntOrString",
    "Keys",
    "LocalObjectReference",
    "ObjectMeta",
    "PrinterColumn",
    "Quantity",
    "Reason",
    "ResourceList",
    "Scope",
    "cel",
    "ready_columns",
]

GROUP: Final = "aima.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "aima.dev/v1alpha1"  # GROUP/VERSION, spelt out so its type is a Literal

FIELD_MANAGER: Final = "aima"
"""Server-side apply field manager of the controllers; distinct from Git's so neither steals fields."""

FINALIZER: Final = "aima.dev/cleanup"


class Keys:
    """Label and annotation keys; the only place these literals live (KubeAI keeps them in metadata.go)."""

    MANAGED_BY: Final = "app.kubernetes.io/managed-by"
    NAME: Final = "app.kubernetes.io/name"
    COMPONENT: Final = "app.kubernetes.io/component"
    MODEL: Final = "aima.dev/model"
    ENGINE: Final = "aima.dev/engine"
    INFERENCE_SERVICE: Final = "aima.dev/inference-service"
    PIPELINE: Final = "aima.dev/pipeline"
    PIPELINE_RUN: Final = "aima.dev/pipeline-run"
    CATALOG: Final = "aima.dev/catalog"
    """Set on objects the operator installs from the catalog, so users can tell them from their own."""
    METRICS_PATH: Final = "aima.dev/metrics-path"
    """Annotation on an engine pod: the path of its Prometheus metrics (the Engine's metricsPath)."""
    ROLLOUT_HALTED: Final = "aima.dev/rollout-halted"
    """Annotation on an InferenceService with a traffic split, written by the gateway when a target
    crossed spec.rolloutGuard: `<target>: <why>`. The gateway sends that target nothing while it is
    there; service.rollout and service.rollback remove it."""
    KOPF_PREFIX: Final = "kopf.aima.dev"
    """Prefix of the bookkeeping annotations of kopf, which drove some controllers before the
    operator's own watch engine did; objects written then may still carry them (units strip them)."""


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, attribute docstrings become descriptions, and
    unknown fields refused at every depth: a misspelt or misplaced field (`modelRef.namespace`) is an
    error that names it, never silently dropped. (The CRDs cannot say `additionalProperties: false`;
    the API server prunes unknown fields there, and kubectl's strict field validation refuses them.)"""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
    )


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `message` is what a person reads when the rule fails."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


IntOrString = Annotated[
    int | str,
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}),
]
"""An integer or a string, as Kubernetes quantities and ports accept (`cpu: 4` or `cpu: 500m`)."""

Quantity = Annotated[str, Field(max_length=64)]
"""A Kubernetes quantity such as `50Gi`, `500m` or `2`."""

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A JSON object kept as written; the API server neither prunes nor validates its keys."""

QuantityValue = Annotated[
    int | str,
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,  # bounds the CEL cost of isQuantity
            "x-kubernetes-validations": [
                cel("type(self) == int || isQuantity(self)", "must be a quantity such as 4, 500m or 16Gi")
            ],
        }
    ),
]
"""A Kubernetes quantity written as a number or a string, checked by the API server."""

ResourceList = Annotated[
    dict[str, QuantityValue],
    Field(
        max_length=16,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!('nvidia.com/gpu' in self)",
                    "set GPUs with spec.resources.gpus, not as nvidia.com/gpu here",
                ),
            ]
        },
    ),
]
"""Resource name to quantity, as in a container's `resources.requests`."""


EnvVars = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    Field(
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",
                    "environment variable names are letters, digits and '_', not starting with a digit",
                )
            ]
        },
    ),
]
"""Environment variable name to value."""


class Scope(StrEnum):
    """Whether objects of a kind live in a namespace or in the whole cluster."""

    NAMESPACED = "Namespaced"
    CLUSTER = "Cluster"


class ConditionStatus(StrEnum):
    """Status of a condition, as in `metav1.Condition`."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Condition types AIMA writes. `Ready` summarizes every kind except PipelineRun (`Succeeded`)."""

    READY = "Ready"
    SUCCEEDED = "Succeeded"
    DOWNLOADED = "Downloaded"
    MODEL_READY = "ModelReady"
    ENGINE_RESOLVED = "EngineResolved"
    SCHEDULED = "Scheduled"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    VALID = "Valid"
    RECONCILING = "Reconciling"
    """kstatus: present (True) only while work is in progress; Argo CD and Flux read it."""
    STALLED = "Stalled"
    """kstatus: present (True) only when progress needs a person (a failed download, a crash loop)."""
    ADAPTERS_READY = "AdaptersReady"
    """Every LoRA adapter a service lists is loaded on every ready replica (present only while it
    lists some)."""
    TRAFFIC_READY = "TrafficReady"
    """Every InferenceService a traffic split names exists and is Ready (present only while
    spec.traffic is set)."""


class Reason(StrEnum):
    """CamelCase reasons shared by the kinds; they show in `kubectl get` and in Argo CD health."""

    RECONCILING = "Reconciling"
    READY = "Ready"
    INVALID_SPEC = "InvalidSpec"
    MODEL_NOT_FOUND = "ModelNotFound"
    MODEL_NOT_READY = "ModelNotReady"
    ENGINE_NOT_FOUND = "EngineNotFound"
    NO_MATCHING_ENGINE = "NoMatchingEngine"
    TEMPLATE_ERROR = "TemplateError"
    INSUFFICIENT_GPU = "InsufficientGPU"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    STARTING = "Starting"
    SUSPENDED = "Suspended"
    DOWNLOADING = "Downloading"
    DOWNLOAD_FAILED = "DownloadFailed"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    PIPELINE_NOT_FOUND = "PipelineNotFound"
    STEP_FAILED = "StepFailed"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"
    SUCCEEDED = "Succeeded"
    ENGINE_NAMED = "EngineNamed"
    ENGINE_CHOSEN = "EngineChosen"
    SCHEDULED = "Scheduled"
    PENDING = "Pending"
    SCALED_TO_ZERO = "ScaledToZero"
    HEALTH_CHECK_FAILING = "HealthCheckFailing"
    FAILED_CREATE = "FailedCreate"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    CLAIM_NOT_FOUND = "ClaimNotFound"
    NO_NODE_LARGE_ENOUGH = "NoNodeLargeEnough"
    CONTAINER_WAITING = "ContainerWaiting"
    LOADER_NOT_STARTED = "LoaderNotStarted"
    ADAPTERS_LOADING = "AdaptersLoading"
    ADAPTER_FAILED = "AdapterFailed"
    BASE_MODEL_NOT_READY = "BaseModelNotReady"
    TRAFFIC_TARGET_NOT_FOUND = "TrafficTargetNotFound"
    TRAFFIC_TARGET_NOT_READY = "TrafficTargetNotReady"
    ROLLOUT_HALTED = "RolloutHalted"


class Condition(ApiModel):
    """One observation of the object's state, shaped exactly like `metav1.Condition`."""

    type: str = Field(max_length=316, pattern=r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
    """Kind of condition in CamelCase, such as Ready, Downloaded or Scheduled."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Why the condition is in its status, as one CamelCase word (for `kubectl get` columns)."""
    message: str = Field(default="", max_length=32768)
    """What happened and what to do about it, in words a person can act on."""
    last_transition_time: datetime
    """When the status last changed from one value to another."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this condition was computed from; older than the object means stale."""


def conditions_field() -> Any:
    """The `conditions` list: keyed by type for server-side apply, bounded for CEL cost."""
    return Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class LocalObjectReference(ApiModel):
    """A reference to another object by name."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the referenced object."""


class ObjectMeta(BaseModel):
    """The parts of `metadata` the operator reads; everything else is kept as received."""

    model_config = ConfigDict(
        extra="allow", alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None
    resource_version: str | None = None


SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


class StoredObject(ApiModel, Generic[SpecT, StatusT]):
    """An object of one of AIMA's kinds as stored in the API server; each kind narrows ``kind`` to its
    own name."""

    api_version: Literal["aima.dev/v1alpha1"] = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SpecT
    status: StatusT | None = None


@dataclass(frozen=True, kw_only=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry of a CRD."""

    name: str
    json_path: str
    type: str = "string"
    description: str
    priority: int = 0
    format: str | None = None


def ready_columns() -> tuple[PrinterColumn, ...]:
    """The `Ready` and `Reason` columns every kind with a Ready condition shows (Flux does the same)."""
    return (
        PrinterColumn(
            name="Ready",
            json_path='.status.conditions[?(@.type=="Ready")].status',
            description="Whether the object is ready, from its Ready condition.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Ready")].reason',
            description="Why the object is or is not ready.",
            priority=1,
        ),
    )


@dataclass(frozen=True, kw_only=True)
class CustomResource:
    """What the CRD generator needs to know about a kind besides its Spec and Status models."""

    kind: str
    plural: str
    description: str
    spec: type[ApiModel]
    status: type[ApiModel]
    scope: Scope = Scope.NAMESPACED
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("aima",)
    printer_columns: tuple[PrinterColumn, ...] = ()
    validations: tuple[JsonDict, ...] = ()
    """Root-level CEL rules (they may read `metadata.name`, `spec` and `status`)."""
    selectable_fields: tuple[str, ...] = ()
    scale: bool = False
    """Serve the scale subresource from .spec.replicas, .status.replicas and .status.selector."""
    required: tuple[str, ...] = ("spec",)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()
