"""A fake S3 bucket, path-style: ListObjectsV2 (`GET /{bucket}?list-type=2`, paginated by max-keys
and an opaque continuation token, `encoding-type=url`) and `GET`/`HEAD /{bucket}/{key}` with Range
and If-Match (412 PreconditionFailed when the object's ETag is none of those asked for, checked
after the signature, as S3 does). An object can be replaced between runs (`replace`) or right after
a listing is answered (`replace_after_listing`), as an upload landing during a download would.

With credentials it checks every request's SigV4 Authorization header by computing the signature
again from what arrived and the known secret, with an implementation of its own (not the loader's),
and answers S3's error documents: 403 SignatureDoesNotMatch, InvalidAccessKeyId, InvalidToken,
RequestTimeTooSkewed, AccessDenied for an anonymous request, and 400 AuthorizationHeaderMalformed
with x-amz-bucket-region for a request signed for another region. Without credentials the bucket
is public. ETags are what S3 publishes: the MD5 of a single-part upload, `<md5 of the parts'
MD5s>-<parts>` for a multipart one, and no MD5 at all for an object encrypted with a KMS key
(whose answers then carry `x-amz-server-side-encryption: aws:kms`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape

from aiohttp import web

from fakes.serving import Faults, Stats, serve_file

PART_SIZE = 8 * 2**20
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/s3/aws4_request,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


@dataclass
class S3Object:
    """One object: its bytes on disk and how it was uploaded."""

    path: Path
    multipart: bool = False
    """Uploaded in 8 MiB parts: the ETag is no MD5 of the content."""
    kms: bool = False
    """Encrypted with a KMS key: the ETag looks like an MD5 but is not one."""


@dataclass
class FakeS3:
    """One bucket, `objects` keyed by their keys (taken verbatim)."""

    bucket: str
    objects: dict[str, S3Object]
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str = "us-east-1"
    page_size: int = 1000
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)
    listings: list[dict[str, str]] = field(default_factory=list)
    """The query of every listing request."""
    signed: Counter[bool] = field(default_factory=Counter)
    """Requests that carried a valid signature (True) and anonymous ones on a public bucket (False)."""
    refused: Counter[str] = field(default_factory=Counter)
    """Error codes answered."""
    if_match: list[tuple[str, str | None]] = field(default_factory=list)
    """The key and the If-Match header of every object request that passed authentication."""
    replace_after_listing: dict[str, S3Object] = field(default_factory=dict)
    """Objects replaced (then forgotten here) once a listing's last page is answered."""
    _etags: dict[str, str] = field(default_factory=dict)

    def etag(self, key: str) -> str:
        if key not in self._etags:
            self._etags[key] = _etag(self.objects[key])
        return self._etags[key]

    def replace(self, key: str, item: S3Object) -> None:
        """Upload new content under `key`: the object gets the ETag of its new bytes."""
        self.objects[key] = item
        self._etags.pop(key, None)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{bucket}", self._list)
        app.router.add_route("*", "/{bucket}/{key:.+}", self._object)
        app.on_response_prepare.append(self._encryption_header)
        return app

    # -- requests ---------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        if refused := self._refusal(request):
            return refused
        if request.query.get("list-type") != "2":
            return self._error(400, "InvalidArgument", "only ListObjectsV2 is served")
        self.listings.append(dict(request.query))
        prefix = request.query.get("prefix", "")
        keys = sorted(key for key in self.objects if key.startswith(prefix))
        token = request.query.get("continuation-token")
        start = _token_index(token) if token else 0
        size = min(self.page_size, int(request.query.get("max-keys", "1000")))
        page, more = keys[start : start + size], start + size < len(keys)
        encode = request.query.get("encoding-type") == "url"
        contents = "".join(
            "<Contents>"
            f"<Key>{escape(quote_plus(key, safe='/') if encode else key)}</Key>"
            "<LastModified>2026-01-02T03:04:05.000Z</LastModified>"
            f"<ETag>&quot;{self.etag(key)}&quot;</ETag>"
            f"<Size>{self.objects[key].path.stat().st_size}</Size>"
            "<StorageClass>STANDARD</StorageClass>"
            "</Contents>"
            for key in page
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{self.bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{size}</MaxKeys>"
            + ("<EncodingType>url</EncodingType>" if encode else "")
            + f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            + (f"<ContinuationToken>{escape(token)}</ContinuationToken>" if token else "")
            + (f"<NextContinuationToken>{_token(start + size)}</NextContinuationToken>" if more else "")
            + contents
            + "</ListBucketResult>"
        )
        if not more:
            for key, item in self.replace_after_listing.items():
                self.replace(key, item)
            self.replace_after_listing.clear()
        return web.Response(body=body.encode(), content_type="application/xml")

    async def _object(self, request: web.Request) -> web.StreamResponse:
        if refused := self._refusal(request):
            return refused
        key = request.match_info["key"]
        if key not in self.objects:
            return self._error(404, "NoSuchKey", "The specified key does not exist.")
        condition = request.headers.get("If-Match")
        self.if_match.append((key, condition))
        if condition is not None and not _matches(condition, self.etag(key)):
            return self._error(
                412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
            )
        return await serve_file(
            request, key=key, path=self.objects[key].path, faults=self.faults, stats=self.stats
        )

    async def _encryption_header(self, request: web.Request, response: web.StreamResponse) -> None:
        found = self.objects.get(request.match_info.get("key", ""))
        if found is not None and found.kms and response.status in (200, 206):
            response.headers["x-amz-server-side-encryption"] = "aws:kms"

    # -- authentication ---------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.match_info["bucket"] != self.bucket:
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist")
        if self.secret_access_key is None:
            self.signed[False] += 1
            return None
        header = request.headers.get("Authorization")
        if header is None:
            return self._error(403, "AccessDenied", "Access Denied")
        match = _AUTH_RE.match(header)
        if match is None:
            return self._error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed")
        if match["key"] != self.access_key_id:
            return self._error(
                403, "InvalidAccessKeyId", "The AWS Access Key Id does not exist in our records."
            )
        if match["region"] != self.region:
            return self._error(
                400,
                "AuthorizationHeaderMalformed",
                f"the region '{match['region']}' is wrong; expecting '{self.region}'",
                headers={"x-amz-bucket-region": self.region},
            )
        problem = self._check_signature(request, match)
        if problem:
            return self._error(403, *problem)
        self.signed[True] += 1
        return None

    def _check_signature(self, request: web.Request, match: re.Match[str]) -> tuple[str, str] | None:
        names = match["headers"].split(";")
        if not {"host", "x-amz-date", "x-amz-content-sha256"} <= set(names):
            return "AccessDenied", "host, x-amz-date and x-amz-content-sha256 must be signed"
        amz_date = request.headers.get("x-amz-date", "")
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if abs((datetime.now(UTC) - when).total_seconds()) > 15 * 60 or amz_date[:8] != match["date"]:
            return (
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            )
        if self.session_token is not None and (
            request.headers.get("x-amz-security-token") != self.session_token
            or "x-amz-security-token" not in names
        ):
            return "InvalidToken", "The provided token is malformed or otherwise invalid."
        wanted = _signature(
            request,
            names=names,
            secret=self.secret_access_key or "",
            scope=f"{match['date']}/{match['region']}/s3/aws4_request",
        )
        if not hmac.compare_digest(wanted, match["signature"]):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
            )
        return None

    def _error(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.refused[code] += 1
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            "<RequestId>4442587FB7D0A2F9</RequestId></Error>"
        )
        return web.Response(
            status=status, body=body.encode(), content_type="application/xml", headers=headers
        )


def _signature(request: web.Request, *, names: list[str], secret: str, scope: str) -> str:
    """SigV4 as the server computes it: from the decoded path and query, encoded the strict way."""

    def strict(value: str, safe: str = "") -> str:
        return quote(value, safe=safe + "-_.~")

    query = "&".join(sorted(f"{strict(k)}={strict(v)}" for k, v in request.query.items()))
    headers = "".join(f"{name}:{' '.join(request.headers.get(name, '').split())}\n" for name in names)
    canonical = "\n".join(
        [
            request.method,
            strict(request.path, safe="/"),
            query,
            headers,
            ";".join(names),
            request.headers["x-amz-content-sha256"],
        ]
    )
    amz_date = request.headers["x-amz-date"]
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"AWS4{secret}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _etag(item: S3Object) -> str:
    data = item.path.read_bytes()
    if item.kms:
        return hashlib.md5(b"kms:" + data[:64]).hexdigest()  # an opaque tag, not the content's MD5
    if not item.multipart:
        return hashlib.md5(data).hexdigest()
    parts = [data[i : i + PART_SIZE] for i in range(0, len(data), PART_SIZE)] or [b""]
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def _matches(condition: str, etag: str) -> bool:
    """If-Match: `*`, or a comma-separated list of quoted ETags (strong comparison)."""
    wanted = [tag.strip() for tag in condition.split(",")]
    return "*" in wanted or f'"{etag}"' in wanted


def _token(index: int) -> str:
    # Opaque like S3's, and with the characters (+ / =) that must survive the query's encoding.
    return base64.b64encode(b"\xfb\xff" + str(index).encode()).decode()


def _token_index(token: str) -> int:
    return int(base64.b64decode(token)[2:])
