"""A replica that closes a connection without answering (an engine's keep-alive timeout meeting the
next request, or an engine that exits): the gateway sends the request once more on a new connection,
to another replica where there is one, and answers 502 only when the replicas left it unanswered
twice each (or three times in all)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from aima.gateway import create_app, open_gateway, proxy
from aima.gateway.routes import Backend, ServiceView, StaticRoutes
from aima.settings import Settings
from fakes.serving import running

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _short_listing_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Successors come 0.3 s after the request; a request with none gives up a second later."""
    monkeypatch.setattr(proxy, "LISTING_LAG_SECONDS", 1.0)


EXITED = "http://127.0.0.1:9"  # discard: nothing listens there
REPLY = json.dumps({"object": "chat.completion", "model": "chat", "choices": []}).encode()


@contextlib.asynccontextmanager
async def replica(unanswered: int) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server that closes its first ``unanswered`` connections once a request came in."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        seen.append("closed" if len(seen) < unanswered else "answered")
        if seen[-1] == "answered":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(REPLY)}\r\n\r\n".encode()
                + REPLY
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


class Successions(StaticRoutes):
    """A table that lists the first replica alone until ``succeed()``, then the second alone: a
    replica that stops once its successor is Ready, seen by a gateway that hears of the successor
    late."""

    def __init__(self, first: Backend, second: Backend) -> None:
        super().__init__({"chat": first})
        self._second = second

    def succeed(self) -> None:
        self._table["chat"] = self._second


def chat(*endpoints: str) -> Backend:
    view = ServiceView(
        name="chat", namespace="ns", served_name=None, replicas=1, suspended=False, scale_from_zero=False
    )
    return Backend(service=view, endpoints=endpoints, model="chat")


async def ask(
    *unanswered: int, succession: bool = False, first_exited: bool = False
) -> tuple[int, dict[str, Any], list[list[str]]]:
    """Ask a service whose replicas close their first ``unanswered`` connections each; with
    ``succession``, the table lists the second replica only 0.3 s after the request came; with
    ``first_exited``, the first replica's address refuses connections (its engine exited)."""
    async with contextlib.AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(replica(n)) for n in unanswered]
        endpoints = tuple(url for url, _ in replicas)
        if first_exited:
            endpoints = (EXITED, *endpoints[1:])
        routes = (
            Successions(chat(endpoints[0]), chat(endpoints[1]))
            if succession
            else StaticRoutes({"chat": chat(*endpoints)})
        )
        if isinstance(routes, Successions):
            asyncio.get_running_loop().call_later(0.3, routes.succeed)
        options = Settings(
            gateway_require_api_key=False,
            gateway_autoscale_interval_seconds=0,
            gateway_engine_metrics_interval_seconds=0,
        )
        async with (
            open_gateway(options, kube=None, routes=routes) as proxy,
            running(create_app(proxy)) as gateway,
            aiohttp.ClientSession() as session,
            session.post(gateway + "/v1/chat/completions", json={"model": "chat", "messages": []}) as reply,
        ):
            return reply.status, await reply.json(), [seen for _, seen in replicas]


def test_a_request_the_replica_closed_unanswered_is_sent_once_more() -> None:
    status, body, seen = asyncio.run(ask(1))
    assert (status, body["object"], seen) == (200, "chat.completion", [["closed", "answered"]])


def test_a_second_unanswered_try_is_a_502_in_openai_shape() -> None:
    status, body, seen = asyncio.run(ask(5))
    assert status == 502 and seen == [["closed", "closed"]]
    assert body["error"]["code"] == "upstream_error"
    assert body["error"]["message"].startswith("The replica of 'chat' failed: ")


def test_a_stopping_replica_passes_its_request_to_another() -> None:
    status, body, seen = asyncio.run(ask(5, 0))
    assert (status, body["object"]) == (200, "chat.completion")
    # Whichever the balancer picked first, the stopping replica got the request once at most.
    assert seen[0] in ([], ["closed"]) and seen[1] == ["answered"]


def test_replicas_that_all_stop_leave_three_tries_in_all() -> None:
    status, _, seen = asyncio.run(ask(5, 5))
    assert status == 502 and sum(map(len, seen)) == 3


def test_a_request_its_stopping_replica_left_goes_to_the_successor_the_table_lists_later() -> None:
    status, body, seen = asyncio.run(ask(5, 0, succession=True))
    assert (status, body["object"]) == (200, "chat.completion")
    assert seen == [["closed", "closed"], ["answered"]]


def test_a_request_its_exited_replica_refused_goes_to_the_successor_the_table_lists_later() -> None:
    status, body, seen = asyncio.run(ask(0, 0, succession=True, first_exited=True))
    assert (status, body["object"]) == (200, "chat.completion")
    assert seen == [[], ["answered"]]
