"""InferenceService controller: kopf wiring and the read -> plan -> write pass for one service."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any

import kopf

from aima.api.common import ConditionStatus, ConditionType, Keys, Reason
from aima.api.inference_service import InferenceService
from aima.controllers.runtime import Reconciler
from aima.domain import conditions, pod_health
from aima.domain import inference_service as planning
from aima.kube import KubeClient, resources
from aima.kube.cache import WatchedList
from aima.settings import Settings

Body = dict[str, Any]

# Ready=False reasons that are expected on the way up, reported as Normal rather than Warning Events.
_NORMAL_REASONS = frozenset({Reason.MODEL_NOT_READY, Reason.STARTING, Reason.PENDING, Reason.SUSPENDED})


@dataclass(frozen=True)
class ClusterView:
    """Watch-fed lists the controller reads on every pass instead of listing them each time."""

    engines: WatchedList
    nodes: WatchedList


async def reconcile(body: Body, *, kube: KubeClient, settings: Settings, cluster: ClusterView) -> None:
    """Bring one InferenceService's Deployment, Service and status in line; writes only what differs."""
    service = InferenceService.model_validate(body)
    observed = await _observe(service, kube=kube, cluster=cluster)
    plan = planning.plan(body, observed=observed)
    await asyncio.gather(*(_apply(child, kube=kube, observed=observed) for child in plan.objects))
    status = planning.compute_status(
        body, plan=plan, observed=observed, now=datetime.datetime.now(datetime.UTC)
    )
    patch = planning.status_patch(status, observed=body.get("status"))
    if patch is not None:
        await kube.patch_status(
            resources.INFERENCE_SERVICES,
            name=str(service.metadata.name),
            namespace=service.metadata.namespace,
            status=patch,
        )
    before = service.status.conditions if service.status else []
    if changed := conditions.transition(before, status.conditions, ConditionType.READY):
        normal = changed.status is ConditionStatus.TRUE or changed.reason in _NORMAL_REASONS
        await kube.event(
            regarding=body,
            type_="Normal" if normal else "Warning",
            reason=changed.reason,
            message=changed.message,
        )


async def _observe(service: InferenceService, *, kube: KubeClient, cluster: ClusterView) -> planning.Observed:
    namespace, name = service.metadata.namespace, str(service.metadata.name)
    # Independent reads, sent together: one round trip instead of three.
    pods, model, deployment = await asyncio.gather(
        kube.list(
            resources.PODS,
            namespace=namespace,
            label_selector=planning.selector_string(planning.selector(service)),
        ),
        kube.get(resources.MODELS, name=service.spec.model_ref.name, namespace=namespace),
        kube.get(resources.DEPLOYMENTS, name=name, namespace=namespace),
    )
    return planning.Observed(
        model=model,
        engines=cluster.engines.items(),
        nodes=cluster.nodes.items(),
        deployment=deployment,
        pods=pods,
        # Counting free GPUs needs every pod; only worth it while one of ours waits for a node.
        all_pods=await kube.list(resources.PODS) if pod_health.unscheduled(pods) else None,
    )


async def _apply(child: Body, *, kube: KubeClient, observed: planning.Observed) -> None:
    # The Deployment was read for this pass already; reading it again would double the hot path's GETs.
    if child["kind"] == "Deployment":
        await kube.apply_unless_held(child, current=observed.deployment)
    else:
        await kube.apply_if_changed(child)


def register(registry: kopf.OperatorRegistry, *, reconciler: Reconciler) -> None:
    """Attach the InferenceService handlers to ``registry``: the service itself, and nudges from its
    Deployment, its pods and its Model."""

    @kopf.on.event(*_gvr(resources.INFERENCE_SERVICES), registry=registry)
    async def on_inference_service_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        if event["type"] != "DELETED" and not body.metadata.get("deletionTimestamp"):
            await reconciler.handle(dict(body))

    children = {Keys.COMPONENT: planning.COMPONENT}

    @kopf.on.event(*_gvr(resources.DEPLOYMENTS), labels=children, registry=registry)
    async def on_deployment_event(body: kopf.Body, **_: Any) -> None:
        await _nudge_owner(body, reconciler=reconciler)

    @kopf.on.event(*_gvr(resources.PODS), labels=children, registry=registry)
    async def on_pod_event(body: kopf.Body, **_: Any) -> None:
        await _nudge_owner(body, reconciler=reconciler)

    @kopf.on.event(*_gvr(resources.MODELS), registry=registry)
    async def on_model_event(body: kopf.Body, **_: Any) -> None:
        # Services name their Model in spec.modelRef; one list per namespace finds them.
        namespace, model = body.metadata.namespace, body.metadata.name
        for service in await reconciler.kube.list(resources.INFERENCE_SERVICES, namespace=namespace):
            if service["spec"]["modelRef"]["name"] == model and not service["metadata"].get(
                "deletionTimestamp"
            ):
                await reconciler.handle(service)


async def _nudge_owner(body: kopf.Body, *, reconciler: Reconciler) -> None:
    name = body.metadata.labels.get(Keys.INFERENCE_SERVICE)
    if name:
        await reconciler.handle_by_name(namespace=body.metadata.namespace, name=name)


def _gvr(resource: resources.Resource) -> tuple[str, str, str]:
    return resource.group, resource.version, resource.plural
