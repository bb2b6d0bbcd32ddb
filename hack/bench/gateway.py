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
the gateway, sets the pace; the streaming upstream is aima_testenv's FakeEngine (aiohttp).
With --pin (default on 2+ cores) the proxy under test runs on CPU 1 and everything else on CPU 0;
the paths are measured one after another, each proxy alone on CPU 1.

The peers users pick instead, LiteLLM's proxy and vllm-router (--peers; see gateway_peers.py for
how each is installed and run), are measured in the same run against the same upstream, with one
more fixed-rate phase at --peer-rate, a rate LiteLLM sustains on one core (it does not sustain
--rate), for the added latencies compared with theirs.

Two phases follow, each through a fresh gateway process:

- concurrency (--concurrent-streams, 0 skips it): that many SSE streams opened at once, each on
  its own connection and 10 s long, against FakeEngine; counts every non-200 (5xx apart), every
  stream cut short (one must end with `data: [DONE]` and its terminating chunk) and every failed
  connection, the most streams in progress at once, and the gateway's peak RSS;
- soak (--soak-seconds, off by default; issue 19 asks for 600): --rate requests/s and the
  first-token phase's streams, open loop, the gateway's RSS sampled every 10 s (first, last, max,
  and the slope of a least-squares line through the samples).

    .venv/bin/python hack/bench/gateway.py
    .venv/bin/python hack/bench/gateway.py --no-compare --soak-seconds 600

Targets (issue 7, 2-core machine): added p50 < 1 ms and p99 < 5 ms at 200 requests/s; added time
to first token < 2 ms; >= 2,000 requests/s through one gateway process. Issue 19: >= 5x LiteLLM's
requests/s at <= 1/10 of its added latency; >= 0.7x vllm-router's requests/s on one core; 2,000
concurrent streams without a 5xx; memory flat over the soak.
"""

# ruff: noqa: T201 (a benchmark reports by printing)
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import gateway_peers

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-bench-key"  # LiteLLM's form of a master key
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
    from aiohttp import web

    from aima_testenv.engines import EngineOptions, FakeEngine

    loop = asyncio.get_running_loop()
    server = await loop.create_server(_CannedServer, "127.0.0.1", port_fast, backlog=4096)
    engine = FakeEngine(
        EngineOptions(name="stream", models=("stream",), tokens=tokens, token_delay=token_delay)
    )
    # Not engine.serve(): it listens with aiohttp's backlog of 128, which thousands of streams
    # opened at once overflow (a real engine's is larger: uvicorn's is 2,048).
    runner = web.AppRunner(engine.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    async with server:
        await web.TCPSite(runner, "127.0.0.1", port_stream, backlog=4096).start()
        print("ready", flush=True)
        await asyncio.Event().wait()


async def run_gateway(port: int, fast: str, stream: str, *, upstream_connections: int | None) -> None:
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
    settings = (
        Settings()
        if upstream_connections is None
        else Settings(gateway_upstream_connections=upstream_connections)
    )
    async with open_gateway(settings, kube=None, routes=routes, keys=keys) as proxy:
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

        # Open the connections first (all at once, as they are then used): this measures streams,
        # not handshakes.
        await asyncio.gather(*(one() for _ in range(streams)))
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


STREAM_BODY = json.dumps(
    {"model": "stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}
).encode()


@dataclasses.dataclass(frozen=True)
class _Stream:
    status: int
    ended: bool
    """Whether the body ended with ``data: [DONE]`` and then its terminating chunk (not cut short)."""
    headers_at: float
    finished_at: float


async def _stream_once(port: int) -> _Stream:
    """One SSE stream on its own connection, read to its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(STREAM_BODY)}\r\n\r\n".encode()
            + STREAM_BODY
        )
        head = await reader.readuntil(b"\r\n\r\n")
        headers_at = time.perf_counter()
        status = int(head.split(maxsplit=2)[1])
        try:
            ended = (await _read_body(reader, head[:-4])).rstrip().endswith(b"data: [DONE]")
        except (asyncio.IncompleteReadError, ConnectionError):
            ended = False
        return _Stream(status, ended, headers_at, time.perf_counter())
    finally:
        writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    if b"transfer-encoding: chunked" not in head.lower():
        return await reader.readexactly(_content_length(head))
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")  # the end of the (empty) trailer
    return bytes(body)


async def concurrent_streams(port: int, *, count: int) -> dict[str, Any]:
    """Open ``count`` SSE streams at once, each on its own connection, and read each to its end.

    Counts every status (5xx apart), every 200 stream cut short, every connection that failed, and
    the most streams in progress at once (headers in, body not yet ended).
    """
    errors: collections.Counter[str] = collections.Counter()
    streams: list[_Stream] = []
    started = time.perf_counter()

    async def one() -> None:
        try:
            streams.append(await _stream_once(port))
        except (OSError, asyncio.IncompleteReadError) as error:
            errors[type(error).__name__] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    statuses = collections.Counter(stream.status for stream in streams)
    return {
        "streams": count,
        "ok": sum(stream.status == 200 and stream.ended for stream in streams),
        "status_5xx": sum(n for status, n in statuses.items() if status >= 500),
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "cut": sum(stream.status == 200 and not stream.ended for stream in streams),
        "connection_errors": dict(errors),
        "peak_streaming": _peak_overlap([(s.headers_at, s.finished_at) for s in streams]),
        "last_headers_s": max((s.headers_at for s in streams), default=started) - started,
        "seconds": time.perf_counter() - started,
    }


def _peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most of the (start, end) spans that hold at one time."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    return max(itertools.accumulate(change for _, change in events), default=0)


async def soak(port: int, *, rate: float, streams_per_second: float, seconds: float) -> dict[str, Any]:
    """Steady load for ``seconds``: non-streaming requests at ``rate`` per second and SSE streams
    started at ``streams_per_second`` (open loop both); counts what failed rather than stopping."""
    failures: collections.Counter[str] = collections.Counter()
    done: collections.Counter[str] = collections.Counter()
    tasks: set[asyncio.Task[None]] = set()
    async with _pool(port, 64) as pool:

        async def request() -> None:
            connection = await pool.get()
            try:
                await connection.exchange()
                done["requests"] += 1
                pool.put_nowait(connection)
            except (RuntimeError, OSError, asyncio.IncompleteReadError) as error:
                failures[f"request: {error}"[:80]] += 1
                connection.close()
                pool.put_nowait(await _Connection.open("127.0.0.1", port, "/v1/chat/completions"))

        async def stream() -> None:
            try:
                result = await _stream_once(port)
            except (OSError, asyncio.IncompleteReadError) as error:
                failures[f"stream: {type(error).__name__}"] += 1
                return
            if result.status == 200 and result.ended:
                done["streams"] += 1
            else:
                failures[f"stream: status {result.status}" + ("" if result.ended else ", cut")] += 1

        async def ticker(per_second: float, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
            start = time.perf_counter()
            for index in itertools.count():
                at = start + index / per_second
                if at - start >= seconds:
                    return
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                task = asyncio.create_task(make())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        await asyncio.gather(ticker(rate, request), ticker(streams_per_second, stream))
        await asyncio.gather(*list(tasks))
    return {"requests": done["requests"], "streams": done["streams"], "failures": dict(failures)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the orchestration ---------------------------------------------------------------------------

PHASES = (
    ("peer-rate", ("p50_ms", "p99_ms")),
    ("rate", ("p50_ms", "p99_ms")),
    ("throughput", ("rps", "p99_ms")),
    ("ttft", ("p50_ms", "p99_ms", "chunks")),
)
HOLD_TOKENS, HOLD_TOKEN_DELAY = 20, 0.5
"""The streams of the concurrency phase: 10 s each, so that all of them are open at once."""
TARGETS = {"litellm": {"rps": 5.0, "added": 0.1}, "vllm-router": {"rps": 0.7}}
"""Issue 19: the gateway's requests/s at least these times the peer's, its added latency at most."""


@dataclasses.dataclass(frozen=True)
class FakeUpstream:
    fast: int
    stream: int

    @property
    def urls(self) -> dict[str, str]:
        return {"fast": f"http://127.0.0.1:{self.fast}", "stream": f"http://127.0.0.1:{self.stream}"}

    @property
    def args(self) -> tuple[str, ...]:
        return ("--fast", self.urls["fast"], "--stream", self.urls["stream"])


@dataclasses.dataclass(frozen=True)
class Target:
    """A path under test: the port serving each model, and the processes serving it (none for
    direct; the first one's idle memory is reported, and the largest peak)."""

    name: str
    ports: dict[str, int]
    pids: tuple[int, ...]


def _spawn(*args: str, cpu: int | None) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, *args] + (["--cpu", str(cpu)] if cpu is not None else [])
    env = os.environ | {"PYTHONPATH": str(ROOT / "operator")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"{args[1]} did not start")
    return process


@contextlib.contextmanager
def _running(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def _upstream(tokens: int, delay: float, cpu: int | None) -> Iterator[FakeUpstream]:
    from aima_testenv.processes import free_port

    upstream = FakeUpstream(free_port(), free_port())
    ports = ("--port", str(upstream.fast), "--stream-port", str(upstream.stream))
    role = ("--role", "upstream", *ports, "--tokens", str(tokens), "--token-delay", str(delay))
    with _running(_spawn(*role, cpu=cpu)):
        yield upstream


@contextlib.contextmanager
def _serving(
    name: str, upstream: FakeUpstream, options: argparse.Namespace, cpu: int | None, folder: Path
) -> Iterator[Target]:
    from aima_testenv.processes import free_port

    if name == "direct":
        yield Target(name, {"fast": upstream.fast, "stream": upstream.stream}, ())
        return
    if name in gateway_peers.PEERS:
        peer = gateway_peers.PEERS[name]
        with gateway_peers.serve(peer, upstreams=upstream.urls, key=KEY, cpu=cpu, folder=folder) as served:
            pids = tuple(dict.fromkeys(instance.pid for instance in served.values()))
            yield Target(name, {model: instance.port for model, instance in served.items()}, pids)
        return
    port = free_port()
    if name == "gateway":
        role: tuple[str, ...] = ("--role", "gateway")
        if options.upstream_connections is not None:
            role += ("--upstream-connections", str(options.upstream_connections))
    else:
        role = ("--role", "bare-proxy", "--client", name.removeprefix("bare "))
    with _running(_spawn(*role, "--port", str(port), *upstream.args, cpu=cpu)) as process:
        yield Target(name, {"fast": port, "stream": port}, (process.pid,))


def _load_command(phase: str, port: int, options: argparse.Namespace, cpu: int | None) -> list[str]:
    command = [sys.executable, __file__, "--role", "load", "--phase", phase, "--port", str(port)]
    command += ["--rate", str(options.rate), "--peer-rate", str(options.peer_rate)]
    command += ["--seconds", str(options.seconds)]
    command += ["--connections", str(options.connections), "--streams", str(options.streams)]
    command += ["--tokens", str(options.tokens), "--token-delay", str(options.token_delay)]
    command += ["--concurrent-streams", str(options.concurrent_streams)]
    command += ["--soak-seconds", str(options.soak_seconds)]
    return command + (["--cpu", str(cpu)] if cpu is not None else [])


def _load(phase: str, port: int, options: argparse.Namespace, cpu: int | None) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(ROOT / "operator")}
    command = _load_command(phase, port, options, cpu)
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"load phase {phase} failed: {result.stderr.strip().splitlines()[-1:]}")
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _measure(target: Target, options: argparse.Namespace, cpu: int | None) -> dict[str, float]:
    figures: dict[str, float] = {}
    if target.pids:
        figures["idle_mib"] = _memory_kib(target.pids[0], "VmRSS") / 1024
    for phase, keys in PHASES:
        if phase == "peer-rate" and (not options.peers or target.name.startswith("bare ")):
            continue  # only compared with the peers'
        result = _load(phase, target.ports["stream" if phase == "ttft" else "fast"], options, cpu)
        figures |= {f"{phase}.{key}": result[key] for key in keys}
    if target.pids:
        figures["peak_mib"] = max(_memory_kib(pid, "VmHWM") for pid in target.pids) / 1024
    return figures


def compare(options: argparse.Namespace, *, load_cpu: int | None, proxy_cpu: int | None) -> None:
    """The paths side by side, each measured alone on the proxy's CPU: direct, the gateway, the
    bare proxies and the peers."""
    peers: list[str] = []
    for name in options.peers:
        reason = gateway_peers.install(gateway_peers.PEERS[name])
        if reason is None:
            peers.append(name)
        else:
            print(f"{name}: skipped, it could not be installed: {reason}")
    names = ["direct", "gateway", *(f"bare {client}" for client in BARE_CLIENTS), *peers]
    results: dict[str, dict[str, float]] = {}
    with (
        _upstream(options.tokens, options.token_delay, load_cpu) as upstream,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for name in names:
            try:
                with _serving(name, upstream, options, proxy_cpu, Path(tmp)) as target:
                    results[name] = _measure(target, options, load_cpu)
            except RuntimeError as error:
                if name not in peers:
                    raise
                print(f"{name}: failed under the benchmark: {error}")
    _print_table(options, results)
    _print_against_peers(options, results)


def _print_table(options: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    others = [name for name in results if name not in ("direct", "gateway")]
    labels = {
        "peer-rate": f"latency @ {options.peer_rate:g} req/s",
        "rate": f"latency @ {options.rate:g} req/s",
        "throughput": f"throughput, {options.connections} in flight",
        "ttft": f"first token, {options.streams} streams",
    }
    header = ("measure", "direct", "gateway", "added", "gw/direct", *map(_column, others))
    rows = [header]
    for phase, keys in PHASES:
        for key in keys if f"{phase}.{keys[0]}" in results["direct"] else ():
            figures = [results[name].get(f"{phase}.{key}") for name in ("direct", "gateway", *others)]
            rows.append(_row(f"{labels[phase]}: {key}", *figures, key=key))
    memory = [f"{results[name]['idle_mib']:.1f} / {results[name]['peak_mib']:.1f}" for name in others]
    gateway = results["gateway"]
    rows.append(
        (
            "memory idle / peak MiB",
            "",
            f"{gateway['idle_mib']:.1f} / {gateway['peak_mib']:.1f}",
            "",
            "",
            *memory,
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _column(name: str) -> str:
    if name in gateway_peers.PEERS:
        return gateway_peers.PEERS[name].label
    return f"{name} proxy"


def _row(
    name: str, direct: float | None, through: float | None, *others: float | None, key: str
) -> tuple[str, ...]:
    assert direct is not None and through is not None
    unit = " ms" if key.endswith("_ms") else ""
    return (
        name,
        f"{direct:.2f}{unit}",
        f"{through:.2f}{unit}",
        f"{through - direct:+.2f}{unit}",
        f"{through / direct:.2f}",
        *("-" if figure is None else f"{figure:.2f}{unit}" for figure in others),
    )


def _print_against_peers(options: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    peers = [name for name in results if name in gateway_peers.PEERS]
    if not peers:
        return
    print("against peers: the gateway's figure / the peer's (issue 19's targets in brackets)")
    ours, direct = results["gateway"], results["direct"]
    rate, peer_rate = options.rate, options.peer_rate

    def added(figures: dict[str, float], key: str) -> float:
        return figures[key] - direct[key]

    for name in peers:
        theirs, target = results[name], TARGETS.get(name, {})
        rps = ours["throughput.rps"] / theirs["throughput.rps"]
        parts = [f"requests/s {rps:.2f}x" + _verdict(rps, target.get("rps"), at_least=True)]
        for key, what in (
            ("peer-rate.p50_ms", f"added latency @ {peer_rate:g} req/s p50"),
            ("peer-rate.p99_ms", "p99"),
            ("rate.p50_ms", f"added latency @ {rate:g} req/s p50"),
            ("ttft.p50_ms", "added first token p50"),
        ):
            ratio = _ratio(added(ours, key), added(theirs, key))
            verdict = _verdict(ratio, target.get("added"), at_least=False) if key.startswith("peer") else ""
            parts.append(f"{what} {'n/a' if ratio is None else f'{ratio:.2f}x'}{verdict}")
        parts.append(f"peak RSS {ours['peak_mib'] / theirs['peak_mib']:.2f}x")
        print(f"  {gateway_peers.PEERS[name].label}: " + "; ".join(parts))


def _ratio(ours: float, theirs: float) -> float | None:
    """None where either added figure is not above zero (within the noise of the direct path)."""
    return ours / theirs if ours > 0 and theirs > 0 else None


def _verdict(ratio: float | None, target: float | None, *, at_least: bool) -> str:
    if target is None or ratio is None:
        return ""
    met = ratio >= target if at_least else ratio <= target
    return f" [{'>=' if at_least else '<='} {target:g}x: {'met' if met else 'MISSED'}]"


def concurrency(options: argparse.Namespace, *, load_cpu: int | None, proxy_cpu: int | None) -> None:
    """``--concurrent-streams`` SSE streams at once through one fresh gateway process."""
    from aima.settings import Settings

    connections = options.upstream_connections or f"{Settings().gateway_upstream_connections} (the default)"
    with (
        _upstream(HOLD_TOKENS, HOLD_TOKEN_DELAY, load_cpu) as upstream,
        tempfile.TemporaryDirectory() as tmp,
        _serving("gateway", upstream, options, proxy_cpu, Path(tmp)) as gateway,
    ):
        idle = _memory_kib(gateway.pids[0], "VmRSS") / 1024
        result = _load("concurrent", gateway.ports["stream"], options, load_cpu)
        peak = _memory_kib(gateway.pids[0], "VmHWM") / 1024
    print(
        f"concurrent streams ({HOLD_TOKENS} tokens {HOLD_TOKEN_DELAY:g} s apart each): "
        f"{result['ok']} of {result['streams']} ok, 5xx {result['status_5xx']}, cut {result['cut']}, "
        f"statuses {result['statuses']}, connection errors {result['connection_errors'] or 0}; "
        f"at most {result['peak_streaming']} streaming at once, the last headers after "
        f"{result['last_headers_s']:.1f} s, all done in {result['seconds']:.1f} s; "
        f"gateway RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB (VmHWM)"
    )
    print(f"  the gateway's upstream connections (gateway_upstream_connections): {connections}")


def soak_phase(options: argparse.Namespace, *, load_cpu: int | None, proxy_cpu: int | None) -> None:
    """Steady load for ``--soak-seconds`` through one fresh gateway, its RSS sampled every 10 s."""
    env = os.environ | {"PYTHONPATH": str(ROOT / "operator")}
    with (
        _upstream(options.tokens, options.token_delay, load_cpu) as upstream,
        tempfile.TemporaryDirectory() as tmp,
        _serving("gateway", upstream, options, proxy_cpu, Path(tmp)) as gateway,
    ):
        pid = gateway.pids[0]
        command = _load_command("soak", gateway.ports["fast"], options, load_cpu)
        started = time.monotonic()
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        samples: list[tuple[float, float]] = []
        while True:
            samples.append((time.monotonic() - started, _memory_kib(pid, "VmRSS") / 1024))
            try:
                output, _ = load.communicate(timeout=10.0 - (time.monotonic() - started) % 10.0)
                break
            except subprocess.TimeoutExpired:
                continue
        samples.append((time.monotonic() - started, _memory_kib(pid, "VmRSS") / 1024))
    result = json.loads(output)
    _print_soak(options, result, samples)


def _print_soak(
    options: argparse.Namespace, result: dict[str, Any], samples: list[tuple[float, float]]
) -> None:
    """``samples`` are (seconds, RSS MiB): idle at 0, then every 10 s under load, then one at the end."""
    idle, loaded = samples[0][1], samples[1:-1] or samples[1:]
    rss = [mib for _, mib in loaded]
    slope, late = _slope(loaded), _slope(loaded[len(loaded) // 2 :])
    streams_per_second = options.streams / (options.tokens * options.token_delay)
    print(
        f"soak {options.soak_seconds:g} s ({options.rate:g} req/s and {streams_per_second:g} streams/s): "
        f"{result['requests']} requests and {result['streams']} streams ok, "
        f"failures {result['failures'] or 0}; gateway RSS idle {idle:.1f} MiB, then every 10 s under "
        f"load: first {rss[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f}; slope {slope:+.3f} MiB/min, "
        f"{late:+.3f} over the second half"
    )
    print("  RSS MiB: " + " ".join(f"{mib:.1f}" for _, mib in samples))


def _slope(samples: list[tuple[float, float]]) -> float:
    """MiB per minute: the slope of the least-squares line through (seconds, MiB) samples."""
    if len(samples) < 2:
        return 0.0
    return statistics.linear_regression([t / 60 for t, _ in samples], [mib for _, mib in samples]).slope


def orchestrate(options: argparse.Namespace) -> None:
    pin = options.pin and (os.cpu_count() or 1) >= 2
    cpus = {"load_cpu": 0, "proxy_cpu": 1} if pin else {"load_cpu": None, "proxy_cpu": None}
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(
        ("proxy under test pinned to CPU 1, load and upstream to CPU 0" if pin else "not pinned")
        + f"; open files per process: {soft}; load average {os.getloadavg()[0]:.2f}"
    )
    if options.compare:
        compare(options, **cpus)
    if options.concurrent_streams:
        concurrency(options, **cpus)
    if options.soak_seconds:
        soak_phase(options, **cpus)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (1 min)")


def _raise_open_files() -> None:
    """Thousands of streams need thousands of sockets: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _peers(value: str) -> list[str]:
    names = [name for name in value.split(",") if name]
    unknown = set(names) - set(gateway_peers.PEERS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peers {sorted(unknown)}; known: {list(gateway_peers.PEERS)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--role", choices=["main", "upstream", "gateway", "bare-proxy", "load"], default="main"
    )
    parser.add_argument("--client", choices=BARE_CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=200.0, help="Requests/s of the fixed-rate phase.")
    parser.add_argument(
        "--peer-rate",
        type=float,
        default=20.0,
        help="Requests/s of a second fixed-rate phase, one that every peer sustains on one core "
        "(the added latencies compared with the peers').",
    )
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
    parser.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Run the side-by-side phases (latency, throughput, first token, memory).",
    )
    parser.add_argument(
        "--peers",
        type=_peers,
        default=list(gateway_peers.PEERS),
        help=f"Peers, comma-separated ('' for none; default all: {','.join(gateway_peers.PEERS)}).",
    )
    parser.add_argument(
        "--concurrent-streams",
        type=int,
        default=2000,
        help="SSE streams opened at once through one gateway process (0 skips the phase).",
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=0.0,
        help="Length of the soak phase, the gateway's RSS sampled every 10 s (0 skips it; issue 19: 600).",
    )
    parser.add_argument(
        "--upstream-connections",
        type=int,
        help="The gateway's gateway_upstream_connections (default: the Settings default).",
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fast", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    _raise_open_files()
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
        asyncio.run(
            run_gateway(
                options.port, options.fast, options.stream, upstream_connections=options.upstream_connections
            )
        )
    elif options.role == "bare-proxy":
        asyncio.run(run_bare_proxy(options.port, options.fast, options.stream, client=options.client))
    else:
        print(json.dumps(asyncio.run(_phase(options))))


async def _phase(options: argparse.Namespace) -> dict[str, Any]:
    if options.phase in ("rate", "peer-rate"):
        rate = options.rate if options.phase == "rate" else options.peer_rate
        return await fixed_rate(options.port, rate=rate, seconds=options.seconds)
    if options.phase == "throughput":
        return await throughput(options.port, connections=options.connections, seconds=options.seconds)
    duration = options.tokens * options.token_delay
    if options.phase == "concurrent":
        return await concurrent_streams(options.port, count=options.concurrent_streams)
    if options.phase == "soak":
        return await soak(
            options.port,
            rate=options.rate,
            streams_per_second=options.streams / duration,
            seconds=options.soak_seconds,
        )
    return await first_tokens(
        options.port, streams=options.streams, seconds=options.seconds, duration=duration
    )


if __name__ == "__main__":
    main()
