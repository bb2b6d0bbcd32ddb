"""sha256 of files on disk, off the event loop.

hashlib releases the GIL for buffers over 2 KiB, so hashing in worker threads runs in parallel
with the event loop and with other files' hashing.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

__all__ = ["READ_SIZE", "digest_file", "hash_prefix"]

READ_SIZE = 8 * 2**20

_Hash = Any  # hashlib's object type is private (`hashlib._Hash`)


def _update_from_file(hasher: _Hash, path: Path, *, limit: int | None) -> int:
    done = 0
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while limit is None or done < limit:
            want = READ_SIZE if limit is None else min(READ_SIZE, limit - done)
            count = handle.readinto(view[:want])
            if not count:
                break
            hasher.update(view[:count])
            done += count
    return done


async def hash_prefix(path: Path, *, length: int) -> _Hash:
    """A sha256 object fed with the first `length` bytes of `path` (to resume a partial file)."""
    hasher = hashlib.sha256()
    await asyncio.to_thread(_update_from_file, hasher, path, limit=length)
    return hasher


async def digest_file(path: Path) -> tuple[int, str]:
    """The size and sha256 hex digest of a whole file."""
    hasher = hashlib.sha256()
    size = await asyncio.to_thread(_update_from_file, hasher, path, limit=None)
    return size, hasher.hexdigest()
