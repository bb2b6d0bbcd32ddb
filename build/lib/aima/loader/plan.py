"""What to download (pure): the source's file listing, filtered by include/exclude globs, minus
the files the manifest already records as complete with the published size and digest.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aima.loader.errors import UnsafePathError
from aima.loader.manifest import Manifest
from aima.loader.paths import PART_SUFFIX, check_relative

if TYPE_CHECKING:
    from aima.loader.client import Signer  # the HTTP layer, which this pure module does not load

__all__ = [
    "Listing",
    "Plan",
    "RemoteFile",
    "bytes_still_needed",
    "check_names",
    "filter_files",
    "make_plan",
    "stale_partials",
]


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    """One file a source publishes: where to get it and what it must be."""

    path: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    """Hex MD5 of the content where the source publishes one (S3's ETag of a single-part upload)."""
    etag: str | None = None
    """The ETag the listing gave (S3, without quotes): every request for the file is conditional on
    it, and a `.part` file is resumed only when it was begun from the object with this ETag."""
    media_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class Listing:
    """A source's answer: its files at a resolved revision.

    `headers` carry authorisation for the source's own origin (never logged, hence repr=False);
    `sign` signs each request instead, for sources that want a fresh signature every time (S3);
    `inline_files` are small documents the source returned in the listing itself (the Ollama
    manifest), written once every downloaded file is verified.
    """

    source: str
    revision: str
    files: tuple[RemoteFile, ...]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    sign: Signer | None = field(default=None, repr=False)
    inline_files: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Files to fetch and files already complete, both in listing order."""

    fetch: tuple[RemoteFile, ...]
    skip: tuple[RemoteFile, ...]

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        """All planned files, skipped ones first."""
        return self.skip + self.fetch

    @property
    def total_bytes(self) -> int:
        """The size of the whole model as far as the source published sizes."""
        return sum(file.size or 0 for file in self.files)


def filter_files(
    files: Sequence[RemoteFile], *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[RemoteFile, ...]:
    """Keep files whose path matches any include glob (all when none) and no exclude glob.

    Globs are fnmatch patterns on the whole relative path, as `huggingface_hub`'s allow/ignore
    patterns are: `*.safetensors` matches in every directory because `*` also matches `/`.
    """

    def wanted(path: str) -> bool:
        included = not include or any(fnmatch.fnmatchcase(path, glob) for glob in include)
        return included and not any(fnmatch.fnmatchcase(path, glob) for glob in exclude)

    return tuple(file for file in files if wanted(file.path))


def make_plan(
    files: Sequence[RemoteFile],
    *,
    source: str,
    revision: str,
    manifest: Manifest | None,
    present_sizes: Mapping[str, int],
) -> Plan:
    """Split `files` into those to fetch and those already complete.

    A file is complete when the manifest was written for the same source and revision, records it
    with the published size and sha256 (when published), and a file of that size is present.
    Raises UnsafePathError for a name that would escape the directory or collide with a partial file.
    """
    check_names(files)
    recorded = (
        manifest.by_path() if manifest and (manifest.source, manifest.revision) == (source, revision) else {}
    )
    fetch: list[RemoteFile] = []
    skip: list[RemoteFile] = []
    for file in files:
        entry = recorded.get(file.path)
        done = (
            entry is not None
            and (file.size is None or entry.size == file.size)
            and (file.sha256 is None or entry.sha256 == file.sha256)
            and present_sizes.get(file.path) == entry.size
        )
        (skip if done else fetch).append(file)
    return Plan(fetch=tuple(fetch), skip=tuple(skip))


def bytes_still_needed(plan: Plan, *, partial_sizes: Mapping[str, int]) -> int:
    """Bytes the fetch list still has to write, counting what its `.part` files already hold."""
    return sum(max((file.size or 0) - partial_sizes.get(file.path, 0), 0) for file in plan.fetch)


def stale_partials(
    files: Sequence[RemoteFile], *, source: str, manifest: Manifest | None, partial_sizes: Mapping[str, int]
) -> tuple[str, ...]:
    """The files whose `.part` file must not be resumed: the listing gives the file an ETag, and the
    manifest does not record the `.part` as begun from that ETag (the object was replaced since, or
    the partial file's origin is unknown). Resuming would join two versions of the object, which a
    multipart ETag, no digest of the content, could not reveal."""
    begun = (manifest.partials or {}) if manifest is not None and manifest.source == source else {}
    return tuple(
        file.path
        for file in files
        if file.etag is not None and file.path in partial_sizes and begun.get(file.path) != file.etag
    )


def check_names(files: Sequence[RemoteFile]) -> None:
    """Raise UnsafePathError for a name that escapes the directory, repeats or collides with another."""
    names = {str(check_relative(file.path)) for file in files}
    if len(names) != len(files):
        raise UnsafePathError("Refused the listing: it names the same file twice")
    directories = {
        "/".join(name.split("/")[:depth]) for name in names for depth in range(1, name.count("/") + 1)
    }
    for name in names:
        if name + PART_SUFFIX in names:
            raise UnsafePathError(
                f"Refused file {name + PART_SUFFIX!r}: it collides with the partial file of {name!r}"
            )
        # A file and a directory of the same name cannot both exist.
        if name in directories:
            raise UnsafePathError(f"Refused file {name!r}: the listing also uses it as a directory")
