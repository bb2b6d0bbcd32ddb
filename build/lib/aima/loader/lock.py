"""A lock file so that two loaders never write the same model directory.

The lock is `.aima-lock`, created with O_CREAT|O_EXCL (atomic on local file systems and NFSv3+),
holding the holder's pid, host, start time and a random token. The holder touches its mtime every
`heartbeat` seconds; a lock whose mtime is older than `stale_after` (or whose holder is a dead
process on this host) is stale. Breaking a stale lock renames it to a unique name first, so that of
two loaders breaking the same lock only one succeeds; if the renamed file turns out to be a fresh
lock (another loader broke and re-took it in between), it is put back with `link`, which fails
rather than overwrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from aima.loader.errors import LockHeldError
from aima.loader.paths import LOCK_NAME

__all__ = ["LockInfo", "LockSettings", "hold", "is_stale"]


@dataclass(frozen=True, kw_only=True)
class LockInfo:
    """What a lock file records about its holder."""

    pid: int
    host: str
    created: float
    token: str


@dataclass(frozen=True, kw_only=True)
class LockSettings:
    """Timings of the lock, in seconds. `wait` is how long to wait for a held lock (0: fail at once)."""

    wait: float = 0.0
    poll: float = 1.0
    heartbeat: float = 10.0
    stale_after: float = 60.0


def is_stale(
    info: LockInfo | None,
    *,
    mtime: float,
    now: float,
    stale_after: float,
    host: str,
    pid_alive: Callable[[int], bool],
) -> bool:
    """Pure: whether a lock with this content and heartbeat time may be broken.

    Unreadable content (None) counts as stale only once its heartbeat is old, because a holder may
    be between creating the file and writing it.
    """
    if now - mtime > stale_after:
        return True
    return info is not None and info.host == host and not pid_alive(info.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


def _read(path: Path) -> LockInfo | None:
    try:
        return LockInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _try_create(path: Path, info: LockInfo) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(asdict(info)).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _break_if_stale(path: Path, *, stale_after: float) -> bool:
    """Remove the lock at `path` if it is stale; True when it was removed (by us)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    info = _read(path)
    host = socket.gethostname()
    if not is_stale(
        info, mtime=mtime, now=time.time(), stale_after=stale_after, host=host, pid_alive=_pid_alive
    ):
        return False
    grave = path.with_name(f"{LOCK_NAME}.stale.{secrets.token_hex(4)}")
    try:
        path.rename(grave)
    except FileNotFoundError:
        return True  # someone else broke it first; race them for a fresh one
    taken = _read(grave)
    if info is not None and taken is not None and taken.token != info.token:
        # We moved a lock that was taken after our look: give it back to its holder.
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)
    grave.unlink(missing_ok=True)
    return True


def _held_message(path: Path) -> str:
    info = _read(path)
    if info is None:
        return f"Model directory {path.parent} is locked by another loader ({path})"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created))
    return (
        f"Model directory {path.parent} is locked by loader pid {info.pid} on host {info.host} since {since}"
    )


async def _heartbeat(path: Path, *, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)


@contextlib.asynccontextmanager
async def hold(
    dest: Path, *, settings: LockSettings, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> AsyncIterator[LockInfo]:
    """Hold the lock of `dest` for the duration of the block; raise LockHeldError after `settings.wait`."""
    path = dest / LOCK_NAME
    info = LockInfo(
        pid=os.getpid(), host=socket.gethostname(), created=time.time(), token=secrets.token_hex(8)
    )
    deadline = time.monotonic() + settings.wait
    while not _try_create(path, info):
        if _break_if_stale(path, stale_after=settings.stale_after):
            continue
        if time.monotonic() >= deadline:
            raise LockHeldError(_held_message(path))
        await sleep(settings.poll)
    beat = asyncio.create_task(_heartbeat(path, every=settings.heartbeat))
    try:
        yield info
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        if _read(path) == info:
            path.unlink(missing_ok=True)
