#!/usr/bin/env python3
"""Benchmark (not a test): a key's tokens per minute held across gateway replicas.

Two fleets of --replicas gateway replicas run side by side in this process, each with one key of
--limit tokens per minute, both driven at --load times that limit (open loop: requests are sent on
a schedule whatever the replies, spread round-robin over the replicas) against one fake engine that
reports usage:

- ``redis``: the replicas count in one real redis-server (``gateway_quota_redis_url``);
- ``memory``: each replica counts in its own memory, the design before Redis, which allows the key
  its limit once per replica.

It waits for the next minute to start (the windows are calendar minutes), runs --minutes whole
minutes and prints, per minute, the tokens each fleet admitted (the usage of its answered requests,
by the minute they were sent) against the limit; the target is the limit within 5 %.

    .venv/bin/python hack/bench/quota.py                 # 2 minutes, 3 replicas, 600 tokens/min, 3x
    .venv/bin/python hack/bench/quota.py --minutes 3 --replicas 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from aima.gateway import Backend, KeyStore, ServiceView, StaticRoutes
from aima.gateway.keys import ApiKey
from aima_testenv.engines import EngineOptions, FakeEngine
from aima_testenv.quotas import Replica, gateway_replicas, redis_server

TOKEN = "sk-bench"  # noqa: S105 - a key of the benchmark's own
COMPLETION = 20
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": COMPLETION}


@dataclass
class Tally:
    """What one fleet admitted."""

    tokens: Counter[int] = field(default_factory=Counter)
    """Tokens used by answered requests, by the minute (Unix minute) they were sent in."""
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def drive(
    session: aiohttp.ClientSession, fleet: list[Replica], tally: Tally, *, per_second: float, until: float
) -> None:
    """Send requests at ``per_second`` until ``until``, each in its own task."""
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    start = time.time()
    while (now := time.time()) < until:
        task = asyncio.create_task(one(session, fleet[sent % len(fleet)], tally, minute=int(now // 60)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / per_second - time.time()))
    await asyncio.gather(*tasks)


async def one(session: aiohttp.ClientSession, replica: Replica, tally: Tally, *, minute: int) -> None:
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(replica.url + "/v1/chat/completions", json=CHAT, headers=headers) as reply:
        body = await reply.json()
    tally.latencies.append(time.perf_counter() - started)
    tally.statuses[reply.status] += 1
    if reply.status == 200:
        tally.tokens[minute] += body["usage"]["total_tokens"]


async def main(args: argparse.Namespace) -> None:
    engine = FakeEngine(EngineOptions(tokens=COMPLETION, token_delay=args.token_delay))
    per_request = COMPLETION + len(str(CHAT["messages"][0]["content"]).split())  # type: ignore[index]
    per_second = args.limit * args.load / per_request / 60
    with redis_server() as redis_url:
        async with engine.serve() as url:
            view = ServiceView(
                name="chat", namespace="bench", served_name=None, replicas=1, suspended=False,
                scale_from_zero=False,
            )  # fmt: skip
            routes = StaticRoutes({"chat": Backend(service=view, endpoints=(url,), model="chat")})
            keys = KeyStore([(TOKEN, ApiKey(name="bench", tokens_per_minute=args.limit))])
            async with (
                gateway_replicas(args.replicas, routes=routes, keys=keys, redis_url=redis_url) as shared,
                gateway_replicas(args.replicas, routes=routes, keys=keys, redis_url=None) as separate,
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            ):
                first = int(time.time() // 60) + 1
                sys.stdout.write(
                    f"{args.replicas} replicas, key of {args.limit} tokens/min driven at {args.load:g}x "
                    f"({per_second:.2f} requests/s of ~{per_request} tokens); waiting "
                    f"{first * 60 - time.time():.0f}s for the minute to start, then {args.minutes} min\n"
                )
                sys.stdout.flush()
                await asyncio.sleep(first * 60 - time.time())
                until = (first + args.minutes) * 60
                tallies = {"redis": Tally(), "memory": Tally()}
                await asyncio.gather(
                    drive(session, shared, tallies["redis"], per_second=per_second, until=until),
                    drive(session, separate, tallies["memory"], per_second=per_second, until=until),
                )
    report(tallies, first=first, minutes=args.minutes, limit=args.limit)


def report(tallies: dict[str, Tally], *, first: int, minutes: int, limit: int) -> None:
    sys.stdout.write(f"\n{'minute':>8} {'redis (shared)':>16} {'memory (per pod)':>18} {'limit':>7}\n")
    for minute in range(first, first + minutes):
        stamp = time.strftime("%H:%M", time.gmtime(minute * 60))
        redis, memory = tallies["redis"].tokens[minute], tallies["memory"].tokens[minute]
        sys.stdout.write(f"{stamp:>8} {redis:>16} {memory:>18} {limit:>7}\n")
    for name, tally in tallies.items():
        mean = sum(tally.tokens.values()) / minutes
        p50 = statistics.median(tally.latencies) * 1000 if tally.latencies else 0.0
        sys.stdout.write(
            f"{name:>8}: {mean:.0f} tokens/min admitted = {mean / limit:.3f} x the limit "
            f"({(mean - limit) / limit:+.1%}); statuses {dict(sorted(tally.statuses.items()))}; "
            f"p50 latency {p50:.1f} ms\n"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=2, help="whole minutes to measure (default 2)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--limit", type=int, default=600, help="the key's tokens per minute")
    parser.add_argument("--load", type=float, default=3.0, help="demand as a multiple of the limit")
    parser.add_argument("--token-delay", type=float, default=0.01, help="the engine's seconds per token")
    asyncio.run(main(parser.parse_args()))
