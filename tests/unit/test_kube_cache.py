"""The watch-fed cache (pure asyncio, a fake API server): it follows list + watch, tells subscribers
about changes, indexes by a label, and tells of the controller's own writes to everyone but it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aima.kube import resources
from aima.kube.cache import WatchedList

pytestmark = pytest.mark.unit

Body = dict[str, Any]


def pod(name: str, version: int, *, service: str = "chat") -> Body:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "resourceVersion": str(version),
            "labels": {"aima.dev/inference-service": service},
            "managedFields": [{"manager": "kubelet"}],
        }
    }


class FakeKube:
    """Serves one list, then the events put on ``events`` to every watch."""

    def __init__(self, items: list[Body]) -> None:
        self.items = items
        self.events: asyncio.Queue[Body | None] = asyncio.Queue()
        self.selectors: list[str | None] = []

    async def list_with_version(
        self, resource: resources.Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Body], str]:
        self.selectors.append(label_selector)
        return self.items, "10"

    async def watch(self, resource: resources.Resource, **_: Any) -> AsyncIterator[Body]:
        while (event := await self.events.get()) is not None:
            yield event


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_cache_follows_the_watch_and_tells_subscribers() -> None:
    async def scenario() -> None:
        kube = FakeKube([pod("a", 5)])
        cache = WatchedList(
            kube,  # type: ignore[arg-type]
            resources.PODS,
            label_selector="app.kubernetes.io/component=inference-service",
            index_label="aima.dev/inference-service",
        )
        told: list[str] = []
        cache.subscribe(lambda obj: told.append(obj["metadata"]["name"]))
        await cache.start()
        assert told == ["a"]  # the initial list counts as a change
        assert kube.selectors == ["app.kubernetes.io/component=inference-service"]
        assert "managedFields" not in cache.get("team", "a")["metadata"]  # type: ignore[index]

        kube.events.put_nowait({"type": "ADDED", "object": pod("b", 11, service="other")})
        kube.events.put_nowait({"type": "MODIFIED", "object": pod("a", 12)})
        await settle()
        assert told == ["a", "b", "a"]
        assert [p["metadata"]["name"] for p in cache.indexed("team", "chat")] == ["a"]
        assert [p["metadata"]["name"] for p in cache.indexed("team", "other")] == ["b"]

        kube.events.put_nowait({"type": "DELETED", "object": pod("b", 13, service="other")})
        await settle()
        assert cache.get("team", "b") is None
        assert cache.indexed("team", "other") == []
        await cache.stop()

    asyncio.run(scenario())


def test_a_write_of_our_own_wakes_the_others_but_not_the_writer_and_older_versions_never_win() -> None:
    async def scenario() -> None:
        kube = FakeKube([pod("a", 5)])
        cache = WatchedList(kube, resources.PODS)  # type: ignore[arg-type]
        writer: list[str] = []
        other: list[str] = []
        cache.subscribe(lambda obj: writer.append(obj["metadata"]["resourceVersion"]), own_writes=False)
        cache.subscribe(lambda obj: other.append(obj["metadata"]["resourceVersion"]))
        await cache.start()

        cache.observe(pod("a", 20))  # what our write returned
        kube.events.put_nowait({"type": "MODIFIED", "object": pod("a", 15)})  # older, in flight
        kube.events.put_nowait({"type": "MODIFIED", "object": pod("a", 20)})  # our write, echoed
        await settle()
        assert writer == ["5"]
        # Another controller hears of it once: the echo that follows is known, so it is skipped.
        assert other == ["5", "20"]
        assert cache.get("team", "a")["metadata"]["resourceVersion"] == "20"  # type: ignore[index]

        kube.events.put_nowait({"type": "MODIFIED", "object": pod("a", 21)})  # someone else's change
        await settle()
        assert writer == ["5", "21"]
        assert other == ["5", "20", "21"]
        cache.observe(pod("a", 19))
        assert cache.get("team", "a")["metadata"]["resourceVersion"] == "21"  # type: ignore[index]
        assert other == ["5", "20", "21"]
        await cache.stop()

    asyncio.run(scenario())
