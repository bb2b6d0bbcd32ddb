"""Composition root of the operator: settings in, kopf with every controller running."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import kopf

from aima import catalog
from aima.api.common import Keys
from aima.controllers import alert as alert_controller
from aima.controllers import inference_service as inference_service_controller
from aima.controllers import model as model_controller
from aima.controllers import pipeline as pipeline_controller
from aima.controllers import pipeline_run as pipeline_run_controller
from aima.controllers.health import OperatorState, serving_health
from aima.controllers.runtime import ClusterView, Reconciler, resync_forever
from aima.kube import KubeClient, connect, leader, resources
from aima.kube.client import login
from aima.settings import Settings
from aima.units import catalog as unit_catalog


def operator_settings() -> kopf.OperatorSettings:
    """kopf's settings: bookkeeping in annotations under our prefix, never in our status."""
    settings = kopf.OperatorSettings()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=Keys.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=Keys.KOPF_PREFIX)
    settings.persistence.finalizer = f"{Keys.KOPF_PREFIX}/finalizer"
    settings.posting.enabled = False  # we post our own Events, with reasons people can act on
    settings.watching.server_timeout = 300
    return settings


def build_registry(
    *, kube: KubeClient, settings: Settings, cluster: ClusterView
) -> tuple[kopf.OperatorRegistry, list[Reconciler]]:
    """Every controller: a kopf registry for those driven by kopf handlers, and the reconcilers
    (whose workers and resync the runner starts). Models and InferenceServices are driven by the
    caches of ``cluster`` instead (see `aima.controllers.runtime`)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def on_login(**_: Any) -> kopf.ConnectionInfo:
        return login(settings.kubeconfig)

    models = Reconciler(
        resource=resources.MODELS,
        reconcile=functools.partial(
            model_controller.reconcile, kube=kube, settings=settings, cluster=cluster
        ),
        kube=kube,
        retry_seconds=settings.retry_seconds,
        cache=cluster.models,
    )
    model_controller.watch(cluster, reconciler=models)
    plans = inference_service_controller.Plans()
    services = Reconciler(
        resource=resources.INFERENCE_SERVICES,
        reconcile=functools.partial(
            inference_service_controller.reconcile,
            kube=kube,
            cluster=cluster,
            plans=plans,
            ingress=inference_service_controller.engine_ingress(settings),
        ),
        kube=kube,
        retry_seconds=settings.retry_seconds,
        cache=cluster.inference_services,
    )
    inference_service_controller.watch(cluster, reconciler=services, plans=plans)
    alerts = alert_controller.register(registry, kube=kube, settings=settings, cluster=cluster)
    units = unit_catalog.registry()
    pipelines = pipeline_controller.register(
        registry, kube=kube, settings=settings, cluster=cluster, units={u.name: u for u in units}
    )
    runs = pipeline_run_controller.register(
        registry, kube=kube, settings=settings, cluster=cluster, units=units
    )
    return registry, [models, services, alerts, pipelines, runs]


async def install_engines(kube: KubeClient, *, catalog_dir: Path) -> int:
    """Apply the catalog's engines as Engine objects (only those that differ); return how many changed.

    Engines are data: every image, argument template and probe comes from the YAML, none from code.
    """
    changed = 0
    for engine in catalog.load_catalog(catalog_dir).engines:
        desired = engine.model_dump(mode="json", by_alias=True, exclude_none=True)
        desired["metadata"]["labels"] = desired["metadata"].get("labels", {}) | {Keys.CATALOG: "true"}
        changed += await kube.apply_if_changed(desired) is not None
    return changed


async def run(
    settings: Settings, *, stop_flag: asyncio.Event | None = None, ready_flag: asyncio.Event | None = None
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever); with leader election, only while
    this replica holds the Lease: a replica that loses it stops, and its restart waits as a follower."""
    stop = stop_flag or asyncio.Event()
    state = OperatorState()
    async with contextlib.AsyncExitStack() as stack:
        if settings.operator_health_port:
            await stack.enter_async_context(
                serving_health(state, host=settings.operator_health_host, port=settings.operator_health_port)
            )
        await _lead(settings, state, stop=stop, ready_flag=ready_flag)


async def _lead(
    settings: Settings, state: OperatorState, *, stop: asyncio.Event, ready_flag: asyncio.Event | None
) -> None:
    kube = await connect(kubeconfig=settings.kubeconfig)
    lease = leader.LeaseSettings(
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=settings.identity,
        duration_seconds=settings.lease_duration_seconds,
        renew_seconds=settings.lease_renew_seconds,
    )
    keeper: asyncio.Task[None] | None = None
    try:
        if settings.leader_election:
            if not await _first(leader.acquire(kube, lease), stop.wait()):
                return
            keeper = asyncio.create_task(leader.keep(kube, lease, lost=stop))
        state.leading = True
        await _operate(kube, settings, state, stop=stop, ready_flag=ready_flag)
    finally:
        state.leading = False
        if keeper is not None:
            keeper.cancel()
            await leader.release(kube, lease)
        await kube.close()


async def _first(acquired: Coroutine[Any, Any, None], stopped: Coroutine[Any, Any, bool]) -> bool:
    """Wait for the Lease or for a stop; True when the Lease came first."""
    lease_task, stop_task = asyncio.create_task(acquired), asyncio.create_task(stopped)
    done, pending = await asyncio.wait({lease_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return lease_task in done


async def _operate(
    kube: KubeClient,
    settings: Settings,
    state: OperatorState,
    *,
    stop: asyncio.Event,
    ready_flag: asyncio.Event | None,
) -> None:
    if settings.catalog_dir is not None:
        await install_engines(kube, catalog_dir=settings.catalog_dir)
    cluster = ClusterView.watching(
        kube, namespaces=settings.namespaces, restarts=state.metrics.watch_restarts
    )
    registry, reconcilers = build_registry(kube=kube, settings=settings, cluster=cluster)
    for reconciler in reconcilers:
        reconciler.metrics = state.metrics
    # Every cache is full before any pass runs: a pass that missed a child would write it again.
    await cluster.start()
    for reconciler in reconcilers:
        reconciler.start()
    resync = asyncio.create_task(resync_forever(reconcilers, interval=settings.resync_seconds))
    try:
        await kopf.operator(
            registry=registry,
            settings=operator_settings(),
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=True,
            stop_flag=stop,
            ready_flag=ready_flag,
        )
    finally:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync
        await asyncio.gather(*(r.stop() for r in reconcilers))
        await cluster.stop()


def main(settings: Settings) -> None:
    """Blocking entry point for `aima operator run`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run(settings))
