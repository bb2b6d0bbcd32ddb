"""Verification of files on disk against published or recorded sizes and digests.

`mismatch` is pure. `verify_files` re-hashes a model directory against its manifest (the
`pvc://` source and `--verify-only`), and `describe_files` builds a manifest for a directory that
has none (a volume filled by hand). Hashing runs in threads, `parallel` files at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from aima.loader import hashing
from aima.loader.errors import UnsafePathError, VerificationError
from aima.loader.manifest import ManifestFile
from aima.loader.paths import LOCK_NAME, MANIFEST_NAME, PART_SUFFIX, check_relative
from aima.loader.progress import ProgressTracker

__all__ = ["describe_files", "mismatch", "present_files", "verify_files"]


def mismatch(
    *,
    expected_size: int | None,
    expected_sha256: str | None,
    size: int,
    sha256: str,
    expected_md5: str | None = None,
    md5: str | None = None,
) -> str:
    """Pure: why a file is not what was expected, or "" when it is (MD5 only when both are given)."""
    if expected_size is not None and size != expected_size:
        return f"size {size} bytes, expected {expected_size}"
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        return f"sha256 {sha256}, expected {expected_sha256.lower()}"
    if expected_md5 is not None and md5 is not None and md5 != expected_md5.lower():
        return f"MD5 {md5}, expected {expected_md5.lower()} (the ETag)"
    return ""


def present_files(dest: Path) -> list[str]:
    """Relative paths of the model's files in `dest`, sorted; skips the loader's own and partial files.

    Raises UnsafePathError on a symlink: a verified model must not point outside its directory.
    """
    found = []
    for root, dirs, names in os.walk(dest):
        base = Path(root)
        for name in dirs + names:
            if (base / name).is_symlink():
                raise UnsafePathError(f"Refused {base / name}: symlinks are not allowed in a model directory")
        for name in names:
            relative = (base / name).relative_to(dest).as_posix()
            if relative == MANIFEST_NAME or relative.startswith(LOCK_NAME) or name.endswith(PART_SUFFIX):
                continue
            found.append(relative)
    return sorted(found)


async def _check_one(
    dest: Path, entry: ManifestFile, *, gate: asyncio.Semaphore, tracker: ProgressTracker
) -> str:
    path = dest / check_relative(entry.path)
    async with gate:
        if not path.is_file():
            return f"{entry.path}: missing"
        size, sha256 = await hashing.digest_file(path)
    tracker.file_bytes(entry.path, size)
    tracker.file_done()
    problem = mismatch(expected_size=entry.size, expected_sha256=entry.sha256, size=size, sha256=sha256)
    return f"{entry.path}: {problem}" if problem else ""


async def verify_files(
    dest: Path, files: Sequence[ManifestFile], *, tracker: ProgressTracker, parallel: int
) -> None:
    """Re-hash every file; raise VerificationError naming the first few that differ."""
    gate = asyncio.Semaphore(parallel)
    results = await asyncio.gather(*(_check_one(dest, entry, gate=gate, tracker=tracker) for entry in files))
    problems = [problem for problem in results if problem]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise VerificationError(f"{len(problems)} files failed verification: {'; '.join(problems[:3])}{more}")


async def describe_files(
    dest: Path, paths: Sequence[str], *, tracker: ProgressTracker, parallel: int
) -> list[ManifestFile]:
    """Hash the given files and describe them for a new manifest."""
    gate = asyncio.Semaphore(parallel)

    async def describe(relative: str) -> ManifestFile:
        async with gate:
            size, sha256 = await hashing.digest_file(dest / relative)
        tracker.file_bytes(relative, size)
        tracker.file_done()
        return ManifestFile(path=relative, size=size, sha256=sha256)

    return list(await asyncio.gather(*(describe(relative) for relative in paths)))
