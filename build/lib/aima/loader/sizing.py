"""How big a model is before downloading it: the source's listing, filtered as the loader would.

The Model controller sizes a cache volume from this when the spec names no size, so a 140 GB model
does not fail halfway through a default-sized volume.
"""

from __future__ import annotations

import asyncio

from aima.loader import client as http
from aima.loader import listing, plan
from aima.loader.errors import LoaderError
from aima.loader.retry import RetryPolicy
from aima.loader.source import parse_source

# The listing is a best-effort hint read inside a reconcile, which waits for it: one try, briefly.
# A source that cannot answer at once gets the default size, and the loader retries it for real.
_LISTING_TIMEOUT_SECONDS = 5.0
_ONE_TRY = RetryPolicy(attempts=1)


async def listed_bytes(
    *,
    uri: str,
    endpoint: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    region: str | None = None,
) -> int | None:
    """Total bytes the loader would download from a public source, or None when unknown (a source
    that wants credentials refuses the anonymous listing: then too)."""
    try:
        source = parse_source(uri)
        async with asyncio.timeout(_LISTING_TIMEOUT_SECONDS), http.open_session(connections=2) as session:
            found = await listing.fetch(
                http.Client(session=session, policy=_ONE_TRY),
                source,
                uri=uri,
                endpoint=endpoint,
                token=None,
                region=region,
            )
    except (LoaderError, OSError, TimeoutError):
        return None
    chosen = plan.filter_files(found.files, include=include, exclude=exclude)
    sizes = [f.size for f in chosen]
    return None if any(size is None for size in sizes) else sum(s for s in sizes if s is not None)
