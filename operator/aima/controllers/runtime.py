"""What every controller shares: serial reconciles per object, retries with backoff, periodic resync.

kopf's state-changing handlers write a diff-base annotation per change and its timers add a
finalizer; both are writes a steady state must not make. So controllers react to plain watch
events (`kopf.on.event`, no bookkeeping) and this module supplies what those lack: a retry after
a failure, and a resync that re-levels every object now and then.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aima.kube import KubeClient, Resource

Body = dict[str, Any]
ReconcileFn = Callable[[Body], Awaitable[None]]

logger = logging.getLogger("aima.controllers")


@dataclass
class Reconciler:
    """Runs one kind's reconcile, one at a time per object, and retries failures with backoff."""

    resource: Resource
    reconcile: ReconcileFn
    kube: KubeClient
    retry_seconds: float
    max_retry_seconds: float = 300.0
    _locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _retries: dict[tuple[str, str], asyncio.TimerHandle] = field(default_factory=dict)

    async def handle(self, body: Body, *, attempt: int = 0) -> None:
        """Reconcile ``body`` now; on failure log it and schedule another try."""
        key = (body["metadata"].get("namespace") or "", body["metadata"]["name"])
        if (pending := self._retries.pop(key, None)) is not None:
            pending.cancel()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                await self.reconcile(body)
            except Exception:
                delay = min(self.retry_seconds * 2**attempt, self.max_retry_seconds)
                logger.exception(
                    "Reconcile failed, retrying: kind=%s key=%s delay=%.0fs", self.resource.kind, key, delay
                )
                loop = asyncio.get_running_loop()
                self._retries[key] = loop.call_later(delay, self._retry, key, attempt + 1)

    async def handle_by_name(self, *, namespace: str | None, name: str) -> None:
        """Reconcile an object known by name (a child changed); gone objects need nothing."""
        body = await self.kube.get(self.resource, name=name, namespace=namespace)
        if body is not None and not body["metadata"].get("deletionTimestamp"):
            await self.handle(body)

    async def resync(self) -> None:
        """Reconcile every object of the kind once (the level-triggered safety net)."""
        for body in await self.kube.list(self.resource):
            if not body["metadata"].get("deletionTimestamp"):
                await self.handle(body)

    def _retry(self, key: tuple[str, str], attempt: int) -> None:
        self._retries.pop(key, None)
        asyncio.get_running_loop().create_task(self._fetch_and_handle(key, attempt))

    async def _fetch_and_handle(self, key: tuple[str, str], attempt: int) -> None:
        namespace, name = key
        body = await self.kube.get(self.resource, name=name, namespace=namespace or None)
        if body is not None:
            await self.handle(body, attempt=attempt)


async def resync_forever(reconcilers: list[Reconciler], *, interval: float) -> None:
    """Resync every kind each ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        for reconciler in reconcilers:
            try:
                await reconciler.resync()
            except Exception:
                logger.exception("Resync failed: kind=%s", reconciler.resource.kind)
