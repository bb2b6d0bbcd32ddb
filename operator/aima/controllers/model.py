"""Model controller: kopf wiring and the read -> plan -> write pass for one Model."""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from aima.api.common import ConditionStatus, ConditionType, Keys, Reason
from aima.api.model import Model
from aima.controllers.runtime import Reconciler
from aima.domain import conditions
from aima.domain import model as planning
from aima.kube import KubeClient, resources
from aima.loader import sizing
from aima.settings import Settings

Body = dict[str, Any]


def loader_settings(settings: Settings) -> planning.LoaderSettings:
    """The planner's view of the operator settings."""
    return planning.LoaderSettings(
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        backoff_limit=settings.loader_backoff_limit,
        endpoints={
            "hf": settings.hf_endpoint,
            "modelscope": settings.modelscope_endpoint,
            "ollama": settings.ollama_registry,
        },
    )


async def reconcile(body: Body, *, kube: KubeClient, settings: Settings) -> None:
    """Bring one Model's children and status in line with its spec; writes only what differs."""
    namespace = body["metadata"]["namespace"]
    model = Model.model_validate(body)
    observed = await _observe(model, kube=kube, settings=settings)
    plan = planning.plan(body, settings=loader_settings(settings), observed=observed)
    # The claim and the Job were read for this pass already; only the RBAC objects need a read.
    already_read = {"PersistentVolumeClaim": observed.claim, "Job": observed.job}
    for child in plan.objects:
        if child["kind"] in already_read:
            await kube.apply_unless_held(child, current=already_read[child["kind"]])
        else:
            await kube.apply_if_changed(child)
    status = planning.compute_status(
        body, plan=plan, observed=observed, now=datetime.datetime.now(datetime.UTC)
    )
    patch = planning.status_patch(status, observed=body.get("status"))
    if patch is not None:
        await kube.patch_status(
            resources.MODELS, name=body["metadata"]["name"], namespace=namespace, status=patch
        )
    before = model.status.conditions if model.status else []
    if changed := conditions.transition(before, status.conditions, ConditionType.READY):
        kind = (
            "Normal"
            if changed.status is ConditionStatus.TRUE or changed.reason == Reason.DOWNLOADING
            else "Warning"
        )
        await kube.event(regarding=body, type_=kind, reason=changed.reason, message=changed.message)


async def _observe(model: Model, *, kube: KubeClient, settings: Settings) -> planning.Observed:
    namespace = model.metadata.namespace
    job = await kube.get(resources.JOBS, name=planning.loader_job_name(model), namespace=namespace)
    claim = await kube.get(
        resources.PERSISTENT_VOLUME_CLAIMS, name=planning.claim_name(model), namespace=namespace
    )
    progress = model.status.progress if model.status else None
    needs_estimate = (
        progress is not None and progress.bytes_total and not (model.status and model.status.estimate)
    )
    gpu_memory = (
        await _largest_gpu_memory_mib(kube, default=settings.default_gpu_memory_mib)
        if needs_estimate
        else None
    )
    return planning.Observed(
        claim=claim,
        job=job,
        gpu_memory_mib=gpu_memory,
        listed_bytes=await _listed_bytes(model, claim, settings),
    )


async def _listed_bytes(model: Model, claim: Body | None, settings: Settings) -> int | None:
    # Only before the volume exists and when the spec leaves its size open; never with credentials.
    scheme = model.spec.source.partition("://")[0]
    if claim is not None or model.spec.cache is not None or model.spec.secret_ref or scheme == "pvc":
        return None
    files = model.spec.files
    return await sizing.listed_bytes(
        uri=model.spec.source,
        endpoint=loader_settings(settings).endpoints.get(scheme),
        include=tuple(files.include) if files else (),
        exclude=tuple(files.exclude) if files else (),
    )


async def _largest_gpu_memory_mib(kube: KubeClient, *, default: int) -> int:
    nodes = await kube.list(resources.NODES, label_selector="nvidia.com/gpu.present=true")
    sizes = [int(n["metadata"]["labels"].get("nvidia.com/gpu.memory", "0") or 0) for n in nodes]
    return max(sizes, default=0) or default


def register(registry: kopf.OperatorRegistry, *, reconciler: Reconciler) -> None:
    """Attach the Model handlers to ``registry``."""

    @kopf.on.event(*_gvr(resources.MODELS), registry=registry)
    async def on_model_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        if event["type"] != "DELETED" and not body.metadata.get("deletionTimestamp"):
            await reconciler.handle(dict(body))

    @kopf.on.event(*_gvr(resources.JOBS), labels={Keys.COMPONENT: "loader"}, registry=registry)
    async def on_loader_job_event(body: kopf.Body, **_: Any) -> None:
        model_name = body.metadata.labels.get(Keys.MODEL)
        if model_name:
            await reconciler.handle_by_name(namespace=body.metadata.namespace, name=model_name)


def _gvr(resource: resources.Resource) -> tuple[str, str, str]:
    return resource.group, resource.version, resource.plural
