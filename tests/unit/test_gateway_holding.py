"""Requests held while a service scales from zero: bounded in number, and a held stream kept alive
with SSE heartbeats, then passed through, or ended with an error event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import aiohttp
import pytest

from aima.gateway import KeyStore, create_app, holding, open_gateway
from aima.gateway.keys import ApiKey
from aima.gateway.routes import Backend, ServiceView, distinct
from aima.kube import KubeClient
from aima.settings import Settings
from aima_testenv.engines import EngineOptions, FakeEngine
from fakes.serving import running

pytestmark = pytest.mark.unit

SLEEPY = Backend(
    service=ServiceView(
        name="sleepy", namespace="ns", served_name=None, replicas=0, suspended=False, scale_from_zero=True
    ),
    endpoints=(),
    model="sleepy",
)


class WakingRoutes:
    """A table with one service at zero; :meth:`ready` gives it a replica."""

    def __init__(self) -> None:
        self._table = {"sleepy": SLEEPY}
        self._changed = asyncio.Event()

    def lookup(self, model: str) -> Backend | None:
        return self._table.get(model)

    def backends(self) -> list[Backend]:
        return distinct(self._table)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def ready(self, url: str) -> None:
        service = replace(SLEEPY.service, replicas=1)
        self._table = {"sleepy": replace(SLEEPY, service=service, endpoints=(url,))}
        self._changed.set()
        self._changed = asyncio.Event()


class ScaleKube:
    """Takes the gateway's scale-up patch."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch(self, *_: Any, patch: dict[str, Any], **__: Any) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


@contextlib.asynccontextmanager
async def gateway(
    routes: WakingRoutes, *, keys: KeyStore | None = None, **settings: Any
) -> AsyncIterator[tuple[str, ScaleKube]]:
    kube = ScaleKube()
    options = Settings(
        gateway_require_api_key=False,
        gateway_autoscale_interval_seconds=0,
        gateway_engine_metrics_interval_seconds=0,
        **settings,
    )
    async with (
        open_gateway(options, kube=cast(KubeClient, kube), routes=routes, keys=keys) as proxy,
        running(create_app(proxy)) as url,
    ):
        yield url, kube


def chat(stream: bool) -> dict[str, Any]:
    return {"model": "sleepy", "messages": [{"role": "user", "content": "hi"}], "stream": stream}


@pytest.fixture
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(holding, "HEARTBEAT_SECONDS", 0.05)


@pytest.mark.usefixtures("fast_heartbeats")
def test_a_held_stream_gets_heartbeats_then_the_replicas_stream() -> None:
    async def scenario() -> bytes:
        routes = WakingRoutes()
        engine = FakeEngine(EngineOptions(tokens=3))
        async with (
            gateway(routes) as (url, kube),
            engine.serve() as replica,
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/chat/completions", json=chat(stream=True)) as reply,
        ):
            assert reply.status == 200
            assert reply.content_type == "text/event-stream"
            assert await reply.content.readuntil(b"\n\n") == holding.HEARTBEAT  # at once
            await asyncio.sleep(0.3)
            assert kube.patches == [{"spec": {"replicas": 1}}]
            routes.ready(replica)
            return await reply.read()

    text = asyncio.run(scenario())
    assert text.count(holding.HEARTBEAT) >= 3
    events = [e for e in text.split(b"\n\n") if e.startswith(b"data: ")]
    assert len(events) == 4 and events[-1] == b"data: [DONE]"
    assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == "tok0 "


@pytest.mark.usefixtures("fast_heartbeats")
def test_a_held_stream_that_no_replica_comes_for_ends_with_an_error_event() -> None:
    async def scenario() -> tuple[int, bytes]:
        async with (
            gateway(WakingRoutes(), gateway_scale_wait_seconds=0.3) as (url, _),
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/chat/completions", json=chat(stream=True)) as reply,
        ):
            return reply.status, await reply.read()

    status, text = asyncio.run(scenario())
    assert status == 200
    *beats, last, end = text.split(b"\n\n")
    assert end == b"" and beats and all(b + b"\n\n" == holding.HEARTBEAT for b in beats)
    error = json.loads(last.removeprefix(b"data: "))["error"]
    assert error["code"] == "model_starting" and error["type"] == "server_error"
    assert "no replica became ready in time" in error["message"]


@pytest.mark.usefixtures("fast_heartbeats")
def test_an_error_reply_of_the_replica_becomes_the_held_streams_error_event() -> None:
    async def scenario() -> bytes:
        routes = WakingRoutes()
        engine = FakeEngine(EngineOptions(fail_statuses=[400]))
        async with (
            gateway(routes) as (url, _),
            engine.serve() as replica,
            aiohttp.ClientSession() as session,
            session.post(url + "/v1/chat/completions", json=chat(stream=True)) as reply,
        ):
            await reply.content.readuntil(b"\n\n")
            routes.ready(replica)
            return await reply.read()

    events = [e for e in asyncio.run(scenario()).split(b"\n\n") if e.startswith(b"data: ")]
    assert json.loads(events[-1][6:])["error"]["message"] == "injected failure"


@pytest.mark.usefixtures("fast_heartbeats")
def test_a_held_streams_usage_is_charged_to_its_keys_tokens_per_minute() -> None:
    auth = {"Authorization": "Bearer sk-held"}
    keys = KeyStore([("sk-held", ApiKey(name="held", tokens_per_minute=1000))])

    async def scenario() -> tuple[bytes, dict[str, Any]]:
        if 60 - time.time() % 60 < 2:  # the window is the clock's minute: stay within one
            await asyncio.sleep(2)
        routes = WakingRoutes()
        engine = FakeEngine(EngineOptions(tokens=3))
        body = chat(stream=True) | {"stream_options": {"include_usage": True}, "max_tokens": 3}
        async with (
            gateway(routes, keys=keys) as (url, _),
            engine.serve() as replica,
            aiohttp.ClientSession(headers=auth) as session,
        ):
            async with session.post(url + "/v1/chat/completions", json=body) as reply:
                assert await reply.content.readuntil(b"\n\n") == holding.HEARTBEAT
                routes.ready(replica)
                text = await reply.read()
            async with session.get(url + "/v1/quotas") as reply:
                return text, await reply.json()

    text, standing = asyncio.run(scenario())
    usage = next(
        json.loads(e[6:])["usage"]
        for e in text.split(b"\n\n")
        if e.startswith(b"data: {") and b'"usage"' in e
    )
    assert usage["completion_tokens"] == 3
    # The reservation (3 tokens and the prompt's estimate) was replaced by what the stream used.
    assert [(w["limit"], w["used"]) for w in standing["windows"]] == [("tokens", usage["total_tokens"])]


def test_past_the_cap_held_requests_are_refused_with_503_and_retry_after() -> None:
    async def scenario() -> None:
        routes = WakingRoutes()
        engine = FakeEngine()
        async with (
            gateway(routes, gateway_max_held_requests=2, gateway_retry_after_seconds=7) as (url, _),
            engine.serve() as replica,
            aiohttp.ClientSession() as session,
        ):

            async def post() -> tuple[int, str, dict[str, Any]]:
                async with session.post(url + "/v1/chat/completions", json=chat(stream=False)) as reply:
                    return reply.status, reply.headers.get("Retry-After", ""), await reply.json()

            held = [asyncio.create_task(post()) for _ in range(2)]
            await asyncio.sleep(0.2)
            status, retry_after, body = await post()
            assert (status, retry_after, body["error"]["code"]) == (503, "7", "model_starting")
            assert "2 requests wait for it already" in body["error"]["message"]
            metrics = await (await session.get(url + "/metrics")).text()
            assert 'aima_gateway_held_requests{model="sleepy"} 2' in metrics
            assert 'aima_gateway_held_refused_total{model="sleepy"} 1' in metrics
            routes.ready(replica)
            assert [status for status, _, _ in await asyncio.gather(*held)] == [200, 200]
            metrics = await (await session.get(url + "/metrics")).text()
            assert "aima_gateway_held_requests{" not in metrics

    asyncio.run(scenario())
