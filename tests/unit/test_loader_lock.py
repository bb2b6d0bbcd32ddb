"""The model directory lock: exclusive, broken when stale, released on exit; and the manifest."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from aima.loader import lock, manifest
from aima.loader.errors import LockHeldError
from aima.loader.manifest import Manifest, ManifestFile

pytestmark = pytest.mark.unit

_FAST = lock.LockSettings(wait=0, poll=0.01, heartbeat=0.05, stale_after=5)


@pytest.mark.parametrize(
    ("info", "age", "alive", "stale"),
    [
        (lock.LockInfo(pid=1, host="h", created=0, token="t"), 1.0, True, False),
        (lock.LockInfo(pid=1, host="h", created=0, token="t"), 100.0, True, True),
        (lock.LockInfo(pid=1, host="h", created=0, token="t"), 1.0, False, True),
        (lock.LockInfo(pid=1, host="other", created=0, token="t"), 1.0, False, False),
        (None, 1.0, False, False),
    ],
    ids=["fresh", "old heartbeat", "dead pid here", "pid on another host", "unreadable but fresh"],
)
def test_is_stale(info: lock.LockInfo | None, age: float, alive: bool, stale: bool) -> None:
    verdict = lock.is_stale(
        info, mtime=1000.0 - age, now=1000.0, stale_after=60, host="h", pid_alive=lambda _: alive
    )
    assert verdict is stale


def test_second_holder_fails_with_the_first_holders_identity(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lock.hold(tmp_path, settings=_FAST) as held:
            assert json.loads((tmp_path / ".aima-lock").read_text())["token"] == held.token
            with pytest.raises(LockHeldError, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
                async with lock.hold(tmp_path, settings=_FAST):
                    pass
        assert not (tmp_path / ".aima-lock").exists()

    asyncio.run(scenario())


def test_waiter_gets_the_lock_when_the_holder_leaves(tmp_path: Path) -> None:
    order: list[str] = []

    async def first() -> None:
        async with lock.hold(tmp_path, settings=_FAST):
            order.append("first in")
            await asyncio.sleep(0.2)
            order.append("first out")

    async def second() -> None:
        await asyncio.sleep(0.05)
        async with lock.hold(tmp_path, settings=lock.LockSettings(wait=5, poll=0.01)):
            order.append("second in")

    async def both() -> None:
        await asyncio.gather(first(), second())

    asyncio.run(both())
    assert order == ["first in", "first out", "second in"]


def test_heartbeat_keeps_a_long_hold_fresh(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lock.hold(tmp_path, settings=_FAST):
            path = tmp_path / ".aima-lock"
            os.utime(path, (time.time() - 100, time.time() - 100))
            await asyncio.sleep(0.15)
            assert time.time() - path.stat().st_mtime < 1

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["old heartbeat", "dead pid", "garbage content"])
def test_stale_lock_is_broken(tmp_path: Path, how: str) -> None:
    path = tmp_path / ".aima-lock"
    pid = 2**22 + 12345 if how == "dead pid" else os.getpid()  # above pid_max on default kernels
    content = {"pid": pid, "host": socket.gethostname(), "created": 0.0, "token": "old"}
    path.write_text("{" if how == "garbage content" else json.dumps(content))
    if how != "dead pid":
        os.utime(path, (time.time() - 3600, time.time() - 3600))

    async def scenario() -> str:
        async with lock.hold(tmp_path, settings=_FAST) as held:
            return held.token

    token = asyncio.run(scenario())
    assert token != "old"
    assert not list(tmp_path.iterdir())  # the stale lock and its renamed copy are gone


def test_manifest_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    written = Manifest(
        source="ollama://library/x:1",
        revision="sha256:ab",
        complete=True,
        files=(
            ManifestFile(
                path="blobs/sha256-ab", size=3, sha256="ab", media_type="application/vnd.ollama.image.model"
            ),
        ),
    )
    manifest.write_atomic(tmp_path, written)
    assert manifest.read(tmp_path) == written
    assert [p.name for p in tmp_path.iterdir()] == [".aima-manifest.json"]
    assert json.loads((tmp_path / ".aima-manifest.json").read_text())["files"][0]["mediaType"].endswith(
        "model"
    )
    assert manifest.read(tmp_path / "nothing-here") is None
