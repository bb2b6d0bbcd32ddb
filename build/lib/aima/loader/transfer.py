"""Download of one file into its `.part` file: HTTP Range resume from the partial file's size, a
restart from zero when a server ignores Range, retries per the client's policy (each attempt signed
anew when the source signs requests), and the sha256 of the whole file (with its MD5 when the source
publishes one) computed as the bytes arrive (see `writer` for how that keeps pace with curl).

A file the listing gave an ETag (S3) is asked for with `If-Match` on every attempt, ranged or not:
a 412 answer means the object was replaced after the listing, so its partial file is discarded and
the file fails (not retried: only a new listing knows the new object).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from aima.loader import client as http
from aima.loader import hashing
from aima.loader.errors import TransferError
from aima.loader.hashing import ContentHasher, Digests
from aima.loader.paths import part_path
from aima.loader.plan import RemoteFile
from aima.loader.writer import HashingWriter

__all__ = ["BATCH_BYTES", "download", "parse_content_range"]

BATCH_BYTES = 8 * 2**20
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$|^bytes \*/(\d+)$")

OnBytes = Callable[[int], None]
"""Told how many bytes of the file are on disk (or about to be); may go down on a restart."""


def parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` → (100, 1000); `bytes */1000` → (None, 1000); (None, None) otherwise."""
    match = _CONTENT_RANGE_RE.match((value or "").strip())
    if not match:
        return None, None
    start, _, total, unsatisfied_total = match.groups()
    if unsatisfied_total is not None:
        return None, int(unsatisfied_total)
    return int(start), None if total == "*" else int(total)


class _RangeMismatch(http.Retryable):
    """The server sent a different range than asked: the partial file cannot be trusted to continue."""


def _open_part(part: Path, *, offset: int) -> int:
    # O_NOFOLLOW: a `.part` planted as a symlink must not redirect the write.
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_APPEND if offset else os.O_TRUNC)
    return os.open(part, flags, 0o644)


def _etag_is_md5(headers: Mapping[str, str]) -> bool:
    """False when S3 says it encrypted the object with a KMS or customer-provided key: the ETag it
    published is then no MD5 of the bytes, and only the object's own answer tells."""
    encryption = headers.get("x-amz-server-side-encryption", "")
    return not encryption.startswith("aws:kms") and (
        "x-amz-server-side-encryption-customer-algorithm" not in headers
    )


async def _stream(
    response: aiohttp.ClientResponse, *, part: Path, offset: int, hasher: ContentHasher, on_bytes: OnBytes
) -> None:
    writer = HashingWriter(_open_part(part, offset=offset), hasher, offset=offset)
    batch: list[bytes] = []
    filled = 0
    done = offset
    try:
        # iter_chunks hands over aiohttp's buffers as they are; iter_any joins what queued up (a copy).
        async for chunk, _ in response.content.iter_chunks():
            batch.append(chunk)
            filled += len(chunk)
            if filled >= BATCH_BYTES:
                done += filled
                await writer.submit(batch)
                batch, filled = [], 0
                on_bytes(done)
    finally:
        await writer.close(batch)
    on_bytes(done + filled)


def _existing_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _check_status(response: aiohttp.ClientResponse, *, file: RemoteFile, offset: int) -> int:
    """The offset the body starts at (0 when a server ignored Range), or raise."""
    http.raise_for_retryable(response)
    if response.status == 200:
        return 0  # a full body: a server that ignores Range restarts the file
    if response.status == 206 and offset:
        start, _ = parse_content_range(response.headers.get("Content-Range"))
        if start == offset:
            return offset
        raise _RangeMismatch(f"the server answered a range starting at {start}, asked for {offset}")
    hint = "; check the token or credentials" if response.status in (401, 403) else ""
    raise TransferError(f"Failed to download {file.path}: HTTP {response.status}{hint}")


def _request_headers(file: RemoteFile, headers: Mapping[str, str], offset: int) -> dict[str, str]:
    """The headers of one attempt: the source's, the range of a resume, and the listed ETag as a
    condition (both ranged and whole requests: each must be of the object that was listed)."""
    request = dict(headers)
    if file.etag is not None:
        request["If-Match"] = f'"{file.etag}"'
    if offset:
        request["Range"] = f"bytes={offset}-"
    return request


async def _attempt(
    file: RemoteFile,
    *,
    part: Path,
    client: http.Client,
    headers: dict[str, str],
    sign: http.Signer | None,
    on_bytes: OnBytes,
) -> Digests:
    offset = _existing_size(part)
    if file.size is not None and offset > file.size:
        part.unlink()  # longer than the file: not a prefix of it
        offset = 0
    md5 = file.md5 is not None
    hasher = await hashing.hash_prefix(part, length=offset, md5=md5) if offset else ContentHasher(md5=md5)
    on_bytes(offset)
    if offset and offset == file.size:
        return hasher.digests()  # an earlier run got every byte but stopped before renaming
    url, request_headers = http.prepare(file.url, headers=_request_headers(file, headers, offset), sign=sign)
    async with client.session.get(url, headers=request_headers) as response:
        if response.status == 412 and file.etag is not None:
            part.unlink(missing_ok=True)
            on_bytes(0)
            raise TransferError(
                f"File {file.path} changed on the source after it was listed (HTTP 412: its ETag is no "
                f"longer {file.etag}); its partial file was discarded, and the next run lists it again"
            )
        if response.status == 416 and offset:
            _, total = parse_content_range(response.headers.get("Content-Range"))
            if total == offset:
                return hasher.digests()  # size unpublished, and the part is already whole
            part.unlink()
            raise http.Retryable("the server refused the range of the partial file; restarting it")
        try:
            start = _check_status(response, file=file, offset=offset)
        except _RangeMismatch:
            part.unlink(missing_ok=True)
            raise
        if start != offset:
            hasher, offset = ContentHasher(md5=md5), 0
            on_bytes(0)
        if not _etag_is_md5(response.headers):
            hasher.drop_md5()
        await _stream(response, part=part, offset=offset, hasher=hasher, on_bytes=on_bytes)
    if file.size is not None and _existing_size(part) < file.size:
        raise http.Retryable(f"the transfer ended after {_existing_size(part)} of {file.size} bytes")
    return hasher.digests()


async def download(
    file: RemoteFile,
    *,
    target: Path,
    client: http.Client,
    headers: dict[str, str],
    on_bytes: OnBytes,
    sign: http.Signer | None = None,
) -> Digests:
    """Fetch `file` into `target`'s `.part` file, resuming what is there; return its digests (MD5 only
    when `file.md5` is published and applies to the object as served).

    Retries per `client.policy`; does not verify the digests and does not rename the file.
    """
    part = part_path(target)
    return await http.with_retries(
        client,
        lambda: _attempt(file, part=part, client=client, headers=headers, sign=sign, on_bytes=on_bytes),
        what=file.path,
    )
