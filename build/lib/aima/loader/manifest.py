"""The model directory's manifest, `.aima-manifest.json`: what was downloaded, from where, with
which sizes and sha256 digests, and which ETag each unfinished `.part` file was begun from.
Written atomically (temp file, fsync, rename, fsync of the directory) so a reader never sees half
of it, and rewritten after every completed file (and before an ETag-bearing file's first byte) so a
restarted loader can skip what is already done and resume only what it can trust.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aima.loader.errors import VerificationError
from aima.loader.paths import MANIFEST_NAME

__all__ = ["Manifest", "ManifestFile", "read", "write_atomic"]


class ManifestFile(BaseModel):
    """One verified file of the model."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    path: str
    size: int = Field(ge=0)
    sha256: str
    media_type: str | None = Field(default=None, alias="mediaType")
    verified_by: str | None = Field(default=None, alias="verifiedBy")
    """What the download was checked against: the source's `sha256`, its `md5` (S3's ETag), or only
    the `size` it published; absent when it published neither (the sha256 is recorded regardless)."""


class Manifest(BaseModel):
    """Everything the loader knows about a model directory."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = 1
    source: str
    revision: str = ""
    complete: bool = False
    files: tuple[ManifestFile, ...] = ()
    partials: dict[str, str] | None = None
    """The ETag each unfinished `.part` file was begun from, by path (sources that publish ETags:
    S3), written before the file's first byte; absent once every file is complete."""

    @property
    def total_bytes(self) -> int:
        """The sum of the files' sizes."""
        return sum(file.size for file in self.files)

    def by_path(self) -> dict[str, ManifestFile]:
        """The files keyed by relative path."""
        return {file.path: file for file in self.files}


def read(dest: Path) -> Manifest | None:
    """The manifest in `dest`, or None when there is none; raise VerificationError when unreadable."""
    path = dest / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as error:
        raise VerificationError(f"Manifest {path} is not valid: {error.error_count()} errors") from error


def write_atomic(dest: Path, manifest: Manifest) -> None:
    """Replace the manifest in `dest` atomically and durably."""
    target = dest / MANIFEST_NAME
    temp = dest / f"{MANIFEST_NAME}.{secrets.token_hex(4)}.tmp"
    data = manifest.model_dump_json(indent=2, by_alias=True, exclude_none=True).encode() + b"\n"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        temp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(dest)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is; not every file system allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
