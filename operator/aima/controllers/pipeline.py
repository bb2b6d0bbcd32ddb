"""Pipeline controller: validates the definition against the unit registry and reports whether the
InferenceServices its steps' models need are Ready (Valid and Ready conditions, problems by step
and field, services by step)."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

from aima.api.pipeline import Pipeline
from aima.controllers.runtime import ClusterView, Reconciler, announce_changes, write_status
from aima.domain.pipeline import UnitShape, validate
from aima.domain.pipeline_status import pipeline_status
from aima.kube import KubeClient
from aima.settings import Settings

Body = dict[str, Any]


async def reconcile(
    body: Body, *, kube: KubeClient, settings: Settings, units: Mapping[str, UnitShape], cluster: ClusterView
) -> None:
    """Validate one Pipeline and write its status; writes only what differs."""
    pipeline = Pipeline.model_validate(body)
    problems = validate(pipeline.spec, units)
    services = [] if problems else cluster.step_services(pipeline)
    before = pipeline.status.conditions if pipeline.status else []
    status = pipeline_status(
        generation=pipeline.metadata.generation,
        previous=before,
        problems=problems,
        services=services,
        require_services=settings.pipeline_require_services,
        now=datetime.datetime.now(datetime.UTC),
    )
    await write_status(kube, cluster.pipelines, body, status)
    await announce_changes(kube, body, before=before, after=status.conditions)


def register(
    *, kube: KubeClient, settings: Settings, cluster: ClusterView, units: Mapping[str, UnitShape]
) -> Reconciler:
    """Wake Pipelines from the caches: a Pipeline when it changes, and every Pipeline of a namespace
    when one of its InferenceServices does; return the reconciler, which the runner starts and
    resyncs."""
    reconciler = Reconciler(
        cache=cluster.pipelines,
        reconcile=functools.partial(reconcile, kube=kube, settings=settings, units=units, cluster=cluster),
        retry_seconds=settings.retry_seconds,
    )

    def on_service(body: Body) -> None:
        # A service's readiness may change the Ready of every pipeline of its namespace.
        for pipeline in cluster.pipelines.items(body["metadata"].get("namespace") or ""):
            reconciler.enqueue_object(pipeline)

    cluster.inference_services.subscribe(on_service)
    return reconciler
