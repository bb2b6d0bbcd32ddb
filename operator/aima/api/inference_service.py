"""InferenceService: a running, routable deployment of one Model on one Engine.

GitOps note: controllers never write `spec`. `spec.replicas` is served through the scale subresource,
so `kubectl scale`, an HPA or AIMA's autoscaler change it through `/scale`; leave it out of Git when
one of them owns it (Argo CD: `ignoreDifferences` on /spec/replicas). Stopping and starting a service
(`service.stop` / `service.start`) flips `spec.suspend` instead of zeroing replicas, so a stop does not
fight a replica count that Git owns, and a start restores the count Git (or the scaler) chose.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    EnvVars,
    IntOrString,
    LocalObjectReference,
    PrinterColumn,
    Quantity,
    ResourceList,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)

__all__ = [
    "CRD",
    "AdapterReference",
    "AdapterState",
    "AdapterStatus",
    "Autoscaling",
    "EngineReference",
    "EnvFromSource",
    "InferenceService",
    "InferenceServicePhase",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "RolloutGuard",
    "Scheduling",
    "ServiceResources",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "TrafficTarget",
]


class InferenceServicePhase(StrEnum):
    """A one-word summary for display, derived from the conditions; nothing branches on it."""

    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FAILED = "Failed"


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(StrEnum):
    """The taint effect a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class EngineReference(ApiModel):
    """The Engine to run, and optionally which of its variants."""

    name: str = Field(min_length=1, max_length=253)
    """Name of a cluster-scoped Engine, such as vllm or llama-cpp."""
    variant: str | None = Field(default=None, max_length=63)
    """Name of one of the engine's variants; chosen from the nodes' hardware when empty."""


class Autoscaling(ApiModel):
    """Bounds for AIMA's request-based autoscaler, which writes spec.replicas only through /scale."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=0, le=1000)
    """Fewest replicas; 0 lets an idle service scale to zero and start again on the next request."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most replicas."""
    target_active_requests: int = Field(default=8, ge=1, le=100000)
    """In-flight requests per replica the autoscaler aims for."""
    scale_down_delay_seconds: int = Field(default=300, ge=0, le=86400)
    """How long load must stay low before replicas are removed."""


class ServiceResources(ApiModel):
    """GPUs and other resources per replica; what is left empty comes from the Engine."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.gpuProduct) || !has(self.gpus) || self.gpus >= 1",
                    "gpuProduct selects a GPU model, so gpus must be at least 1",
                    field_path=".gpuProduct",
                )
            ]
        }
    )

    gpus: int | None = Field(default=None, ge=0, le=64)
    """NVIDIA GPUs per replica (nvidia.com/gpu); 0 runs the engine's CPU variant. Empty takes the
    engine's default."""
    gpu_product: str | None = Field(default=None, max_length=128)
    """Only schedule on nodes with this GPU model, as in the node label nvidia.com/gpu.product (for
    example NVIDIA-H100-80GB-HBM3 or NVIDIA-GB10)."""
    requests: ResourceList = Field(default_factory=dict)
    """Requested CPU, memory and other resources, such as cpu: 8 and memory: 32Gi."""
    limits: ResourceList = Field(default_factory=dict)
    """Resource limits, such as memory: 64Gi."""
    shared_memory: Quantity | None = None
    """Size of /dev/shm; needed for tensor parallelism across GPUs."""


class EnvFromSource(ApiModel):
    """A Secret or ConfigMap whose keys become environment variables."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.secretRef) != has(self.configMapRef)",
                    "each envFrom entry names exactly one of secretRef or configMapRef",
                )
            ]
        }
    )

    secret_ref: LocalObjectReference | None = None
    """A Secret in the same namespace."""
    config_map_ref: LocalObjectReference | None = None
    """A ConfigMap in the same namespace."""


class Toleration(ApiModel):
    """Lets replicas run on nodes with a matching taint, as in a Pod's tolerations."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "a toleration with operator Exists matches every value; remove value",
                ),
                cel(
                    "has(self.key) || self.operator == 'Exists'",
                    "a toleration without a key must use operator Exists",
                ),
            ]
        }
    )

    key: str | None = Field(default=None, max_length=316)
    """Taint key to match; empty with operator Exists matches every taint."""
    operator: TolerationOperator = TolerationOperator.EQUAL
    """Equal matches key and value; Exists matches the key with any value."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match with operator Equal."""
    effect: TaintEffect | None = None
    """Taint effect to match; empty matches every effect."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute, how long a replica stays after the taint appears; empty means forever."""


class Scheduling(ApiModel):
    """Where and with what priority replicas run."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    """Node labels replicas require, added to the engine variant's."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints replicas tolerate. GPU replicas also tolerate nvidia.com/gpu:NoSchedule."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """PriorityClass of the replicas' pods."""
    runtime_class_name: str | None = Field(default=None, max_length=253)
    """RuntimeClass of the replicas' pods, such as nvidia where the NVIDIA container runtime is not
    the node's default."""


class AdapterReference(ApiModel):
    """A LoRA adapter the service's replicas load at runtime."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
    """Clients ask for `<the service's model id>:<name>`."""
    model_ref: LocalObjectReference
    """A LoRA Model whose baseModelRef is this service's Model."""


class TrafficTarget(ApiModel):
    """One InferenceService behind this service's model id, and its share of the requests."""

    service: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """An InferenceService of this namespace; this one's own name means its own replicas."""
    weight: int = Field(ge=0, le=100)
    """Percent of the requests."""


class RolloutGuard(ApiModel):
    """Bounds past which the gateway stops sending a traffic split's other targets anything."""

    max_error_percent: float = Field(default=5, ge=0, le=100)
    """A target whose 5xx replies pass this share of its last requests is halted."""
    max_time_to_first_token_seconds: float | None = Field(default=None, ge=0.001, le=3600)
    """A target whose median time to the first byte of its streams passes this is halted."""
    window_requests: int = Field(default=50, ge=5, le=10000)
    """A target is judged on its last this many requests, once it has had them."""


class AdapterState(StrEnum):
    """Where one adapter stands on the service's replicas."""

    PENDING = "Pending"
    """Its Model is not downloaded yet, or no replica is ready to load it."""
    LOADING = "Loading"
    """Loaded on some ready replicas, not yet on all."""
    READY = "Ready"
    """Loaded on every ready replica."""
    FAILED = "Failed"
    """It cannot be loaded: the message says why, in the engine's words where the engine refused."""


class AdapterStatus(ApiModel):
    """One adapter as the controller last saw it on the replicas."""

    name: str = Field(max_length=63)
    """The adapter's name, as in spec.adapters."""
    model: str = Field(max_length=320)
    """The model id clients ask the gateway for."""
    state: AdapterState
    """Pending, Loading, Ready or Failed."""
    ready_replicas: int = Field(default=0, ge=0)
    """Ready replicas that hold the adapter."""
    pods: list[str] = Field(default_factory=list, max_length=1000)
    """The pods that hold it; the gateway sends the adapter's requests only to these."""
    message: str = Field(default="", max_length=4096)
    """What is happening, and for a failure why and what to do."""


class InferenceServiceSpec(ApiModel):
    """Desired state of an InferenceService."""

    model_ref: LocalObjectReference
    """The Model to serve, in the same namespace."""
    engine_ref: EngineReference | None = None
    """The Engine to run; chosen by model type, format and hardware when empty."""
    served_name: str | None = Field(default=None, max_length=256)
    """The name clients pass as `model` in OpenAI requests; the InferenceService's name when empty."""
    replicas: int = Field(default=1, ge=0, le=1000)
    """Desired replicas, served through the scale subresource (kubectl scale, HPA, AIMA's autoscaler).
    Leave it out of Git when a scaler owns it."""
    suspend: bool = False
    """While true, no replicas run and the configuration is kept. service.stop and service.start set
    it, so stopping does not overwrite replicas; leave it out of Git if you use them."""
    autoscaling: Autoscaling | None = None
    """Request-based autoscaling bounds; replicas stay as set when empty."""
    resources: ServiceResources = ServiceResources()
    """GPUs, CPU and memory per replica; empty values come from the Engine."""
    engine_args: dict[str, IntOrString] = Field(
        default_factory=dict,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, k.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$') && size(k) <= 128)",
                    "engineArgs keys are flag names without leading dashes, such as max-model-len",
                )
            ]
        },
    )
    """Extra engine flags, each passed as one argument --key=value (--key when the value is empty),
    such as max-model-len: 8192. Values are never interpreted as templates."""
    env: EnvVars = Field(default_factory=dict)
    """Environment variables for the engine container, overriding the Engine's."""
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=16)
    """Secrets and ConfigMaps whose keys become environment variables, such as API tokens."""
    scheduling: Scheduling | None = None
    """Node selection, tolerations and priority."""
    adapters: list[AdapterReference] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.all(a, self.exists_one(b, b.name == a.name))", "adapter names must be unique")
            ]
        },
    )
    """LoRA adapters every ready replica loads at runtime; only the first restarts pods (turning the
    engine's adapter support on)."""
    traffic: list[TrafficTarget] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.size() == 0 || self.map(t, t.weight).sum() == 100",
                    "traffic weights must sum to 100",
                ),
                cel(
                    "self.all(t, self.exists_one(u, u.service == t.service))",
                    "traffic names each service once",
                ),
            ]
        },
    )
    """Split this service's model id by weight (90/10 for a canary); empty: all to its own replicas."""
    rollout_guard: RolloutGuard | None = None
    """Halt a target of the split that fails or slows down (the aima.dev/rollout-halted annotation)."""


class InferenceServiceStatus(ApiModel):
    """Observed state of an InferenceService, written only by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Ready (the summary), ModelReady, EngineResolved, Scheduled and Available, with reasons such as
    InsufficientGPU, ImagePullBackOff, OOMKilled or CrashLoopBackOff."""
    phase: InferenceServicePhase | None = None
    """One-word summary for display, derived from the conditions."""
    replicas: int = Field(default=0, ge=0)
    """Replicas that exist (the scale subresource's status replicas)."""
    ready_replicas: int = Field(default=0, ge=0)
    """Replicas whose engine answers its health check."""
    selector: str | None = Field(default=None, max_length=1024)
    """Label selector of the replicas' pods, serialized, for the HPA via the scale subresource."""
    endpoint: str | None = Field(default=None, max_length=1024)
    """In-cluster base URL of the engine, such as http://name.namespace.svc:8000."""
    engine: str | None = Field(default=None, max_length=253)
    """The Engine in use."""
    engine_variant: str | None = Field(default=None, max_length=63)
    """The engine variant in use."""
    image: str | None = Field(default=None, max_length=512)
    """The image in use."""
    served_name: str | None = Field(default=None, max_length=256)
    """The model name clients use."""
    engine_model: str | None = Field(default=None, max_length=256)
    """The model name the engine answers to, which the gateway puts in requests: the Engine's
    modelName, else the served name."""
    gpus: int | None = Field(default=None, ge=0)
    """GPUs per replica in use."""
    adapters: list[AdapterStatus] | None = Field(default=None, max_length=32)
    """Each listed adapter: its state, the replicas that hold it, and why it fails if it does."""


class InferenceService(StoredObject[InferenceServiceSpec, InferenceServiceStatus]):
    """An InferenceService object as stored in the API server."""

    kind: Literal["InferenceService"] = "InferenceService"


CRD = CustomResource(
    kind="InferenceService",
    plural="inferenceservices",
    description="An InferenceService runs a Model on an Engine as a scalable, OpenAI-compatible "
    "endpoint with GPUs, probes and conditions that explain failures.",
    spec=InferenceServiceSpec,
    status=InferenceServiceStatus,
    short_names=("isvc",),
    scale=True,
    printer_columns=(
        PrinterColumn(name="Model", json_path=".spec.modelRef.name", description="The Model served."),
        PrinterColumn(name="Engine", json_path=".status.engine", description="The Engine in use."),
        PrinterColumn(name="GPUs", json_path=".status.gpus", type="integer", description="GPUs per replica."),
        PrinterColumn(name="Replicas", json_path=".spec.replicas", type="integer", description="Desired."),
        PrinterColumn(
            name="Available", json_path=".status.readyReplicas", type="integer", description="Ready replicas."
        ),
        PrinterColumn(name="Phase", json_path=".status.phase", description="Summary of the state."),
        *ready_columns(),
        PrinterColumn(
            name="Endpoint", json_path=".status.endpoint", description="In-cluster base URL.", priority=1
        ),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
    validations=(
        cel(
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
            "InferenceService names become Service names: at most 63 lowercase letters, digits and '-', "
            "starting with a letter",
        ),
    ),
    selectable_fields=(".spec.modelRef.name",),
)
