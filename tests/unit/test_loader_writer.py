"""The hashing writer keeps every byte, in order, and its digest matches; write errors surface."""

from __future__ import annotations

import asyncio
import hashlib
import os
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
