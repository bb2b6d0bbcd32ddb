"""HTTP plumbing shared by the sources and the transfers: one aiohttp session, a retry loop with
backoff that honours Retry-After, a small GET-with-retries for listing documents, and the hook that
signs a request afresh on every attempt (S3's SigV4; the other sources send fixed headers).

aiohttp, not httpx, on the hot path: on loopback aiohttp streams about as fast as curl while
httpx managed 30-60 % of it (performance.md §5, pilot).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp
from yarl import URL

from aima.loader.errors import DiskFullError, SourceError, TransferError
from aima.loader.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after

__all__ = [
    "Client",
    "Retryable",
    "Signer",
    "get_bytes",
    "open_session",
    "prepare",
    "raise_for_retryable",
    "with_retries",
]

T = TypeVar("T")

# Errors that mean "the connection or the transfer broke", worth another try.
_NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class Retryable(Exception):
    """Raised inside an attempt to ask `with_retries` for another one."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True, kw_only=True)
class Client:
    """What every request needs: the session, the retry policy and a sleep (injected in tests)."""

    session: aiohttp.ClientSession
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


class Signer(Protocol):
    """Signs one request: a signature covers the request's time, so each attempt is signed anew."""

    def __call__(self, *, method: str, url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The URL exactly as it must be sent, and `headers` with the signature added."""
        ...


def prepare(
    url: str, *, headers: Mapping[str, str], sign: Signer | None, method: str = "GET"
) -> tuple[str | URL, dict[str, str]]:
    """The URL and headers of one attempt: as given, or signed when the source signs its requests."""
    if sign is None:
        return url, dict(headers)
    signed_url, signed = sign(method=method, url=url, headers=headers)
    # encoded=True: yarl would otherwise re-quote the path and query (`%21` to `!`), and the server
    # would then check the signature against a URL other than the one signed.
    return URL(signed_url, encoded=True), signed


def open_session(*, connections: int) -> aiohttp.ClientSession:
    """A session for downloads: no total timeout (files take hours), but a stalled socket fails.

    auto_decompress is off and identity encoding asked for, so byte offsets for Range and sizes
    for verification are those of the file itself.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120),
        connector=aiohttp.TCPConnector(limit=connections + 2),
        auto_decompress=False,
        headers={"Accept-Encoding": "identity", "User-Agent": "aima-loader"},
        read_bufsize=2**20,
    )


def raise_for_retryable(response: aiohttp.ClientResponse) -> None:
    """Raise Retryable for 408, 429 and 5xx answers, carrying their Retry-After."""
    if response.status in RETRYABLE_STATUSES:
        raise Retryable(
            f"HTTP {response.status} {response.reason or ''}".strip(),
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


async def with_retries(client: Client, attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run `attempt` until it succeeds, retrying network errors and Retryable with backoff.

    Raises TransferError naming `what` and the last reason once `client.policy.attempts` are spent;
    a full disk (ENOSPC, EDQUOT) is never retried.
    """
    last = "no attempt made"
    for number in range(client.policy.attempts):
        try:
            return await attempt()
        except Retryable as error:
            last, retry_after = str(error), error.retry_after
        except _NETWORK_ERRORS as error:
            last, retry_after = f"{type(error).__name__}: {error}".rstrip(": "), None
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"The disk filled up while writing {what}: {error.strerror}") from error
            raise
        if number + 1 < client.policy.attempts:
            await client.sleep(client.policy.delay(number, retry_after=retry_after))
    raise TransferError(f"Failed to download {what} after {client.policy.attempts} attempts: {last}")


async def get_bytes(
    client: Client,
    url: str,
    *,
    headers: Mapping[str, str],
    what: str,
    params: Mapping[str, str] | None = None,
) -> bytes:
    """GET a (small) document with retries; 401/403/404 become a SourceError in words."""

    async def attempt() -> bytes:
        async with client.session.get(url, headers=headers, params=params) as response:
            raise_for_retryable(response)
            if response.status in (401, 403):
                raise SourceError(f"Access to {what} was denied (HTTP {response.status}); check the token")
            if response.status == 404:
                raise SourceError(f"{what} was not found (HTTP 404)")
            if response.status != 200:
                raise SourceError(f"{what} answered HTTP {response.status}")
            return await response.read()

    try:
        return await with_retries(client, attempt, what=what)
    except TransferError as error:
        raise SourceError(str(error).replace("Failed to download", "Failed to list")) from error
