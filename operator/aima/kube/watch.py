"""The one watch engine: list a resource, follow its watch from the list's version, and on any failure
log it, count it, pause and list again, for as long as the task runs.

Everything that keeps a view of the cluster (the operator's caches, the gateway's routing table and
keys) is a :class:`Sink` fed by :func:`keep_watching`. A view must be rebuildable from a fresh list, so
a relist after an API server or etcd restart, a dropped connection, a too-old resourceVersion (410) or
a bug in a sink brings it back to the cluster's state; nothing ends the loop but cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from aima.kube.client import KubeClient, KubeError
from aima.kube.resources import Resource

__all__ = ["RELIST_DELAY_SECONDS", "Sink", "WatchBroken", "keep_watching"]

logger = logging.getLogger("aima.kube.watch")
RELIST_DELAY_SECONDS = 1.0

Body = dict[str, Any]


class WatchBroken(RuntimeError):
    """The watch stream said it cannot go on (an ERROR event, or an end without any event)."""


# What a healthy cluster does to a watch now and then: an API server or etcd restart drops the
# connection (aiohttp's ServerDisconnectedError and ClientPayloadError are no OSError), a 410 Gone
# ends it, a timeout cuts it. These are logged in one line; anything else with its traceback.
_EXPECTED = (aiohttp.ClientError, KubeError, OSError, TimeoutError, WatchBroken)


@dataclass(frozen=True)
class Sink:
    """What a view does with what the engine reads."""

    relisted: Callable[[list[Body]], None]
    """Takes the full list of the watched objects, now (the first list, or one after a break)."""
    changed: Callable[[str, Body], None]
    """Takes one watch event's kind (ADDED, MODIFIED or DELETED) and object."""


async def keep_watching(
    kube: KubeClient,
    resource: Resource,
    sink: Sink,
    *,
    namespace: str | None,
    label_selector: str | None = None,
    synced: asyncio.Event | None = None,
    restarts: Counter[str] | None = None,
) -> None:
    """Feed ``sink`` until cancelled; ``synced`` is set after the first full list, and every break
    adds one to ``restarts[resource.plural]``."""
    while True:
        try:
            items, version = await kube.list_with_version(
                resource, namespace=namespace, label_selector=label_selector
            )
            sink.relisted(items)
            if synced is not None:
                synced.set()
            while True:  # a watch the server ends in time is resumed where it stopped
                version = await _follow(kube, resource, sink, namespace, label_selector, version)
        except _EXPECTED as error:
            logger.warning("Watch of %s broke, listing again: %s", resource.plural, _describe(error))
        except Exception:
            logger.exception("Watch of %s failed, listing again", resource.plural)
        if restarts is not None:
            restarts[resource.plural] += 1
        await asyncio.sleep(RELIST_DELAY_SECONDS)


async def _follow(
    kube: KubeClient,
    resource: Resource,
    sink: Sink,
    namespace: str | None,
    label_selector: str | None,
    version: str,
) -> str:
    """Pass watch events from ``version`` on to ``sink``; return the last version seen when the
    stream ends.

    A stream that ends without a single event (not even a bookmark) counts as broken, so a server
    that closes watches at once is answered by a paced relist, not a busy loop.
    """
    started = version
    stream = kube.watch(
        resource,
        namespace=namespace,
        resource_version=version,
        label_selector=label_selector,
        bookmarks=True,
    )
    # Closed here when an ERROR event or a sink ends the loop: left to the garbage collector, the
    # stream's connection would stay open until then, and close unclean if its loop is gone.
    async with contextlib.aclosing(stream):
        async for event in stream:
            kind, obj = event.get("type", ""), event.get("object", {})
            if kind == "ERROR":  # e.g. 410 Gone: the version is too old to resume from
                raise WatchBroken(obj.get("message", "watch error"))
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                sink.changed(kind, obj)
    if version == started:
        raise WatchBroken("the watch ended without an event")
    return version


def _describe(error: BaseException) -> str:
    # Some aiohttp errors have an empty str(); the class name still says what happened.
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
