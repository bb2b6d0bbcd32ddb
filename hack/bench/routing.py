#!/usr/bin/env python3
"""Benchmark (not a test): how the gateway's choice of replica pays off on engines with a KV cache.

Starts --replicas llm-d-inference-sim processes (vLLM's API and metric names, no model): each has a
KV cache of --kv-blocks blocks of 16 tokens with prefix caching, so a prompt whose prefix a replica
holds prefills only the rest (--prefill-ms per token), runs at most --max-seqs requests at once and
queues the others, and slows down under load (--time-factor). The gateway runs as its own process
with a static routing table, once per policy, on fresh replicas (empty caches):

- ``round-robin``: replicas in turn, blind to load (the floor);
- ``in-flight``: least outstanding requests through the gateway (engine metrics off);
- ``engine-score``: the score of aima.gateway.engine_load (queue, batch, KV cache; the default);
- ``affinity``: prefix affinity with the load bounded by requests in flight (as the gateway does;
  bounding it by the score instead served 848 tokens/s against 985 at 32 clients, so it was dropped);
- ``vllm-router``: the peer users would pick for this, vllm-project/router (Rust, PyPI's
  ``vllm-router``, installed as hack/bench/gateway_peers.py installs it) with its ``cache_aware``
  policy (an approximate radix tree of the prefixes sent to each worker, with load balancing).

The workload is a shared-prefix ladder: --groups system prompts of --prefix-words words (more than
one replica's cache holds, fewer than all of them together), each request one group's prompt (a
random group) and a short question of its own, streamed, --max-tokens tokens. Closed-loop clients
climb the rungs of --ladder (concurrent clients), --seconds each. Per policy and rung it prints
output tokens/s and time to first token p50/p90 of the clients through the gateway, and the
replicas' prefix-cache hit rate (all requests so far). --background N adds N clients that call the
first replica directly (another gateway replica's or tenant's load, which this gateway's own count
of requests in flight does not see); they are not measured.

The simulator is built once from the Go module proxy into ~/.cache/aima-bench-v1 as
hack/testenv/images.sh builds it (pinned in hack/testenv/engines.env).

    .venv/bin/python hack/bench/routing.py
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("round-robin", "in-flight", "engine-score", "affinity", "vllm-router")
MODEL = "sim"


def simulator() -> Path:
    """The simulator's binary, built on first use."""
    version = re.search(
        r"^INFERENCE_SIM_VERSION=(\S+)", (ROOT / "hack/testenv/engines.env").read_text(), re.M
    )
    assert version is not None
    binary = Path.home() / f".cache/aima-bench-v1/sim-{version[1]}/llm-d-inference-sim"
    if binary.exists():
        return binary
    print(f"building llm-d-inference-sim {version[1]} (minutes)", flush=True)
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as module:
        env = os.environ | {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        package = "github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim"
        for command in (
            ["go", "mod", "init", "aima.local/bench/sim"],
            ["go", "get", "-tool", f"{package}@{version[1]}"],
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), package],
        ):
            subprocess.run(command, cwd=module, env=env, check=True)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def replicas(args: argparse.Namespace) -> Iterator[list[str]]:
    """Fresh simulators; their base URLs."""
    binary, processes, urls = simulator(), [], []
    try:
        for _ in range(args.replicas):
            port = free_port()
            command = [
                str(binary), "--model", MODEL, "--port", str(port), "--mode", "random",
                "--force-dummy-tokenizer", "--enable-kvcache", "--block-size", "16",
                "--kv-cache-size", str(args.kv_blocks), "--max-num-seqs", str(args.max_seqs),
                "--max-model-len", "32768", "--prefill-time-per-token", f"{args.prefill_ms}ms",
                "--inter-token-latency", f"{args.token_ms}ms",
                "--time-factor-under-load", str(args.time_factor),
                "--zmq-endpoint", f"tcp://127.0.0.1:{free_port()}",
            ]  # fmt: skip
            env = os.environ | {"POD_IP": "127.0.0.1"}  # the simulator's KV cache wants it
            processes.append(
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
            urls.append(f"http://127.0.0.1:{port}")
        asyncio.run(_until_ready([u + "/health" for u in urls]))
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


@contextlib.contextmanager
def gateway(policy: str, urls: Sequence[str]) -> Iterator[str]:
    """The gateway process for ``policy`` (or the peer router); its base URL."""
    port = free_port()
    peer = policy == "vllm-router"
    if peer:
        command, health = vllm_router_command(port, urls), "/health"
    else:
        command = [sys.executable, __file__, "gateway", "--port", str(port), "--policy", policy, *urls]
        health = "/healthz"
    quiet = subprocess.DEVNULL if peer else None  # it logs every request at INFO, whatever its level
    process = subprocess.Popen(command, cwd=ROOT, stdout=quiet, stderr=quiet)
    try:
        asyncio.run(_until_ready([f"http://127.0.0.1:{port}{health}"]))
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def vllm_router_command(port: int, urls: Sequence[str]) -> list[str]:
    """vllm-router with its cache-aware policy over ``urls``, installed on first use."""
    import gateway_peers  # beside this file

    peer = gateway_peers.PEERS["vllm-router"]
    if (reason := gateway_peers.install(peer)) is not None:
        raise RuntimeError(f"{peer.label} could not be installed: {reason}")
    return [
        str(peer.venv / "bin" / "vllm-router"), "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *urls, "--policy", "cache_aware", "--log-level", "warning",
        "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
    ]  # fmt: skip


async def _until_ready(urls: Sequence[str]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for url in urls:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{url} did not come up")


async def run_gateway(port: int, policy: str, urls: Sequence[str]) -> None:
    from aiohttp import web

    from aima.gateway import Backend, ServiceView, StaticRoutes, app, create_app, open_gateway
    from aima.gateway.balancer import Balancer
    from aima.settings import Settings

    class RoundRobin(Balancer):
        turn = 0

        def pick(self, endpoints: Sequence[str], **_: Any) -> str | None:
            self.turn += 1
            return endpoints[self.turn % len(endpoints)]

    if policy == "round-robin":
        app.Balancer = RoundRobin  # type: ignore[misc]  # the bench's own policy, not the product's
    service = ServiceView(
        name=MODEL,
        namespace="bench",
        served_name=None,
        replicas=len(urls),
        suspended=False,
        scale_from_zero=False,
    )
    routes = StaticRoutes({MODEL: Backend(service=service, endpoints=tuple(urls), model=MODEL)})
    settings = Settings(
        gateway_require_api_key=False,
        gateway_prefix_affinity=policy.startswith("affinity"),
        gateway_engine_metrics_interval_seconds=0.0 if policy == "in-flight" else 0.5,
    )
    async with open_gateway(settings, kube=None, routes=routes) as proxy:
        runner = web.AppRunner(create_app(proxy), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        await asyncio.Event().wait()


def prompts(args: argparse.Namespace) -> list[str]:
    """The groups' system prompts: distinct words, so no two share a cached block."""
    return [" ".join(f"g{g}w{i}" for i in range(args.prefix_words)) for g in range(args.groups)]


async def rung(
    url: str, clients: int, args: argparse.Namespace, systems: Sequence[str], *, direct: str
) -> dict[str, float]:
    """``clients`` closed-loop clients for ``args.seconds``: tokens/s and TTFT percentiles."""
    import aiohttp

    ttfts: list[float] = []
    tokens = 0
    chooser = random.Random(clients)  # noqa: S311 - a workload, not a secret
    deadline = time.monotonic() + args.seconds

    async def client(session: aiohttp.ClientSession, number: int, *, base: str = url) -> None:
        nonlocal tokens
        measured = base == url
        asked = 0
        while time.monotonic() < deadline:
            asked += 1
            messages = [
                {"role": "system", "content": chooser.choice(systems)},
                {"role": "user", "content": f"question {number}-{asked}: what now?"},
            ]
            body = {"model": MODEL, "messages": messages, "max_tokens": args.max_tokens, "stream": True}
            started = time.perf_counter()
            first = True
            async with session.post(base + "/v1/chat/completions", json=body) as reply:
                assert reply.status == 200, await reply.text()
                async for line in reply.content:
                    if measured and line.startswith(b"data: {") and b'"content"' in line:
                        if first:
                            ttfts.append(time.perf_counter() - started)
                            first = False
                        if time.monotonic() < deadline:
                            tokens += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        background = [client(session, -1 - n, base=direct) for n in range(args.background)]
        await asyncio.gather(*(client(session, n) for n in range(clients)), *background)
    cuts = statistics.quantiles(ttfts, n=10) if len(ttfts) > 1 else [float("nan")] * 9
    return {
        "tokens_s": tokens / args.seconds,
        "ttft_p50": cuts[4],
        "ttft_p90": cuts[8],
        "requests": len(ttfts),
    }


async def hit_rate(urls: Sequence[str]) -> float:
    import aiohttp

    hits = queries = 0.0
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url + "/metrics") as reply:
                for line in (await reply.text()).splitlines():
                    if line.startswith("vllm:prefix_cache_hits"):
                        hits += float(line.split()[-1])
                    elif line.startswith("vllm:prefix_cache_queries"):
                        queries += float(line.split()[-1])
    return hits / queries if queries else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument(
        "--kv-blocks", type=int, default=384, help="KV cache per replica, blocks of 16 tokens"
    )
    parser.add_argument("--max-seqs", type=int, default=8, help="requests a replica runs at once")
    parser.add_argument("--prefill-ms", type=float, default=1.0, help="prefill time per uncached token")
    parser.add_argument("--token-ms", type=float, default=10.0, help="time per output token")
    parser.add_argument("--time-factor", type=float, default=2.0, help="slow-down at a full batch")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--prefix-words", type=int, default=1200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ladder", default="8,16,32", help="concurrent clients of each rung")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--background", type=int, default=0, help="clients calling the first replica directly"
    )
    args = parser.parse_args()
    systems = prompts(args)
    ladder = [int(n) for n in args.ladder.split(",")]
    print(
        f"{args.replicas} replicas x {args.kv_blocks * 16} cached tokens; {args.groups} prefixes x"
        f" ~{args.prefix_words} tokens; {args.max_tokens} tokens out;"
        f" rungs {ladder} clients x {args.seconds:g} s"
    )
    print(
        f"{'policy':20} {'clients':>7} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p90':>9}"
        f" {'requests':>8} {'hits':>5}"
    )
    served: dict[tuple[str, int], float] = {}
    for policy in args.policies.split(","):
        with replicas(args) as urls, gateway(policy, urls) as url:
            for clients in ladder:
                result = asyncio.run(rung(url, clients, args, systems, direct=urls[0]))
                hits = asyncio.run(hit_rate(urls))
                served[policy, clients] = result["tokens_s"]
                print(
                    f"{policy:20} {clients:>7} {result['tokens_s']:>9.0f} {result['ttft_p50'] * 1000:>7.0f}ms"
                    f" {result['ttft_p90'] * 1000:>7.0f}ms {result['requests']:>8.0f} {hits:>5.0%}",
                    flush=True,
                )
    for baseline in ("round-robin", "vllm-router"):
        ratios = [
            f"{clients} clients {served['affinity', clients] / served[baseline, clients]:.2f}x"
            for clients in ladder
            if ("affinity", clients) in served and served.get((baseline, clients))
        ]
        if ratios:
            print(f"affinity tokens/s against {baseline}: " + ", ".join(ratios))


if __name__ == "__main__":
    if sys.argv[1:2] == ["gateway"]:
        cli = argparse.ArgumentParser()
        cli.add_argument("gateway")
        cli.add_argument("--port", type=int, required=True)
        cli.add_argument("--policy", choices=POLICIES, required=True)
        cli.add_argument("urls", nargs="+")
        options = cli.parse_args()
        asyncio.run(run_gateway(options.port, options.policy, options.urls))
    else:
        main()
