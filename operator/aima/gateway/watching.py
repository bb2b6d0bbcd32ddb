"""What the gateway knows about the cluster, kept current by list + watch (never a call per request).

:class:`Mirror` keeps one resource of one namespace trimmed to what the gateway needs and calls
back on every change; :class:`ClusterRoutes` builds the routing table from the InferenceService and
EndpointSlice mirrors; :func:`watch_keys` keeps a :class:`KeyStore` equal to the key Secrets.
A broken watch lists again, so the views hold no state of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from aima.gateway import routes
from aima.gateway.keys import API_KEY_LABEL, ApiKey, KeyStore, key_from_secret
from aima.gateway.routes import Backend, ServiceView, SliceView
from aima.kube import KubeClient, KubeError, Resource
from aima.kube.resources import INFERENCE_SERVICES, SECRETS

__all__ = ["ENDPOINT_SLICES", "ClusterRoutes", "Mirror", "watch_keys"]

logger = logging.getLogger("aima.gateway.watching")
ENDPOINT_SLICES: Final = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
_RELIST_DELAY_SECONDS = 1.0

T = TypeVar("T")
Body = dict[str, Any]


class Mirror(Generic[T]):
    """Objects of one resource in one namespace, trimmed by ``trim`` (None drops an object)."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        *,
        namespace: str,
        trim: Callable[[Body], T | None],
        on_change: Callable[[], None],
        label_selector: str | None = None,
    ) -> None:
        self._kube, self._resource, self._namespace = kube, resource, namespace
        self._selector = label_selector
        self._trim, self._on_change = trim, on_change
        self.values: dict[str, T] = {}
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin watching and wait for the first full list."""
        self._task = asyncio.create_task(self._run(), name=f"mirror-{self._resource.plural}")
        await self._synced.wait()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                items, version = await self._kube.list_with_version(
                    self._resource, namespace=self._namespace, label_selector=self._selector
                )
                self.values = {o["metadata"]["name"]: v for o in items if (v := self._trim(o)) is not None}
                self._on_change()
                self._synced.set()
                async for event in self._kube.watch(
                    self._resource,
                    namespace=self._namespace,
                    resource_version=version,
                    label_selector=self._selector,
                ):
                    self._apply(event)
            except (TimeoutError, KubeError, OSError, ValueError) as error:
                logger.warning("Watch of %s broke, listing again: %s", self._resource.plural, error)
            await asyncio.sleep(_RELIST_DELAY_SECONDS)

    def _apply(self, event: Body) -> None:
        obj, kind = event.get("object", {}), event.get("type")
        if kind == "ERROR":  # e.g. 410 Gone: the resourceVersion is too old
            raise ValueError(obj.get("message", "watch error"))
        name = obj.get("metadata", {}).get("name")
        value = self._trim(obj) if kind in ("ADDED", "MODIFIED") else None
        if value is None:
            if self.values.pop(name, None) is None:
                return
        else:
            self.values[name] = value
        self._on_change()


class ClusterRoutes:
    """The routing table of one namespace, rebuilt whenever an InferenceService or EndpointSlice changes."""

    def __init__(self, kube: KubeClient, *, namespace: str) -> None:
        self._table: dict[str, Backend] = {}
        self._changed = asyncio.Event()
        self._services: Mirror[ServiceView] = Mirror(
            kube, INFERENCE_SERVICES, namespace=namespace, trim=routes.service_view, on_change=self._rebuild
        )
        self._slices: Mirror[SliceView] = Mirror(
            kube, ENDPOINT_SLICES, namespace=namespace, trim=routes.slice_view, on_change=self._rebuild
        )

    async def start(self) -> None:
        """Watch both resources; return once both were listed."""
        await asyncio.gather(self._services.start(), self._slices.start())

    async def stop(self) -> None:
        """Stop watching."""
        await asyncio.gather(self._services.stop(), self._slices.stop())

    def lookup(self, model: str) -> Backend | None:
        return self._table.get(model)

    def backends(self) -> list[Backend]:
        return [b for key, b in self._table.items() if key == b.service.name]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _rebuild(self) -> None:
        self._table = routes.build_table(self._services.values.values(), self._slices.values.values())
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def watch_keys(kube: KubeClient, store: KeyStore, *, namespace: str) -> Mirror[tuple[str, ApiKey]]:
    """A mirror of the key Secrets that keeps ``store`` equal to them; ``start()`` it."""
    mirror: Mirror[tuple[str, ApiKey]]

    def update() -> None:
        store.replace(mirror.values.values())

    # Only labelled Secrets are sent (and `trim` checks the label again); keys are kept as digests.
    mirror = Mirror(
        kube,
        SECRETS,
        namespace=namespace,
        trim=key_from_secret,
        on_change=update,
        label_selector=f"{API_KEY_LABEL}=true",
    )
    return mirror
