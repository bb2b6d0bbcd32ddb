"""Engine: how to run an inference server (vLLM, SGLang, Ollama, ...) for a model.

Engines are data, not code: the catalog in `catalog/engines/` ships one Engine object per server,
and every per-engine difference (images per accelerator, argv templates, port, probes, resources)
lives in its spec. Templates are rendered in a Jinja2 sandbox by `aima.domain.engine_args`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    EnvVars,
    PrinterColumn,
    Quantity,
    ResourceList,
    Scope,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)
from aima.api.model import ModelFormat, ModelType

__all__ = [
    "CRD",
    "TEMPLATE_VARIABLES",
    "Accelerator",
    "AdapterApi",
    "Architecture",
    "Engine",
    "EngineAdapters",
    "EngineArgsStyle",
    "EngineHealth",
    "EngineResources",
    "EngineSecurity",
    "EngineSpec",
    "EngineStatus",
    "EngineVariant",
    "OpenAIEndpoint",
]

TEMPLATE_VARIABLES = (
    "Jinja2 templates, rendered in a sandbox; each entry becomes exactly one argument. Variables: "
    "model.name, model.source, model.type, model.format, model.path (directory of the weights), "
    "model.file (the weights file of single-file models such as GGUF), "
    "model.repo and model.revision (for hf:// and modelscope://), model.ollamaName (for ollama://); "
    "service.name, service.namespace, service.servedName, service.gpus; engine.name, engine.port, "
    "engine.variant, engine.accelerator. An entry that renders empty is dropped."
)

Template = Annotated[str, Field(max_length=1024)]
"""One Jinja2 template that renders to one command-line argument or environment value."""


class Accelerator(StrEnum):
    """The hardware an image is built for."""

    NVIDIA_GPU = "NvidiaGPU"
    CPU = "CPU"


class Architecture(StrEnum):
    """CPU architecture of the image, as in the node label kubernetes.io/arch."""

    AMD64 = "amd64"
    ARM64 = "arm64"


class OpenAIEndpoint(StrEnum):
    """OpenAI-compatible API paths an engine answers; the gateway routes by them."""

    CHAT_COMPLETIONS = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"
    EMBEDDINGS = "/v1/embeddings"
    RERANK = "/v1/rerank"
    AUDIO_TRANSCRIPTIONS = "/v1/audio/transcriptions"
    AUDIO_TRANSLATIONS = "/v1/audio/translations"
    AUDIO_SPEECH = "/v1/audio/speech"
    IMAGES_GENERATIONS = "/v1/images/generations"


class EngineArgsStyle(StrEnum):
    """How an InferenceService's `engineArgs` reach the engine."""

    FLAGS = "Flags"
    """Each entry becomes one argument `--key=value` (or `--key` when the value is empty)."""
    FLAG_AND_VALUE = "FlagAndValue"
    """Each entry becomes two arguments, `--key` and `value`, for parsers that do not accept `=`."""
    UNSUPPORTED = "Unsupported"
    """The engine takes no extra flags; services that set engineArgs report InvalidSpec."""


class EngineVariant(ApiModel):
    """An image of the engine for one accelerator and CPU architecture."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                    "variant names are lowercase letters, digits and '-', such as cuda or gb10",
                    field_path=".name",
                )
            ]
        }
    )

    name: str = Field(max_length=63)
    """Short name of the variant, such as cuda, cpu or gb10; unique within the engine."""
    accelerator: Accelerator
    """Hardware the image runs on: NvidiaGPU or CPU."""
    architecture: Architecture = Architecture.AMD64
    """CPU architecture of the image: amd64 or arm64 (Jetson, GB10, Grace)."""
    image: str = Field(max_length=512)
    """Container image, pinned to a version tag or digest."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=16)
    """Extra node labels this variant needs, for example a GPU family for a Jetson build."""
    extra_args: list[Template] = Field(
        default_factory=list,
        max_length=32,
        description="Arguments appended after spec.args for this variant only. " + TEMPLATE_VARIABLES,
    )
    env: EnvVars = Field(default_factory=dict)
    """Environment variables for this variant, added to and overriding spec.env; values are templates."""


class EngineHealth(ApiModel):
    """How the engine tells it is alive and ready."""

    path: str = Field(
        default="/health",
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [cel("self.startsWith('/')", "health.path must start with /")]
        },
    )
    """HTTP path that answers 200 once the model is loaded."""
    startup_timeout_seconds: int = Field(default=1800, ge=10, le=86400)
    """How long loading may take before the container is restarted; large models need long budgets."""
    period_seconds: int = Field(default=10, ge=1, le=300)
    """Seconds between probes."""
    drain_seconds: int = Field(default=30, ge=0, le=3600)
    """Seconds a stopping replica, already out of the routing, keeps serving the requests it has
    before the engine gets SIGTERM: rolling updates, scale-downs and deletions do not cut streams
    shorter than this. The pod's grace period is this plus 30 s."""


class EngineResources(ApiModel):
    """Default resources of an engine container; an InferenceService may override them."""

    gpus: int = Field(default=1, ge=0, le=64)
    """GPUs per replica on GPU variants (CPU variants always get none)."""
    requests: ResourceList = Field(default_factory=dict)
    """Requested CPU, memory and other resources, such as cpu: 4 and memory: 16Gi."""
    limits: ResourceList = Field(default_factory=dict)
    """Resource limits, such as memory: 32Gi."""
    shared_memory: Quantity | None = None
    """Size of the /dev/shm memory volume; PyTorch engines need more than the container default."""


WritablePath = Annotated[
    str,
    Field(
        max_length=256,
        # Each segment starts with a letter, digit, _ or -: no '.' or '..' segment climbs out.
        pattern=r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$",
    ),
]
"""An absolute directory in the engine's container, such as /tmp."""


class EngineSecurity(ApiModel):
    """How the engine's container runs. The defaults lock it down: a user other than root, a root
    filesystem it cannot write, and empty directories only where it must write."""

    run_as_user: int = Field(default=65532, ge=0, le=2147483647)
    """The user (and group) the engine runs as. Most engines run as any user, given a writable
    HOME; name the image's own user for an image whose files only that user reads, and 0 (root)
    only for an engine that cannot run otherwise."""
    read_only_root_filesystem: bool = True
    """Whether the container's root filesystem is read-only: an engine broken into cannot change
    its own programs."""
    writable_paths: list[WritablePath] = Field(
        default=["/tmp"],  # noqa: S108 (a mount point inside the container, not a temporary file)
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Empty directories mounted writable, for caches and temporary files; they live as long as the
    pod. HOME is the first of them unless the Engine or the service sets HOME."""


class AdapterApi(StrEnum):
    """The HTTP API an engine loads and unloads LoRA adapters through."""

    VLLM = "vLLM"
    """POST /v1/load_lora_adapter {lora_name, lora_path}, POST /v1/unload_lora_adapter {lora_name};
    GET /v1/models lists the loaded adapters with their base as parent."""


class EngineAdapters(ApiModel):
    """How the engine loads LoRA adapters at runtime, for InferenceServices that list adapters."""

    api: AdapterApi = AdapterApi.VLLM
    """The engine's adapter API."""
    args: list[Template] = Field(
        default_factory=list,
        max_length=16,
        description="Arguments added while a service lists adapters, such as --enable-lora. "
        + TEMPLATE_VARIABLES,
    )
    env: EnvVars = Field(default_factory=dict)
    """Environment variables added while a service lists adapters, such as the switch that turns on
    the runtime API."""


class EngineSpec(ApiModel):
    """Desired state of an Engine."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
                    "variant names must be unique",
                    field_path=".variants",
                ),
                cel(
                    "!has(self.security.writablePaths) || !self.security.writablePaths.exists(p,"
                    " p == self.modelMountPath || p == '/dev/shm')",
                    "security.writablePaths must not name modelMountPath or /dev/shm: they have their own"
                    " volumes",
                    field_path=".security.writablePaths",
                ),
            ]
        }
    )

    description: str | None = Field(default=None, max_length=1024)
    """What the engine is and when to choose it."""
    variants: list[EngineVariant] = Field(min_length=1, max_length=16)
    """Images per accelerator and architecture; a service gets the first variant that fits its node."""
    command: list[Template] = Field(
        default_factory=list,
        max_length=16,
        description="Entrypoint override; the image's entrypoint when empty. " + TEMPLATE_VARIABLES,
    )
    args: list[Template] = Field(
        default_factory=list, max_length=64, description="Arguments to the entrypoint. " + TEMPLATE_VARIABLES
    )
    env: EnvVars = Field(default_factory=dict)
    """Environment variables; values are Jinja2 templates with the same variables as args."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port the engine serves HTTP on."""
    health: EngineHealth = EngineHealth()
    """Health and startup probes."""
    metrics_path: str | None = Field(
        default=None,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [cel("self.startsWith('/')", "metricsPath must start with /")]
        },
    )
    """HTTP path of the engine's Prometheus metrics on its port; the chart's engine PodMonitor scrapes
    it. Unset: the engine serves no metrics and is not scraped."""
    model_name: str | None = Field(default=None, max_length=256)
    """The one model name the engine answers to, for engines that take none from their command line
    (fastkokoro and Kokoro-FastAPI answer only to `kokoro`): the gateway sends it upstream whatever
    the client asked for. Unset: the engine serves the InferenceService's served name."""
    adapters: EngineAdapters | None = None
    """How the engine loads LoRA adapters at runtime; unset: it cannot, and services listing
    adapters say so."""
    model_types: list[ModelType] = Field(
        min_length=1, max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Model types the engine serves."""
    model_formats: list[ModelFormat] = Field(
        min_length=1, max_length=8, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Weight formats the engine loads."""
    endpoints: list[OpenAIEndpoint] = Field(
        min_length=1, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """OpenAI-compatible API paths the engine serves."""
    model_mount_path: str = Field(default="/models", max_length=256)
    """Where the model volume is mounted in the container; model.path lies under it."""
    resources: EngineResources = EngineResources()
    """Default resources per replica."""
    security: EngineSecurity = EngineSecurity()
    """The user the engine runs as and what it may write."""
    engine_args_style: EngineArgsStyle = EngineArgsStyle.FLAGS
    """How an InferenceService's engineArgs are passed: Flags (--key=value), FlagAndValue (--key value)
    or Unsupported."""
    priority: int = Field(default=0, ge=-100, le=100)
    """Preference when several engines can serve a model and the service names none; higher wins."""


class EngineStatus(ApiModel):
    """Observed state of an Engine, written only by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Ready is True when every template parses."""


class Engine(StoredObject[EngineSpec, EngineStatus]):
    """An Engine object as stored in the API server."""

    kind: Literal["Engine"] = "Engine"


CRD = CustomResource(
    kind="Engine",
    plural="engines",
    description="An Engine describes an inference server (vLLM, SGLang, Ollama, llama.cpp, ...): its "
    "images per accelerator, argument templates, port, probes, the model types and formats it serves, "
    "the OpenAI endpoints it exposes and its default resources.",
    spec=EngineSpec,
    status=EngineStatus,
    scope=Scope.CLUSTER,
    short_names=("eng",),
    printer_columns=(
        PrinterColumn(name="Types", json_path=".spec.modelTypes", description="Model types served."),
        PrinterColumn(name="Formats", json_path=".spec.modelFormats", description="Weight formats loaded."),
        PrinterColumn(name="Port", json_path=".spec.port", type="integer", description="HTTP port."),
        *ready_columns(),
        PrinterColumn(
            name="Image",
            json_path=".spec.variants[0].image",
            description="Image of the first variant.",
            priority=1,
        ),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
)
