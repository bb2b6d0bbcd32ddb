"""InferenceService controller: what queues a service, and the read -> plan -> write pass for one."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from aima.api.common import ConditionType, Keys, Reason
from aima.api.inference_service import AdapterState, AdapterStatus, InferenceService
from aima.controllers import adapters as adapter_engines
from aima.controllers.runtime import (
    SERVED_AS,
    SPLITS_TO,
    USES_MODEL,
    ClusterView,
    Reconciler,
    announce_changes,
    write_status,
)
from aima.domain import adapters as adapter_planning
from aima.domain import inference_service as planning
from aima.domain import network_policy, pod_health
from aima.domain import traffic as traffic_planning
from aima.kube import KubeClient, resources
from aima.kube.cache import WatchedList
from aima.settings import Settings

Body = dict[str, Any]
_ADAPTER_RETRY_SECONDS = 15.0

# Ready=False reasons expected on the way up or asked for: Normal rather than Warning Events.
_NORMAL_REASONS = frozenset(
    {Reason.MODEL_NOT_READY, Reason.STARTING, Reason.PENDING, Reason.SUSPENDED, Reason.SCALED_TO_ZERO}
)


def engine_ingress(settings: Settings) -> network_policy.EngineIngress | None:
    """Who may connect to engine pods, from the settings; None when policies are turned off."""
    if not settings.engine_network_policy:
        return None
    return network_policy.EngineIngress(
        platform_namespace=settings.platform_namespace,
        platform_pods=settings.platform_pod_selector,
        extra_peers=settings.engine_ingress_from,
    )


@dataclass
class Plans:
    """The last plan of each service, with the versions of the inputs it was made from.

    A plan renders the engine's templates; most passes (a pod became ready, the Deployment
    controller updated a status) change none of its inputs, so they reuse it.
    """

    _made: dict[tuple[str, str], tuple[Hashable, planning.Plan]] = field(default_factory=dict)

    def plan(
        self,
        body: Body,
        *,
        observed: planning.Observed,
        cluster: ClusterView,
        ingress: network_policy.EngineIngress | None,
    ) -> planning.Plan:
        """``planning.plan`` of ``body``, made again only when the service's spec, its Model, the
        Engines, the nodes or the engine ingress changed."""
        meta = body["metadata"]
        model = observed.model["metadata"].get("resourceVersion") if observed.model else None
        inputs = (
            meta["uid"],
            meta.get("generation"),
            model,
            cluster.engines.changes,
            cluster.nodes.changes,
            ingress,
        )
        key = (meta["namespace"], meta["name"])
        if (made := self._made.get(key)) is not None and made[0] == inputs:
            return made[1]
        plan = planning.plan(body, observed=observed, ingress=ingress)
        self._made[key] = (inputs, plan)
        return plan

    def forget(self, service: Body) -> None:
        """Drop the plan of a service that is gone."""
        self._made.pop((service["metadata"].get("namespace", ""), service["metadata"]["name"]), None)


async def reconcile(
    body: Body,
    *,
    kube: KubeClient,
    cluster: ClusterView,
    plans: Plans,
    ingress: network_policy.EngineIngress | None,
) -> float | None:
    """Bring one InferenceService's Deployment, Service, NetworkPolicy and status in line; writes
    only what differs.

    Everything is read from the caches; what this pass writes goes back into them, so the next pass
    plans from it even before the watch delivers it.
    """
    service = InferenceService.model_validate(body)
    namespace = service.metadata.namespace
    observed = await _observe(service, kube=kube, cluster=cluster)
    plan = plans.plan(body, observed=observed, cluster=cluster, ingress=ingress)
    # One child after the other, in the plan's order: the policy before the Deployment whose pods it
    # guards, the Deployment before the Service: its pods are the long way to Ready, and on a busy
    # API server a write that does not share it with another gets through sooner.
    written = [await _apply(child, kube=kube, cluster=cluster) for child in plan.objects]
    await _remove_obsolete_policy(body, observed=observed, ingress=ingress, kube=kube)
    # The status describes the Deployment as just written, not as it was before this pass.
    deployment = next((w for w in written if w and w["kind"] == "Deployment"), observed.deployment)
    adapters = await _adapters(service, plan=plan, observed=observed, cluster=cluster)
    status = planning.compute_status(
        body,
        plan=plan,
        observed=dataclasses.replace(observed, deployment=deployment),
        now=datetime.datetime.now(datetime.UTC),
        adapters=adapters,
        traffic=traffic_planning.finding(
            service,
            services={
                t.service: found
                for t in service.spec.traffic
                if (found := cluster.inference_services.get(namespace, t.service)) is not None
            },
        ),
    )
    await write_status(kube, cluster.inference_services, body, status)
    await announce_changes(
        kube,
        body,
        before=service.status.conditions if service.status else [],
        after=status.conditions,
        types=(ConditionType.READY, ConditionType.ADAPTERS_READY, ConditionType.TRAFFIC_READY),
        normal_reasons=_NORMAL_REASONS,
    )
    # An adapter not yet everywhere is looked at again: an engine that refused may take it later.
    waiting = any(a.state is not AdapterState.READY for a in adapters)
    return _ADAPTER_RETRY_SECONDS if waiting else None


async def _adapters(
    service: InferenceService, *, plan: planning.Plan, observed: planning.Observed, cluster: ClusterView
) -> list[AdapterStatus]:
    """Load and unload adapters on the ready replicas as the spec lists them; each one's status.
    Asks the engines only while the spec lists adapters or the last status showed some."""
    shown = service.status.adapters if service.status else None
    if not service.spec.adapters and not shown:
        return []
    namespace = service.metadata.namespace
    models = {
        a.model_ref.name: found
        for a in service.spec.adapters
        if (found := cluster.models.get(namespace, a.model_ref.name)) is not None
    }
    model_id = service.spec.served_name or str(service.metadata.name)
    ids = [f"{model_id}:{a.name}" for a in service.spec.adapters]
    taken = {
        i: o["metadata"]["name"]
        for i in ids
        for o in cluster.inference_services.indexed(namespace, SERVED_AS + i)
    }
    wanted = adapter_planning.wanted(service, models=models, engine=plan.engine, taken=taken)
    if plan.engine is None or plan.engine.spec.adapters is None:
        replicas: list[adapter_planning.Replica] = []
        failures: dict[tuple[str, str], str] = {}
    else:
        async with aiohttp.ClientSession() as http:
            replicas = await adapter_engines.observe(observed.pods, engine=plan.engine, http=http)
            actions = adapter_planning.actions(wanted, replicas)
            changed, failures = await adapter_engines.perform(actions, engine=plan.engine, http=http)
        replicas = list({r.pod: r for r in [*replicas, *changed]}.values())
    return adapter_planning.report(wanted, replicas=replicas, failures=failures, model_id=model_id)


async def _observe(service: InferenceService, *, kube: KubeClient, cluster: ClusterView) -> planning.Observed:
    namespace, name = service.metadata.namespace, str(service.metadata.name)
    pods = cluster.pods.indexed(namespace, name)
    return planning.Observed(
        model=cluster.models.get(namespace, service.spec.model_ref.name),
        engines=cluster.engines.items(),
        nodes=cluster.nodes.items(),
        deployment=cluster.deployments.get(namespace, name),
        network_policy=cluster.network_policies.get(namespace, name),
        pods=pods,
        # Counting free GPUs needs every pod of the cluster, not only ours: listed only while one
        # of ours waits for a node.
        all_pods=await kube.list(resources.PODS) if pod_health.unscheduled(pods) else None,
    )


async def _apply(child: Body, *, kube: KubeClient, cluster: ClusterView) -> Body | None:
    """Apply a child unless its cache shows it as desired; the object written, or None."""
    cache = _cache_of(child["kind"], cluster=cluster)
    current = cache.get(child["metadata"]["namespace"], child["metadata"]["name"])
    if (written := await kube.apply_unless_held(child, current=current)) is not None:
        cache.observe(written)
    return written


async def _remove_obsolete_policy(
    body: Body,
    *,
    observed: planning.Observed,
    ingress: network_policy.EngineIngress | None,
    kube: KubeClient,
) -> None:
    """Delete the service's NetworkPolicy once policies are off (see `network_policy.obsolete`)."""
    stale = network_policy.obsolete(body, ingress=ingress, observed=observed.network_policy)
    if stale is not None:
        meta = stale["metadata"]
        # By uid: a policy someone made anew under the name since the cache saw ours is not ours.
        await kube.delete(
            resources.NETWORK_POLICIES, name=meta["name"], namespace=meta["namespace"], uid=meta["uid"]
        )


def _cache_of(kind: str, *, cluster: ClusterView) -> WatchedList:
    """The cache that holds a service's children of ``kind``."""
    by_kind = {
        "Deployment": cluster.deployments,
        "Service": cluster.services,
        network_policy.KIND: cluster.network_policies,
    }
    return by_kind[kind]


def watch(cluster: ClusterView, *, reconciler: Reconciler, plans: Plans) -> None:
    """Queue an InferenceService when it changes (the reconciler's own cache), when its Deployment,
    Service, NetworkPolicy or pods change, and when its Model does; forget the plan of one that is
    gone."""

    def gone(service: Body) -> None:
        if cluster.inference_services.get(service["metadata"].get("namespace"), service["metadata"]["name"]):
            return
        plans.forget(service)

    def owner(child: Body) -> None:
        name = child["metadata"].get("labels", {}).get(Keys.INFERENCE_SERVICE)
        if name:
            reconciler.enqueue(namespace=child["metadata"].get("namespace"), name=name)

    def users(model: Body) -> None:
        namespace, name = model["metadata"].get("namespace"), model["metadata"]["name"]
        for service in cluster.inference_services.indexed(namespace, USES_MODEL + name):
            reconciler.enqueue_object(service)

    def splits(changed: Body) -> None:
        """A service that comes, goes or turns Ready changes the splits that name it."""
        namespace, name = changed["metadata"].get("namespace"), changed["metadata"]["name"]
        for service in cluster.inference_services.indexed(namespace, SPLITS_TO + name):
            if service["metadata"]["name"] != name:
                reconciler.enqueue_object(service)

    for children in (cluster.deployments, cluster.services, cluster.network_policies, cluster.pods):
        # Its own writes of children need no further pass; a child deleted or edited by someone
        # else queues its service, which writes it back.
        children.subscribe(owner, own_writes=False)
    cluster.models.subscribe(users)
    cluster.inference_services.subscribe(gone)
    cluster.inference_services.subscribe(splits)
