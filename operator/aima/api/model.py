"""Model: weights to serve, where they come from and where they are cached.

The Model controller downloads `spec.source` into a PersistentVolumeClaim with a loader Job and
reports progress in `status`; InferenceServices mount the claim read-only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    LocalObjectReference,
    PrinterColumn,
    Quantity,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)

__all__ = [
    "CRD",
    "SOURCE_SCHEMES",
    "ManifestFile",
    "Model",
    "ModelCache",
    "ModelFiles",
    "ModelFormat",
    "ModelManifest",
    "ModelPhase",
    "ModelProgress",
    "ModelSpec",
    "ModelStatus",
    "ModelType",
    "ReclaimPolicy",
    "ResourceEstimate",
]

SOURCE_SCHEMES = ("hf://", "modelscope://", "ollama://", "https://", "s3://", "pvc://")
"""Source URI schemes the loader understands."""


class ModelType(StrEnum):
    """What a model does; it decides which engines can serve it and which OpenAI APIs it answers."""

    LLM = "LLM"
    VLM = "VLM"
    ASR = "ASR"
    TTS = "TTS"
    EMBEDDING = "Embedding"
    RERANK = "Rerank"
    DIFFUSION = "Diffusion"
    DETECTION = "Detection"
    LORA = "LoRA"
    """A LoRA adapter of another Model (spec.baseModelRef), loaded by InferenceServices of that
    Model at runtime (spec.adapters)."""


class ModelFormat(StrEnum):
    """How the weights are stored on disk."""

    SAFETENSORS = "SafeTensors"
    GGUF = "GGUF"
    PYTORCH = "PyTorch"
    ONNX = "ONNX"
    CTRANSLATE2 = "CTranslate2"
    OLLAMA = "Ollama"


class ReclaimPolicy(StrEnum):
    """What happens to the cache volume when the Model is deleted."""

    DELETE = "Delete"
    RETAIN = "Retain"


class ModelPhase(StrEnum):
    """A one-word summary for display, derived from the conditions; nothing branches on it."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


Pattern = Annotated[str, Field(max_length=1024)]
_NO_EMPTY_PATTERN = cel(
    "self.all(p, p.matches('[^[:space:]]'))",
    "file patterns cannot be empty: an empty glob matches no file; remove it, or write one such as"
    " *.safetensors",
)


class ModelFiles(ApiModel):
    """Which files of the source to download (glob patterns relative to the repository root)."""

    include: list[Pattern] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": [_NO_EMPTY_PATTERN]},
    )
    """Download only files matching one of these globs, such as `*.safetensors` or `config.json`.
    Empty means every file."""
    exclude: list[Pattern] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-validations": [_NO_EMPTY_PATTERN]},
    )
    """Skip files matching one of these globs, such as `original/*` or `*.pth`."""


class ModelCache(ApiModel):
    """The PersistentVolumeClaim that holds the downloaded files."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))",
                    "cache.size must be a positive quantity such as 50Gi",
                ),
                cel(
                    "!has(oldSelf.storageClassName) || (has(self.storageClassName)"
                    " && self.storageClassName == oldSelf.storageClassName)",
                    "cache.storageClassName cannot change once the volume exists; create a new Model instead",
                ),
            ]
        }
    )

    size: Quantity = "50Gi"
    """Capacity of the volume. Make it larger than the model, with room for a second revision."""
    storage_class_name: str | None = Field(default=None, max_length=253)
    """StorageClass of the volume; empty uses the cluster's default class."""
    reclaim_policy: ReclaimPolicy = ReclaimPolicy.DELETE
    """Delete removes the volume with the Model; Retain keeps it for reuse or inspection."""


class ModelSpec(ApiModel):
    """Desired state of a Model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    " || ".join(f"self.source.startsWith('{s}')" for s in SOURCE_SCHEMES),
                    "source must start with one of " + ", ".join(SOURCE_SCHEMES),
                    field_path=".source",
                ),
                cel(
                    "!self.source.matches('[/@]([.]|%2[eE]){2}([/@?#]|$)')",
                    "source must not contain '..' segments: a source names a repository, bucket, file or"
                    " claim path and cannot climb out of it",
                    field_path=".source",
                ),
                cel(
                    "!self.source.matches('^[a-z0-9]+://[^/?#]*@')",
                    "source must not carry credentials (user:password@host): a source is shown in status,"
                    " Events and logs; put them in a Secret named by secretRef instead",
                    field_path=".source",
                ),
                cel(
                    "!self.source.startsWith('hf://') || self.source.matches("
                    "'^hf://[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+(@[A-Za-z0-9_./-]+)?$')",
                    "Hugging Face sources look like hf://org/repo or hf://org/repo@revision",
                    field_path=".source",
                ),
                cel(
                    "!self.source.startsWith('pvc://') || self.source.matches("
                    "'^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$')",
                    "PVC sources look like pvc://claim-name/path/inside",
                    field_path=".source",
                ),
                cel(
                    "!has(self.format) || (self.format == 'Ollama') == self.source.startsWith('ollama://')",
                    "format Ollama goes with ollama:// sources, and ollama:// sources with format Ollama",
                    field_path=".format",
                ),
                cel(
                    "!has(self.cache) || !self.source.startsWith('pvc://')",
                    "a pvc:// source is used in place; remove cache, which is for downloaded sources",
                    field_path=".cache",
                ),
                cel(
                    "(self.type == 'LoRA') == has(self.baseModelRef)",
                    "a LoRA Model names the Model it adapts in baseModelRef, and only a LoRA Model does",
                    field_path=".baseModelRef",
                ),
                cel(
                    "self.type != 'LoRA' || (!self.source.startsWith('pvc://') && !has(self.cache))",
                    "a LoRA adapter is downloaded into its base Model's volume: give it a downloadable"
                    " source (hf://, s3://, https://, ...) and no cache",
                    field_path=".source",
                ),
            ]
        }
    )

    source: str = Field(max_length=2048)
    """Where the weights come from: hf://org/repo[@revision], modelscope://org/repo[@revision],
    ollama://name[:tag], https://host/path/file, s3://bucket/prefix or pvc://claim/path."""
    type: ModelType
    """What the model does (LLM, VLM, ASR, TTS, Embedding, Rerank, Diffusion, Detection, or LoRA for
    an adapter of another Model); engines are chosen by it."""
    base_model_ref: LocalObjectReference | None = None
    """For a LoRA adapter: the Model it adapts, in the same namespace. The adapter's files go into
    that Model's volume (under adapters/<name>), so the replicas already serving it can load the
    adapter without a restart."""
    format: ModelFormat | None = None
    """How the weights are stored; detected from the files when empty."""
    files: ModelFiles | None = None
    """Which files of the source to download; everything when empty."""
    checksums: dict[str, Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict,
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.all(path, self[path].matches('^[a-f0-9]{64}$'))",
                    "checksums are lowercase hex sha256 digests of 64 characters, keyed by file path",
                )
            ]
        },
    )
    """Expected sha256 (lowercase hex) per file path; a mismatch fails the download."""
    secret_ref: str | None = Field(default=None, max_length=253)
    """Name of a Secret in the same namespace with credentials for the source, such as HF_TOKEN,
    MODELSCOPE_API_TOKEN, HTTP_TOKEN (sent as a Bearer token to https:// sources), or
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary credentials);
    s3:// sources without it are read anonymously."""
    cache: ModelCache | None = None
    """The volume the files are downloaded into; defaults apply when empty."""


class ModelProgress(ApiModel):
    """Download progress, written by the loader Job while it runs."""

    phase: ModelPhase | None = None
    """What the loader is doing: Downloading, Verifying, Ready once every file is verified, or Failed."""
    message: str | None = Field(default=None, max_length=4096)
    """The loader's last word, such as why it failed."""

    percent: int = Field(default=0, ge=0, le=100)
    """Share of bytes downloaded, 0 to 100."""
    bytes_done: int = Field(default=0, ge=0)
    """Bytes downloaded and verified so far."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Total bytes to download, once known."""
    files_done: int = Field(default=0, ge=0)
    """Files completed."""
    files_total: int | None = Field(default=None, ge=0)
    """Files to download, once known."""
    bytes_per_second: int | None = Field(default=None, ge=0)
    """Recent download speed."""
    eta_seconds: int | None = Field(default=None, ge=0)
    """Estimated seconds until the download completes."""


class ManifestFile(ApiModel):
    """One verified file."""

    path: str = Field(max_length=1024)
    """Path relative to the model directory."""
    size: int = Field(ge=0)
    """Size in bytes."""
    sha256: str = Field(max_length=64)
    """sha256 of the contents, lowercase hex."""


class ModelManifest(ApiModel):
    """The verified files, as in the .aima-manifest.json the loader writes beside them."""

    sha256: str = Field(max_length=64)
    """sha256 of the manifest file itself: equal digests mean identical downloads."""
    file_count: int = Field(ge=0)
    """Number of files."""
    total_bytes: int = Field(ge=0)
    """Sum of the file sizes."""
    files: list[ManifestFile] = Field(default_factory=list, max_length=256)
    """The files, largest first; at most 256 are listed (the file on the volume has all of them)."""


class ResourceEstimate(ApiModel):
    """What serving the model is expected to need, estimated from its files."""

    parameters: str | None = Field(default=None, max_length=32)
    """Parameter count, such as 8B or 0.6B."""
    gpu_memory: str | None = Field(default=None, max_length=64)
    """GPU memory for the weights plus a default KV cache, as a quantity such as 18Gi."""
    gpus: int | None = Field(default=None, ge=0)
    """GPUs suggested for the estimate on the GPUs observed in the cluster."""


class ModelStatus(ApiModel):
    """Observed state of a Model, written only by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Ready (the summary) and Downloaded, with reasons and messages."""
    phase: ModelPhase | None = None
    """One-word summary for display, derived from the conditions."""
    format: ModelFormat | None = None
    """The format found in the downloaded files."""
    revision: str | None = Field(default=None, max_length=256)
    """The exact revision downloaded, such as a commit hash."""
    progress: ModelProgress | None = None
    """Download progress."""
    size: str | None = Field(default=None, max_length=64)
    """Size on disk as a quantity, such as 16Gi."""
    claim_name: str | None = Field(default=None, max_length=253)
    """The PersistentVolumeClaim holding the files."""
    path: str | None = Field(default=None, max_length=1024)
    """Directory of the files inside the claim."""
    weights_file: str | None = Field(default=None, max_length=1024)
    """For single-file models (GGUF), the weights file, relative to path."""
    estimate: ResourceEstimate | None = None
    """Resources expected to serve the model."""
    last_download_time: datetime | None = None
    """When the last download completed."""
    loader_job: str | None = Field(default=None, max_length=253)
    """The loader Job for the current source and file filters."""
    manifest: ModelManifest | None = None
    """What was downloaded and verified: every file with its size and sha256."""


class Model(StoredObject[ModelSpec, ModelStatus]):
    """A Model object as stored in the API server."""

    kind: Literal["Model"] = "Model"


CRD = CustomResource(
    kind="Model",
    plural="models",
    description="A Model is a set of weights to serve: where they come from (Hugging Face, ModelScope, "
    "Ollama, HTTPS, S3 or a PVC), what they do, and the volume AIMA downloads them into.",
    spec=ModelSpec,
    status=ModelStatus,
    short_names=("mdl",),
    printer_columns=(
        PrinterColumn(name="Type", json_path=".spec.type", description="What the model does."),
        PrinterColumn(name="Phase", json_path=".status.phase", description="Summary of the state."),
        PrinterColumn(
            name="Progress",
            json_path=".status.progress.percent",
            type="integer",
            description="Percent of bytes downloaded.",
        ),
        PrinterColumn(name="Size", json_path=".status.size", description="Size on disk."),
        *ready_columns(),
        PrinterColumn(
            name="Source", json_path=".spec.source", description="Where the weights come from.", priority=1
        ),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
    validations=(
        cel(
            # The name becomes a label value and part of the cache PVC's name: both allow 63 characters.
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')"
            " && size(self.metadata.name) <= 63",
            "Model names are at most 63 lowercase letters, digits, '-' and '.', such as qwen2.5-7b",
        ),
    ),
    selectable_fields=(".spec.type",),
)
