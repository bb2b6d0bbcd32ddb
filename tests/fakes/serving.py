"""What the fake registries share: model files generated on disk, a file responder that honours
Range (or pretends not to) and injects faults, counters of what was served, and helpers that run
an aiohttp app on 127.0.0.1 in the current loop or in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CHUNK = 2**20
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def generate_file(path: Path, size: int, *, seed: int = 0) -> str:
    """Write `size` bytes of incompressible content, every MiB block distinct; return its sha256.

    Distinct blocks matter: with repeated blocks a resume at a wrong multiple of 1 MiB would still
    produce the right digest.
    """
    import random

    block = random.Random(seed).randbytes(CHUNK)
    hasher = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for index in range(0, size, CHUNK):
            data = (index // CHUNK).to_bytes(8, "big") + block[8 : min(CHUNK, size - index)]
            data = data[: min(CHUNK, size - index)]
            handle.write(data)
            hasher.update(data)
    return hasher.hexdigest()


@dataclass
class Faults:
    """Faults to inject, consumed as they fire; keys are file paths as the registry names them."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    """Answer these statuses (with Retry-After: 0) before serving the file."""
    cut_after: dict[str, list[int]] = field(default_factory=dict)
    """Close the connection after this many bytes of the body, once per list entry."""
    corrupt: Counter[str] = field(default_factory=Counter)
    """Serve the file with one byte flipped this many times."""
    ignore_range: bool = False
    """Answer every Range request with the whole file (200), as some servers and proxies do."""
    delay_per_chunk: float = 0.0
    """Seconds to wait between chunks (a slow server, to hold a transfer open)."""


@dataclass
class Stats:
    """What the server did."""

    body_bytes: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    """File bodies being sent right now."""
    most_in_flight: int = 0
    """The most file bodies that were ever being sent at once."""


def _requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    match = _RANGE_RE.match(header or "")
    if not match:
        return None
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    return start, min(end, size - 1)


async def serve_file(
    request: web.Request, *, key: str, path: Path, faults: Faults, stats: Stats
) -> web.StreamResponse:
    """Answer a GET or HEAD for a file, honouring Range unless told not to, injecting the faults for `key`."""
    size = path.stat().st_size
    stats.requests.append((key, request.headers.get("Range")))
    pending = faults.statuses.get(key)
    if pending:
        status = pending.pop(0)
        stats.statuses[status] += 1
        return web.Response(status=status, headers={"Retry-After": "0"}, text="injected failure")
    wanted = None if faults.ignore_range else _requested_range(request.headers.get("Range"), size)
    if wanted is not None and wanted[0] >= size:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = wanted or (0, size - 1)
    headers = {"Content-Length": str(end - start + 1), "Accept-Ranges": "bytes", "ETag": f'"{size}"'}
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response = web.StreamResponse(status=206 if wanted else 200, headers=headers)
    stats.statuses[response.status] += 1
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    cut = faults.cut_after[key].pop(0) if faults.cut_after.get(key) else None
    corrupt = faults.corrupt[key] > 0
    if corrupt:
        faults.corrupt[key] -= 1
    stats.in_flight += 1
    stats.most_in_flight = max(stats.most_in_flight, stats.in_flight)
    try:
        await _send_body(
            request,
            response,
            path=path,
            start=start,
            end=end,
            cut=cut,
            corrupt=corrupt,
            faults=faults,
            stats=stats,
            key=key,
        )
    finally:
        stats.in_flight -= 1
    return response


async def _send_body(
    request: web.Request,
    response: web.StreamResponse,
    *,
    path: Path,
    start: int,
    end: int,
    cut: int | None,
    corrupt: bool,
    faults: Faults,
    stats: Stats,
    key: str,
) -> None:
    remaining = end - start + 1 if cut is None else min(cut, end - start + 1)
    with path.open("rb") as handle:
        handle.seek(start)
        first = True
        while remaining > 0:
            data = handle.read(min(CHUNK, remaining))
            if not data:
                break
            if corrupt and first:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            first = False
            await response.write(data)
            stats.body_bytes[key] += len(data)
            remaining -= len(data)
            if faults.delay_per_chunk:
                await asyncio.sleep(faults.delay_per_chunk)
    if cut is not None:
        # Drop the connection with the body short of its Content-Length: the client sees a cut transfer.
        assert request.transport is not None
        request.transport.close()
        return
    await response.write_eof()


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 in this loop; yield its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def running_in_thread(app: web.Application) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 from a thread with its own loop (for code that runs its own loop)."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()

    async def main() -> None:
        async with running(app) as url:
            ready.set_result(url)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=10)
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


async def _wait(future: asyncio.Future[str]) -> str:
    return await future
