"""What every controller shares: the watch-fed caches it reads, a work queue of object keys served by
a few workers, retries with backoff, and a periodic resync.

Every kind the operator reconciles, its children and what its passes read are watched, with label
selectors where they are children, into caches (`aima.kube.cache`, fed by the watch engine of
`aima.kube.watch`); an event queues the key of the object it concerns, and a pass reads everything
it needs from the caches and writes only what differs. A controller takes what its writes return
into its cache at once: its next pass never plans from an older state, and the watch's echoes of
its writes do not wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from aima.api.common import Condition, ConditionStatus, ConditionType, Keys
from aima.api.pipeline import Pipeline, StepService
from aima.domain import conditions, traffic
from aima.domain import inference_service as service_planning
from aima.domain.objects import status_patch
from aima.domain.pipeline import step_models, step_services
from aima.exposition import Histogram, counter_lines
from aima.kube import KubeClient, KubeError, Resource, resources
from aima.kube.cache import Index, WatchedList, by_label

Body = dict[str, Any]
Key = tuple[str, str]
ReconcileFn = Callable[[Body], Awaitable[float | None]]
"""One pass over an object; it may return seconds after which to pass over it again (a deadline
its status speaks of), which a change to the object in between brings forward."""

logger = logging.getLogger("aima.controllers")


class ReconcileMetrics:
    """Passes by kind and result, and their durations, for the operator's /metrics."""

    def __init__(self) -> None:
        self.passes: Counter[tuple[str, ...]] = Counter()
        self.duration = Histogram(
            "aima_operator_reconcile_duration_seconds",
            "Time of one reconcile pass.",
            ("kind",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.watch_restarts: Counter[str] = Counter()
        """Breaks of the caches' watches, by resource (see `aima.kube.watch`)."""

    def observe(self, kind: str, *, ok: bool, seconds: float) -> None:
        """Record one pass."""
        self.passes[(kind, "ok" if ok else "error")] += 1
        self.duration.observe((kind,), seconds)

    def render(self) -> str:
        """Prometheus exposition text."""
        lines = counter_lines(
            "aima_operator_reconcile_total",
            "Reconcile passes by kind and result.",
            ("kind", "result"),
            self.passes,
        )
        lines += counter_lines(
            "aima_operator_watch_restarts_total",
            "Watches of the caches that broke and were listed again, by resource.",
            ("resource",),
            {(r,): n for r, n in self.watch_restarts.items()},
        )
        return "\n".join(lines + self.duration.render()) + "\n"


@dataclass(frozen=True)
class ClusterView:
    """The caches controllers read on every pass instead of asking the API server."""

    engines: WatchedList
    nodes: WatchedList
    models: WatchedList
    """Models, indexed by the Model a LoRA adapter adapts (its baseModelRef)."""
    inference_services: WatchedList
    """InferenceServices, indexed by what they name (`service_references`)."""
    deployments: WatchedList
    """Deployments of InferenceServices."""
    services: WatchedList
    """Services of InferenceServices."""
    network_policies: WatchedList
    """NetworkPolicies of InferenceServices (watched even while policies are off: those the operator
    made before are found there, and removed)."""
    pods: WatchedList
    """Pods of InferenceServices, indexed by the service's name."""
    loader_jobs: WatchedList
    """Loader Jobs of Models."""
    loader_pods: WatchedList
    """Pods of loader Jobs, indexed by the Model's name."""
    alert_rules: WatchedList
    node_devices: WatchedList
    """What the device agents publish about each node's GPUs."""
    pipelines: WatchedList
    pipeline_runs: WatchedList
    """PipelineRuns, those that have neither started nor ended indexed under :data:`UNSTARTED`."""

    @classmethod
    def watching(
        cls, kube: KubeClient, *, namespaces: Sequence[str], restarts: Counter[str] | None = None
    ) -> ClusterView:
        """Caches of the served namespaces (all when empty); :meth:`start` fills them; watch breaks
        are counted in ``restarts``."""

        def cache(
            resource: Resource, component: str | None = None, index: Index | None = None
        ) -> WatchedList:
            selector = f"{Keys.COMPONENT}={component}" if component else None
            return WatchedList(
                kube,
                resource,
                namespaces=namespaces,
                label_selector=selector,
                index=index,
                restarts=restarts,
            )

        children = service_planning.COMPONENT
        return cls(
            engines=cache(resources.ENGINES),
            nodes=cache(resources.NODES),
            models=cache(resources.MODELS, index=_adapted_model),
            inference_services=cache(resources.INFERENCE_SERVICES, index=service_references),
            deployments=cache(resources.DEPLOYMENTS, children),
            services=cache(resources.SERVICES, children),
            network_policies=cache(resources.NETWORK_POLICIES, children),
            pods=cache(resources.PODS, children, index=by_label(Keys.INFERENCE_SERVICE)),
            loader_jobs=cache(resources.JOBS, "loader"),
            loader_pods=cache(resources.PODS, "loader", index=by_label(Keys.MODEL)),
            alert_rules=cache(resources.ALERT_RULES),
            node_devices=cache(resources.NODE_DEVICES),
            pipelines=cache(resources.PIPELINES),
            pipeline_runs=cache(resources.PIPELINE_RUNS, index=_unstarted_run),
        )

    def _all(self) -> list[WatchedList]:
        return [
            self.engines,
            self.nodes,
            self.models,
            self.inference_services,
            self.deployments,
            self.services,
            self.network_policies,
            self.pods,
            self.loader_jobs,
            self.loader_pods,
            self.alert_rules,
            self.node_devices,
            self.pipelines,
            self.pipeline_runs,
        ]

    def step_services(self, pipeline: Pipeline, config: Mapping[str, Any] | None = None) -> list[StepService]:
        """The InferenceServices serving ``pipeline``'s steps' models (``config`` overrides applied),
        with their readiness."""
        models = step_models(pipeline.spec, pipeline.spec.config | dict(config or {}))
        namespace = pipeline.metadata.namespace
        return step_services(models, self.inference_services.items(namespace)) if models else []

    async def start(self) -> None:
        """Fill every cache; events from then on reach the subscribers."""
        await asyncio.gather(*(c.start() for c in self._all()))

    async def stop(self) -> None:
        """Stop watching."""
        await asyncio.gather(*(c.stop() for c in self._all()))


USES_MODEL = "model/"
"""Prefix of the index values of an InferenceService's Model and its adapters' Models."""
SPLITS_TO = "split/"
"""Prefix of the index values of the services an InferenceService's traffic split names."""
SERVED_AS = "served/"
"""Prefix of the index value of an InferenceService's servedName."""
UNSTARTED = "unstarted"
"""Index value of the PipelineRuns that have neither started nor ended: those waiting for their
Pipeline or its services, which their events wake."""


def service_references(service: Body) -> list[str]:
    """What an InferenceService names, as the services cache files it: each lookup that would
    otherwise scan every service on every event (a Model's users, a split's other targets, the owner
    of a served name) is one read."""
    spec = service.get("spec") or {}
    models = [
        spec.get("modelRef", {}).get("name"),
        *(a["modelRef"]["name"] for a in spec.get("adapters") or []),
    ]
    found = [USES_MODEL + m for m in models if m]
    found += [SPLITS_TO + t for t in traffic.targets(spec)]
    return found + ([SERVED_AS + spec["servedName"]] if spec.get("servedName") else [])


def _adapted_model(model: Body) -> list[str]:
    base = ((model.get("spec") or {}).get("baseModelRef") or {}).get("name")
    return [base] if base else []


def _unstarted_run(run: Body) -> list[str]:
    status = run.get("status") or {}
    return [] if status.get("startTime") or status.get("completionTime") else [UNSTARTED]


def key_of(body: Body) -> Key:
    """The namespace ("" for a cluster-scoped object) and name of an object."""
    return body["metadata"].get("namespace") or "", body["metadata"]["name"]


def when_gone(cache: WatchedList, forget: Callable[[Key], None]) -> None:
    """Call ``forget`` with the key of each object of ``cache`` that is deleted or being deleted, so
    that what a controller keeps about an object (timers, tasks) goes with it; it may be called more
    than once for one object."""

    def heard(body: Body) -> None:
        key = key_of(body)
        if body["metadata"].get("deletionTimestamp") or cache.get(*key) is None:
            forget(key)

    cache.subscribe(heard)


def observe_written(cache: WatchedList, written: Body) -> None:
    """Take what a write returned into ``cache``, unless the object left it meanwhile: an answer that
    comes after the watch told of the object's deletion must not bring it back."""
    if cache.get(*key_of(written)) is not None:
        cache.observe(written)


async def write_status(
    kube: KubeClient,
    cache: WatchedList,
    body: Body,
    status: BaseModel,
    *,
    observed: Body | None = None,
    others: Collection[str] = (),
) -> bool:
    """The one status writer: patch ``body``'s status to ``status`` where it differs from the status
    read (``observed``, else the body's), clearing fields that went away and leaving ``others``' fields
    alone (see `aima.domain.objects.status_patch`); the written object goes into ``cache``. True when
    something was written."""
    current = body.get("status") if observed is None else observed
    patch = status_patch(status, observed=current, others=others)
    if patch is None:
        return False
    meta = body["metadata"]
    written = await kube.patch_status(
        cache.resource, name=meta["name"], namespace=meta.get("namespace"), status=patch
    )
    observe_written(cache, written)
    return True


async def announce_changes(
    kube: KubeClient,
    body: Body,
    *,
    before: Sequence[Condition],
    after: Sequence[Condition],
    types: Sequence[str] = (ConditionType.READY,),
    normal_reasons: Collection[str] = (),
) -> None:
    """Each condition of ``types`` that changed as an Event: Normal when it became True or its reason
    is in ``normal_reasons``, else Warning. A change is news, and so is a first state that is a warning;
    a first state on the way up is not (a thousand objects applied at once post no thousand Events)."""
    for type_ in types:
        changed = conditions.transition(before, after, type_)
        if changed is None:
            continue
        normal = changed.status is ConditionStatus.TRUE or changed.reason in normal_reasons
        if not normal or conditions.find(before, type_) is not None:
            await kube.event(
                regarding=body,
                type_="Normal" if normal else "Warning",
                reason=changed.reason,
                message=changed.message,
            )


@dataclass
class Reconciler:
    """Runs one kind's reconcile for queued keys: one pass at a time per object, ``workers`` objects
    at a time, and failures again after a backoff.

    A key queued while its object is being reconciled gets one more pass afterwards, so a burst of
    pod and Deployment events costs two passes, not twenty, and no pass misses the last change.
    """

    cache: WatchedList
    """The kind's objects, watched: each of their events queues the object (but for the versions the
    controller wrote and observed itself), and passes read it from here."""
    reconcile: ReconcileFn
    retry_seconds: float
    workers: int = 16
    max_retry_seconds: float = 300.0
    metrics: ReconcileMetrics = field(default_factory=ReconcileMetrics)
    """Where passes are counted; the runner gives every reconciler the same one."""
    _queue: asyncio.Queue[Key] = field(default_factory=asyncio.Queue)
    _queued: set[Key] = field(default_factory=set)
    _running: set[Key] = field(default_factory=set)
    _dirty: set[Key] = field(default_factory=set)
    _attempts: dict[Key, int] = field(default_factory=dict)
    _retries: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache.subscribe(self.enqueue_object, own_writes=False)

    @property
    def resource(self) -> Resource:
        """The kind reconciled."""
        return self.cache.resource

    def enqueue(self, *, namespace: str | None, name: str) -> None:
        """Queue a pass over the object (once, however often it is asked for before it runs)."""
        key = (namespace or "", name)
        if (pending := self._retries.pop(key, None)) is not None:
            pending.cancel()
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_object(self, body: Body) -> None:
        """Queue a pass over the object ``body`` is a version of."""
        self.enqueue(namespace=body["metadata"].get("namespace"), name=body["metadata"]["name"])

    def start(self) -> None:
        """Start the workers."""
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Stop the workers and forget pending retries."""
        for handle in self._retries.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def resync(self) -> None:
        """Queue every object of the kind (the level-triggered safety net)."""
        for body in self.cache.items():
            self.enqueue_object(body)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self._pass(key)
            finally:
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.enqueue(namespace=key[0], name=key[1])

    async def _pass(self, key: Key) -> None:
        """One read-plan-write pass; on failure a retry is scheduled."""
        namespace, name = key
        started, ok = time.monotonic(), False
        try:
            body = self.cache.get(namespace, name)
            again = None
            if body is not None and not body["metadata"].get("deletionTimestamp"):
                again = await self.reconcile(body)
                logger.debug("Reconciled %s %s/%s", self.resource.kind, namespace, name)
            self._attempts.pop(key, None)
            if again is not None:
                self._again(key, after=again)
            ok = True
        except KubeError as error:
            if error.status == 404 or "being terminated" in error.message:
                self._attempts.pop(key, None)  # the object or its namespace is going away
                ok = True
            else:
                self._schedule_retry(key)
        except Exception:
            self._schedule_retry(key)
        finally:
            self.metrics.observe(self.resource.kind, ok=ok, seconds=time.monotonic() - started)

    def _schedule_retry(self, key: Key) -> None:
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        delay = min(self.retry_seconds * 2**attempt, self.max_retry_seconds)
        logger.exception(
            "Reconcile failed, retrying: kind=%s key=%s delay=%.1fs", self.resource.kind, key, delay
        )
        self._again(key, after=delay)

    def _again(self, key: Key, *, after: float) -> None:
        if (pending := self._retries.pop(key, None)) is not None:
            pending.cancel()
        self._retries[key] = asyncio.get_running_loop().call_later(after, self._retry, key)

    def _retry(self, key: Key) -> None:
        self._retries.pop(key, None)
        self.enqueue(namespace=key[0], name=key[1])


async def resync_forever(reconcilers: list[Reconciler], *, interval: float) -> None:
    """Resync every kind each ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        for reconciler in reconcilers:
            reconciler.resync()
