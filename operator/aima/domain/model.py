"""Model planning (pure): the cache volume, the loader Job and its RBAC, and the status.

The loader Job writes `status.progress` and, when done, `status.manifest`, `format` and
`weightsFile`; this module writes the rest (conditions, phase, claim, estimate). A Model is Ready
once the Job for its current source succeeded and the loader reported the files verified, so a Job
that merely exited is not enough.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aima.api.common import ConditionStatus, ConditionType, Keys, Reason
from aima.api.model import Model, ModelPhase, ModelStatus, ReclaimPolicy, ResourceEstimate
from aima.domain import conditions, objects, pod_health
from aima.domain.sources import parse_source

Body = dict[str, Any]

MOUNT_PATH = "/models"
ADAPTERS_DIRECTORY = "adapters"
"""Inside a base Model's volume, the directory of its LoRA adapters' files."""
DEFAULT_CACHE_SIZE = "50Gi"
LOADER_ACCOUNT = "aima-loader"
"""ServiceAccount (and RoleBinding to the ClusterRole of the same name) that loader Jobs run as:
it may only read Models and patch their status."""
LOADER_FIELDS = frozenset(
    {"progress", "manifest", "revision", "size", "lastDownloadTime", "format", "weightsFile"}
)
"""Status fields the loader writes; the controller never patches them, so it cannot undo a newer report."""
_TOKEN_VARIABLES = {"hf": "HF_TOKEN", "modelscope": "MODELSCOPE_API_TOKEN", "https": "HTTP_TOKEN"}
"""The Secret key holding a source's token, passed to the loader by name (`--token-env`)."""
_SECRET_VARIABLES = {
    "hf": ("HF_TOKEN",),
    "modelscope": ("MODELSCOPE_API_TOKEN",),
    "https": ("HTTP_TOKEN",),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
}
"""Secret keys a source's loader reads from its environment, each set from the key of that name."""
LOADER_START_SECONDS = 60.0
"""How long a loader Job may go without a pod before the Model says that it does not start."""
_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_WAITING_REASONS = frozenset(
    {
        Reason.PENDING,
        Reason.CLAIM_NOT_FOUND,
        Reason.UNSCHEDULABLE,
        Reason.IMAGE_PULL_BACK_OFF,
        Reason.CONTAINER_WAITING,
        Reason.LOADER_NOT_STARTED,
        Reason.BASE_MODEL_NOT_READY,
    }
)
"""Reasons of a loader that has not started: the Model is Pending."""
_GIB = 1024**3
# KV cache and activations on top of the weights; vLLM's default leaves 10 % of a GPU unused.
_KV_HEADROOM = 1.3
_RUNTIME_OVERHEAD_BYTES = 1 * _GIB
_USABLE_GPU_FRACTION = 0.9


@dataclass(frozen=True, kw_only=True)
class LoaderSettings:
    """What the planner needs from the operator's settings."""

    image: str
    image_pull_policy: str
    backoff_limit: int
    endpoints: dict[str, str]
    """Endpoint per source scheme (hf, modelscope, ollama, s3), for mirrors and S3-compatible stores."""
    s3_region: str = "us-east-1"
    """Region that s3:// requests are signed for."""


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the controller read from the cluster for one Model."""

    claim: Body | None
    job: Body | None
    listed_bytes: int | None = None
    """What the source lists for download, read only before the volume exists and the spec names no
    cache size; the volume is sized from it."""
    gpu_memory_mib: int | None
    """GPU memory per GPU on the cluster's GPU nodes (the largest); read only when an estimate is due."""
    pods: list[Body] = field(default_factory=list)
    """The Model's loader pods (of any of its Jobs): why a loader does not run is read from them."""
    base: Body | None = None
    """For a LoRA adapter, its base Model (spec.baseModelRef), whose volume receives its files."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Objects to apply, in order; once the Model is downloaded, only its existing volume (whose
    owner follows the reclaim policy)."""

    objects: list[Body]
    job_name: str
    claim_name: str | None
    path: str
    waiting_for: str | None = None
    """Why nothing can start yet (an adapter whose base Model is not downloaded), in words."""


def claim_name(model: Model) -> str:
    """The PersistentVolumeClaim holding the files: the source's claim for pvc:// sources."""
    source = parse_source(model.spec.source)
    return source.claim if source.scheme == "pvc" and source.claim else f"{model.metadata.name}-model"


def loader_job_name(model: Model) -> str:
    """Deterministic per source and filters: a changed source starts a new Job, a repeat does not."""
    wanted = model.spec.model_dump(mode="json", include={"source", "files", "checksums"})
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:8]
    return f"{str(model.metadata.name)[:48]}-load-{digest}"


def plan(body: Body, *, settings: LoaderSettings, observed: Observed) -> Plan:
    """The children a Model needs now (pure)."""
    model = Model.model_validate(body)
    if model.spec.base_model_ref is not None:
        return _adapter_plan(body, model=model, settings=settings, base=observed.base)
    source = parse_source(model.spec.source)
    name = claim_name(model)
    path = (source.path or "") if source.scheme == "pvc" else ""
    job = loader_job_name(model)
    downloaded = _downloaded(model, job_name=job)
    children: list[Body] = []
    # The volume's owner follows spec.cache.reclaimPolicy in every phase, so the claim stays in the
    # plan once the files are there; it is never re-created then (that would be an empty volume).
    if source.scheme != "pvc" and (observed.claim is not None or not downloaded):
        children.append(_claim(body, model=model, name=name, observed=observed))
    if not downloaded:
        children += [
            *_loader_rbac(model),
            _job(body, model=model, settings=settings, job_name=job, claim=name, path=path),
        ]
    return Plan(objects=children, job_name=job, claim_name=name, path=path)


def adapter_path(model: Model) -> str:
    """Where a LoRA adapter's files go inside its base Model's volume."""
    return f"{ADAPTERS_DIRECTORY}/{model.metadata.name}"


def _adapter_plan(body: Body, *, model: Model, settings: LoaderSettings, base: Body | None) -> Plan:
    """A LoRA adapter is downloaded into its base Model's volume once the base is there: replicas
    serving the base mount that volume already, so they load the adapter without a restart. It owns
    no volume of its own."""
    job, path = loader_job_name(model), adapter_path(model)
    base_model = Model.model_validate(base) if base else None
    status = base_model.status if base_model else None
    claim = status.claim_name if status else None
    if status is None or claim is None or not conditions.is_true(status.conditions, ConditionType.READY):
        name = model.spec.base_model_ref.name if model.spec.base_model_ref else ""
        waiting = (
            f"Base Model {name} does not exist in namespace {model.metadata.namespace}; create it or "
            "correct spec.baseModelRef"
            if base_model is None
            else f"Waiting for base Model {name} to be downloaded: the adapter goes into its volume"
        )
        return Plan(objects=[], job_name=job, claim_name=claim, path=path, waiting_for=waiting)
    children = (
        []
        if _downloaded(model, job_name=job)
        else [
            *_loader_rbac(model),
            _job(body, model=model, settings=settings, job_name=job, claim=claim, path=path),
        ]
    )
    return Plan(objects=children, job_name=job, claim_name=claim, path=path)


def compute_status(
    body: Body,
    *,
    plan: Plan,
    observed: Observed,
    now: datetime,
    start_seconds: float = LOADER_START_SECONDS,
) -> ModelStatus:
    """The controller's part of the status (pure); loader-written fields are carried over.
    A loader Job without a pod after ``start_seconds`` is reported as not starting."""
    model = Model.model_validate(body)
    status = model.status or ModelStatus()
    downloaded, reason, message = _download_state(
        model, plan=plan, observed=observed, waited=_job_age(observed.job, now=now) >= start_seconds
    )
    generation = model.metadata.generation
    found = status.conditions
    found = conditions.set_condition(
        found,
        type_=ConditionType.DOWNLOADED,
        status=_status(downloaded),
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    found = conditions.set_condition(
        found,
        type_=ConditionType.READY,
        status=_status(downloaded),
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    found = conditions.set_progress(
        found,
        _progress(downloaded, reason=reason, job=observed.job),
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    bytes_total = status.progress.bytes_total if status.progress else None
    estimate = status.estimate
    if bytes_total and observed.gpu_memory_mib:
        estimate = estimate_resources(weights_bytes=bytes_total, gpu_memory_mib=observed.gpu_memory_mib)
    return status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": found,
            "phase": _phase(
                downloaded, reason=reason, loader_phase=status.progress.phase if status.progress else None
            ),
            "claim_name": plan.claim_name,
            "path": plan.path,
            "loader_job": plan.job_name,
            "estimate": estimate,
        }
    )


def estimate_resources(*, weights_bytes: int, gpu_memory_mib: int) -> ResourceEstimate:
    """GPU memory to serve weights of this size with KV-cache headroom, and GPUs of the given size
    needed, rounded up to a tensor-parallel size (1, 2, 4, 8, ...)."""
    needed = weights_bytes * _KV_HEADROOM + _RUNTIME_OVERHEAD_BYTES
    per_gpu = gpu_memory_mib * 1024**2 * _USABLE_GPU_FRACTION
    gpus = max(1, math.ceil(needed / per_gpu))
    return ResourceEstimate(
        parameters=f"{weights_bytes / 2 / 1e9:.1f}B",  # 16-bit weights: two bytes per parameter
        gpu_memory=f"{math.ceil(needed / _GIB)}Gi",
        gpus=2 ** math.ceil(math.log2(gpus)),
    )


def _downloaded(model: Model, *, job_name: str) -> bool:
    status = model.status
    return bool(
        status
        and status.loader_job == job_name
        and conditions.is_true(status.conditions, ConditionType.DOWNLOADED)
    )


def recheck_after(
    observed: Observed, *, now: datetime, start_seconds: float = LOADER_START_SECONDS
) -> float | None:
    """Seconds until the loader Job has been without a pod for ``start_seconds`` (when a pass must
    look again, though nothing may change in between), or None when no such moment is ahead."""
    if observed.job is None or _job_started(observed.job) or _job_pods(observed):
        return None
    left = start_seconds - _job_age(observed.job, now=now)
    return left if left > 0 else None


def _download_state(model: Model, *, plan: Plan, observed: Observed, waited: bool) -> tuple[bool, str, str]:
    """(downloaded, reason, message) from the Job, its pods and the loader's report; ``waited``
    says that the Job has had time to start a pod."""
    if _downloaded(model, job_name=plan.job_name):
        return True, Reason.READY, "Files downloaded and verified"
    job = observed.job
    progress = model.status.progress if model.status else None
    job_status = (job or {}).get("status", {})
    if failed := _job_failed(job):
        why = (progress.message if progress and progress.message else None) or failed.get("message", "")
        return False, Reason.DOWNLOAD_FAILED, f"Loader Job {plan.job_name} failed: {why}".strip()
    if progress is not None and progress.phase == ModelPhase.FAILED:
        # The loader said so before its pod exits; the Job may still retry, and a retry reports anew.
        return False, Reason.DOWNLOAD_FAILED, f"Loader failed: {progress.message or 'no reason given'}"
    reported_ready = progress is not None and progress.phase == ModelPhase.READY
    if job_status.get("succeeded") and reported_ready:
        return True, Reason.READY, "Files downloaded and verified"
    if plan.waiting_for is not None:
        return False, Reason.BASE_MODEL_NOT_READY, plan.waiting_for
    if progress is None and not _job_started(job):
        reason, message = _waiting(model, plan=plan, observed=observed, waited=waited)
        return False, reason, message
    return False, Reason.DOWNLOADING, _progress_message(model)


def _waiting(model: Model, *, plan: Plan, observed: Observed, waited: bool) -> tuple[str, str]:
    """(reason, message) of a loader that has not started: on what it waits, and why."""
    job, namespace = plan.job_name, model.metadata.namespace
    if model.spec.source.startswith("pvc://") and observed.claim is None:
        return Reason.CLAIM_NOT_FOUND, (
            f"PersistentVolumeClaim {plan.claim_name} does not exist in namespace {namespace}; a pvc:// "
            f"source is read in place, so create the claim or correct spec.source (loader Job {job} waits)"
        )
    pods = _job_pods(observed)
    if (placed := pod_health.scheduling(pods, gpus=0, free=None)).status is ConditionStatus.FALSE:
        return placed.reason, f"Loader Job {job} waits for a node: {placed.message}"
    if (stuck := pod_health.waiting(pods)) is not None:
        return stuck.reason, f"Loader Job {job} waits: {stuck.message}"
    if not pods and job is not None and waited:
        return Reason.LOADER_NOT_STARTED, (
            f"Loader Job {job} has created no pod yet; `kubectl describe job {job} -n {namespace}` shows "
            "why (a ResourceQuota or an admission policy may refuse its pods)"
        )
    return Reason.PENDING, f"Waiting for the loader Job {job} to start"


def _job_pods(observed: Observed) -> list[Body]:
    """The loader pods of the observed Job (the Job controller labels them with its name)."""
    name = (observed.job or {}).get("metadata", {}).get("name")
    if name is None:
        return []
    return [p for p in observed.pods if p["metadata"].get("labels", {}).get(_JOB_NAME_LABEL) == name]


def _job_age(job: Body | None, *, now: datetime) -> float:
    created = (job or {}).get("metadata", {}).get("creationTimestamp")
    if not isinstance(created, str):
        return 0.0
    return (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()


def _job_started(job: Body | None) -> bool:
    """Whether a loader pod ran: one is ready (running) or finished. An active pod alone may still
    wait for a node or its image, so it does not count."""
    job_status = (job or {}).get("status", {})
    return any(job_status.get(count) for count in ("ready", "succeeded", "failed"))


def _job_failed(job: Body | None) -> Body | None:
    """The Job's Failed condition once it gave up (its retries used up), else None."""
    found = (job or {}).get("status", {}).get("conditions", [])
    return next((c for c in found if c["type"] == "Failed" and c["status"] == "True"), None)


def _progress(downloaded: bool, *, reason: str, job: Body | None) -> conditions.Progress | None:
    """Stalled once the loader Job gave up (a person must fix the source, the secret or the
    volume), Reconciling while it works or retries, neither when the files are there."""
    if downloaded:
        return None
    if reason == Reason.DOWNLOAD_FAILED and _job_failed(job) is not None:
        return conditions.STALLED
    return conditions.RECONCILING


def _progress_message(model: Model) -> str:
    progress = model.status.progress if model.status else None
    if progress is None or not progress.bytes_total:
        return "Loader is listing the source's files"
    text = (
        f"Downloaded {progress.percent}% ({_gib(progress.bytes_done)} of {_gib(progress.bytes_total)}, "
        f"{progress.files_done}/{progress.files_total or 0} files)"
    )
    if progress.bytes_per_second:
        text += f" at {progress.bytes_per_second / 1024**2:.0f} MiB/s"
    if progress.eta_seconds is not None:
        text += f", about {progress.eta_seconds}s left"
    return text


def _gib(value: int) -> str:
    return f"{value / _GIB:.2f} GiB"


def _status(flag: bool) -> ConditionStatus:
    return ConditionStatus.TRUE if flag else ConditionStatus.FALSE


def _phase(downloaded: bool, *, reason: str, loader_phase: ModelPhase | None) -> ModelPhase:
    if downloaded:
        return ModelPhase.READY
    if reason == Reason.DOWNLOAD_FAILED:
        return ModelPhase.FAILED
    if reason in _WAITING_REASONS:
        return ModelPhase.PENDING
    return ModelPhase.VERIFYING if loader_phase == ModelPhase.VERIFYING else ModelPhase.DOWNLOADING


def _labels(model: Model, *, component: str) -> dict[str, str]:
    return objects.managed_labels(component=component, extra={Keys.MODEL: str(model.metadata.name)})


def cache_size(model: Model, *, listed_bytes: int | None) -> str:
    """The volume size: the spec's, else the listed download with 20 % room for a new revision's
    overlap, else 50Gi."""
    if model.spec.cache is not None:
        return model.spec.cache.size
    if listed_bytes:
        return f"{max(1, math.ceil(listed_bytes * 1.2 / _GIB))}Gi"
    return DEFAULT_CACHE_SIZE


def _claim(body: Body, *, model: Model, name: str, observed: Observed) -> Body:
    cache = model.spec.cache
    spec: Body = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": _claim_size(model, observed=observed)}},
    }
    if cache and cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    metadata: Body = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": _labels(model, component="model-cache"),
        "ownerReferences": _claim_owners(body, model=model),
    }
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def _claim_owners(body: Body, *, model: Model) -> list[Body]:
    """The volume's owner references: the Model under Delete, so garbage collection removes the
    volume with it; none under Retain. The empty list is stated, not left out, so that a volume
    still owned from an earlier Delete compares unsatisfied, and applying it drops the reference."""
    cache = model.spec.cache
    if cache is not None and cache.reclaim_policy is ReclaimPolicy.RETAIN:
        return []
    return [objects.owner_reference(body)]


def _claim_size(model: Model, *, observed: Observed) -> str:
    """The spec's size, else the size the volume was made with: the listing it was sized from is
    read only before the volume exists, and the default must not then ask to resize it."""
    current = (observed.claim or {}).get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
    if model.spec.cache is None and current:
        return str(current)
    return cache_size(model, listed_bytes=observed.listed_bytes)


def _loader_rbac(model: Model) -> list[Body]:
    namespace = model.metadata.namespace
    labels = objects.managed_labels(component="loader", extra={})
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": LOADER_ACCOUNT, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": LOADER_ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": LOADER_ACCOUNT,
            },
            "subjects": [{"kind": "ServiceAccount", "name": LOADER_ACCOUNT, "namespace": namespace}],
        },
    ]


def loader_args(model: Model, *, settings: LoaderSettings, path: str) -> list[str]:
    """The `aima loader` command line of the Job; every value is its own argv element."""
    source = parse_source(model.spec.source)
    args = [
        "loader",
        "--source",
        model.spec.source,
        "--dest",
        f"{MOUNT_PATH}/{path}".rstrip("/"),
        "--model",
        f"{model.metadata.namespace}/{model.metadata.name}",
    ]
    if source.scheme == "pvc":
        args.append("--verify-only")
    if endpoint := settings.endpoints.get(source.scheme):
        args += ["--endpoint", endpoint]
    if source.scheme == "s3":
        args += ["--region", settings.s3_region]
    files = model.spec.files
    for pattern in files.include if files else []:
        args += ["--include", pattern]
    for pattern in files.exclude if files else []:
        args += ["--exclude", pattern]
    if model.spec.secret_ref and source.scheme in _TOKEN_VARIABLES:
        args += ["--token-env", _TOKEN_VARIABLES[source.scheme]]
    return args


def _job(body: Body, *, model: Model, settings: LoaderSettings, job_name: str, claim: str, path: str) -> Body:
    labels = _labels(model, component="loader")
    container: Body = {
        "name": "loader",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": loader_args(model, settings=settings, path=path),
        "volumeMounts": [{"name": "models", "mountPath": MOUNT_PATH}],
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    scheme = parse_source(model.spec.source).scheme
    if model.spec.secret_ref and scheme in _SECRET_VARIABLES:
        # Credentials reach the loader only as variables from the Secret: never in args or status.
        # Optional keys: a Secret without them gives an anonymous loader, which says what it lacks.
        container["env"] = [
            {
                "name": variable,
                "valueFrom": {
                    "secretKeyRef": {"name": model.spec.secret_ref, "key": variable, "optional": True}
                },
            }
            for variable in _SECRET_VARIABLES[scheme]
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": model.metadata.namespace,
            "labels": labels,
            "ownerReferences": [objects.owner_reference(body)],
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": LOADER_ACCOUNT,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    }
