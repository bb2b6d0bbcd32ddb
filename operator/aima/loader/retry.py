"""When and how long to wait before trying a request again (pure)."""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

# 408 and 429 are the client-side answers that mean "later"; every 5xx is the server's problem.
_JITTER = random.Random()  # noqa: S311 - jitter, not security; its own, so the global one stays the caller's
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; a server's Retry-After wins up to `max_retry_after`."""

    attempts: int = 6
    base_seconds: float = 1.0
    max_seconds: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, *, retry_after: float | None = None, rand: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based).

        `rand` in [0, 1) replaces the random draw, for tests.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.base_seconds * 2.0**attempt, self.max_seconds)
        draw = _JITTER.random() if rand is None else rand
        # Half fixed, half jitter: never zero, and loaders restarted together spread out.
        return ceiling / 2 + draw * ceiling / 2


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 §10.2.3), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
