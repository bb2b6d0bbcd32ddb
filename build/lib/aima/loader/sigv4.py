"""AWS Signature Version 4 for S3 requests (pure, hmac and hashlib only).

A signed request carries `x-amz-date`, `x-amz-content-sha256` (the sha256 of the empty body: the
loader only sends GETs), `x-amz-security-token` for temporary credentials, and an Authorization
header whose signature covers the method, the path and query, and the signed headers (host, range,
if-match and every x-amz-* header). The URL is signed in its canonical form, path segments encoded once as S3
wants them, and must then be sent exactly so (`client.prepare` stops yarl from re-quoting it).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "Credentials",
    "Signer",
    "canonical_query",
    "canonical_url",
    "sign",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers signed besides x-amz-*: those whose change would change the answer.
_SIGNED = frozenset({"host", "range", "if-match", "content-md5", "content-type"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """An access key pair, and the session token of temporary credentials; never shown in a repr."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _encode(value: str, *, safe: str) -> str:
    # quote() keeps A-Z a-z 0-9 - _ . ~ as they are: exactly SigV4's unreserved characters.
    return quote(value, safe=safe)


def canonical_query(raw_query: str) -> str:
    """Query parameters decoded, encoded the strict way and sorted; `+` stays a plus sign."""
    pairs = []
    for item in raw_query.split("&") if raw_query else []:
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name), safe=""), _encode(unquote(value), safe="")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_url(url: str) -> tuple[str, str, str]:
    """(the URL as it must be sent, its canonical path, its canonical query)."""
    parts = urlsplit(url)
    path = _encode(unquote(parts.path), safe="/") or "/"
    query = canonical_query(parts.query)
    return parts._replace(path=path, query=query, fragment="").geturl(), path, query


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host += f":{parts.port}"
    return host


def signing_key(secret_access_key: str, *, date: str, region: str, service: str) -> bytes:
    """The key derived for one day, region and service."""
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    credentials: Credentials,
    region: str,
    when: datetime,
    service: str = "s3",
    payload_sha256: str = EMPTY_SHA256,
) -> tuple[str, dict[str, str]]:
    """Sign one request: (the URL to send, `headers` plus Host, the x-amz-* headers and Authorization)."""
    amz_date = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    send_url, path, query = canonical_url(url)
    signed = dict(headers)
    signed["host"] = _host(url)
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    covered = {
        name.lower(): " ".join(value.strip().split())
        for name, value in signed.items()
        if name.lower() in _SIGNED or name.lower().startswith("x-amz-")
    }
    names = sorted(covered)
    canonical_request = "\n".join(
        [
            method,
            path,
            query,
            "".join(f"{name}:{covered[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(credentials.secret_access_key, date=amz_date[:8], region=region, service=service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    signed["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope},"
        f"SignedHeaders={';'.join(names)},Signature={signature}"
    )
    return send_url, signed


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Signer:
    """Signs each request afresh (the signature holds for 15 minutes; a download takes longer)."""

    credentials: Credentials = field(repr=False)
    region: str
    clock: Callable[[], datetime] = _utc_now

    def __call__(self, *, method: str, url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The URL to send and the signed headers (`client.Signer`)."""
        return sign(
            method=method,
            url=url,
            headers=headers,
            credentials=self.credentials,
            region=self.region,
            when=self.clock(),
        )
