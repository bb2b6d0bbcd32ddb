#!/usr/bin/env python3
"""Benchmark (not a test): what the OpenAI gateway adds over calling the engine directly.

Runs, as separate processes on loopback, a fake upstream, the gateway (`aima.gateway` with a
static routing table: the `routes=` seam of `open_gateway`, since this measures the proxy path,
not the watches; one API key checked per request), and a load generator. Each measure is taken
against the upstream directly and through the gateway in the same run and printed side by side:

- latency at a fixed rate (open loop, --rate requests/s for --seconds): p50 and p99, and what
  the gateway adds;
- throughput: requests/s with --connections requests always in flight (closed loop), which is
  the highest rate the path sustains;
- time to first token with --streams SSE streams open (streams start at a steady rate, each
  --tokens tokens --token-delay apart);
- the gateway's resident memory: idle, and peak (VmHWM) after all phases.

Each measure is also taken through two bare proxies in the same run, as baselines: the least a
proxy on an aiohttp server can do (read `model`, forward, pass the reply back; no keys, metrics or
balancing), calling upstream once with aiohttp's client and once with plain httpx
(`httpx.AsyncClient`, pooled). The first is the floor the gateway's features cost against
(performance.md: >= 0.3x its requests/s); the second is the design not taken.

The non-streaming upstream is a minimal asyncio HTTP/1.1 server with a canned chat completion and
the load generator a minimal keep-alive client, so that on a small machine neither, rather than
the gateway, sets the pace; the streaming upstream is aima.testenv's FakeEngine (aiohttp).
With --pin (default on 2+ cores) the gateway runs on CPU 1 and everything else on CPU 0.

    .venv/bin/python hack/bench/gateway.py

Targets (issue 7, 2-core machine): added p50 < 1 ms and p99 < 5 ms at 200 requests/s; added time
to first token < 2 ms; >= 2,000 requests/s through one gateway process.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-key"
CANNED = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "fast",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "tok " * 16}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24},
    }
).encode()
JSON = {"Content-Type": "application/json"}
REQUEST_BODY = json.dumps(
    {"model": "fast", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16}
).encode()


BARE_CLIENTS = ("aiohttp", "httpx")

# -- roles (each its own process) ----------------------------------------------------------------


class _CannedServer(asyncio.Protocol):
    """HTTP/1.1 keep-alive server answering every request with one canned chat completion."""

    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(CANNED)).encode()
        + b"\r\n\r\n"
        + CANNED
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) != -1:
            length = _content_length(self.buffer[:end])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.reply)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def run_upstream(port_fast: int, port_stream: int, *, tokens: int, token_delay: float) -> None:
    from aima.testenv.engines import EngineOptions, FakeEngine

    loop = asyncio.get_running_loop()
    server = await loop.create_server(_CannedServer, "127.0.0.1", port_fast, backlog=1024)
    engine = FakeEngine(EngineOptions(name="stream", tokens=tokens, token_delay=token_delay))
    async with server, engine.serve(port=port_stream):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def run_gateway(port: int, fast: str, stream: str) -> None:
    from aiohttp import web

    from aima.gateway import Backend, KeyStore, ServiceView, StaticRoutes, create_app, open_gateway
    from aima.gateway.keys import ApiKey
    from aima.settings import Settings

    def backend(name: str, url: str) -> Backend:
        view = ServiceView(
            name=name, namespace="bench", served_name=None, replicas=1, suspended=False, scale_from_zero=False
        )
        return Backend(service=view, endpoints=(url,), model=name)

    routes = StaticRoutes({"fast": backend("fast", fast), "stream": backend("stream", stream)})
    keys = KeyStore([(KEY, ApiKey(name="bench"))])
    async with open_gateway(Settings(), kube=None, routes=routes, keys=keys) as proxy:
        runner = web.AppRunner(create_app(proxy), access_log=None, handler_cancellation=True)
        await runner.setup()
        gc.freeze()  # as `aima gateway serve` does
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print("ready", flush=True)
        await asyncio.Event().wait()


Upstream = tuple[int, str, AsyncIterator[bytes]]
"""Status, content type and body chunks of an upstream reply."""
Post = Callable[[str, bytes], contextlib.AbstractAsyncContextManager[Upstream]]


@contextlib.asynccontextmanager
async def _aiohttp_post() -> AsyncIterator[Post]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:

        @contextlib.asynccontextmanager
        async def post(url: str, body: bytes) -> AsyncIterator[Upstream]:
            async with session.post(url, data=body, headers=JSON) as reply:
                yield reply.status, reply.content_type, reply.content.iter_any()

        yield post


@contextlib.asynccontextmanager
async def _httpx_post() -> AsyncIterator[Post]:
    import httpx

    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        @contextlib.asynccontextmanager
        async def post(url: str, body: bytes) -> AsyncIterator[Upstream]:
            async with client.stream("POST", url, content=body, headers=JSON) as reply:
                content_type = reply.headers.get("content-type", "").split(";")[0]
                yield reply.status_code, content_type, reply.aiter_raw()

        yield post


async def run_bare_proxy(port: int, fast: str, stream: str, *, client: str) -> None:
    """A baseline: the least a proxy can do on an aiohttp server (read `model`, forward, pass the
    reply back; no keys, metrics or balancing), calling upstream with aiohttp's or httpx's client."""
    from aiohttp import web

    upstreams = {"fast": fast, "stream": stream}
    async with _aiohttp_post() if client == "aiohttp" else _httpx_post() as post:

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            async with post(upstreams[json.loads(body)["model"]] + request.path, body) as (
                status,
                kind,
                chunks,
            ):
                if kind != "text/event-stream":
                    data = b"".join([chunk async for chunk in chunks])
                    return web.Response(body=data, status=status, content_type=kind)
                response = web.StreamResponse(status=status, headers={"Content-Type": kind})
                await response.prepare(request)
                async for chunk in chunks:
                    await response.write(chunk)
                await response.write_eof()
                return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        gc.freeze()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print("ready", flush=True)
        await asyncio.Event().wait()


# -- the load generator --------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends the benchmark's request and reads the reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self._reader, self._writer, self._request = reader, writer, request

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(REQUEST_BODY)}\r\n\r\n"
        )
        return cls(reader, writer, head.encode() + REQUEST_BODY)

    async def exchange(self) -> None:
        self._writer.write(self._request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace").splitlines()[0])
        await self._reader.readexactly(_content_length(head[:-4]))

    def close(self) -> None:
        self._writer.close()


@contextlib.asynccontextmanager
async def _pool(port: int, size: int) -> AsyncIterator[asyncio.Queue[_Connection]]:
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    connections = [await _Connection.open("127.0.0.1", port, "/v1/chat/completions") for _ in range(size)]
    for connection in connections:
        pool.put_nowait(connection)
    try:
        yield pool
    finally:
        for connection in connections:
            connection.close()


async def fixed_rate(port: int, *, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: request i is sent at i/rate whatever the replies do; latency counts from the send
    (the event loop wakes up to a millisecond late, which would otherwise count for both paths)."""
    total = int(rate * seconds)
    latencies: list[float] = []
    async with _pool(port, 64) as pool:
        for _ in range(20):  # warm the path
            connection = await pool.get()
            await connection.exchange()
            pool.put_nowait(connection)
        start = time.perf_counter() + 0.05

        async def one(index: int) -> None:
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            connection = await pool.get()
            sent = time.perf_counter()
            try:
                await connection.exchange()
            finally:
                pool.put_nowait(connection)
            latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(i) for i in range(total)))
    return {"p50_ms": _quantile(latencies, 0.5) * 1e3, "p99_ms": _quantile(latencies, 0.99) * 1e3, "n": total}


async def throughput(port: int, *, connections: int, seconds: float) -> dict[str, Any]:
    """Closed loop: every connection sends its next request as soon as the last one is answered."""
    latencies: list[float] = []
    async with _pool(port, connections) as pool:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            connection = await pool.get()
            while (now := time.perf_counter()) < deadline:
                await connection.exchange()
                latencies.append(time.perf_counter() - now)
            pool.put_nowait(connection)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"rps": len(latencies) / elapsed, "p99_ms": _quantile(latencies, 0.99) * 1e3}


async def first_tokens(port: int, *, streams: int, seconds: float, duration: float) -> dict[str, Any]:
    """Time to the first SSE chunk with ``streams`` streams open on average: streams start at
    ``streams / duration`` per second (open loop), each lasting ``duration`` seconds."""
    import aiohttp

    body = {"model": "stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ttfts: list[float] = []
    chunks: list[int] = []
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Bearer {KEY}"}
    ) as session:

        async def one() -> None:
            started = time.perf_counter()
            count = 0
            async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
                async for _ in response.content.iter_any():
                    if count == 0:
                        ttfts.append(time.perf_counter() - started)
                    count += 1
            chunks.append(count)

        for _ in range(streams):  # open the connections first: this measures streams, not handshakes
            await one()
        ttfts.clear()
        chunks.clear()
        rate = streams / duration
        start = time.perf_counter()

        async def scheduled(index: int) -> None:
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            await one()

        await asyncio.gather(*(scheduled(i) for i in range(int(rate * seconds))))
    return {
        "p50_ms": _quantile(ttfts, 0.5) * 1e3,
        "p99_ms": _quantile(ttfts, 0.99) * 1e3,
        "chunks": statistics.median(chunks),
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the orchestration ---------------------------------------------------------------------------


def _spawn(*args: str, cpu: int | None) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, *args] + (["--cpu", str(cpu)] if cpu is not None else [])
    env = os.environ | {"PYTHONPATH": str(ROOT / "operator")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"{args[1]} did not start")
    return process


def _load(phase: str, port: int, options: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--role", "load", "--phase", phase, "--port", str(port)]
    command += ["--rate", str(options.rate), "--seconds", str(options.seconds)]
    command += ["--connections", str(options.connections), "--streams", str(options.streams)]
    command += ["--tokens", str(options.tokens), "--token-delay", str(options.token_delay)]
    command += ["--cpu", str(cpu)] if cpu is not None else []
    env = os.environ | {"PYTHONPATH": str(ROOT / "operator")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=600)
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def orchestrate(options: argparse.Namespace) -> None:
    from aima.testenv.processes import free_port

    pin = options.pin and (os.cpu_count() or 1) >= 2
    others, gateway_cpu = (0, 1) if pin else (None, None)
    fast, stream, gateway_port = free_port(), free_port(), free_port()
    bare_ports = {client: free_port() for client in BARE_CLIENTS}
    upstream = _spawn(
        "--role", "upstream", "--port", str(fast), "--stream-port", str(stream),
        "--tokens", str(options.tokens), "--token-delay", str(options.token_delay), cpu=others,
    )  # fmt: skip
    gateway = None
    bare: list[subprocess.Popen[str]] = []
    upstream_urls = ("--fast", f"http://127.0.0.1:{fast}", "--stream", f"http://127.0.0.1:{stream}")
    try:
        gateway = _spawn("--role", "gateway", "--port", str(gateway_port), *upstream_urls, cpu=gateway_cpu)
        for client, port in bare_ports.items():
            role = ("--role", "bare-proxy", "--client", client, "--port", str(port))
            bare.append(_spawn(*role, *upstream_urls, cpu=gateway_cpu))
        idle_kib = _memory_kib(gateway.pid, "VmRSS")
        rows: list[tuple[str, ...]] = []
        for label, phase, keys in (
            (f"latency @ {options.rate:g} req/s", "rate", ("p50_ms", "p99_ms")),
            (f"throughput, {options.connections} in flight", "throughput", ("rps", "p99_ms")),
            (f"first token, {options.streams} streams", "ttft", ("p50_ms", "p99_ms")),
        ):
            direct_port = stream if phase == "ttft" else fast
            direct = _load(phase, direct_port, options, others)
            through = _load(phase, gateway_port, options, others)
            baselines = [_load(phase, port, options, others) for port in bare_ports.values()]
            for key in [*keys, "chunks"] if phase == "ttft" else keys:
                figures = [direct[key], through[key], *(b[key] for b in baselines)]
                rows.append(_row(f"{label}: {key}", *figures, key=key))
        peak_kib = _memory_kib(gateway.pid, "VmHWM")
    finally:
        for process in (gateway, *bare, upstream):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    print(f"gateway pinned to CPU {gateway_cpu}, load and upstream to CPU {others}" if pin else "not pinned")
    header = (
        "measure",
        "direct",
        "gateway",
        "added",
        "gw/direct",
        *(f"bare {c} proxy" for c in BARE_CLIENTS),
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"gateway memory: idle {idle_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB (VmHWM)")


def _row(name: str, direct: float, through: float, *bare: float, key: str) -> tuple[str, ...]:
    unit = " ms" if key.endswith("_ms") else ""
    return (
        name,
        f"{direct:.2f}{unit}",
        f"{through:.2f}{unit}",
        f"{through - direct:+.2f}{unit}",
        f"{through / direct:.2f}",
        *(f"{figure:.2f}{unit}" for figure in bare),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=["main", "upstream", "gateway", "bare-proxy", "load"], default="main"
    )
    parser.add_argument("--client", choices=BARE_CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=200.0, help="Requests/s of the fixed-rate phase.")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Length of the rate and throughput phases."
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="Requests in flight in the throughput phase."
    )
    parser.add_argument(
        "--streams", type=int, default=50, help="Concurrent streams in the first-token phase."
    )
    parser.add_argument("--tokens", type=int, default=16, help="Tokens per stream.")
    parser.add_argument("--token-delay", type=float, default=0.02, help="Seconds between streamed tokens.")
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="Pin processes to CPUs."
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fast", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.cpu is not None:
        os.sched_setaffinity(0, {options.cpu})
    if options.role in ("upstream", "load"):
        # The harness must not pause: a 30 ms full collection in the fake engine or the load
        # generator lands on whichever path is being measured (seen as p99 spikes of either).
        gc.disable()
    if options.role == "main":
        orchestrate(options)
    elif options.role == "upstream":
        asyncio.run(
            run_upstream(
                options.port, options.stream_port, tokens=options.tokens, token_delay=options.token_delay
            )
        )
    elif options.role == "gateway":
        asyncio.run(run_gateway(options.port, options.fast, options.stream))
    elif options.role == "bare-proxy":
        asyncio.run(run_bare_proxy(options.port, options.fast, options.stream, client=options.client))
    else:
        print(json.dumps(asyncio.run(_phase(options))))


async def _phase(options: argparse.Namespace) -> dict[str, Any]:
    if options.phase == "rate":
        return await fixed_rate(options.port, rate=options.rate, seconds=options.seconds)
    if options.phase == "throughput":
        return await throughput(options.port, connections=options.connections, seconds=options.seconds)
    duration = options.tokens * options.token_delay
    return await first_tokens(
        options.port, streams=options.streams, seconds=options.seconds, duration=duration
    )


if __name__ == "__main__":
    main()
