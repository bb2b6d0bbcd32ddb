"""The watch-fed cache (pure asyncio, a fake API server): it follows list + watch, tells subscribers
about changes, indexes by a label, tells of the controller's own writes to everyone but it, and
lists again after any break of its watch, counting it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.http_exceptions import LineTooLong

from aima.kube import resources, watch
from aima.kube.cache import WatchedList, by_label
from aima.kube.client import json_lines

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
            index=by_label("aima.dev/inference-service"),
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


class BreakingKube(FakeKube):
    """Lists ``items`` (as they are at the time), then fails each watch with the next of ``failures``;
    when none are left, watches as :class:`FakeKube` does."""

    def __init__(self, items: list[Body], failures: list[BaseException]) -> None:
        super().__init__(items)
        self.failures = failures

    async def watch(self, resource: resources.Resource, **_: Any) -> AsyncIterator[Body]:
        if self.failures:
            raise self.failures.pop(0)
        async for event in super().watch(resource):
            yield event


def test_a_broken_connection_or_a_failing_subscriber_relists_and_is_counted_never_ends_the_watch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(watch, "RELIST_DELAY_SECONDS", 0.01)

    async def scenario() -> None:
        failures: list[BaseException] = [
            aiohttp.ServerDisconnectedError(),  # the API server restarted
            aiohttp.ClientPayloadError("Response payload is not completed"),
            LineTooLong(b"{...", 128 * 1024),  # what aiohttp's own line reader raised on big events
        ]
        kube = BreakingKube([pod("a", 5)], failures)
        restarts: Counter[str] = Counter()
        cache = WatchedList(kube, resources.PODS, restarts=restarts)  # type: ignore[arg-type]
        raised: list[str] = []

        def buggy(obj: Body) -> None:  # fails the first time it hears of "b"
            if obj["metadata"]["name"] == "b" and not raised:
                raised.append("b")
                raise KeyError("b")

        cache.subscribe(buggy)
        await cache.start()
        kube.items = [pod("b", 9)]  # what changed while the watch was down
        while failures:
            await asyncio.sleep(0.01)
        kube.events.put_nowait({"type": "ADDED", "object": pod("c", 12)})
        for _ in range(100):
            if cache.get("team", "c") is not None:
                break
            await asyncio.sleep(0.01)
        assert sorted(o["metadata"]["name"] for o in cache.items()) == ["b", "c"]
        assert restarts == Counter({"pods": 4})
        await cache.stop()

    with caplog.at_level(logging.WARNING, logger="aima.kube.watch"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records]
    assert "Watch of pods broke, listing again: ServerDisconnectedError: Server disconnected" in said
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)  # with its traceback


def test_watch_lines_may_be_longer_than_any_chunk() -> None:
    big = json.dumps({"type": "ADDED", "object": {"data": "x" * (1 << 20)}}).encode()
    stream = b"\n" + big + b"\n{}\n\n" + b'{"last": true}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), 1000):
            yield stream[start : start + 1000]

    async def lines() -> list[bytes]:
        return [line async for line in json_lines(chunks())]

    assert asyncio.run(lines()) == [big, b"{}", b'{"last": true}']


class ClosingKube(FakeKube):
    """Records whether each watch stream was closed, as a real one releases its connection then."""

    def __init__(self, items: list[Body]) -> None:
        super().__init__(items)
        self.closed: list[bool] = []

    async def watch(self, resource: resources.Resource, **_: Any) -> AsyncIterator[Body]:
        self.closed.append(False)
        try:
            async for event in super().watch(resource):
                yield event
        finally:
            self.closed[-1] = True


def test_a_stream_that_says_it_cannot_go_on_is_closed_before_anything_else_happens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "RELIST_DELAY_SECONDS", 0.01)
    kube = ClosingKube([pod("a", 5)])
    closed_when_logged: list[bool] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            closed_when_logged.append(kube.closed[0])

    async def scenario() -> None:
        cache = WatchedList(kube, resources.PODS)  # type: ignore[arg-type]
        await cache.start()
        await settle()
        kube.events.put_nowait({"type": "ERROR", "object": {"message": "too old resource version"}})
        for _ in range(100):
            if closed_when_logged:
                break
            await asyncio.sleep(0.01)
        await cache.stop()

    spy = Spy()
    logging.getLogger("aima.kube.watch").addHandler(spy)
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger("aima.kube.watch").removeHandler(spy)
    # Closed by the engine, not later by the collector: the connection is released at once.
    assert closed_when_logged == [True]
