"""sha256 of files on disk, off the event loop, and the hash a download feeds as bytes arrive.

hashlib releases the GIL for buffers over 2 KiB, so hashing in worker threads runs in parallel
with the event loop and with other files' hashing. A download also feeds MD5 when its source
publishes one (S3's ETag of a single-part upload), in the same thread as sha256: MD5 runs at about
600-700 MiB/s, more than one S3 connection delivers.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["READ_SIZE", "ContentHasher", "Digests", "digest_file", "hash_prefix"]

READ_SIZE = 8 * 2**20

_Hash = Any  # hashlib's object type is private (`hashlib._Hash`)


@dataclass(frozen=True, kw_only=True)
class Digests:
    """Hex digests of a file: sha256 always, MD5 when it was asked for and still applies."""

    sha256: str
    md5: str | None = None


class ContentHasher:
    """sha256 of the bytes fed to it, and their MD5 when `md5` is asked for."""

    def __init__(self, *, md5: bool = False) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    def update(self, data: bytes | memoryview) -> None:
        """Feed the next bytes."""
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)

    def drop_md5(self) -> None:
        """Stop computing MD5: what it was to be compared with turned out not to be an MD5."""
        self._md5 = None

    def digests(self) -> Digests:
        """The digests of everything fed so far."""
        return Digests(
            sha256=self._sha256.hexdigest(), md5=None if self._md5 is None else self._md5.hexdigest()
        )


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


async def hash_prefix(path: Path, *, length: int, md5: bool = False) -> ContentHasher:
    """A hasher fed with the first `length` bytes of `path` (to resume a partial file)."""
    hasher = ContentHasher(md5=md5)
    await asyncio.to_thread(_update_from_file, hasher, path, limit=length)
    return hasher


async def digest_file(path: Path) -> tuple[int, str]:
    """The size and sha256 hex digest of a whole file."""
    hasher = hashlib.sha256()
    size = await asyncio.to_thread(_update_from_file, hasher, path, limit=None)
    return size, hasher.hexdigest()
