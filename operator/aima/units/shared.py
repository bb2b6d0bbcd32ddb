"""Small pieces several domains (and the CLI) share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from aima.api.common import ApiModel, Condition, ConditionType
from aima.catalog import Catalog, CatalogError, load_catalog
from aima.kube import KubeClient, KubeError, resources
from aima.units.errors import ErrorCode, UnitError

__all__ = ["LOG_LIMIT_BYTES", "Deleted", "catalog", "follow_pod_log", "pod_log", "ready"]

LOG_LIMIT_BYTES = 256 * 1024
"""Most bytes of one pod's log a unit returns: an agent's context is the scarce resource."""


class Deleted(ApiModel):
    """What was deleted (in the background: dependents follow by garbage collection)."""

    kind: str
    name: str
    namespace: str | None = None


async def catalog(folder: Path | None) -> Catalog:
    """The catalog at `folder` (model presets, pipeline templates); empty where none is configured."""
    if folder is None:
        return Catalog(engines=(), models=(), pipelines=())
    try:
        return await asyncio.to_thread(load_catalog, folder)
    except (CatalogError, OSError) as broken:
        raise UnitError(ErrorCode.UNAVAILABLE, f"The catalog at {folder} cannot be read: {broken}") from None


def ready(conditions: Sequence[Condition]) -> Condition | None:
    """The Ready condition among `conditions`, or None."""
    return next((c for c in conditions if c.type == ConditionType.READY), None)


async def pod_log(kube: KubeClient, *, namespace: str, pod: str, params: dict[str, str]) -> str:
    """The text of one pod's log (`params` are the API's: container, tailLines, sinceSeconds, ...)."""
    async with _log_request(kube, namespace=namespace, pod=pod, params=params) as response:
        await _raise_for(response)
        return await response.text(errors="replace")


async def follow_pod_log(
    kube: KubeClient, *, namespace: str, pod: str, params: dict[str, str]
) -> AsyncIterator[str]:
    """The lines of one pod's log as they are written, until the container ends or the caller stops."""
    async with _log_request(kube, namespace=namespace, pod=pod, params=params | {"follow": "true"}) as r:
        await _raise_for(r)
        async for line in r.content:
            yield line.decode(errors="replace").rstrip("\n")


@asynccontextmanager
async def _log_request(
    kube: KubeClient, *, namespace: str, pod: str, params: dict[str, str]
) -> AsyncIterator[aiohttp.ClientResponse]:
    # KubeClient's methods answer JSON; logs are text, so they are read through its session (the same
    # credentials and TLS).
    url = kube._server + resources.PODS.path(namespace=namespace, name=pod, subresource="log")
    # A followed log stays open as long as the container writes; a plain read keeps the session's timeout.
    session = kube._session
    endless = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with session.get(
        url, params=params, timeout=endless if "follow" in params else session.timeout
    ) as response:
        yield response


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    body: Any = await response.json(content_type=None) if response.content_type.endswith("json") else {}
    message = body.get("message") if isinstance(body, dict) else None
    raise KubeError(
        status=response.status, reason=response.reason or "", message=message or await response.text()
    )
