"""The loader's orchestration: lock the model directory, list the source, plan, check free space,
download files in parallel with verification, record each completed file in the manifest, and
report progress. Pure decisions live in `plan`, `verify`, `retry` and `progress`; this module
only sequences I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aima.loader import client as http
from aima.loader import diskspace, listing, lock, manifest, paths, plan, transfer, verify
from aima.loader.errors import LoaderError, SourceError, VerificationError
from aima.loader.hashing import Digests
from aima.loader.manifest import Manifest, ManifestFile
from aima.loader.plan import Listing, Plan, RemoteFile
from aima.loader.progress import Phase, ProgressSink, ProgressTracker
from aima.loader.retry import RetryPolicy
from aima.loader.sigv4 import Credentials
from aima.loader.source import PvcSource, parse_source, with_revision

__all__ = ["Environment", "LoadRequest", "load"]

logger = logging.getLogger("aima.loader")


@dataclass(frozen=True, kw_only=True)
class LoadRequest:
    """What to load where; the same fields as the `aima loader` command's options."""

    uri: str
    dest: Path
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    parallel: int = 3
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)
    region: str | None = None
    """Region s3:// requests are signed for (us-east-1 when empty)."""
    aws_credentials: Credentials | None = field(default=None, repr=False)
    """Keys for s3:// sources; anonymous requests without them."""
    revision: str | None = None
    verify_only: bool = False


@dataclass(frozen=True, kw_only=True)
class Environment:
    """The loader's collaborators and timings, injected so that tests control them."""

    sink: ProgressSink
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lock: lock.LockSettings = field(default_factory=lock.LockSettings)
    free_space: diskspace.FreeSpace = diskspace.disk_free
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    progress_interval: float = 2.0


async def load(request: LoadRequest, *, env: Environment) -> Manifest:
    """Load (or verify) the model; return its manifest, or raise a LoaderError with the reason.

    The final progress report is Ready, or Failed with the reason as its message.
    """
    tracker = ProgressTracker(sink=env.sink, interval=env.progress_interval, clock=env.clock)
    try:
        source = with_revision(parse_source(request.uri), request.revision)
        request.dest.mkdir(parents=True, exist_ok=True)
        async with lock.hold(request.dest, settings=env.lock):
            if request.verify_only or isinstance(source, PvcSource):
                result = await _verify_in_place(request, tracker=tracker)
            else:
                async with http.open_session(connections=request.parallel) as session:
                    client = http.Client(session=session, policy=env.retry, sleep=env.sleep)
                    found = await listing.fetch(
                        client,
                        source,
                        uri=request.uri,
                        endpoint=request.endpoint,
                        token=request.token,
                        region=request.region,
                        aws_credentials=request.aws_credentials,
                    )
                    result = await _download(request, found, client=client, tracker=tracker, env=env)
    except LoaderError as error:
        tracker.finish(Phase.FAILED, message=str(error))
        raise
    tracker.finish(Phase.READY)
    return result


async def _verify_in_place(request: LoadRequest, *, tracker: ProgressTracker) -> Manifest:
    dest = request.dest
    recorded = manifest.read(dest)
    if recorded is None:
        # A volume filled by hand: describe what is there, so later loads and verifications have a record.
        present = verify.present_files(dest)
        if not present:
            raise VerificationError(f"{dest} holds neither model files nor a manifest")
        total = sum((dest / relative).stat().st_size for relative in present)
        tracker.begin(Phase.VERIFYING, bytes_total=total, files_total=len(present))
        files = await verify.describe_files(dest, present, tracker=tracker, parallel=request.parallel)
        described = Manifest(source=request.uri, complete=True, files=tuple(files))
        await asyncio.to_thread(manifest.write_atomic, dest, described)
        return described
    if not recorded.complete:
        raise VerificationError(f"The manifest in {dest} records an unfinished download of {recorded.source}")
    tracker.begin(Phase.VERIFYING, bytes_total=recorded.total_bytes, files_total=len(recorded.files))
    await verify.verify_files(dest, recorded.files, tracker=tracker, parallel=request.parallel)
    return recorded


def _sizes(dest: Path, files: Sequence[RemoteFile], *, suffix: str = "") -> dict[str, int]:
    """Sizes of the files (or of their `.part` files) present in `dest`; names were checked before."""
    sizes = {}
    for file in files:
        path = dest / (file.path + suffix)
        if path.is_file() and not path.is_symlink():
            sizes[file.path] = path.stat().st_size
    return sizes


def _existing_manifest(dest: Path) -> Manifest | None:
    try:
        return manifest.read(dest)
    except VerificationError:
        return None  # unreadable: start over; it is rewritten below


async def _download(
    request: LoadRequest, found: Listing, *, client: http.Client, tracker: ProgressTracker, env: Environment
) -> Manifest:
    dest = request.dest
    files = plan.filter_files(found.files, include=request.include, exclude=request.exclude)
    if not files:
        raise SourceError(f"No file of {request.uri} matches the include/exclude filters")
    plan.check_names(files)
    previous = _existing_manifest(dest)
    todo = plan.make_plan(
        files,
        source=request.uri,
        revision=found.revision,
        manifest=previous,
        present_sizes=_sizes(dest, files),
    )
    partial = _resumable_partials(dest, todo.fetch, uri=request.uri, previous=previous)
    diskspace.check(
        dest, needed=plan.bytes_still_needed(todo, partial_sizes=partial), free_space=env.free_space
    )
    recorded = previous.by_path() if previous is not None else {}
    recorder = _Recorder(
        dest,
        found=found,
        files=todo.files,
        kept=[recorded[file.path] for file in todo.skip],
        partials={file.path: file.etag for file in todo.fetch if file.etag and file.path in partial},
    )
    tracker.begin(
        Phase.DOWNLOADING,
        bytes_total=todo.total_bytes,
        files_total=len(todo.files),
        bytes_done=sum(file.size or 0 for file in todo.skip),
        files_done=len(todo.skip),
    )
    await _fetch_all(todo, request=request, found=found, client=client, tracker=tracker, recorder=recorder)
    tracker.set_phase(Phase.VERIFYING)
    for relative, content in found.inline_files.items():
        await recorder.add(await asyncio.to_thread(_write_inline, dest, relative, content))
    return await recorder.finish()


def _resumable_partials(
    dest: Path, files: Sequence[RemoteFile], *, uri: str, previous: Manifest | None
) -> dict[str, int]:
    """Sizes of the `.part` files that may be resumed; the others (begun from an object since
    replaced, `plan.stale_partials`) are deleted, to be fetched whole."""
    partial = _sizes(dest, files, suffix=paths.PART_SUFFIX)
    for path in plan.stale_partials(files, source=uri, manifest=previous, partial_sizes=partial):
        logger.info("%s: its partial file is of another version of the object; fetching it whole", path)
        (dest / (path + paths.PART_SUFFIX)).unlink()
        del partial[path]
    return partial


async def _fetch_all(
    todo: Plan,
    *,
    request: LoadRequest,
    found: Listing,
    client: http.Client,
    tracker: ProgressTracker,
    recorder: _Recorder,
) -> None:
    gate = asyncio.Semaphore(request.parallel)
    try:
        async with asyncio.TaskGroup() as group:
            for file in todo.fetch:
                fetch = _fetch_one(
                    file,
                    dest=request.dest,
                    found=found,
                    client=client,
                    tracker=tracker,
                    gate=gate,
                    recorder=recorder,
                )
                group.create_task(_then_record(fetch, recorder))
    except ExceptionGroup as failures:
        # One failed file cancels the others; report the first reason in words, not a group.
        first = _first_leaf(failures)
        if isinstance(first, LoaderError):
            raise first from None
        raise


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _then_record(fetch: Awaitable[ManifestFile], recorder: _Recorder) -> None:
    await recorder.add(await fetch)


async def _fetch_one(
    file: RemoteFile,
    *,
    dest: Path,
    found: Listing,
    client: http.Client,
    tracker: ProgressTracker,
    gate: asyncio.Semaphore,
    recorder: _Recorder,
) -> ManifestFile:
    """Download and verify one file; a mismatch is fetched again once from zero, then fails."""
    target = paths.prepare_target(dest, paths.check_relative(file.path))
    part = paths.part_path(target)

    def on_bytes(done: int) -> None:
        tracker.file_bytes(file.path, done)

    async with gate:
        await recorder.begin(file)
        problem = ""
        for _ in range(2):
            digests = await transfer.download(
                file,
                target=target,
                client=client,
                headers=dict(found.headers),
                sign=found.sign,
                on_bytes=on_bytes,
            )
            size = part.stat().st_size
            problem = verify.mismatch(
                expected_size=file.size,
                expected_sha256=file.sha256,
                size=size,
                sha256=digests.sha256,
                expected_md5=file.md5,
                md5=digests.md5,
            )
            if not problem:
                break
            part.unlink()
            on_bytes(0)
        else:
            raise VerificationError(
                f"File {file.path} failed verification twice (downloaded again after the first): {problem}"
            )
        await asyncio.to_thread(_commit, part, target)
    tracker.file_done()
    return ManifestFile(
        path=file.path,
        size=size,
        sha256=digests.sha256,
        media_type=file.media_type,
        verified_by=_verified_by(file, digests),
    )


def _verified_by(file: RemoteFile, digests: Digests) -> str | None:
    if file.sha256:
        return "sha256"
    if file.md5 and digests.md5:
        return "md5"
    if file.md5:
        logger.info(
            "%s: its ETag is no MD5 of its bytes (a KMS or customer key): verified by size only", file.path
        )
    return "size" if file.size is not None else None


def _commit(part: Path, target: Path) -> None:
    # fsync before rename: the manifest must never record a file whose bytes are still only in cache.
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    part.replace(target)


def _write_inline(dest: Path, relative: str, content: bytes) -> ManifestFile:
    target = paths.prepare_target(dest, paths.check_relative(relative))
    temp = paths.part_path(target)
    temp.write_bytes(content)
    temp.replace(target)
    return ManifestFile(path=relative, size=len(content), sha256=hashlib.sha256(content).hexdigest())


class _Recorder:
    """Keeps the manifest current: rewritten (atomically) after every completed file, so a restarted
    loader skips it, and before the first byte of a file with an ETag, so it resumes that file's
    `.part` only if the object is unchanged; marked complete at the end."""

    def __init__(
        self,
        dest: Path,
        *,
        found: Listing,
        files: Sequence[RemoteFile],
        kept: Sequence[ManifestFile],
        partials: Mapping[str, str],
    ) -> None:
        self._dest = dest
        self._found = found
        self._order = [file.path for file in files]
        self._entries = {entry.path: entry for entry in kept}
        self._partials = dict(partials)
        self._write_lock = asyncio.Lock()

    def _manifest(self, *, complete: bool) -> Manifest:
        order = self._order + [path for path in self._entries if path not in self._order]
        files = tuple(self._entries[path] for path in order if path in self._entries)
        return Manifest(
            source=self._found.source,
            revision=self._found.revision,
            complete=complete,
            files=files,
            partials=dict(self._partials) or None,
        )

    async def begin(self, file: RemoteFile) -> None:
        """Record the ETag a file's `.part` is begun from, before its first byte: a later run resumes
        the partial file only while the listing still gives that ETag."""
        if file.etag is None or self._partials.get(file.path) == file.etag:
            return
        self._partials[file.path] = file.etag
        async with self._write_lock:
            await asyncio.to_thread(manifest.write_atomic, self._dest, self._manifest(complete=False))

    async def add(self, entry: ManifestFile) -> None:
        """Record one completed file."""
        self._entries[entry.path] = entry
        self._partials.pop(entry.path, None)
        async with self._write_lock:
            await asyncio.to_thread(manifest.write_atomic, self._dest, self._manifest(complete=False))

    async def finish(self) -> Manifest:
        """Write the manifest as complete and return it."""
        final = self._manifest(complete=True)
        async with self._write_lock:
            await asyncio.to_thread(manifest.write_atomic, self._dest, final)
        return final
