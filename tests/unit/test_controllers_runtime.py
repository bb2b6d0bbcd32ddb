"""What controllers build on the caches (pure asyncio, a fake API server): a pass reads its object
from the cache and skips one that is gone or going, what a controller keeps about an object goes
with it, an answer to a write never brings back a deleted object, and PipelineRuns that have not
started are found through the index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aima.controllers.runtime import UNSTARTED, ClusterView, Key, Reconciler, observe_written, when_gone
from aima.kube import resources
from aima.kube.cache import WatchedList

pytestmark = pytest.mark.unit

Body = dict[str, Any]


def rule(name: str, version: int, **metadata: Any) -> Body:
    return {"metadata": {"name": name, "namespace": "team", "resourceVersion": str(version)} | metadata}


class FakeKube:
    """Serves one list, then the events put on ``events`` to every watch."""

    def __init__(self, items: list[Body]) -> None:
        self.items = items
        self.events: asyncio.Queue[Body] = asyncio.Queue()

    async def list_with_version(self, resource: resources.Resource, **_: Any) -> tuple[list[Body], str]:
        return self.items if resource == resources.ALERT_RULES else [], "10"

    async def watch(self, resource: resources.Resource, **_: Any) -> AsyncIterator[Body]:
        while resource == resources.ALERT_RULES:
            yield await self.events.get()
        await asyncio.Event().wait()
        yield {}  # never reached: makes this a generator


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def rules_cache(kube: FakeKube) -> WatchedList:
    return WatchedList(kube, resources.ALERT_RULES)  # type: ignore[arg-type]


def test_a_pass_reads_the_cache_and_skips_what_is_gone_or_going() -> None:
    async def scenario() -> None:
        kube = FakeKube([rule("a", 5), rule("b", 6)])
        cache = rules_cache(kube)
        passed: list[str] = []

        async def reconcile(body: Body) -> None:
            passed.append(f"{body['metadata']['name']}@{body['metadata']['resourceVersion']}")

        reconciler = Reconciler(cache=cache, reconcile=reconcile, retry_seconds=1, workers=1)
        await cache.start()
        reconciler.start()
        await settle()
        assert sorted(passed) == ["a@5", "b@6"]  # the initial list queues every object
        kube.events.put_nowait({"type": "MODIFIED", "object": rule("a", 7, deletionTimestamp="now")})
        kube.events.put_nowait({"type": "DELETED", "object": rule("b", 8)})
        kube.events.put_nowait({"type": "MODIFIED", "object": rule("c", 9)})
        await settle()
        reconciler.resync()
        await settle()
        assert sorted(passed) == ["a@5", "b@6", "c@9", "c@9"]
        await reconciler.stop()
        await cache.stop()

    asyncio.run(scenario())


def test_what_a_controller_keeps_goes_with_the_object() -> None:
    async def scenario() -> None:
        kube = FakeKube([rule("a", 5), rule("b", 6)])
        cache = rules_cache(kube)
        forgotten: list[Key] = []
        when_gone(cache, forgotten.append)
        await cache.start()
        kube.events.put_nowait({"type": "MODIFIED", "object": rule("a", 7)})
        kube.events.put_nowait({"type": "MODIFIED", "object": rule("a", 8, deletionTimestamp="now")})
        kube.events.put_nowait({"type": "DELETED", "object": rule("b", 9)})
        await settle()
        assert forgotten == [("team", "a"), ("team", "b")]
        await cache.stop()

    asyncio.run(scenario())


def test_an_answer_to_a_write_never_brings_back_a_deleted_object() -> None:
    async def scenario() -> None:
        kube = FakeKube([rule("a", 5), rule("b", 6)])
        cache = rules_cache(kube)
        await cache.start()
        kube.events.put_nowait({"type": "DELETED", "object": rule("b", 8)})
        await settle()
        observe_written(cache, rule("a", 7))
        observe_written(cache, rule("b", 7))  # written just before the deletion, answered after it
        assert cache.get("team", "a") == rule("a", 7)
        assert cache.get("team", "b") is None
        await cache.stop()

    asyncio.run(scenario())


def test_pipeline_runs_that_have_not_started_are_indexed() -> None:
    def run(name: str, status: Body | None = None) -> Body:
        return {"metadata": {"name": name, "namespace": "team", "resourceVersion": "1"}, "status": status}

    class Runs(FakeKube):
        async def list_with_version(self, resource: resources.Resource, **_: Any) -> tuple[list[Body], str]:
            return self.items if resource == resources.PIPELINE_RUNS else [], "10"

    async def scenario() -> None:
        kube = Runs(
            [
                run("new"),
                run("waiting", {"conditions": [{"type": "Succeeded", "status": "Unknown"}]}),
                run("running", {"startTime": "2026-12-06T10:00:00Z"}),
                run("refused", {"completionTime": "2026-12-06T10:00:00Z"}),
            ]
        )
        cluster = ClusterView.watching(kube, namespaces=())  # type: ignore[arg-type]
        await cluster.pipeline_runs.start()
        unstarted = cluster.pipeline_runs.indexed("team", UNSTARTED)
        assert [r["metadata"]["name"] for r in unstarted] == ["new", "waiting"]
        await cluster.pipeline_runs.stop()

    asyncio.run(scenario())
