"""A single file at an http(s) URL: its size from HEAD's Content-Length, its digest from the URI's
`#sha256=` fragment when given, its revision from the ETag (so a changed file is fetched again).
"""

from __future__ import annotations

from collections.abc import Mapping

from aima.loader import client as http
from aima.loader.plan import Listing, RemoteFile
from aima.loader.source import HttpSource

__all__ = ["list_files"]


async def list_files(
    client: http.Client, source: HttpSource, *, uri: str, headers: Mapping[str, str]
) -> Listing:
    """Describe the one file; a server that does not answer HEAD leaves its size unknown."""

    async def head() -> tuple[int | None, str]:
        async with client.session.head(source.url, headers=headers, allow_redirects=True) as response:
            http.raise_for_retryable(response)
            if response.status != 200:
                return None, ""
            length = response.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else None
            return size, response.headers.get("ETag", "").strip('"')

    size, etag = await http.with_retries(client, head, what=source.url)
    file = RemoteFile(path=source.filename, url=source.url, size=size, sha256=source.sha256)
    return Listing(source=uri, revision=etag, files=(file,), headers=headers)
