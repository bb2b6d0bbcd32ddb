"""The free-space check made before any byte is written."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from aima.loader.errors import DiskFullError

__all__ = ["FreeSpace", "check", "disk_free", "format_bytes"]

FreeSpace = Callable[[Path], int]
"""Returns the bytes free on the file system holding a path; injectable so tests can fill a disk."""


def disk_free(path: Path) -> int:
    """Bytes available to this process on `path`'s file system."""
    return shutil.disk_usage(path).free


def check(dest: Path, *, needed: int, free_space: FreeSpace = disk_free, reserve: int = 64 * 2**20) -> None:
    """Raise DiskFullError when `needed` bytes plus a small reserve do not fit in `dest`.

    The reserve (64 MiB) leaves room for the manifest, the lock and file system overhead.
    """
    free = free_space(dest)
    if needed > 0 and needed + reserve > free:
        raise DiskFullError(
            f"Not enough free space in {dest}: the download needs {format_bytes(needed)}, "
            f"{format_bytes(free)} are free"
        )


def format_bytes(count: float) -> str:
    """`1536` → `1.5 KiB`, for messages people read."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
