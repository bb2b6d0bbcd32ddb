"""Token quotas of an API key held across three gateway replicas that share a real redis-server,
against the fake engine; and a gateway whose Redis is gone keeps serving.

No control plane: the replicas route by a fixed table and take their keys from a fixed store. The
tests fail (never skip) where redis-server is missing; ``hack/setup`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from aima.gateway import Backend, KeyStore, ServiceView, StaticRoutes
from aima.gateway.keys import ApiKey
from aima_testenv.engines import EngineOptions, FakeEngine
from aima_testenv.processes import free_port
from aima_testenv.quotas import Replica, gateway_replicas, redis_server

pytestmark = pytest.mark.integration

TOKEN = "sk-metered"
LIMIT = 600
COMPLETION = 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": COMPLETION}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@contextlib.asynccontextmanager
async def replicas(
    redis: str | None, *, key: str, count: int = 3
) -> AsyncIterator[tuple[list[Replica], FakeEngine]]:
    """``count`` gateway replicas with one key (named ``key``, its own counters in the shared Redis),
    routing ``chat`` to a fake engine."""
    engine = FakeEngine(EngineOptions(tokens=COMPLETION))
    async with engine.serve() as url:
        view = ServiceView(
            name="chat", namespace="ns", served_name=None, replicas=1, suspended=False, scale_from_zero=False
        )
        routes = StaticRoutes({"chat": Backend(service=view, endpoints=(url,), model="chat")})
        limits = ApiKey(name=key, requests_per_minute=1000, tokens_per_minute=LIMIT)
        keys = KeyStore([(TOKEN, limits)])
        async with gateway_replicas(count, routes=routes, keys=keys, redis_url=redis) as running:
            yield running, engine


async def chat(
    session: aiohttp.ClientSession, replica: Replica, body: dict[str, Any] = CHAT, **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with session.post(replica.url + "/v1/chat/completions", json=body, headers=AUTH | headers) as reply:
        return reply.status, dict(reply.headers), await reply.json()


async def next_minute_if_late(margin: float = 20.0) -> None:
    """Start in a fresh minute when less than ``margin`` seconds are left of this one: the budget is
    a fixed window, and a test that straddles two sees two budgets."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.1)


def test_three_replicas_sharing_redis_hold_a_key_to_its_tokens_per_minute(redis_url: str) -> None:
    async def scenario() -> None:
        await next_minute_if_late()
        async with (
            replicas(redis_url, key="metered") as (running, engine),
            aiohttp.ClientSession() as session,
        ):
            # Three times the budget, all at once, spread over the three replicas, then more one by one.
            burst = await asyncio.gather(*(chat(session, running[i % 3]) for i in range(60)))
            late = [await chat(session, running[i % 3]) for i in range(15)]
            answered = [r for r in burst + late if r[0] == 200]
            refused = [r for r in burst + late if r[0] == 429]
            assert len(answered) + len(refused) == 75
            used = sum(body["usage"]["total_tokens"] for _, _, body in answered)
            reservation = COMPLETION + len(str(CHAT)) // 4 + 5  # max_tokens plus the prompt's estimate
            assert LIMIT <= used < LIMIT + reservation, used
            # The burst reserved more than it used; the budget it gave back went to the late ones.
            assert late[-1][0] == 429

            # What the replicas counted per key is what the engine reported.
            counted = sum(
                r.proxy.metrics.key_tokens[("metered", k)] for r in running for k in ("prompt", "completion")
            )
            assert counted == used
            assert sum(r.proxy.metrics.rate_limited[("metered", "tokens")] for r in running) == len(refused)

            _, headers, body = refused[-1]
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert body["error"]["type"] == "rate_limit_error"
            assert 1 <= int(headers["Retry-After"]) <= 60
            assert headers["x-ratelimit-limit-tokens"] == str(LIMIT)
            assert headers["x-ratelimit-remaining-tokens"] == "0"
            assert headers["x-ratelimit-limit-requests"] == "1000"
            assert headers["x-ratelimit-reset-tokens"].endswith("s")
            assert headers["X-Request-ID"].startswith("req_")

            # Any replica tells what the key used of its windows, all replicas together.
            async with session.get(running[2].url + "/v1/quotas", headers=AUTH) as reply:
                standing = await reply.json()
            assert standing["key"] == "metered"
            assert [(w["limit"], w["used"]) for w in standing["windows"]] == [
                ("requests", len(answered)),  # a refused request takes nothing
                ("tokens", used),
            ]
            async with session.get(running[0].url + "/v1/quotas?key=other", headers=AUTH) as reply:
                assert reply.status == 403  # a key without data.units reads its own only

            # A successful reply's headers count down; the request id is the client's when sane.
            _, first, _ = answered[0]
            assert first["x-ratelimit-limit-tokens"] == str(LIMIT)
            assert int(first["x-ratelimit-remaining-requests"]) < 1000
            assert engine.stats.requests == len(answered)
            remaining = sorted(int(h["x-ratelimit-remaining-tokens"]) for _, h, _ in answered)
            assert remaining[0] == 0 and remaining[-1] < LIMIT

    asyncio.run(scenario())


def test_every_reply_carries_a_request_id_that_the_replica_sees_too(redis_url: str) -> None:
    async def scenario() -> None:
        async with (
            replicas(redis_url, key="request-ids", count=1) as (running, engine),
            aiohttp.ClientSession() as session,
        ):
            gateway = running[0]
            status, headers, _ = await chat(
                session, gateway, {"model": "chat", "messages": []}, **{"X-Request-ID": "client-42"}
            )
            assert (status, headers["X-Request-ID"]) == (200, "client-42")
            assert engine.stats.headers[-1]["X-Request-ID"] == "client-42"
            status, headers, _ = await chat(session, gateway, {"model": "chat"}, **{"X-Request-ID": "a b\tc"})
            assert headers["X-Request-ID"].startswith("req_")
            async with session.post(gateway.url + "/v1/chat/completions", json=CHAT) as reply:
                assert reply.status == 401 and reply.headers["X-Request-ID"].startswith("req_")
            status, headers, _ = await chat(session, gateway, {"model": "absent"})
            assert status == 404 and "X-Request-ID" in headers

    asyncio.run(scenario())


def test_a_streamed_reply_is_charged_the_usage_of_its_last_chunk(redis_url: str) -> None:
    async def scenario() -> None:
        async with (
            replicas(redis_url, key="streaming", count=2) as (running, _),
            aiohttp.ClientSession() as session,
        ):
            body = CHAT | {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 5}
            async with session.post(
                running[0].url + "/v1/chat/completions", json=body, headers=AUTH
            ) as reply:
                assert reply.status == 200
                before = int(reply.headers["x-ratelimit-remaining-tokens"])
                await reply.read()
            _, headers, _ = await chat(session, running[1], CHAT | {"max_tokens": 1})
            reserved = 1 + len(str(CHAT | {"max_tokens": 1})) // 4
            # The stream's 6 tokens (1 prompt, 5 completion) replaced its reservation on the other replica.
            assert int(headers["x-ratelimit-remaining-tokens"]) == LIMIT - 6 - reserved
            assert before < LIMIT

    asyncio.run(scenario())


def test_a_gateway_whose_redis_is_gone_keeps_serving_and_counts_the_errors() -> None:
    async def scenario() -> None:
        gone = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
        async with (
            replicas(gone, key="unchecked", count=1) as (running, _),
            aiohttp.ClientSession() as session,
        ):
            statuses = [(await chat(session, running[0]))[0] for _ in range(3)]
            assert statuses == [200, 200, 200]
            assert running[0].proxy.metrics.quota_store_errors["reserve"] == 1  # then it rests
            async with session.get(running[0].url + "/metrics") as reply:
                text = await reply.text()
            assert 'aima_gateway_quota_store_errors_total{operation="reserve"} 1' in text
            assert "hunter2" not in text

    asyncio.run(scenario())
