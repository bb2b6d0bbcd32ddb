"""The hashing writer keeps every byte, in order, and its digest matches; write errors surface."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from aima.loader import writer

pytestmark = pytest.mark.unit


def test_batches_are_written_and_hashed_in_order(tmp_path: Path) -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    path = tmp_path / "f.part"
    hasher = hashlib.sha256()

    async def scenario() -> None:
        sink = writer.HashingWriter(os.open(path, os.O_WRONLY | os.O_CREAT), hasher, offset=0)
        for start in range(0, 45, 5):
            await sink.submit(chunks[start : start + 5])
        await sink.close(chunks[45:])

    asyncio.run(scenario())
    assert path.read_bytes() == b"".join(chunks)
    assert hasher.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_write_error_surfaces_and_the_file_is_closed(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT)  # writes fail with EBADF

    async def scenario() -> None:
        sink = writer.HashingWriter(fd, hashlib.sha256(), offset=0)
        try:
            for _ in range(writer.QUEUE_DEPTH + 2):
                await sink.submit([b"x" * 10])
        finally:
            await sink.close([b"tail"])

    with pytest.raises(OSError):
        asyncio.run(scenario())
    with pytest.raises(OSError):
        os.fstat(fd)  # closed


def test_batches_queued_behind_a_failed_write_are_not_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk fills up mid-batch, then has room again (another writer freed some): the batch queued
    behind the short one must not land after it, or the partial file kept for a resume has a gap."""
    real_writev = os.writev
    queued = threading.Event()
    calls = 0

    def writev(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            queued.wait(timeout=10)  # hold the first batch until the second is queued behind it
            return real_writev(fd, [bytes(buffers[0])[:100]])  # the disk takes 100 bytes...
        if calls == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...and then is full
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    path = tmp_path / "f.part"

    async def scenario() -> None:
        sink = writer.HashingWriter(os.open(path, os.O_WRONLY | os.O_CREAT), hashlib.sha256(), offset=0)
        try:
            await sink.submit([b"a" * 1000])
            await sink.submit([b"b" * 1000])
            queued.set()
            await sink.submit([b"c" * 1000])  # waits for the first batch, and raises its error
        finally:
            await sink.close([b"tail"])

    with pytest.raises(OSError) as raised:
        asyncio.run(scenario())
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"a" * 100  # what the disk took, and nothing after the gap
