"""S3 and S3-compatible stores (MinIO, Ceph RGW and the like), addressed path-style:
`{endpoint}/{bucket}/{key}`, which every S3-compatible store understands.

Listing: `GET {endpoint}/{bucket}?list-type=2&prefix=..&encoding-type=url` (ListObjectsV2), page
after page by `continuation-token`, answers each object's Key, Size and ETag; objects are fetched
from `{endpoint}/{bucket}/{key}`. Requests are signed with SigV4 (`sigv4`) when credentials are
given and anonymous otherwise (public buckets).

S3 publishes no sha256. The ETag of a single-part upload is the MD5 of the object, so such files are
checked against it, unless the object turns out encrypted with a KMS or customer key (`transfer`
sees that in its answer); a multipart ETag (`<hex>-<parts>`) is no digest of the content, and those
files are verified by size only. The manifest records every file's sha256 either way, and how it
was verified. The revision is the sha256 of the listed keys, sizes and ETags: a changed object
changes it, and the next load fetches again.

Every GET of an object carries `If-Match: "<the listed ETag>"` (signed with the request), so an
object replaced after the listing answers 412 instead of other bytes: `transfer` then discards the
file's partial download and fails it, and the next run lists the new object. A `.part` file left by
an earlier run is resumed only if the manifest records it as begun from the ETag listed now
(`plan.stale_partials`): without that, a replaced multipart object, whose ETag is no digest of the
content, would be completed from two versions undetected.
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from aima.loader import client as http
from aima.loader import sigv4
from aima.loader.errors import SourceError, TransferError
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import S3Source

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REGION",
    "Page",
    "S3Object",
    "files_from_objects",
    "list_files",
    "list_url",
    "md5_from_etag",
    "object_url",
    "parse_error",
    "parse_list_page",
    "refusal",
    "relative_name",
]

DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
DEFAULT_REGION = "us-east-1"

logger = logging.getLogger("aima.loader")

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_WRONG_REGION = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
_HINTS = {
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID",
    "InvalidToken": "check AWS_SESSION_TOKEN",
    "ExpiredToken": "the session token expired; renew AWS_SESSION_TOKEN",
    "RequestTimeTooSkewed": "the loader's clock is more than 15 minutes off",
    "NoSuchBucket": "check the bucket's name and the endpoint",
}


@dataclass(frozen=True, kw_only=True)
class S3Object:
    """One object of a listing; `etag` without its quotes."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True, kw_only=True)
class Page:
    """One ListObjectsV2 answer; `next_token` is None on the last page."""

    objects: tuple[S3Object, ...]
    next_token: str | None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # S3 answers in its namespace; some compatible stores in none


def _text(element: ElementTree.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def _parse_xml(body: bytes, *, what: str) -> ElementTree.Element:
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SourceError(f"The answer for {what} declares a DOCTYPE, which S3 never sends")
    try:
        # No DOCTYPE, so no entity to expand; expat resolves no external resources either.
        return ElementTree.fromstring(body)  # noqa: S314
    except ElementTree.ParseError as error:
        raise SourceError(f"The answer for {what} is not XML: {error}") from error


def parse_list_page(body: bytes, *, what: str) -> Page:
    """Pure: the objects and the continuation token of a ListObjectsV2 answer."""
    root = _parse_xml(body, what=what)
    if _local(root.tag) != "ListBucketResult":
        raise SourceError(f"The answer for {what} is no ListObjectsV2 result")
    url_encoded = (_text(root, "EncodingType") or "").lower() == "url"
    objects = []
    for entry in root:
        if _local(entry.tag) != "Contents":
            continue
        key, size = _text(entry, "Key"), _text(entry, "Size")
        if not key or size is None or not size.isdigit():
            raise SourceError(f"The listing of {what} has an object without a key or a size")
        objects.append(
            S3Object(
                key=unquote_plus(key) if url_encoded else key,
                size=int(size),
                etag=(_text(entry, "ETag") or "").strip().strip('"'),
            )
        )
    truncated = (_text(root, "IsTruncated") or "").lower() == "true"
    token = _text(root, "NextContinuationToken")
    if truncated and not token:
        raise SourceError(f"The listing of {what} is truncated but gives no continuation token")
    return Page(objects=tuple(objects), next_token=token if truncated else None)


def parse_error(body: bytes) -> tuple[str, str]:
    """Pure: the Code and Message of an S3 error document ("" for what it lacks)."""
    if not body.lstrip().startswith(b"<") or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return "", ""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - no DOCTYPE (see _parse_xml)
    except ElementTree.ParseError:
        return "", ""
    return _text(root, "Code") or "", " ".join((_text(root, "Message") or "").split())[:200]


def refusal(status: int, body: bytes, *, what: str, signed: bool, bucket_region: str | None) -> str:
    """Pure: a sentence for an S3 error answer, with what to do about it; never a credential."""
    code, message = parse_error(body)
    said = f"HTTP {status} {code}".strip() + (f": {message}" if message else "")
    if bucket_region and (status == 301 or code in _WRONG_REGION):
        return (
            f"The bucket of {what} is in region {bucket_region} ({said}); set the region to "
            f"{bucket_region} (loader --region, operator AIMA_S3_REGION) and an endpoint of that region, "
            f"such as https://s3.{bucket_region}.amazonaws.com"
        )
    hint = _HINTS.get(code, "")
    if status in (401, 403):
        hint = hint or (
            "check that the credentials may list the bucket and read its objects "
            "(s3:ListBucket, s3:GetObject)"
            if signed
            else "the request was anonymous: give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "for a bucket that is not public"
        )
        return f"Access to {what} was denied ({said}); {hint}"
    if status == 404:
        return f"{what} was not found ({said})" + (f"; {hint}" if hint else "")
    return f"{what} answered {said}" + (f"; {hint}" if hint else "")


def md5_from_etag(etag: str) -> str | None:
    """The MD5 an ETag states, or None: a multipart ETag (`<hex>-<parts>`) is no digest of the content."""
    value = etag.strip('"').lower()
    return value if _MD5_RE.match(value) else None


def relative_name(key: str, *, prefix: str) -> str | None:
    """The file name of `key` under `prefix`: the rest of the key below the folder `prefix`, or the
    last segment when the key is `prefix` itself. None for a key that only starts with the same
    characters (`models/llama-2/x` under `models/llama`) and for folder markers (`dir/`)."""
    if key.endswith("/"):
        return None
    if not prefix:
        return key
    if key == prefix:
        return prefix.rpartition("/")[2]
    if key.startswith(prefix + "/"):
        return key[len(prefix) + 1 :]
    return None


def object_url(endpoint: str, bucket: str, key: str) -> str:
    """Path-style URL of an object, the key encoded as SigV4 signs it (every byte but A-Z a-z 0-9 -_.~/)."""
    return f"{endpoint}/{bucket}/{quote(key, safe='/')}"


def list_url(endpoint: str, bucket: str, *, prefix: str, token: str | None) -> str:
    """The ListObjectsV2 URL of one page, its query in canonical order and encoding."""
    query = {"list-type": "2", "encoding-type": "url"}
    if prefix:
        query["prefix"] = prefix
    if token:
        query["continuation-token"] = token
    return f"{endpoint}/{bucket}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in sorted(query.items()))


def files_from_objects(
    objects: Sequence[S3Object], *, endpoint: str, source: S3Source
) -> tuple[RemoteFile, ...]:
    """Pure: the files of the objects under the source's prefix, named relative to it."""
    files = []
    for item in objects:
        name = relative_name(item.key, prefix=source.prefix)
        if name is not None:
            url = object_url(endpoint, source.bucket, item.key)
            files.append(
                RemoteFile(
                    path=name, url=url, size=item.size, md5=md5_from_etag(item.etag), etag=item.etag or None
                )
            )
    return tuple(files)


def _revision(objects: Sequence[S3Object]) -> str:
    text = "\n".join(f"{item.key}\t{item.size}\t{item.etag}" for item in sorted(objects, key=lambda o: o.key))
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


async def _get(client: http.Client, url: str, *, sign: http.Signer | None, what: str) -> bytes:
    async def attempt() -> bytes:
        target, headers = http.prepare(url, headers={}, sign=sign)  # signed anew: a retry may be late
        async with client.session.get(target, headers=headers, allow_redirects=False) as response:
            http.raise_for_retryable(response)
            body = await response.read()
            if response.status == 200:
                return body
            region = response.headers.get("x-amz-bucket-region")
            raise SourceError(
                refusal(response.status, body, what=what, signed=sign is not None, bucket_region=region)
            )

    try:
        return await http.with_retries(client, attempt, what=what)
    except TransferError as error:
        raise SourceError(str(error).replace("Failed to download", "Failed to list")) from error


async def list_files(
    client: http.Client,
    source: S3Source,
    *,
    uri: str,
    endpoint: str,
    region: str,
    credentials: sigv4.Credentials | None,
) -> Listing:
    """List the objects under the source's prefix, every page of them."""
    sign = sigv4.Signer(credentials=credentials, region=region) if credentials else None
    objects: list[S3Object] = []
    token: str | None = None
    seen: set[str] = set()
    while True:
        url = list_url(endpoint, source.bucket, prefix=source.prefix, token=token)
        page = parse_list_page(await _get(client, url, sign=sign, what=uri), what=uri)
        objects += [o for o in page.objects if relative_name(o.key, prefix=source.prefix) is not None]
        if page.next_token is None:
            break
        if page.next_token in seen:
            raise SourceError(f"The listing of {uri} repeats a continuation token")
        seen.add(page.next_token)
        token = page.next_token
    if not objects:
        raise SourceError(f"Bucket {source.bucket} has no object {source.prefix!r} and none under it")
    files = files_from_objects(objects, endpoint=endpoint, source=source)
    if size_only := sum(1 for file in files if file.md5 is None):
        logger.info(
            "%s: %d of %d objects have multipart ETags, which are no MD5 of the content: they are "
            "verified by size only (their sha256 is still recorded)",
            uri,
            size_only,
            len(files),
        )
    return Listing(source=uri, revision=_revision(objects), files=files, sign=sign)
