#!/usr/bin/env python3
"""Benchmark (not a test): the loader's throughput against plain curl, and its peak memory.

Serves one generated file of --size bytes from a local server that speaks the Hub's API (listing
with the LFS sha256, files by sendfile), then downloads it in turn with `curl -o`, with `curl -o`
followed by an fsync of the file, and with `aima loader` (a real run: sha256 of every byte checked
against the listing, fsync before the rename, manifest, progress) into the same directory,
--rounds times each. Prints MB/s of each (wall time of the whole command, start-up included),
CPU seconds, the loader/curl ratios and the loader's peak RSS (from wait4's rusage of the loader's
own process). Targets (performance.md §8): ratio >= 0.90 for 2 GB, peak RSS < 150 MB.

Plain curl leaves the file in the page cache (it is deleted before write-back), while the loader
must not record a file whose bytes are not on disk; `curl+fsync` is curl doing the same durable
work, so both ratios are printed. The loader cannot beat one core's sha256 speed (a file's sha256
cannot be split over cores), printed first as `sha256`, nor its own start-up, printed next.

    .venv/bin/python hack/bench/loader.py --size 2G
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

REPO = "bench/model"
COMMIT = "b" * 40
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


@dataclass(frozen=True)
class Run:
    tool: str
    seconds: float
    max_rss_kib: int
    cpu_seconds: float


def parse_size(text: str) -> int:
    unit = text[-1].upper()
    return int(float(text[:-1]) * _UNITS[unit]) if unit in _UNITS else int(text)


def generate(path: Path, size: int) -> str:
    """Incompressible content, every MiB block distinct; returns the sha256."""
    block = random.Random(0).randbytes(2**20)  # noqa: S311 (test data, not secrets)
    hasher = hashlib.sha256()
    with path.open("wb") as handle:
        for index in range(0, size, 2**20):
            data = ((index >> 20).to_bytes(8, "big") + block[8:])[: min(2**20, size - index)]
            handle.write(data)
            hasher.update(data)
    return hasher.hexdigest()


def hub_app(path: Path, digest: str) -> web.Application:
    """The two Hub endpoints the loader uses; the file goes out with sendfile, as nginx would."""
    size = path.stat().st_size

    async def revision(_: web.Request) -> web.Response:
        sibling = {"rfilename": "model.safetensors", "size": size, "lfs": {"sha256": digest, "size": size}}
        return web.json_response({"id": REPO, "sha": COMMIT, "siblings": [sibling]})

    async def resolve(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get(f"/api/models/{REPO}/revision/{{rev}}", revision)
    app.router.add_get(f"/{REPO}/resolve/{{rev}}/model.safetensors", resolve)
    return app


def serve(app: web.Application) -> str:
    """Run the app on 127.0.0.1 in a daemon thread; return its base URL."""
    ready: list[str] = []
    started = threading.Event()

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        started.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    started.wait(10)
    return ready[0]


def timed(tool: str, argv: list[str], *, then_fsync: Path | None = None) -> Run:
    """Run a child, wait for it with wait4 to get its own rusage; optionally fsync its output after."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{tool} failed with exit status {child.returncode}")
    if then_fsync is not None:
        fd = os.open(then_fsync, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - start
    return Run(tool, seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def sha256_rate(size: int = 2**30) -> float:
    """MB/s of hashlib's sha256 on one core here: the fastest a verifying download of one file can go."""
    block = bytes(16 * 2**20)
    hasher = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(size // len(block)):
        hasher.update(block)
    return size / (time.perf_counter() - start) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="2G", help="file size, e.g. 2G, 512M (default 2G)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir in /tmp)")
    parser.add_argument(
        "--entry",
        choices=("module", "aima"),
        default="module",
        help="start the loader as `python -m aima.loader` (default) or as `aima loader`",
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="aima-bench-", dir=args.dir))
    try:
        if shutil.disk_usage(work).free < 3 * size + 2**30:
            raise SystemExit(f"Not enough space in {work} for a {size} byte benchmark (needs 3x)")
        served = work / "served.safetensors"
        started = time.perf_counter()
        digest = generate(served, size)
        sys.stdout.write(f"generated {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s\n")
        sys.stdout.write(f"sha256 {sha256_rate():.0f} MB/s on one core\n")
        start_up = timed("start-up", [*loader_command(args.entry), "--help"]).seconds
        sys.stdout.write(f"loader start-up (interpreter and imports) {start_up:.2f} s of each loader run\n")
        url = serve(hub_app(served, digest))
        runs: list[Run] = []
        for _ in range(args.rounds):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            copy = out / "curl.bin"
            curl = ["curl", "-sS", "-o", str(copy), f"{url}/{REPO}/resolve/{COMMIT}/model.safetensors"]
            runs.append(timed("curl", curl))
            copy.unlink()
            runs.append(timed("curl+fsync", curl, then_fsync=copy))
            copy.unlink()
            options = ["--source", f"hf://{REPO}@main", "--dest", str(out / "model"), "--endpoint", url]
            runs.append(timed("loader", [*loader_command(args.entry), *options]))
        report(runs, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def loader_command(entry: str) -> list[str]:
    if entry == "aima":
        return [str(Path(sys.executable).with_name("aima")), "loader"]
    return [sys.executable, "-m", "aima.loader"]


def report(runs: list[Run], size: int) -> None:
    rates: dict[str, list[float]] = {}
    for run in runs:
        rate = size / run.seconds / 1e6
        rates.setdefault(run.tool, []).append(rate)
        rss = run.max_rss_kib / 1024
        sys.stdout.write(
            f"{run.tool:10s} {rate:8.0f} MB/s  {run.seconds:6.2f} s  cpu {run.cpu_seconds:5.2f} s  "
        )
        sys.stdout.write(f"maxrss {rss:6.1f} MiB\n")
    median = {tool: statistics.median(values) for tool, values in rates.items()}
    curl, durable, loader = median["curl"], median["curl+fsync"], median["loader"]
    peak = max(run.max_rss_kib for run in runs if run.tool == "loader") / 1024
    sys.stdout.write(
        f"median: curl {curl:.0f} MB/s, curl+fsync {durable:.0f} MB/s, loader {loader:.0f} MB/s; "
        f"ratio loader/curl {loader / curl:.2f} (target >= 0.90), "
        f"loader/(curl+fsync) {loader / durable:.2f}\n"
    )
    sys.stdout.write(f"loader peak RSS {peak:.1f} MiB (target < 150 MB)\n")


if __name__ == "__main__":
    main()
