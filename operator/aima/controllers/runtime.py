"""What every controller shares: the watch-fed caches it reads, a work queue of object keys served by
a few workers, retries with backoff, and a periodic resync.

kopf's state-changing handlers write a diff-base annotation per change and its timers add a
finalizer; both are writes a steady state must not make, and kopf watches every Pod and Deployment
of the cluster to filter them in Python. So AIMA's own kinds and their children are watched here,
with label selectors, into caches (`aima.kube.cache`); an event queues the key of the object it
concerns, and a pass reads everything it needs from the caches and writes only what differs.
kopf still runs the handlers other controllers register with it: those queue keys through
:meth:`Reconciler.handle`, and such a reconciler, having no cache, reads its object afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aima.api.common import Keys
from aima.domain import inference_service as service_planning
from aima.domain import traffic
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
        ]

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


@dataclass
class Reconciler:
    """Runs one kind's reconcile for queued keys: one pass at a time per object, ``workers`` objects
    at a time, and failures again after a backoff.

    A key queued while its object is being reconciled gets one more pass afterwards, so a burst of
    pod and Deployment events costs two passes, not twenty, and no pass misses the last change.
    """

    resource: Resource
    reconcile: ReconcileFn
    kube: KubeClient
    retry_seconds: float
    cache: WatchedList | None = None
    """The kind's objects, watched: each of their events queues the object, and passes read it from
    here. Without one, something else queues keys (kopf handlers) and each pass reads it afresh."""
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
        if self.cache is not None:
            self.cache.subscribe(self.enqueue_object, own_writes=False)

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

    async def handle(self, body: Body) -> None:
        """Queue the object of a kopf event."""
        self.enqueue_object(body)

    async def handle_by_name(self, *, namespace: str | None, name: str) -> None:
        """Queue an object by name (from a kopf event of one of its children)."""
        self.enqueue(namespace=namespace, name=name)

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

    async def resync(self) -> None:
        """Queue every object of the kind (the level-triggered safety net)."""
        for body in self.cache.items() if self.cache is not None else await self.kube.list(self.resource):
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
            body = (
                self.cache.get(namespace, name)
                if self.cache is not None
                else await self.kube.get(self.resource, name=name, namespace=namespace or None)
            )
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
            try:
                await reconciler.resync()
            except Exception:
                logger.exception("Resync failed: kind=%s", reconciler.resource.kind)
