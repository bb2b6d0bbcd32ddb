"""Objects of one resource kept current by list + watch (an informer): a cache derived from the
cluster, rebuilt from a fresh list whenever the watch breaks, so it never holds state of its own.

Controllers read their objects, children and the Engines and Nodes from these caches on every pass
instead of asking the API server: reads then cost nothing, and the API server's work is the writes.
Children are watched with a label selector, so the operator never receives other people's Pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aima.kube.client import KubeClient
from aima.kube.resources import Resource
from aima.kube.watch import Sink, keep_watching

Body = dict[str, Any]
Key = tuple[str, str]
Handler = Callable[[Body], None]
"""Called with each object that changed (or went) after the cache took the change; must not block."""
Index = Callable[[Body], Iterable[str]]
"""The values an object is filed under in its namespace, for :meth:`WatchedList.indexed`."""


def by_label(key: str) -> Index:
    """An index of objects by the value of their label ``key``."""

    def values(obj: Body) -> Iterable[str]:
        value = obj["metadata"].get("labels", {}).get(key)
        return (value,) if value else ()

    return values


class WatchedList:
    """One resource in the given namespaces (all when empty, or cluster-scoped); ``start()`` it,
    then read it with :meth:`get`, :meth:`items` and :meth:`indexed`. Watch breaks are counted in
    ``restarts`` by resource (see :func:`aima.kube.watch.keep_watching`)."""

    def __init__(
        self,
        kube: KubeClient,
        resource: Resource,
        *,
        namespaces: Sequence[str] = (),
        label_selector: str | None = None,
        index: Index | None = None,
        restarts: Counter[str] | None = None,
    ) -> None:
        self._kube = kube
        self._restarts = restarts
        self._resource = resource
        self._namespaces: tuple[str | None, ...] = (
            tuple(namespaces) if namespaces and resource.namespaced else (None,)
        )
        self._label_selector = label_selector
        self._index_of = index
        self._objects: dict[Key, Body] = {}
        self._index: dict[Key, set[Key]] = {}
        self._handlers: list[tuple[Handler, bool]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.changes = 0
        """How many changes the cache took so far: equal counts mean equal contents."""

    @property
    def resource(self) -> Resource:
        """The resource watched."""
        return self._resource

    def subscribe(self, handler: Handler, *, own_writes: bool = True) -> None:
        """Call ``handler`` for every object that changes from now on, the initial list included.

        With ``own_writes`` false it is not called for versions the cache took from :meth:`observe`:
        for the controller that wrote them, which needs no pass over what it just wrote. Everyone
        else must hear of them, since the watch event that follows is skipped as known.
        """
        self._handlers.append((handler, own_writes))

    async def start(self) -> None:
        """Begin watching and wait for the first full list of every namespace."""
        synced = [asyncio.Event() for _ in self._namespaces]
        self._tasks = [
            asyncio.create_task(self._run(namespace, synced=flag))
            for namespace, flag in zip(self._namespaces, synced, strict=True)
        ]
        await asyncio.gather(*(flag.wait() for flag in synced))

    async def stop(self) -> None:
        """Stop watching."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def get(self, namespace: str | None, name: str) -> Body | None:
        """The object as last seen, or None."""
        return self._objects.get((namespace or "", name))

    def items(self, namespace: str | None = None) -> list[Body]:
        """The objects as last seen, in one namespace or in all."""
        if namespace is None:
            return list(self._objects.values())
        return [o for (ns, _), o in self._objects.items() if ns == namespace]

    def indexed(self, namespace: str | None, value: str) -> list[Body]:
        """The objects in ``namespace`` that the cache's ``index`` files under ``value``."""
        keys = self._index.get((namespace or "", value), set())
        return [self._objects[k] for k in sorted(keys)]

    def observe(self, obj: Body) -> None:
        """Take an object a write of ours returned, unless the cache holds a newer one.

        The watch delivers the same version a moment later; knowing it already, the cache then
        skips it, so the writing controller (subscribed without ``own_writes``) is not woken by its
        own writes and never plans from a state older than what it just wrote; the other
        subscribers are told now.
        """
        current = self._objects.get(_key(obj))
        if current is None or _newer(obj, than=current):
            self._put(obj)
            self._notify(obj, own_write=True)

    async def _run(self, namespace: str | None, *, synced: asyncio.Event) -> None:
        await keep_watching(
            self._kube,
            self._resource,
            Sink(relisted=functools.partial(self._relisted, namespace), changed=self._changed),
            namespace=namespace,
            label_selector=self._label_selector,
            synced=synced,
            restarts=self._restarts,
        )

    def _relisted(self, namespace: str | None, items: list[Body]) -> None:
        listed = {_key(o): o for o in map(_trimmed, items)}
        gone = [o for k, o in self._objects.items() if k not in listed and _in(k, namespace)]
        for obj in gone:
            self._drop(obj)
        for obj in listed.values():
            self._put(obj)
        for obj in [*gone, *listed.values()]:  # a relist re-levels everything it lists
            self._notify(obj)

    def _changed(self, kind: str, obj: Body) -> None:
        if kind == "DELETED":
            self._drop(obj)
            self._notify(obj)
        else:
            self._take(_trimmed(obj))

    def _take(self, obj: Body) -> None:
        current = self._objects.get(_key(obj))
        if current is not None and not _newer(obj, than=current):
            return  # known already (our own write) or older than what we hold
        self._put(obj)
        self._notify(obj)

    def _put(self, obj: Body) -> None:
        key = _key(obj)
        if self._index_of is not None:
            self._unindex(key)
            for value in self._index_of(obj):
                self._index.setdefault((key[0], value), set()).add(key)
        self._objects[key] = obj
        self.changes += 1

    def _drop(self, obj: Body) -> None:
        key = _key(obj)
        self._unindex(key)
        self._objects.pop(key, None)
        self.changes += 1

    def _unindex(self, key: Key) -> None:
        old = self._objects.get(key)
        if old is None or self._index_of is None:
            return
        for value in self._index_of(old):
            self._index.get((key[0], value), set()).discard(key)

    def _notify(self, obj: Body, *, own_write: bool = False) -> None:
        for handler, own_writes in self._handlers:
            if own_writes or not own_write:
                handler(obj)


def _key(obj: Body) -> Key:
    return obj["metadata"].get("namespace") or "", obj["metadata"]["name"]


def _in(key: Key, namespace: str | None) -> bool:
    return namespace is None or key[0] == namespace


def _trimmed(obj: Body) -> Body:
    """``obj`` without managedFields: the largest part of most objects, and nothing reads it."""
    obj["metadata"].pop("managedFields", None)
    return obj


def _newer(obj: Body, *, than: Body) -> bool:
    """Whether ``obj`` is a later version than ``than``.

    resourceVersions are etcd revisions; comparing them as numbers is what client-go's mutation
    cache does too. Anything that is not a number counts as newer, so the cache follows the server.
    """
    new, old = obj["metadata"].get("resourceVersion", ""), than["metadata"].get("resourceVersion", "")
    if new.isdigit() and old.isdigit():
        return int(new) > int(old)
    return bool(new != old)
