"""Objects of one resource kept current by list + watch: a cache derived from the cluster, rebuilt
from a fresh list whenever the watch breaks, so it never holds state of its own.

Controllers read Engines and Nodes on every pass; listing them each time made the API server's
work grow with every event of every service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aima.kube.client import KubeClient, KubeError
from aima.kube.resources import Resource

logger = logging.getLogger("aima.kube.cache")
_RELIST_DELAY_SECONDS = 1.0

Body = dict[str, Any]


class WatchedList:
    """A cluster-scoped or all-namespaces view of one resource; ``start()`` it, then read ``items``."""

    def __init__(self, kube: KubeClient, resource: Resource) -> None:
        self._kube = kube
        self._resource = resource
        self._objects: dict[tuple[str, str], Body] = {}
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin watching and wait for the first full list."""
        self._task = asyncio.create_task(self._run())
        await self._synced.wait()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def items(self) -> list[Body]:
        """The objects as last seen."""
        return list(self._objects.values())

    async def _run(self) -> None:
        while True:
            try:
                items, version = await self._kube.list_with_version(self._resource)
                self._objects = {_key(o): o for o in items}
                self._synced.set()
                async for event in self._kube.watch(self._resource, resource_version=version):
                    self._apply(event)
            except (TimeoutError, KubeError, OSError, ValueError) as error:
                logger.warning("Watch of %s broke, listing again: %s", self._resource.plural, error)
            await asyncio.sleep(_RELIST_DELAY_SECONDS)

    def _apply(self, event: Body) -> None:
        obj = event.get("object", {})
        if event.get("type") == "ERROR":  # e.g. 410 Gone: resourceVersion too old
            raise ValueError(obj.get("message", "watch error"))
        if event.get("type") == "DELETED":
            self._objects.pop(_key(obj), None)
        elif event.get("type") in ("ADDED", "MODIFIED"):
            self._objects[_key(obj)] = obj


def _key(obj: Body) -> tuple[str, str]:
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
