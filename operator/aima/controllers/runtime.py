"""What every controller shares: serial reconciles per object, retries with backoff, periodic resync.

kopf's state-changing handlers write a diff-base annotation per change and its timers add a
finalizer; both are writes a steady state must not make. So controllers react to plain watch
events (`kopf.on.event`, no bookkeeping) and this module supplies what those lack: a retry after
a failure, and a resync that re-levels every object now and then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aima.kube import KubeClient, KubeError, Resource

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
    _running: set[tuple[str, str]] = field(default_factory=set)
    _dirty: set[tuple[str, str]] = field(default_factory=set)
    _retries: dict[tuple[str, str], asyncio.TimerHandle] = field(default_factory=dict)

    async def handle(self, body: Body) -> None:
        """Reconcile the object of a watch event now."""
        await self.handle_by_name(namespace=body["metadata"].get("namespace"), name=body["metadata"]["name"])

    async def handle_by_name(self, *, namespace: str | None, name: str, attempt: int = 0) -> None:
        """Reconcile an object by name; on failure log it and schedule another try.

        Requests for an object already being reconciled collapse into one more pass after the
        current one (a burst of pod and Deployment events costs two passes, not twenty), and each
        pass reads the object afresh, so it never acts on a spec older than the last pass saw.
        """
        key = (namespace or "", name)
        if (pending := self._retries.pop(key, None)) is not None:
            pending.cancel()
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            while True:
                self._dirty.discard(key)
                if not await self._pass(key, attempt=attempt) or key not in self._dirty:
                    return
        finally:
            self._running.discard(key)

    async def _pass(self, key: tuple[str, str], *, attempt: int) -> bool:
        """One read-plan-write pass; False when it failed (a retry is scheduled) or has nothing to do."""
        namespace, name = key
        try:
            body = await self.kube.get(self.resource, name=name, namespace=namespace or None)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return False
            await self.reconcile(body)
            return True
        except KubeError as error:
            if error.status == 404 or "being terminated" in error.message:
                return False  # the object or its namespace is going away: nothing left to do
            self._schedule_retry(key, attempt=attempt)
        except Exception:
            self._schedule_retry(key, attempt=attempt)
        return False

    def _schedule_retry(self, key: tuple[str, str], *, attempt: int) -> None:
        delay = min(self.retry_seconds * 2**attempt, self.max_retry_seconds)
        logger.exception(
            "Reconcile failed, retrying: kind=%s key=%s delay=%.0fs", self.resource.kind, key, delay
        )
        self._retries[key] = asyncio.get_running_loop().call_later(delay, self._retry, key, attempt + 1)

    async def resync(self) -> None:
        """Reconcile every object of the kind once (the level-triggered safety net)."""
        for body in await self.kube.list(self.resource):
            if not body["metadata"].get("deletionTimestamp"):
                await self.handle(body)

    def _retry(self, key: tuple[str, str], attempt: int) -> None:
        self._retries.pop(key, None)
        namespace, name = key
        asyncio.get_running_loop().create_task(
            self.handle_by_name(namespace=namespace or None, name=name, attempt=attempt)
        )


async def resync_forever(reconcilers: list[Reconciler], *, interval: float) -> None:
    """Resync every kind each ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        for reconciler in reconcilers:
            try:
                await reconciler.resync()
            except Exception:
                logger.exception("Resync failed: kind=%s", reconciler.resource.kind)
