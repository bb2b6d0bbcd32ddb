"""What the gateway knows about the cluster, kept current by list + watch (never a call per request).

:class:`Mirror` keeps one resource of one namespace (or of all) trimmed to what the gateway needs
and calls back on every change; :class:`ClusterRoutes` builds the routing table from the
InferenceService and EndpointSlice mirrors; :func:`watch_keys` keeps a :class:`KeyStore` equal to
the key Secrets.
All are fed by the one watch engine (:mod:`aima.kube.watch`): a broken watch lists again, so the
views hold no state of their own, and every break is counted in the ``restarts`` given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

from aima.gateway import routes
from aima.gateway.keys import API_KEY_LABEL, ApiKey, KeyStore, key_from_secret
from aima.gateway.routes import Backend, ServiceView, SliceView
from aima.kube import KubeClient, Resource
from aima.kube.resources import INFERENCE_SERVICES, SECRETS
from aima.kube.watch import Sink, keep_watching

__all__ = ["ENDPOINT_SLICES", "ClusterRoutes", "Mirror", "watch_keys"]

ENDPOINT_SLICES: Final = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")

T = TypeVar("T")
Body = dict[str, Any]


class Mirror(Generic[T]):
    """Objects of one resource in one namespace (None: all), trimmed by ``trim`` (None drops an
    object), keyed by namespace and name."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        *,
        namespace: str | None,
        trim: Callable[[Body], T | None],
        on_change: Callable[[], None],
        label_selector: str | None = None,
        restarts: Counter[str] | None = None,
    ) -> None:
        self._kube, self._resource, self._namespace = kube, resource, namespace
        self._restarts = restarts
        self._selector = label_selector
        self._trim, self._on_change = trim, on_change
        self.values: dict[tuple[str, str], T] = {}
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
        await keep_watching(
            self._kube,
            self._resource,
            Sink(relisted=self._relisted, changed=self._changed),
            namespace=self._namespace,
            label_selector=self._selector,
            synced=self._synced,
            restarts=self._restarts,
        )

    def _relisted(self, items: list[Body]) -> None:
        self.values = {_key(o): v for o in items if (v := self._trim(o)) is not None}
        self._on_change()

    def _changed(self, kind: str, obj: Body) -> None:
        key = _key(obj)
        value = self._trim(obj) if kind != "DELETED" else None
        if value is None:
            if self.values.pop(key, None) is None:
                return
        else:
            self.values[key] = value
        self._on_change()


def _key(obj: Body) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


class ClusterRoutes:
    """The routing table, rebuilt whenever an InferenceService or EndpointSlice changes.

    It serves ``home`` and routes to ``namespaces`` too (None among them: every namespace); see
    :mod:`aima.gateway.routes` for the model ids.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        home: str,
        namespaces: Sequence[str | None] = (),
        restarts: Counter[str] | None = None,
    ) -> None:
        self._home = home
        self._table: dict[str, Backend] = {}
        self._backends: list[Backend] = []
        self._changed = asyncio.Event()
        watched: list[str | None] = [None] if None in namespaces else list(dict.fromkeys([home, *namespaces]))
        self._services: list[Mirror[ServiceView]] = [
            Mirror(
                kube,
                INFERENCE_SERVICES,
                namespace=ns,
                trim=routes.service_view,
                on_change=self._rebuild,
                restarts=restarts,
            )
            for ns in watched
        ]
        self._slices: list[Mirror[SliceView]] = [
            Mirror(
                kube,
                ENDPOINT_SLICES,
                namespace=ns,
                trim=routes.slice_view,
                on_change=self._rebuild,
                restarts=restarts,
            )
            for ns in watched
        ]

    async def start(self) -> None:
        """Watch both resources; return once both were listed."""
        await asyncio.gather(*(m.start() for m in self._mirrors()))

    async def stop(self) -> None:
        """Stop watching."""
        await asyncio.gather(*(m.stop() for m in self._mirrors()))

    def lookup(self, model: str) -> Backend | None:
        return self._table.get(model)

    def backends(self) -> list[Backend]:
        return self._backends

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _mirrors(self) -> list[Mirror[Any]]:
        return [*self._services, *self._slices]

    def _rebuild(self) -> None:
        services = [v for mirror in self._services for v in mirror.values.values()]
        slices = [v for mirror in self._slices for v in mirror.values.values()]
        self._table = routes.build_table(services, slices, home=self._home)
        self._backends = routes.distinct(self._table)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def watch_keys(
    kube: KubeClient, store: KeyStore, *, namespace: str, restarts: Counter[str] | None = None
) -> Mirror[tuple[str, ApiKey]]:
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
        restarts=restarts,
    )
    return mirror
