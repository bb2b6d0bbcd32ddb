"""Pipeline controller: validates the definition against the unit registry and reports whether the
InferenceServices its steps' models need are Ready (Valid and Ready conditions, problems by step
and field, services by step)."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

import kopf

from aima.api.common import ConditionStatus, ConditionType
from aima.api.pipeline import Pipeline, StepService
from aima.controllers.runtime import ClusterView, Reconciler
from aima.domain import conditions
from aima.domain.pipeline import UnitShape, step_models, step_services, validate
from aima.domain.pipeline_status import pipeline_status, status_patch
from aima.kube import KubeClient, resources
from aima.settings import Settings

Body = dict[str, Any]


async def reconcile(
    body: Body, *, kube: KubeClient, settings: Settings, units: Mapping[str, UnitShape], cluster: ClusterView
) -> None:
    """Validate one Pipeline and write its status; writes only what differs."""
    pipeline = Pipeline.model_validate(body)
    problems = validate(pipeline.spec, units)
    services = [] if problems else observe_services(cluster, pipeline)
    before = pipeline.status.conditions if pipeline.status else []
    status = pipeline_status(
        generation=pipeline.metadata.generation,
        previous=before,
        problems=problems,
        services=services,
        require_services=settings.pipeline_require_services,
        now=datetime.datetime.now(datetime.UTC),
    )
    patch = status_patch(
        status.model_dump(mode="json", by_alias=True, exclude_none=True), observed=body.get("status")
    )
    if patch is not None:
        await kube.patch_status(
            resources.PIPELINES,
            name=str(pipeline.metadata.name),
            namespace=pipeline.metadata.namespace,
            status=patch,
        )
    if changed := conditions.transition(before, status.conditions, ConditionType.READY):
        kind = "Normal" if changed.status is ConditionStatus.TRUE else "Warning"
        await kube.event(regarding=body, type_=kind, reason=changed.reason, message=changed.message)


def observe_services(
    cluster: ClusterView, pipeline: Pipeline, config: Mapping[str, Any] | None = None
) -> list[StepService]:
    """The InferenceServices serving the steps' models (config overrides applied), with readiness."""
    models = step_models(pipeline.spec, pipeline.spec.config | dict(config or {}))
    return (
        step_services(models, cluster.inference_services.items(pipeline.metadata.namespace)) if models else []
    )


def register(
    registry: kopf.OperatorRegistry,
    *,
    kube: KubeClient,
    settings: Settings,
    cluster: ClusterView,
    units: Mapping[str, UnitShape],
) -> Reconciler:
    """Attach the Pipeline handlers: the Pipeline itself, and the InferenceServices it may depend on
    (from the cluster's cache); return the reconciler, which the runner starts and resyncs."""
    reconciler = Reconciler(
        resource=resources.PIPELINES,
        reconcile=functools.partial(reconcile, kube=kube, settings=settings, units=units, cluster=cluster),
        kube=kube,
        retry_seconds=settings.retry_seconds,
    )
    known: set[tuple[str, str]] = set()

    @kopf.on.event(*_gvr(resources.PIPELINES), registry=registry)
    async def on_pipeline_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        key = (body.metadata.namespace or "", body.metadata.name or "")
        if event["type"] == "DELETED" or body.metadata.get("deletionTimestamp"):
            known.discard(key)
        else:
            known.add(key)
            await reconciler.handle(dict(body))

    def on_service(body: Body) -> None:
        # A service's readiness may change the Ready of every pipeline of its namespace.
        namespace = body["metadata"].get("namespace") or ""
        for pipeline_namespace, name in list(known):
            if pipeline_namespace == namespace:
                reconciler.enqueue(namespace=namespace, name=name)

    cluster.inference_services.subscribe(on_service)
    return reconciler


def _gvr(resource: resources.Resource) -> tuple[str, str, str]:
    return resource.group, resource.version, resource.plural
