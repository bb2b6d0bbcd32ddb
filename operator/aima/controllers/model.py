"""Model controller: what queues a Model, and the read -> plan -> write pass for one."""

from __future__ import annotations

import datetime
from typing import Any

from aima.api.common import Keys, Reason
from aima.api.model import Model
from aima.controllers.runtime import ClusterView, Reconciler, announce_changes, write_status
from aima.domain import capacity
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
            "s3": settings.s3_endpoint,
        },
        s3_region=settings.s3_region,
    )


async def reconcile(
    body: Body, *, kube: KubeClient, settings: Settings, cluster: ClusterView
) -> float | None:
    """Bring one Model's children and status in line with its spec; writes only what differs.
    Returns when to look again: once its loader Job has had the time to start a pod."""
    model = Model.model_validate(body)
    observed = await _observe(model, kube=kube, settings=settings, cluster=cluster)
    plan = planning.plan(body, settings=loader_settings(settings), observed=observed)
    # The claim and the Job were read for this pass already; only the RBAC objects need a read
    # (and only until the download is done: then only the claim's ownership is kept in line).
    for child in plan.objects:
        if child["kind"] == "Job":
            if (written := await kube.apply_unless_held(child, current=observed.job)) is not None:
                cluster.loader_jobs.observe(written)
        elif child["kind"] == "PersistentVolumeClaim":
            await kube.apply_unless_held(child, current=observed.claim)
        else:
            await kube.apply_if_changed(child)
    now = datetime.datetime.now(datetime.UTC)
    status = planning.compute_status(
        body, plan=plan, observed=observed, now=now, start_seconds=settings.loader_start_seconds
    )
    await write_status(kube, cluster.models, body, status, others=planning.LOADER_FIELDS)
    await announce_changes(
        kube,
        body,
        before=model.status.conditions if model.status else [],
        after=status.conditions,
        normal_reasons=(Reason.PENDING, Reason.DOWNLOADING),
    )
    return planning.recheck_after(observed, now=now, start_seconds=settings.loader_start_seconds)


async def _observe(
    model: Model, *, kube: KubeClient, settings: Settings, cluster: ClusterView
) -> planning.Observed:
    namespace = model.metadata.namespace
    job = cluster.loader_jobs.get(namespace, planning.loader_job_name(model))
    if model.spec.base_model_ref is not None:  # an adapter: its base Model's volume, which it does not own
        return planning.Observed(
            claim=None,
            job=job,
            pods=cluster.loader_pods.indexed(namespace, str(model.metadata.name)),
            gpu_memory_mib=None,
            base=cluster.models.get(namespace, model.spec.base_model_ref.name),
        )
    claim = await kube.get(
        resources.PERSISTENT_VOLUME_CLAIMS, name=planning.claim_name(model), namespace=namespace
    )
    progress = model.status.progress if model.status else None
    needs_estimate = (
        progress is not None and progress.bytes_total and not (model.status and model.status.estimate)
    )
    gpu_memory = (
        capacity.largest_gpu_memory_mib(cluster.nodes.items(), default=settings.default_gpu_memory_mib)
        if needs_estimate
        else None
    )
    return planning.Observed(
        claim=claim,
        job=job,
        pods=cluster.loader_pods.indexed(namespace, str(model.metadata.name)),
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
        region=settings.s3_region,
    )


def watch(cluster: ClusterView, *, reconciler: Reconciler) -> None:
    """Queue a Model when it changes (the reconciler's own cache), when its loader Job or pods do,
    and, for a LoRA adapter, when its base Model does."""

    def owner(job: Body) -> None:
        if name := job["metadata"].get("labels", {}).get(Keys.MODEL):
            reconciler.enqueue(namespace=job["metadata"].get("namespace"), name=name)

    def adapters(base: Body) -> None:
        for model in cluster.models.indexed(base["metadata"].get("namespace"), base["metadata"]["name"]):
            reconciler.enqueue_object(model)

    cluster.models.subscribe(adapters)

    cluster.loader_jobs.subscribe(owner, own_writes=False)  # its own Job writes need no further pass
    cluster.loader_pods.subscribe(owner)
