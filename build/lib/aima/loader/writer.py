"""Writing a download to disk while hashing it, off the event loop and without copying.

sha256 runs at about the speed of a loopback transfer (0.4-1.1 GiB/s per core), so hashing inline
on the event loop, or even in the same thread as the writes, caps one stream well below curl
(performance.md §5: aiohttp with inline sha256 reached 390-540 MiB/s where curl did 640-1,000).
Each batch (the chunks as aiohttp returned them, never joined) therefore goes to two single-thread
pools at once: one `writev`s it, one hashes it; both release the GIL. The loop reads on meanwhile,
and waits once `QUEUE_DEPTH` batches are queued, which bounds memory.

The writer also starts write-back every `WRITE_BEHIND_BYTES` and drops already written pages from
the page cache (POSIX_FADV_DONTNEED): the final fsync then waits for the tail only, and a loader
writing hundreds of GB does not fill its pod's memory cgroup with dirty pages.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["QUEUE_DEPTH", "WRITE_BEHIND_BYTES", "HashingWriter", "write_all"]

WRITE_BEHIND_BYTES = 64 * 2**20
# Batches queued to the threads at most; with the transfer's 8 MiB batches a transfer holds 24 MiB
# at most (two queued, one filling), so three files at once stay well under the 150 MB target.
# Two deep keep both threads busy (one batch at a time left them idle in turns); batches of 8 MiB
# rather than 1 MiB cut the per-batch hand-offs and wake-ups, which cost the loader about a tenth
# of its CPU time (hack/bench/loader.py on 2 cores).
QUEUE_DEPTH = 2
# Linux's IOV_MAX; a batch of 8 MiB in 64 KiB chunks needs 128.
_IOV_MAX = 1024


def write_all(fd: int, chunks: list[bytes]) -> int:
    """`writev` until every byte is written (a file may take fewer bytes than offered); return the count."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    total = sum(len(view) for view in views)
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]
    return total


async def _finished(future: Future[None]) -> None:
    """Wait for a worker's future; one already done costs no wake-up of the loop from the thread
    (`wrap_future` would send one), and hashing usually finishes after the write of the same batch."""
    if future.done():
        future.result()
    else:
        await asyncio.wrap_future(future)


class HashingWriter:
    """Appends batches to an open file and feeds them to a hash object, in order, in two threads.

    Owns `fd`: `close` closes it after the last write, even when an error or a cancellation cut
    the stream short, so that every byte that arrived is kept for a resume.
    """

    def __init__(self, fd: int, hasher: Any, *, offset: int) -> None:
        self._fd = fd
        self._hasher = hasher
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aima-loader-write")
        self._hashes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aima-loader-hash")
        self._pending: deque[tuple[Future[None], Future[None]]] = deque()
        self._failed = False
        self._written = self._mark = self._previous_mark = offset

    def _write(self, batch: list[bytes]) -> None:
        # After a failed write the file ends short of the batches queued behind it (the disk may have
        # room again by now): appending them would leave a gap that a resume then continues.
        if self._failed:
            return
        try:
            self._written += write_all(self._fd, batch)
        except BaseException:
            self._failed = True
            raise
        self._write_behind()

    def _write_behind(self) -> None:
        if self._written - self._mark < WRITE_BEHIND_BYTES or not hasattr(os, "posix_fadvise"):
            return
        # Starts write-back of the newest segment and evicts the one before it, clean by now.
        os.posix_fadvise(
            self._fd, self._previous_mark, self._written - self._previous_mark, os.POSIX_FADV_DONTNEED
        )
        self._previous_mark, self._mark = self._mark, self._written

    def _hash(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._hasher.update(chunk)

    def _write_and_close(self, batch: list[bytes]) -> None:
        try:
            self._write(batch)
        finally:
            os.close(self._fd)

    async def submit(self, batch: list[bytes]) -> None:
        """Queue a batch; with `QUEUE_DEPTH` already queued, first wait for the oldest to be written and
        hashed (this bounds memory and surfaces write errors)."""
        while len(self._pending) >= QUEUE_DEPTH:
            for future in self._pending.popleft():
                await _finished(future)
        self._pending.append(
            (self._writes.submit(self._write, batch), self._hashes.submit(self._hash, batch))
        )

    async def close(self, tail: list[bytes]) -> None:
        """Write and hash the last batch, then close the file; each pool runs this after earlier batches."""
        written = self._writes.submit(self._write_and_close, tail)
        hashed = self._hashes.submit(self._hash, tail)
        self._writes.shutdown(wait=False)
        self._hashes.shutdown(wait=False)
        await asyncio.wrap_future(written)
        await asyncio.wrap_future(hashed)
        for futures in self._pending:
            for future in futures:
                if not future.cancelled():
                    future.result()  # re-raise an error of an earlier batch, if any
