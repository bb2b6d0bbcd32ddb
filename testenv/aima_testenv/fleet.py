"""Many Models and InferenceServices at once, as users and finished loaders leave them: the load of
the operator's scale test and benchmark. Each Model is reported downloaded by its loader (no loader
runs: the scale is the operator's, not the volumes'); each service serves one Model at replicas 0
(every child made, every status written, no pod started)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aima.api.model import Model
from aima.domain.model import loader_job_name
from aima.kube import KubeClient, resources
from aima.kube.cache import WatchedList

__all__ = ["CONCURRENCY", "declare", "gathered", "settled"]

Body = dict[str, Any]
CONCURRENCY = 16
"""The operator's workers per kind, and so the writers the benchmark's floor uses."""


def model(namespace: str, name: str) -> Body:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": "hf://acme/tiny-gguf@main",
            "type": "LLM",
            "format": "GGUF",
            "cache": {"size": "1Gi"},
        },
    }


def loader_report(body: Body) -> Body:
    """The status a loader leaves on a Model whose files it downloaded and verified (the operator's
    own fields, observedGeneration and its view of the conditions, it has yet to write)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    done = {
        "status": "True",
        "reason": "Ready",
        "message": "Files downloaded and verified",
        "lastTransitionTime": now,
    }
    return {
        "loaderJob": loader_job_name(Model.model_validate(body)),
        "phase": "Ready",
        "format": "GGUF",
        "weightsFile": "tiny.gguf",
        "progress": {"phase": "Ready", "percent": 100},
        "conditions": [{"type": "Downloaded", **done}, {"type": "Ready", **done}],
    }


def service(namespace: str, name: str, *, model_name: str) -> Body:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"modelRef": {"name": model_name}, "replicas": 0, "resources": {"gpus": 0}},
    }


async def gathered(jobs: list[Callable[[], Awaitable[Any]]], *, concurrency: int = CONCURRENCY) -> list[Any]:
    """Run ``jobs`` with at most ``concurrency`` at a time; their results in order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def declare(kube: KubeClient, namespace: str, *, count: int) -> list[Body]:
    """``count`` downloaded Models and ``count`` services, one per Model; returns the services."""

    async def downloaded(i: int) -> None:
        created = await kube.create(model(namespace, f"m-{i:05d}"))
        await kube.patch_status(
            resources.MODELS,
            name=created["metadata"]["name"],
            namespace=namespace,
            status=loader_report(created),
        )

    async def serving(i: int) -> Body:
        return await kube.create(service(namespace, f"s-{i:05d}", model_name=f"m-{i:05d}"))

    await gathered([functools.partial(downloaded, i) for i in range(count)])
    return await gathered([functools.partial(serving, i) for i in range(count)])


async def settled(kube: KubeClient, namespace: str, *, count: int, timeout: float) -> tuple[int, int]:
    """Wait (watching, not polling lists) until ``count`` services have a status for their generation
    and a Deployment, and ``count`` Models a status for theirs; how many of each did, in time."""
    services_done: set[str] = set()
    deployments: set[str] = set()
    models_done: set[str] = set()
    done = asyncio.Event()

    def seen(into: set[str], test: Callable[[Body], bool]) -> Callable[[Body], None]:
        def handler(obj: Body) -> None:
            if test(obj):
                into.add(obj["metadata"]["name"])
            if len(services_done & deployments) >= count and len(models_done) >= count:
                done.set()

        return handler

    def current(obj: Body) -> bool:
        return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])

    watched = {
        resources.INFERENCE_SERVICES: seen(services_done, current),
        resources.DEPLOYMENTS: seen(deployments, lambda _: True),
        resources.MODELS: seen(models_done, current),
    }
    lists = []
    for resource, handler in watched.items():
        lists.append(WatchedList(kube, resource, namespaces=[namespace]))
        lists[-1].subscribe(handler)
    await asyncio.gather(*(watched_list.start() for watched_list in lists))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        await asyncio.gather(*(watched_list.stop() for watched_list in lists))
    return len(services_done & deployments), len(models_done)
