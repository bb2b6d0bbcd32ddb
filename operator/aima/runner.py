"""Composition root of the operator: settings in, every controller running on the caches of one
:class:`ClusterView` until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aima import catalog
from aima.api.common import Keys
from aima.controllers import alert as alert_controller
from aima.controllers import inference_service as inference_service_controller
from aima.controllers import model as model_controller
from aima.controllers import pipeline as pipeline_controller
from aima.controllers import pipeline_run as pipeline_run_controller
from aima.controllers.health import OperatorState, serving_health
from aima.controllers.runtime import ClusterView, Reconciler, resync_forever
from aima.kube import KubeClient, connect, leader
from aima.settings import Settings
from aima.units import catalog as unit_catalog


def build_controllers(
    *, kube: KubeClient, settings: Settings, cluster: ClusterView
) -> tuple[list[Reconciler], pipeline_run_controller.Runs]:
    """Every controller, subscribed to the caches of ``cluster``: the reconcilers (whose workers and
    resync the runner starts) and the pipeline runs (which it closes on stop)."""
    models = Reconciler(
        cache=cluster.models,
        reconcile=functools.partial(
            model_controller.reconcile, kube=kube, settings=settings, cluster=cluster
        ),
        retry_seconds=settings.retry_seconds,
    )
    model_controller.watch(cluster, reconciler=models)
    plans = inference_service_controller.Plans()
    services = Reconciler(
        cache=cluster.inference_services,
        reconcile=functools.partial(
            inference_service_controller.reconcile,
            kube=kube,
            cluster=cluster,
            plans=plans,
            ingress=inference_service_controller.engine_ingress(settings),
        ),
        retry_seconds=settings.retry_seconds,
    )
    inference_service_controller.watch(cluster, reconciler=services, plans=plans)
    alerts = alert_controller.register(kube=kube, settings=settings, cluster=cluster)
    units = unit_catalog.registry()
    pipelines = pipeline_controller.register(
        kube=kube, settings=settings, cluster=cluster, units={u.name: u for u in units}
    )
    runs_reconciler, runs = pipeline_run_controller.register(
        kube=kube, settings=settings, cluster=cluster, units=units
    )
    return [models, services, alerts, pipelines, runs_reconciler], runs


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


async def _first(awaited: Coroutine[Any, Any, None], stopped: Coroutine[Any, Any, bool]) -> bool:
    """Wait for ``awaited`` (the Lease, the caches' first lists) or for a stop; True when
    ``awaited`` came first."""
    awaited_task, stop_task = asyncio.create_task(awaited), asyncio.create_task(stopped)
    done, pending = await asyncio.wait({awaited_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if awaited_task not in done:
        return False
    awaited_task.result()  # raises what it raised: a Lease or a cache never had is no start
    return True


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
    reconcilers, runs = build_controllers(kube=kube, settings=settings, cluster=cluster)
    for reconciler in reconcilers:
        reconciler.metrics = state.metrics
    resync: asyncio.Task[None] | None = None
    try:
        # Every cache is full before any pass runs: a pass that missed a child would write it again.
        if not await _first(cluster.start(), stop.wait()):
            return
        for reconciler in reconcilers:
            reconciler.start()
        resync = asyncio.create_task(resync_forever(reconcilers, interval=settings.resync_seconds))
        if ready_flag is not None:
            ready_flag.set()
        await stop.wait()
    finally:
        if resync is not None:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync
        await asyncio.gather(*(r.stop() for r in reconcilers))
        await runs.close()
        await cluster.stop()


def main(settings: Settings) -> None:
    """Blocking entry point for `aima operator run`: runs until SIGTERM (the kubelet's stop) or
    SIGINT, then stops the controllers and gives up the Lease."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_run_until_signalled(settings))


async def _run_until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await run(settings, stop_flag=stop)
